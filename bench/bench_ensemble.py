"""What an ensemble costs at generation: one member vs the ensemble, with per-member KV caches vs without a cache.

    python bench/bench_ensemble.py --size 1M --members 3 --new_tokens 64 --batch_sizes 1,8

Builds ``--members`` students of ``--size`` with random weights (speed does not depend on training), writes them
as an ensemble repo folder as ``make train METHOD=ensemble`` does (``trainers.ensemble_repo.write_ensemble_files``),
loads it with ``EnsembleForCausalLM.from_pretrained``, and times greedy ``generate()`` of exactly ``--new_tokens``
tokens on the synthetic_gsm student prompt: the first member alone, the ensemble with its per-member KV caches
(``EnsembleCache``, the default), and the ensemble with ``use_cache=False`` (every step recomputes the whole prefix,
the simple alternative). Each figure is the best of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere


def timed_generate(model, inputs: dict, new_tokens: int, use_cache: bool, repeats: int) -> float:
    """Best wall time of ``repeats`` greedy generations of exactly ``new_tokens`` tokens (after one warm-up)."""
    import torch

    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache)
    with torch.inference_mode():
        model.generate(**inputs, **{**options, "max_new_tokens": 2, "min_new_tokens": 2})
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(**inputs, **options)
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1M", help="Member size (python -m trainers.sizes).")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--batch_sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from datasets_builders.synthetic_gsm import generate_examples
    from scalingdown.prompts import SMOLLM2_DEFAULT_SYSTEM, student_messages
    from trainers.ensemble_model import EnsembleForCausalLM
    from trainers.ensemble_repo import write_ensemble_files
    from trainers.sft import load_tokenizer
    from trainers.sizes import get_size

    size = get_size(args.size)
    tokenizer = load_tokenizer(size, SMOLLM2_DEFAULT_SYSTEM)
    tokenizer.padding_side = "left"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        members = []
        for index in range(1, args.members + 1):
            model = size.build_model(seed=index)
            model.generation_config.eos_token_id = tokenizer.eos_token_id
            model.save_pretrained(folder / f"round-{index}")
            tokenizer.save_pretrained(folder / f"round-{index}")
            members.append({"name": f"round-{index}", "subfolder": f"round-{index}", "size": size.name})
        write_ensemble_files(folder, members, tokenizer)
        ensemble = EnsembleForCausalLM.from_pretrained(folder).eval()
        single = ensemble.members[0]

        examples = generate_examples(max(int(b) for b in args.batch_sizes.split(",")), split="test")
        print(f"{args.members} x {size.name}, {args.new_tokens} new tokens, {torch.get_num_threads()} threads")
        print("| batch | one member | ensemble (per-member KV caches) | ensemble (no cache) | cache speed-up |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            prompts = [
                tokenizer.apply_chat_template(
                    student_messages(e.question, e.choices, "numeric"), tokenize=False, add_generation_prompt=True
                )
                for e in examples[:batch]
            ]
            inputs = tokenizer(prompts, return_tensors="pt", padding=True)
            tokens = batch * args.new_tokens
            alone = timed_generate(single, inputs, args.new_tokens, True, args.repeats)
            cached = timed_generate(ensemble, inputs, args.new_tokens, True, args.repeats)
            uncached = timed_generate(ensemble, inputs, args.new_tokens, False, args.repeats)
            print(
                f"| {batch} | {tokens / alone:.0f} tok/s | {tokens / cached:.0f} tok/s ({cached / alone:.2f}x the "
                f"time) | {tokens / uncached:.0f} tok/s ({uncached / alone:.2f}x) | {uncached / cached:.2f}x |"
            )


if __name__ == "__main__":
    main()
