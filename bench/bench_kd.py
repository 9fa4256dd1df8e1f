"""Offline vs online logit distillation vs plain SFT (speed, memory), and what stored top-k logits cost on disk.

    python bench/bench_kd.py speed --size 8M --steps 6          # sft, kd-offline, kd-online: tokens/s, peak RSS
    python bench/bench_kd.py speed --runs kd-offline,kd-offline-whole,kd-online,kd-online-whole   # chunked head or not
    python bench/bench_kd.py storage --ks 8,16,32,64            # bytes per token per k: stored gaps vs float16

Needs the default dataset repo with a logits config (``make push-data LOGITS=16``).

speed: each run is a fresh subprocess building the trainer ``trainers/sft.py`` builds (recipe
``recipes/train/kd.yaml``, same student size, seed, batch and rows), training ``--steps`` steps.
``sft`` trains on the same token sequences without teacher system turns (``--teacher_tags false``), so the three
runs differ only in where the teacher signal comes from. The kd runs project the labelled positions through the
LM head in chunks of ``--kd_chunk_tokens`` (default 128, ``trainers/chunked_kd.py``); the ``-whole`` runs put
every labelled position of a micro-batch in one chunk. Tokens/s counts the non-padding tokens of
``trainer.train()`` only; peak RSS is the process's (it includes the online teacher's weights).

storage: the teacher (SmolLM2-135M) scores the repo's train rows once at the largest k (float32); each smaller k
is its prefix (top-k is sorted). Each k is written as the ``logits-*`` parquet the builder writes (quantised,
delta-coded log-probs, zstd) and as the layout before it (float16 log-probs, snappy), every column counted.
Accuracy of the stored values: the KD loss and its gradient for a fixed random student, stored vs float32.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

DEFAULT_DATASET = REPO / "hub" / "datasets" / "scalingdown" / "synthetic_gsm-rationales"
RECIPE = REPO / "recipes" / "train" / "kd.yaml"
RUNS = {
    "sft": ["--method", "sft", "--teacher_tags", "false"],
    "kd-offline": ["--method", "kd", "--kd_source", "offline"],
    "kd-online": ["--method", "kd", "--kd_source", "online", "--kd_teacher", "smollm2-135m-instruct"],
    # the same two with the whole batch's labelled positions in one LM-head chunk (--kd_chunk_tokens 0)
    "kd-offline-whole": ["--method", "kd", "--kd_source", "offline", "--kd_chunk_tokens", "0"],
    "kd-online-whole": [
        "--method", "kd", "--kd_source", "online", "--kd_teacher", "smollm2-135m-instruct", "--kd_chunk_tokens", "0"
    ],
}  # fmt: skip
DEFAULT_RUNS = "sft,kd-offline,kd-online"


def current_rss_mb() -> float:
    """This process's resident memory now (Linux), to subtract what the imports alone hold."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def speed_worker(args) -> None:
    """One run in this process: build, train, print a JSON line with tokens/s and peak RSS."""
    from trl import TrlParser

    from trainers.sft import DistillationArguments, ModelConfig, ScriptArguments, SFTConfig, build_run

    baseline_mb = current_rss_mb()  # torch, transformers, TRL and datasets imported: the same in every run
    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", str(RECIPE), "--size", args.size, "--dataset_name", args.dataset, "--output_dir", out]
        argv += ["--max_steps", str(args.steps), "--save_strategy", "no", "--logging_steps", str(args.steps)]
        argv += ["--disable_tqdm", "true", *RUNS[args.worker]]
        parser = TrlParser((ScriptArguments, DistillationArguments, SFTConfig, ModelConfig))
        script, kd, training, model = parser.parse_args_and_config(argv)
        run = build_run(script, training, model, kd)
        start = time.perf_counter()
        run.trainer.train()
        seconds = time.perf_counter() - start
        tokens = run.trainer.state.num_input_tokens_seen
    print(
        json.dumps(
            {
                "run": args.worker,
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "baseline_rss_mb": round(baseline_mb),
            }
        )
    )


def speed(args) -> None:
    results = {}
    for run in args.runs.split(","):
        command = [sys.executable, __file__, "speed", "--worker", run, "--size", args.size]
        command += ["--steps", str(args.steps), "--dataset", args.dataset]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise SystemExit(f"{run} failed:\n{done.stderr[-3000:]}")
        results[run] = json.loads(lines[-1])
        print(json.dumps(results[run]), flush=True)
    print(f"\nsize {args.size}, {args.steps} steps, batch from {RECIPE.name}, same rows and seed")
    print("peak RSS is the whole process; 'training' subtracts the RSS after imports (same in every run)\n")
    header = f"{'run':<12}{'tokens/s':>10}{'peak RSS':>11}{'training':>10}"
    print(header + f"{'vs sft':>14}{'vs online':>14}{'speed vs online':>17}")
    sft, online = results.get("sft"), results.get("kd-online")

    def added(r):
        return r["peak_rss_mb"] - r["baseline_rss_mb"]

    def ratio(r, other, key):
        if not other:
            return "-"
        if key == "training":
            return (
                f"{(r['peak_rss_mb'] - r['baseline_rss_mb']) / (other['peak_rss_mb'] - other['baseline_rss_mb']):.2f}x"
            )
        return f"{r[key] / other[key]:.2f}x"

    for run, r in results.items():
        rss, training = f"{r['peak_rss_mb']} MB", f"{added(r)} MB"
        memory = [f"{ratio(r, other, 'peak_rss_mb')} ({ratio(r, other, 'training')})" for other in (sft, online)]
        print(
            f"{run:<12}{r['tokens_per_s']:>10.1f}{rss:>11}{training:>10}{memory[0]:>14}{memory[1]:>14}"
            f"{ratio(r, online, 'tokens_per_s'):>17}"
        )


