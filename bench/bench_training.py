"""Training throughput of our SFT configuration vs TRL ``SFTTrainer`` with its defaults, same model and rows.

    python bench/bench_training.py --size 8M --steps 12 --runs ours,trl
    python bench/bench_training.py --size 33M --steps 6 --runs ours,trl,ours-no-grouping

"ours" is what ``trainers/sft.py`` builds from ``recipes/train/sft.yaml`` (its batch size and
max_length, ``group_by_length``, assistant-only loss). "trl" is ``SFTTrainer(model, args=SFTConfig(output_dir,
bf16=False, max_steps, report_to="none"), train_dataset=rows, processing_class=tokenizer)`` and nothing else
(batch 8, random order, padding to the longest row). "ours-no-grouping" is ours with random order, to show how
much of the gap grouping explains. Each run is a fresh subprocess (so its peak RSS is its own) over the same
rows: the real ``synthetic_gsm-rationales`` repo, repeated so every run has enough of them, in ``messages`` form.

Real tokens are the non-padding tokens the model trained on; padded tokens are what it processed (batch x
longest row), so their ratio is the padding waste. MFU is 6·N·real tokens/s against ``measure_peak_flops()``.
Wall time covers ``trainer.train()`` only (no model build or tokenisation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

DEFAULT_DATASET = REPO / "hub" / "datasets" / "scalingdown" / "synthetic_gsm-rationales"
DEFAULT_RECIPE = REPO / "recipes" / "train" / "sft.yaml"
RUNS = ("ours", "trl", "ours-no-grouping")


def repeated_rows_repo(dataset: Path, rows_needed: int, folder: Path) -> Path:
    """A dataset folder holding the repo's train rows repeated until there are at least ``rows_needed``."""
    from datasets import concatenate_datasets, load_dataset

    rows = load_dataset(str(dataset), split="train")
    copies = max(1, math.ceil(rows_needed / len(rows)))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    concatenate_datasets([rows] * copies).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def build_ours(args, output_dir: str, grouping: bool):
    """The trainer ``trainers/sft.py`` builds from the recipe."""
    from trl import ModelConfig, SFTConfig, TrlParser

    from trainers.sft import ScriptArguments, build_run

    argv = ["--config", str(args.recipe), "--size", args.size, "--dataset_name", args.dataset]
    argv += ["--max_steps", str(args.steps), "--save_strategy", "no", "--logging_steps", str(args.steps)]
    argv += ["--output_dir", output_dir, "--disable_tqdm", "true", "--push", "false"]
    if not grouping:
        argv += ["--train_sampling_strategy", "random"]
    script_args, training_args, model_args = TrlParser((ScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(
        argv
    )
    run = build_run(script_args, training_args, model_args)
    return run.trainer, run.size


def build_trl_defaults(args, output_dir: str):
    """``SFTTrainer`` with TRL's defaults on the same rows, tokenizer (chat template) and initial model."""
    from trl import ModelConfig, SFTConfig, SFTTrainer

    from scalingdown.prompts import SMOLLM2_DEFAULT_SYSTEM
    from trainers.sft import ScriptArguments, load_model, load_tokenizer, load_training_rows
    from trainers.sizes import get_size

    size = get_size(args.size)
    rows, teachers, tagged = load_training_rows(ScriptArguments(size=args.size), args.dataset)
    default_system = f"Explain like {teachers[0]}." if tagged else SMOLLM2_DEFAULT_SYSTEM
    tokenizer = load_tokenizer(size, default_system)
    model = load_model(size, ModelConfig(), tokenizer, seed=42)
    config = SFTConfig(output_dir=output_dir, bf16=False, max_steps=args.steps, report_to="none", disable_tqdm=True)
    return SFTTrainer(model, args=config, train_dataset=rows, processing_class=tokenizer), size


def count_tokens(trainer) -> dict:
    """Wrap the trainer's collator to count real (attention-mask) and processed (padded) tokens per batch."""
    counts = {"real": 0, "padded": 0, "batches": 0}
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        counts["real"] += int(mask.sum()) if mask is not None else ids.numel()
        counts["padded"] += ids.numel()
        counts["batches"] += 1
        return batch

    trainer.data_collator = counting
    return counts


def worker(args) -> None:
    """One run in this (fresh) process; prints one JSON line."""
    from transformers import set_seed

    from trainers.cost import training_cost

    set_seed(42)
    with tempfile.TemporaryDirectory() as output_dir:
        if args.worker == "trl":
            trainer, size = build_trl_defaults(args, output_dir)
        else:
            trainer, size = build_ours(args, output_dir, grouping=args.worker == "ours")
        counts = count_tokens(trainer)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    params = size.parameter_counts()["total"]
    cost = training_cost(params, counts["real"], seconds)
    print(
        "RESULT "
        + json.dumps(
            dict(
                config=args.worker,
                steps=trainer.state.global_step,
                batch=trainer.args.per_device_train_batch_size,
                real=counts["real"],
                padded=counts["padded"],
                seconds=seconds,
                tokens_per_second=cost["tokens_per_second"],
                mfu=cost["mfu"],
                peak_flops=cost["peak_flops"],
                device=cost["device"],
                params=params,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
                peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            )
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="8M", help="Registered student size (the ladder's middle by default).")
    parser.add_argument("--steps", type=int, default=12, help="Optimizer steps per run.")
    parser.add_argument("--runs", default="ours,trl", help=f"Comma-separated, from {', '.join(RUNS)}.")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="Rationale dataset repo (folder).")
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="Our recipe.")
    parser.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; use {RUNS}")
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# size {args.size}, {args.steps} steps per run, rows from {args.dataset}")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        # Enough rows that no run wraps into a second epoch (grouping then sees the same pool as random order).
        dataset = repeated_rows_repo(Path(args.dataset), 16 * args.steps, Path(scratch) / "rows")
        for run in runs:
            command = [sys.executable, __file__, "--worker", run, "--size", args.size, "--steps", str(args.steps)]
            command += ["--dataset", str(dataset), "--recipe", args.recipe]
            offline = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, **offline})
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"run {run} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(lines[-1].removeprefix("RESULT ")))

    first = results[0]
    print(f"# {first['params'] / 1e6:.1f}M params; peak {first['peak_flops'] / 1e9:.1f} GFLOP/s on {first['device']}")
    header = f"{'config':<18} {'batch':>5} {'steps':>5} {'real tok':>9} {'padded tok':>10} {'pad %':>6} "
    header += f"{'seconds':>8} {'real tok/s':>10} {'MFU':>7} {'peak RSS':>9}"
    print(header)
    for r in results:
        waste = 1 - r["real"] / r["padded"] if r["padded"] else 0.0
        memory = f"{r['peak_rss_mb']:.0f} MB"
        if r["peak_cuda_mb"] is not None:
            memory += f" / {r['peak_cuda_mb']:.0f} MB cuda"
        print(
            f"{r['config']:<18} {r['batch']:>5} {r['steps']:>5} {r['real']:>9,} {r['padded']:>10,} {waste:>6.1%} "
            f"{r['seconds']:>8.1f} {r['tokens_per_second']:>10.0f} {r['mfu']:>7.2%} {memory:>9}"
        )
    by_name = {r["config"]: r for r in results}
    if "ours" in by_name and "trl" in by_name:
        ratio = by_name["ours"]["tokens_per_second"] / by_name["trl"]["tokens_per_second"]
        print(f"ours / trl defaults: {ratio:.2f}x real tokens/s")


if __name__ == "__main__":
    main()
