"""Score one model on one task variant with lm-eval, and measure its memory and speed, in a process of its own.

    python -m eval.measure --request request.json --output result.json

The runner forks one process per (model, variant) from a forkserver that has imported ``PRELOAD``, so the peak RSS is
that model's own and a model that fails to load or crashes becomes a failed leaderboard row instead of ending the
run. lm-eval's ``hf`` model does the scoring (``simple_evaluate`` with our task YAMLs, the dataset path overridden to
the Hub target); a timing subclass records the wall time and generated tokens of lm-eval's own batched pass, then
replays the first few requests one at a time for latency at batch 1. Log-likelihood variants run each context once
for all its choices (eval/loglikelihood.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from eval.loglikelihood import accepts_logits_to_keep, continuation_loglikelihoods
from eval.tasks.utils import TASKS_DIR, doc_to_answer_line
from scalingdown.compat import hflm_with_generation_hook, load_task_yaml, set_hflm_batch_size


@dataclass
class MeasureRequest:
    """What to score and how: everything that changes the result is in here (and so in the cache key)."""

    model_path: str
    lm_eval_task: str
    dataset_path: str
    split: str = "test"
    chat: bool = True
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 32
    latency_samples: int = 2
    device: str | None = None
    trust_remote_code: bool = False
    max_gen_toks: int | None = None
    backend: str = "transformers"  # or ctranslate2: its float32 generation writes the same texts, faster on CPU


@dataclass
class MeasureResult:
    status: str = "ok"  # ok | failed
    error: str | None = None
    metric: str | None = None
    accuracy: float | None = None
    stderr: float | None = None
    answer_nll: float | None = None  # the nll variant: -log p(gold answer sentence), nats; lower is better
    answer_nll_stderr: float | None = None
    parsed_rate: float | None = None
    n: int = 0
    latency_s: float | None = None  # per answer at the eval batch size (wall / answers)
    tokens_per_s: float | None = None
    latency_s_batch1: float | None = None
    tokens_per_s_batch1: float | None = None
    generated_tokens: int | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    device: str | None = None
    lm_eval_version: str | None = None
    seconds: float | None = None
    samples: list[dict] = field(default_factory=list)


def task_config(
    name: str, dataset_path: str, max_gen_toks: int | None = None, chat: bool = True, split: str = "test"
) -> dict:
    """Our YAML for ``name`` with includes and ``!function`` resolved, reading data from ``dataset_path``.

    lm-eval builds a task from a dict as it is (no merge with the registered YAML), so the runner resolves the
    YAML itself and overrides only the data location, and, for a plain-text model of the ``nll`` variant, puts
    the gold sentence on its own line as the shots show it (lm-eval would glue it to the prompt). ``split``:
    the split scored (``validation`` while choosing, ``test`` once at the end); shots always come from train.
    """
    file = TASKS_DIR / f"{name}.yaml"
    if not file.is_file():
        raise FileNotFoundError(f"no lm-eval task {name} in {TASKS_DIR}")
    config = load_task_yaml(file)
    config["dataset_path"] = dataset_path
    config["test_split"] = split
    if max_gen_toks:
        config.setdefault("generation_kwargs", {})["max_gen_toks"] = max_gen_toks
    if config["output_type"] == "loglikelihood" and not chat:
        config["fewshot_config"] = {**config.get("fewshot_config", {}), "doc_to_target": config["doc_to_target"]}
        config["doc_to_target"] = doc_to_answer_line
    return config


def timed_lm_class():
    """lm-eval's HFLM, recording wall time, answers and generated tokens of every generate/loglikelihood call.

    Tokens are counted as the model produced them (ids up to its first pad/eos), not by re-tokenising the
    answer text, which merges runs of whitespace and would undercount a model that writes them.
    """

    class TimedHFLM(hflm_with_generation_hook()):
        def __init__(self, *args, generator=None, share_contexts: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.share_contexts = share_contexts
            self.calls: list[dict] = []
            self.generation_requests: list = []
            self.new_tokens = 0
            self.generator = generator  # a CTranslate2 generator of the same weights, or None

        def generate_instead(self, context, max_length, stop, **generation_kwargs):
            if self.generator is None:
                return None
            return ctranslate2_generate(self, context, max_length, stop, **generation_kwargs)

        def loglikelihood_instead(self, pairs):
            too_long = any(len(c) + len(k) > self.max_length + 1 for c, k in pairs)  # HFLM truncates those
            usable = self.share_contexts and self.backend == "causal" and accepts_logits_to_keep(self.model)
            if not usable or too_long:
                return None
            return continuation_loglikelihoods(self.model, pairs)

        def on_generation(self, context, output):
            new = output[:, context.shape[1] :]
            ends = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id} - {None}
            finished = torch.zeros_like(new, dtype=torch.bool)
            for token in ends:
                finished |= new == token
            # tokens before the first pad/eos of each row (later ones are padding of a finished row)
            self.new_tokens += int((finished.cumsum(dim=1) == 0).sum())

        def generate_until(self, requests, disable_tqdm: bool = False):
            start = time.perf_counter()
            before = self.new_tokens
            outputs = super().generate_until(requests, disable_tqdm=disable_tqdm)
            seconds = time.perf_counter() - start
            tokens = self.new_tokens - before
            self.calls.append({"kind": "generate", "answers": len(outputs), "tokens": tokens, "seconds": seconds})
            self.generation_requests.extend(requests)
            return outputs

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            start = time.perf_counter()
            outputs = super().loglikelihood(requests, disable_tqdm=disable_tqdm)
            self.calls.append(
                {"kind": "loglikelihood", "answers": len(requests), "seconds": time.perf_counter() - start}
            )
            return outputs

    return TimedHFLM


def ctranslate2_generate(lm, context, max_length: int, stop: list[str], attention_mask=None, **kwargs) -> torch.Tensor:
    """HFLM's batched greedy ``generate`` done by CTranslate2: the padded prompts with their continuations, padded."""
    from datasets_builders.ctranslate2_backend import generate_ids
    from datasets_builders.teacher_base import GenerationSettings

    if kwargs.get("do_sample"):
        raise ValueError("the ctranslate2 eval backend decodes greedily; the task asks for sampling")
    mask = attention_mask if attention_mask is not None else torch.ones_like(context)
    prompts = [row[keep.bool()].tolist() for row, keep in zip(context, mask, strict=True)]
    settings = GenerationSettings(max_new_tokens=max_length - context.shape[1], stop=list(stop))
    rows = generate_ids(lm.generator, lm.tokenizer, prompts, settings)
    width = max((len(r) for r in rows), default=0)
    pad = lm.tokenizer.pad_token_id
    new = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=context.dtype).reshape(len(rows), width)
    return torch.cat([context, new], dim=1)