def storage(args) -> None:
    import numpy as np
    import torch
    from datasets import List, Value, load_dataset

    from datasets_builders.logits import (
        TeacherScorer,
        encode_logprobs,
        logits_config,
        storage_figures,
        stored_row,
        teacher_logprobs,
        tokenize_conversation,
    )
    from datasets_builders.teachers import resolve_model_source
    from scalingdown.dataset_repo import write_data_files
    from trainers.kd_losses import storage_fidelity

    ks = sorted(int(k) for k in args.ks.split(","))
    rows = [dict(r) for r in load_dataset(args.dataset, split="train")]
    name, source = resolve_model_source("smollm2-135m-instruct")
    scorer = TeacherScorer(name, source)
    tokenized = [tokenize_conversation(scorer.tokenizer, r["messages"]) for r in rows]
    scored = []  # float32, straight from the teacher, at the largest k (smaller k are prefixes)
    for start in range(0, len(tokenized), 8):
        scored += scorer.score(tokenized[start : start + 8], ks[-1])
    tokens = sum(len(top) for top, _, _ in scored)
    info = {"teacher": name, "config": f"logits-{name}", "assistant_tokens": tokens, **scorer.identity()}
    text_bytes = sum(p.stat().st_size for p in (Path(args.dataset) / "data").glob("*.parquet"))
    print(f"{len(rows)} rows, {tokens} assistant tokens; text config {text_bytes} bytes (every column counted)\n")

    def written(k: int, layout: str) -> dict:
        """The config at ``k`` as push-data writes it (gaps), or with float16 log-probs (the layout before)."""
        sliced = []
        for r, seq, result in zip(rows, tokenized, scored, strict=True):
            row = stored_row(r, seq, result, name, scorer.identity(), scorer.tokenizer, k)
            if layout == "float16":
                row["topk_logprobs"] = result[1][:, :k].astype(np.float16).reshape(-1).tolist()
            sliced.append(row)
        config = logits_config(sliced, {**info, "k": k})
        if layout == "float16":
            for column in ("top_logprob", "logprob_gaps", "logprob_step"):
                del config.features[column]
            config.features["topk_logprobs"] = List(Value("float16"))
            config.compression = None
        with tempfile.TemporaryDirectory() as tmp:
            write_data_files(Path(tmp), [config])
            return storage_figures(Path(tmp), {**info, "k": k})

    print(f"{'k':>4}{'gaps bytes/token':>18}{'per k':>8}{'vs text':>9}{'float16 bytes/token':>21}{'per k':>8}")
    for k in ks:
        gaps, f16 = written(k, "gaps"), written(k, "float16")
        print(
            f"{k:>4}{gaps['bytes_per_token']:>18.1f}{gaps['bytes_per_token_per_k']:>8.2f}"
            f"{gaps['bytes'] / text_bytes:>8.2f}x{f16['bytes_per_token']:>21.1f}{f16['bytes_per_token_per_k']:>8.2f}"
        )

    # stored (gaps) vs exact float32 log-probs: the loss and gradient a fixed random student gets from each
    torch.manual_seed(0)
    for k in sorted({ks[-1], 16} & set(ks)):
        ids = torch.cat([torch.from_numpy(top[:, :k]) for top, _, _ in scored[:16]])
        exact = torch.cat([torch.from_numpy(values[:, :k]) for _, values, _ in scored[:16]])
        stored = torch.cat(
            [torch.from_numpy(teacher_logprobs({**encode_logprobs(v[:, :k]), "k": k})) for _, v, _ in scored[:16]]
        )
        fidelity = storage_fidelity(torch.randn(ids.shape[0], len(scorer.tokenizer)) * 2, ids, exact, stored)
        print(
            f"k={k}, {ids.shape[0]} tokens, stored vs float32 log-probs: KD loss {fidelity['stored']:.6f} vs "
            f"{fidelity['exact']:.6f} (relative difference {fidelity['relative']:.1e}), gradient cosine "
            f"{fidelity['cosine']:.7f}, max log-prob error {(stored - exact).abs().max().item():.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["speed", "storage"])
    parser.add_argument("--size", default="8M")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--ks", default="8,16,32,64")
    parser.add_argument("--worker", choices=list(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "speed":
        speed_worker(args) if args.worker else speed(args)
    else:
        storage(args)


if __name__ == "__main__":
    main()
