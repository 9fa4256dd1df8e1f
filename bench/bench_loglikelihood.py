"""Multiple-choice scoring speed: lm-eval's own pass per choice vs each context run once, same model, same questions.

    python bench/bench_loglikelihood.py --teacher gemma3-270m --shots 3 --limit 30

Scores the task's ``mc`` variant (each choice's log-likelihood) on the dataset repo's validation split with
``eval.measure.measure``, once with shared contexts (eval/loglikelihood.py, the default) and once with lm-eval's
own ``_loglikelihood_tokens``. Prints both wall times, whether every question got the same verdict, the largest
difference between the two paths' log-likelihoods and, last, the speed-up. Needs the task's dataset repo on the Hub
(``make push-data`` or ``make study`` build it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from datasets_builders.teachers import resolve_model_source  # noqa: E402
from eval.measure import MeasureRequest, measure  # noqa: E402
from trainers.cost import device_name  # noqa: E402


def loglikelihoods(sample: dict) -> list[float]:
    """Each choice's log-likelihood, from a sample row's response (lm-eval's ``resps``: [[[logp, greedy]], ...])."""
    return [choice[0][0] for choice in json.loads(sample["response"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="gemma3-270m", help="A teacher spec or a model folder.")
    parser.add_argument("--task", default="arc_easy")
    parser.add_argument("--dataset", default=None, help="Dataset repo folder (default: hub/datasets/scalingdown/).")
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None, help="Default: instruct models.")
    args = parser.parse_args()

    name, path = resolve_model_source(args.teacher)
    dataset = args.dataset or str(REPO / "hub" / "datasets" / "scalingdown" / f"{args.task}-rationales")
    chat = args.chat if args.chat is not None else "instruct" in name
    request = MeasureRequest(
        model_path=path,
        lm_eval_task=f"scalingdown_{args.task}_mc",
        dataset_path=dataset,
        split="validation",
        chat=chat,
        num_fewshot=args.shots,
        limit=args.limit,
        latency_samples=0,
    )
    results = {}
    for shared in (True, False):
        start = time.perf_counter()
        results[shared] = measure(request, share_contexts=shared), time.perf_counter() - start
    (fast, fast_s), (slow, slow_s) = results[True], results[False]
    same = [a["correct"] for a in fast.samples] == [b["correct"] for b in slow.samples]
    gap = max(
        abs(x - y)
        for a, b in zip(fast.samples, slow.samples, strict=True)
        for x, y in zip(loglikelihoods(a), loglikelihoods(b), strict=True)
    )
    print(f"model={name} task={args.task} mc {args.shots}-shot, {fast.n} validation questions, device={device_name()}")
    print(f"lm-eval's own pass per choice: {slow_s:.1f} s, accuracy {slow.accuracy:.3f}")
    print(f"each context run once:         {fast_s:.1f} s, accuracy {fast.accuracy:.3f}")
    print(f"same verdict on every question: {same}; largest log-likelihood difference {gap:.2e}")
    print(f"speed-up: {slow_s / fast_s:.2f}x")


if __name__ == "__main__":
    main()
