"""What pre-training each scratch size costs on this machine: a short timed run per size, then the cost table and
its extrapolation to Chinchilla-optimal training (20 tokens per parameter).

    python bench/bench_pretrain_cost.py                                   # every scratch size, list price here
    python bench/bench_pretrain_cost.py --sizes 1M,8M --steps 8 --price_per_device_hour 0.05

Each size runs ``--warmup_steps`` untimed optimizer steps (allocation, first-call overheads) and then ``--steps``
timed ones, through ``trainers.pretrain``'s own trainer and recipe (``recipes/pretrain/scratch.yaml``: packed
blocks of ``max_length`` tokens, batch ``per_device_train_batch_size``). The text is the corpus repo
``{ORG}/pretrain-corpus`` when the Hub target has one, else the synthetic_gsm training questions (no teacher needed);
the words do not change the speed. tokens/s and MFU (6·N·tokens/s against the measured matmul peak) and the dollars
come from ``trainers/cost.py``; the Chinchilla columns assume the measured throughput holds for the whole run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

DEFAULT_RECIPE = REPO / "recipes" / "pretrain" / "scratch.yaml"


def bench_rows(dataset: str | None, documents: int):
    """The text the bench trains on: ``dataset``, else the corpus repo on the Hub target, else task questions."""
    from datasets import Dataset

    from datasets_builders.corpus import CorpusArguments
    from datasets_builders.corpus.sources import task_documents
    from scalingdown.hub import CORPUS_REPO_NAME, HubTarget
    from trainers.pretrain import PretrainArguments, load_corpus

    target = HubTarget.from_env()
    if dataset or target.exists("dataset", CORPUS_REPO_NAME):
        location = dataset or target.location("dataset", CORPUS_REPO_NAME)
        return load_corpus(PretrainArguments(max_documents=documents), location), location
    corpus_args = CorpusArguments(sources="task", task_limit=documents, decontaminate=False)
    texts = [doc.text for doc in task_documents(corpus_args)]
    return Dataset.from_dict({"text": texts}), "synthetic_gsm training questions"


def time_size(name: str, rows, args) -> dict:
    """Train ``warmup_steps + steps`` steps of one size; tokens and seconds of the timed steps only."""
    from transformers import TrainerCallback
    from trl import ModelConfig, SFTConfig, TrlParser

    from trainers.cost import training_cost
    from trainers.pretrain import PretrainArguments, build_trainer
    from trainers.sizes import get_size

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args_, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--config", str(args.recipe), "--size", name, "--output_dir", tmp, "--push", "false"]
        argv += ["--max_steps", str(args.warmup_steps + args.steps), "--save_strategy", "no"]
        argv += ["--logging_steps", str(args.warmup_steps + args.steps), "--disable_tqdm", "true"]
        if args.max_length:
            argv += ["--max_length", str(args.max_length)]
        if args.batch_size:
            argv += ["--per_device_train_batch_size", str(args.batch_size)]
        parser = TrlParser((PretrainArguments, SFTConfig, ModelConfig))
        _, training_args, model_args = parser.parse_args_and_config(argv)
        size = get_size(name)
        times = StepTimes()
        trainer, _ = build_trainer(size, rows, training_args, model_args, callbacks=[times])
        trainer.train()
    (start, tokens_before), (end, tokens_after) = times.marks[args.warmup_steps - 1], times.marks[-1]
    counts = size.parameter_counts()
    cost = training_cost(counts["total"], tokens_after - tokens_before, end - start)
    return {"size": name, "params": counts, "tokens_per_step": (tokens_after - tokens_before) / args.steps, **cost}


def cost_table(results: list[dict], price) -> str:
    from trainers.cost import dollar_cost, format_dollars, format_duration
    from trainers.sizes import format_params

    lines = [
        "| size | params (total / non-emb) | tokens/s | MFU | $ per B tokens | Chinchilla tokens (20·N) | "
        "Chinchilla wall time | Chinchilla $ | $ per M params (Chinchilla) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        money = dollar_cost(r["params"]["total"], r["tokens"], r["seconds"], price)
        lines.append(
            f"| {r['size']} | {format_params(r['params']['total'])} / {format_params(r['params']['non_embedding'])} "
            f"| {r['tokens_per_second']:,.0f} | {r['mfu']:.1%} | {format_dollars(money['dollars_per_billion_tokens'])} "
            f"| {money['chinchilla_tokens'] / 1e6:,.0f}M | {format_duration(money['chinchilla_seconds'])} "
            f"| {format_dollars(money['chinchilla_dollars'])} "
            f"| {format_dollars(money.get('chinchilla_dollars_per_million_params'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    from trainers.cost import device_price
    from trainers.sizes import SIZES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scratch = [s.name for s in SIZES.values() if s.init == "scratch"]
    parser.add_argument("--sizes", default=",".join(scratch), help="comma-separated scratch sizes")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per size")
    parser.add_argument("--warmup_steps", type=int, default=1, help="untimed steps first")
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="trainers.pretrain recipe")
    parser.add_argument("--max_length", type=int, default=0, help="override the recipe's block length")
    parser.add_argument("--batch_size", type=int, default=0, help="override the recipe's per-device batch")
    parser.add_argument("--dataset", default=None, help="corpus repo or folder (default: the Hub target's)")
    parser.add_argument("--documents", type=int, default=2000, help="documents to read")
    parser.add_argument("--price_per_device_hour", type=float, default=None, help="USD; default: list price")
    parser.add_argument("--device_kind", default=None, help="cpu-core, a10g, a100, h100 (default: detected)")
    args = parser.parse_args(argv)
    if args.warmup_steps < 1:
        parser.error("--warmup_steps must be at least 1: the timed window starts at the end of a step")
    logging.basicConfig(level=logging.WARNING)

    rows, source = bench_rows(args.dataset, args.documents)
    price = device_price(args.device_kind, args.price_per_device_hour)
    print(f"text: {source} ({len(rows)} documents); price: {price.describe()}", flush=True)
    results = []
    for name in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        result = time_size(name, rows, args)
        results.append(result)
        print(
            f"{name}: {result['tokens']:,} tokens in {result['seconds']:.1f} s = {result['tokens_per_second']:,.0f} "
            f"tokens/s, MFU {result['mfu']:.1%}",
            flush=True,
        )
    print(f"\npeak {results[0]['peak_flops'] / 1e9:.1f} GFLOP/s ({results[0]['peak_probe']}) on {results[0]['device']}")
    print(
        f"{args.steps} timed steps of {results[0]['tokens_per_step']:,.0f} tokens after {args.warmup_steps} untimed\n"
    )
    print(cost_table(results, price))
    return results


if __name__ == "__main__":
    main()