# lm-eval scores a log-likelihood batch from its whole [batch, tokens, vocab] float32 logits, held twice (logits and
# log-softmax): Gemma-3's 262k vocabulary over 32 three-shot ARC contexts is about 20 GB. A batch is capped so that
# a 512-token context fits SCORING_BYTES.
SCORING_BYTES = 4 * 2**30
SCORING_TOKENS = 512


def loglikelihood_batch_size(batch_size: int, vocab_size: int | None) -> int:
    """The batch a log-likelihood variant (mc, nll) runs at: ``batch_size``, fewer for a large vocabulary."""
    if not vocab_size:
        return batch_size
    return max(1, min(batch_size, SCORING_BYTES // (2 * 4 * SCORING_TOKENS * vocab_size)))


def measure(request: MeasureRequest, share_contexts: bool = True) -> MeasureResult:
    """Run lm-eval on one model and task; raise on any failure (the caller turns it into a failed row).

    ``share_contexts=False``: lm-eval's own log-likelihood pass (the same scores, slower), for the bench."""
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    device = request.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    generator = None
    if request.backend == "ctranslate2":
        from datasets_builders.ctranslate2_backend import load_generator

        generator = load_generator(request.model_path, Path(request.model_path).name, device=device)
    lm = timed_lm_class()(
        pretrained=request.model_path,
        device=device,
        dtype="float32" if device == "cpu" else "auto",
        batch_size=request.batch_size,
        trust_remote_code=request.trust_remote_code,
        generator=generator,
        share_contexts=share_contexts,
    )
    config = task_config(request.lm_eval_task, request.dataset_path, request.max_gen_toks, request.chat, request.split)
    if config.get("output_type") in ("loglikelihood", "multiple_choice"):
        vocab = getattr(getattr(lm.model, "config", None), "vocab_size", None)
        set_hflm_batch_size(lm, loglikelihood_batch_size(request.batch_size, vocab))
    output = simple_evaluate(
        model=lm,
        tasks=[config],
        # our YAMLs are self-contained: indexing lm-eval's thousands of default tasks cost ~14 s per model
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        num_fewshot=request.num_fewshot or None,
        limit=request.limit or None,
        apply_chat_template=request.chat,
        fewshot_as_multiturn=request.chat and bool(request.num_fewshot),
        log_samples=True,
        bootstrap_iters=1000,  # mean metrics get the closed-form stderr; 0 would drop it
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    scores = output["results"][request.lm_eval_task]
    metric = next(m for m in ("exact_match", "answer_nll", "acc") if f"{m},none" in scores)
    result = MeasureResult(metric=metric, device=device, lm_eval_version=lm_eval.__version__)
    value = float(scores[f"{metric},none"])
    stderr = scores.get(f"{metric}_stderr,none")
    stderr = float(stderr) if isinstance(stderr, (int, float)) and not math.isnan(stderr) else None
    if metric == "answer_nll":  # a graded score, not an accuracy: its own columns, so no accuracy is ranked by it
        result.answer_nll, result.answer_nll_stderr = value, stderr
    else:
        result.accuracy, result.stderr = value, stderr
    samples = output["samples"][request.lm_eval_task]
    result.n = len(samples)
    if "parsed,none" in scores:
        result.parsed_rate = float(scores["parsed,none"])
    result.samples = [sample_row(s, metric) for s in samples]

    generate = [c for c in lm.calls if c["kind"] == "generate"]
    timed = generate or lm.calls
    seconds = sum(c["seconds"] for c in timed)
    answers = sum(c["answers"] for c in timed)
    result.latency_s = seconds / answers if answers else None
    if generate:
        result.generated_tokens = sum(c["tokens"] for c in generate)
        result.tokens_per_s = result.generated_tokens / seconds if seconds else None
        probe = lm.generation_requests[: request.latency_samples]
        if probe:
            set_hflm_batch_size(lm, 1)
            start, before = time.perf_counter(), lm.new_tokens
            for r in probe:
                lm.generate_until([r], disable_tqdm=True)
            seconds_1 = time.perf_counter() - start
            tokens_1 = lm.new_tokens - before
            result.latency_s_batch1 = seconds_1 / len(probe)
            result.tokens_per_s_batch1 = tokens_1 / seconds_1 if seconds_1 else None
    mark_unparseable(result)
    result.seconds = time.perf_counter() - started
    return result


def mark_unparseable(result: MeasureResult) -> MeasureResult:
    """A model none of whose answers has a final answer fails, with one of them quoted as the reason."""
    if result.parsed_rate == 0.0 and result.n:
        result.status = "failed"
        example = repr(result.samples[0]["response"])[:120] if result.samples else "''"
        result.error = f"no parseable final answer in {result.n} responses (e.g. {example})"
    return result


def sample_row(sample: dict, metric: str) -> dict:
    """One answered example, compact: what the Space shows side by side."""
    doc = sample.get("doc", {})
    response = sample.get("resps", [[None]])[0]
    response = response[0] if isinstance(response, list) and response else response
    correct = sample.get(metric, 0)
    if metric == "answer_nll":  # nothing is generated: show the score, and whether the gold answer is the greedy one
        response, correct = f"-log p(gold answer) = {sample['answer_nll']:.3f} nats", sample.get("greedy", 0)
    return {
        "id": doc.get("id", str(sample.get("doc_id"))),
        "question": doc.get("question"),
        "answer": doc.get("answer"),
        "response": response if isinstance(response, str) else json.dumps(sample.get("resps"))[:2000],
        "correct": bool(correct),
    }


# What every scoring process needs: a forkserver imports these once (eval.run), so each model's process starts with
# them loaded instead of spending several seconds of its own importing them.
PRELOAD = [
    "eval.measure",
    "lm_eval.evaluator",
    "lm_eval.models.huggingface",
    "lm_eval.tasks",
    "transformers.models.llama.modeling_llama",
    "transformers.models.gemma3.modeling_gemma3",
]


def score_to_file(request: MeasureRequest, output: Path) -> bool:
    """Score ``request`` and write its result (a failure becomes a failed result with its cause); True when ok."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        result = measure(request)
    except Exception as error:  # any failure is one failed row, reported with its cause
        traceback.print_exc()
        result = MeasureResult(status="failed", error=f"{type(error).__name__}: {error}"[:500])
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if torch.cuda.is_available():
        result.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    Path(output).write_text(json.dumps(asdict(result)))
    return result.status == "ok"


def score_in_child(request: dict, output: str, log: str, cwd: str, env: dict[str, str]) -> None:
    """A forked scoring process: the caller's folder and environment, its stdout and stderr into ``log``."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        score_to_file(MeasureRequest(**request), Path(output))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--request", required=True, help="JSON file with a MeasureRequest.")
    parser.add_argument("--output", required=True, help="Where the MeasureResult JSON goes.")
    args = parser.parse_args(argv)
    request = MeasureRequest(**json.loads(Path(args.request).read_text()))
    return 0 if score_to_file(request, Path(args.output)) else 1


if __name__ == "__main__":
    sys.exit(main())
