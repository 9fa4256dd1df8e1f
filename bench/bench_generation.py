"""Rationale generation throughput: the previous push-data path vs the current one, side by side in one run.

    python bench/bench_generation.py --teacher smollm2-135m-instruct --num_prompts 128
    python bench/bench_generation.py --smoke --teacher path/to/tokenizer-folder   # seconds: the suite runs it

Same teacher, the teacher-forced synthetic_gsm prompts push-data builds (``--shots`` worked examples from the train
split open each), greedy. The previous path is transformers float32 at batch 16, every prompt prefilled whole; the
levers are timed on their own (the worked examples run once per batch of 16, in one process, their KV cache copied to
each row or held once for all rows; with ``--more`` batch 32
per worker, transformers' continuous batching at 256 and 512 tokens per forward pass, batch 64, int8 linear layers and
CTranslate2), and the path marked ``push-data:`` is ``PushDataArguments``' defaults (the worked examples run once per
batch of 16, one single-threaded worker process per core). Each path gets what push-data hands one generate() call (a
shard of prompts); paths run interleaved, one shard at a time, so machine load hits each alike.
Prints tokens/s per path, the share of outputs identical to the previous path's, the fraction of the FLOP limit
(2 x parameters FLOPs per generated token against this run's matmul probe) and, last, the speed-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace

import torch

from datasets_builders.push_data import PushDataArguments
from datasets_builders.rationales import build_prompt
from datasets_builders.teacher_base import GenerationSettings, TeacherPrompt
from datasets_builders.teacher_pool import resolve_workers, threads_per_worker
from datasets_builders.teachers import TransformersTeacher, load_teacher
from trainers.cost import device_name, measure_peak_flops
from trainers.sizes import save_tiny_llama

# push-data before: transformers float32, 16 prompts per call, every prompt prefilled whole
PREVIOUS = GenerationSettings(batch_size=16, share_head=False)


@dataclass
class TimedPath:
    name: str
    teacher: TransformersTeacher
    settings: GenerationSettings
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def run(self, prompts: list[TeacherPrompt]) -> None:
        start = time.perf_counter()
        generations = self.teacher.generate(prompts, self.settings)
        self.seconds += time.perf_counter() - start
        self.tokens += sum(g.num_tokens for g in generations)
        self.texts += [g.text for g in generations]

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def smoke_teacher(tokenizer_source: str) -> str:
    """A tiny random Llama with ``tokenizer_source``'s tokenizer, in a temporary folder."""
    return str(save_tiny_llama(tokenizer_source, tempfile.mkdtemp(prefix="bench-generation-")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="smollm2-135m-instruct")
    parser.add_argument("--num_prompts", type=int, default=128)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--shots", type=int, default=PushDataArguments.shots, help="push-data's --shots.")
    parser.add_argument(
        "--batch_size", type=int, default=PushDataArguments.batch_size, help="push-data's --batch_size, for its path."
    )
    parser.add_argument("--more", action="store_true", help="Also time batch 64, int8 weights and CTranslate2.")
    parser.add_argument("--smoke", action="store_true", help="A tiny model from a config and a few prompts.")
    args = parser.parse_args()

    push = PushDataArguments(
        teachers=args.teacher, max_new_tokens=args.max_new_tokens, shots=args.shots, batch_size=args.batch_size
    )
    current = push.generation_settings()
    previous = replace(PREVIOUS, max_new_tokens=args.max_new_tokens)
    spec = args.teacher
    if args.smoke:
        spec, args.num_prompts, args.max_new_tokens = smoke_teacher(args.teacher), 6, 8
        current = replace(current, batch_size=4, batch_tokens=64, max_new_tokens=8)
        previous = replace(previous, max_new_tokens=8)
    # push-data's own prompts: the same worked examples open every request (CTranslate2 runs that head once)
    examples, _ = push.examples("train", args.num_prompts)
    shots = push.worked_examples("numeric")
    prompts = [build_prompt(r["question"], r["choices"], r["answer"], "numeric", push.mode, shots) for r in examples]

    batched = replace(current, backend="transformers", int8=False, continuous_batching=False, workers=1)
    continuous = replace(batched, continuous_batching=True)
    batch16 = replace(batched, batch_size=16)
    levers = [
        ("transformers float32, head run once, copied to each row, one process", replace(batch16, head_kv="copied")),
        ("transformers float32, head run once, shared by all rows, one process", batch16),
    ]
    if args.more:
        levers += [
            ("transformers float32, head run once, worker per core", replace(batched, workers=0, batch_size=32)),
            ("transformers float32, continuous batching", replace(continuous, batch_tokens=256)),
            ("transformers float32, continuous batching", replace(continuous, batch_tokens=512)),
            ("transformers float32, head run once", replace(batched, batch_size=64)),
            ("transformers int8, head run once", replace(batched, int8=True, batch_size=16)),
            ("transformers int8, continuous batching", replace(continuous, int8=True)),
            ("ctranslate2 float32, static prompt", replace(batched, backend="ctranslate2", batch_size=64)),
            ("ctranslate2 int8, static prompt", replace(batched, backend="ctranslate2", int8=True, batch_size=64)),
        ]
    if current not in [settings for _, settings in levers]:
        settings = "defaults" if args.batch_size == PushDataArguments.batch_size else f"--batch_size {args.batch_size}"
        levers.append((f"push-data's {settings}", current))
    paths = [TimedPath("previous: transformers float32, batch 16", load_teacher(spec), previous)]
    for name, settings in levers:
        default = settings == current
        per_call = f"{settings.batch_tokens} tokens" if settings.continuous_batching else f"batch {settings.batch_size}"
        teacher = load_teacher(spec, backend=settings.backend)
        workers = resolve_workers(settings.workers, teacher.device)
        if workers > 1:
            per_call += f", {workers} processes x {threads_per_worker(workers)} thread"
        paths.append(TimedPath(f"{'push-data: ' if default else ''}{name}, {per_call}", teacher, settings))
    paths.sort(key=lambda path: path.name.startswith("push-data"))  # push-data's own path last
    params = sum(p.numel() for p in paths[0].teacher.model.parameters())
    for path in paths:  # warm-up: the one-off CTranslate2 conversions, and worker processes started (one batch each)
        split = resolve_workers(path.settings.workers, path.teacher.device) > 1
        warm = prompts[: path.settings.batch_size + 1] if split else prompts[:2]
        path.teacher.generate(warm, replace(path.settings, max_new_tokens=2))
    peak = measure_peak_flops()
    loads = [os.getloadavg()[0]]
    chunk = push.shard_size  # what push-data hands generate() at once: one shard
    for start in range(0, len(prompts), chunk):
        for path in paths:
            path.run(prompts[start : start + chunk])
        loads.append(os.getloadavg()[0])
        rates = ", ".join(f"{path.rate:.1f}" for path in paths)
        print(
            f"prompts {min(start + chunk, len(prompts))}/{len(prompts)}: tok/s so far {rates}; load {loads[-1]:.2f}",
            flush=True,
        )

    print(f"teacher={args.teacher} prompts={len(prompts)} max_new_tokens={args.max_new_tokens} device={device_name()}")
    print(
        f"python={platform.python_version()} torch={torch.__version__} "
        f"load average (1 min) {min(loads):.2f}-{max(loads):.2f}"
    )
    limit = peak["flops"] / (2 * params)
    print(
        f"FLOP limit: {limit:.0f} tokens/s ({params / 1e6:.1f}M parameters, "
        f"{peak['flops'] / 1e9:.0f} GFLOP/s {peak['probe']})"
    )
    base = paths[0]
    for path in paths:
        same = sum(a == b for a, b in zip(path.texts, base.texts, strict=True))
        print(
            f"{path.name:<36} {path.tokens:>6} tokens in {path.seconds:6.1f} s = {path.rate:7.1f} tok/s "
            f"({path.rate / limit:.0%} of the FLOP limit, {path.rate / base.rate:.2f}x); "
            f"identical to previous: {same}/{len(prompts)} ({same / len(prompts):.0%})"
        )
    print(
        f"speed-up of push-data's path over the previous one: {paths[-1].rate / base.rate:.2f}x "
        f"({paths[-1].rate / limit:.0%} of the FLOP limit)"
    )


if __name__ == "__main__":
    main()
