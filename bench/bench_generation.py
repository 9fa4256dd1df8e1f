"""Rationale generation throughput: our batched path vs a naive per-example ``generate()`` loop.

    python bench/bench_generation.py --teacher smollm2-135m-instruct --num_prompts 32 --batch_size 32

Same teacher, same teacher-forced prompts (synthetic_gsm), greedy decoding, one run each. Prints generated
tokens/s of both, the ratio, and how many outputs are identical (batching pads on the left, which can
flip a near-tie in greedy decoding).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from datasets_builders.rationales import build_prompt
from datasets_builders.tasks import load_examples
from datasets_builders.teacher_base import GenerationSettings, cut_at_stop
from datasets_builders.teachers import load_teacher


def naive_loop(teacher, prompts, settings: GenerationSettings) -> tuple[list[str], int, float]:
    """What a first script does: one prompt at a time, no padding, no sorting."""
    texts, tokens = [], 0
    start = time.perf_counter()
    for prompt in prompts:
        ids = torch.tensor([teacher.encode([prompt])[0]], device=teacher.device)
        with torch.inference_mode():
            out = teacher.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=teacher.tokenizer.pad_token_id,
                stop_strings=settings.stop,
                tokenizer=teacher.tokenizer,
            )
        new = out[0, ids.shape[1] :]
        tokens += len(new)
        texts.append(cut_at_stop(teacher.tokenizer.decode(new, skip_special_tokens=True), settings.stop))
    return texts, tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="synthetic_gsm")
    parser.add_argument("--num_prompts", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args = parser.parse_args()

    teacher = load_teacher(args.teacher)
    examples, _ = load_examples(args.task, "train", limit=args.num_prompts)
    prompts = [build_prompt(r["question"], r["choices"], r["answer"], "numeric", "teacher_forced") for r in examples]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    teacher.generate(prompts[:2], GenerationSettings(max_new_tokens=4, batch_size=2))  # warm-up

    start = time.perf_counter()
    batched = teacher.generate(prompts, settings)
    batched_s = time.perf_counter() - start
    batched_tokens = sum(g.num_tokens for g in batched)

    naive_texts, naive_tokens, naive_s = naive_loop(teacher, prompts, settings)
    same = sum(a.text == b for a, b in zip(batched, naive_texts, strict=True))

    device = torch.cuda.get_device_name() if teacher.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"teacher={args.teacher} prompts={len(prompts)} max_new_tokens={args.max_new_tokens} device={device}")
    print(f"python={platform.python_version()} torch={torch.__version__}")
    batched_rate, naive_rate = batched_tokens / batched_s, naive_tokens / naive_s
    print(f"batched (batch {args.batch_size}): {batched_tokens} tokens in {batched_s:.1f} s = {batched_rate:.1f} tok/s")
    print(f"naive loop (batch 1):  {naive_tokens} tokens in {naive_s:.1f} s = {naive_rate:.1f} tok/s")
    print(f"speed-up: {batched_rate / naive_rate:.2f}x; identical outputs: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
