"""Score every teacher and student of a task and publish the leaderboard (the ``make eval`` stage).

    python -m eval.run --config recipes/eval/default.yaml          # make eval
    python -m eval.run --task synthetic_gsm
    python -m eval.run --task arc_easy --variants cot,mc --models 'arc_easy-sft-*' --limit 50
    python -m eval.run --task synthetic_gsm --variants cot,nll     # + log-likelihood of the gold answer

For each model and variant, ``eval.measure`` runs lm-eval in a process of its own, forked from a forkserver (accuracy
± stderr, peak memory, latency and tokens/s at the eval batch size and at batch 1). Results are cached under
``$SCALINGDOWN_CACHE/eval`` keyed by the model's weights, the task files, the dataset revision and the settings,
so scoring one new model does not re-run the others. Then: the ``{task}-leaderboard`` dataset repo (rows, per-answer
samples, the scaling-down plot and answer in its card), and each student card's ``model-index`` and results section.

The task YAMLs and the cache are found from the package; the Hub folder (``HUB_DIR``, default ``./hub``) and the
report folder (``outputs/eval/<task>``) are relative to the working directory, as for every stage.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import forkserver
from pathlib import Path

from trl import TrlParser

from datasets_builders.tasks import TASKS, get_task
from datasets_builders.teachers import check_teacher_spec
from eval.leaderboard import (
    load_board,
    markdown_table,
    merge,
    merge_samples,
    push_board,
    split_rows,
    update_model_card,
)
from eval.measure import PRELOAD, TASKS_DIR, MeasureRequest, MeasureResult, score_in_child
from eval.models import EvalModel, select, student_models, teacher_models, with_facts
from eval.plots import plot_scaling_down
from eval.report import card_verdict, scaling_down_answer
from scalingdown.arguments import ArgumentError, check_choice, check_count, parse_recipe
from scalingdown.cache import cache_dir
from scalingdown.errors import UserError, run_cli
from scalingdown.hub import HubTarget, dataset_repo_name, folder_revision, leaderboard_repo_name

logger = logging.getLogger("eval.run")
VARIANTS = {"cot": "scalingdown_{task}", "mc": "scalingdown_{task}_mc", "nll": "scalingdown_{task}_nll"}


@dataclass
class EvalArguments:
    """What to score and how. Every field is a flag (``python -m eval.run --help``) and a YAML key."""

    task: str = field(default="synthetic_gsm", metadata={"help": f"One of {sorted(TASKS)}."})
    models: str | None = field(
        default=None, metadata={"help": "Comma-separated model names or globs to (re)score; default: all."}
    )
    teachers: str | None = field(
        default=None,
        metadata={"help": "Teacher specs to score (default: the packaged teachers named in the dataset repo)."},
    )
    variants: str = field(
        default="cot",
        metadata={
            "help": "cot (generate + parse), mc (log-likelihood of each choice) and/or nll (log-likelihood of the "
            "gold answer sentence: a graded score, lower is better)."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset repo or local folder with a test split (default: the Hub target's)."}
    )
    split: str = field(
        default="test",
        metadata={"help": "test, or validation: where choices are made (the best teacher variant, epochs...)."},
    )
    teacher_shots: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated worked-example counts (e.g. 0,3): each teacher is scored once per count, as "
            "<teacher>-<k>shot unless k is its usual count; default: the count it wrote its rationales with."
        },
    )
    teacher_backend: str = field(
        default="transformers",
        metadata={
            "help": "transformers, or ctranslate2: teachers generate through CTranslate2 in float32, the same texts "
            "(bench/bench_generation.py) 2-2.6x faster on CPU."
        },
    )
    limit: int = field(default=50, metadata={"help": "Questions per model; 0 = the whole split."})
    batch_size: int = field(default=32, metadata={"help": "lm-eval batch size (latency is also measured at 1)."})
    latency_samples: int = field(default=2, metadata={"help": "Questions replayed one by one for batch-1 latency."})
    max_gen_toks: int | None = field(default=None, metadata={"help": "Override the task's max generated tokens."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 (default: cuda if available)."})
    force: bool = field(default=False, metadata={"help": "Ignore cached results and score again."})
    push: bool = field(default=True, metadata={"help": "Push the leaderboard repo and update student cards."})

    def __post_init__(self) -> None:
        get_task(self.task)
        unknown = set(self.variant_list) - set(VARIANTS)
        if unknown or not self.variant_list:
            raise ArgumentError(f"VARIANTS={self.variants} (--variants): use cot, mc and/or nll")
        if "mc" in self.variant_list and not (TASKS_DIR / f"scalingdown_{self.task}_mc.yaml").is_file():
            raise ArgumentError(f"{self.task} has no multiple-choice variant; use VARIANTS=cot (--variants)")
        check_choice(self.split, ["test", "validation"], "--split", "EVAL_SPLIT")
        check_choice(self.teacher_backend, ["transformers", "ctranslate2"], "--teacher_backend")
        for shots in self.shot_list:
            check_count(shots, "--teacher_shots", "worked examples", "TEACHER_SHOTS", zero="zero-shot")
        check_count(self.limit, "--limit", "questions", "EVAL_LIMIT", zero="the whole split")
        check_count(self.batch_size, "--batch_size", "questions per batch", "EVAL_BATCH_SIZE")
        check_count(self.latency_samples, "--latency_samples", "questions", zero="no batch-1 latency")
        check_count(self.max_gen_toks, "--max_gen_toks", "tokens")
        for spec in (t.strip() for t in (self.teachers or "").split(",") if t.strip()):
            if not spec.startswith("openai:"):
                check_teacher_spec(spec)

    @property
    def variant_list(self) -> list[str]:
        return [v.strip() for v in self.variants.split(",") if v.strip()]

    @property
    def shot_list(self) -> list[int]:
        try:
            return [int(k) for k in str(self.teacher_shots or "").split(",") if k.strip()]
        except ValueError as error:
            raise ArgumentError(f"TEACHER_SHOTS={self.teacher_shots} (--teacher_shots): use counts like 0,3") from error


def task_files_key() -> str:
    """Changes whenever a task YAML or utils.py does (their prompts and scoring are part of a result)."""
    digest = hashlib.sha256()
    for file in sorted(TASKS_DIR.glob("*")):
        if file.is_file() and file.suffix in (".yaml", ".py", "") and not file.name.startswith("."):
            digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:16]


def check_test_split(location: str, task: str, split: str = "test") -> None:
    """Refuse, before any model is scored, a dataset without a usable split to score."""
    from datasets import load_dataset

    try:
        test = load_dataset(location, split=split)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(
            f"{location} has no {split} split ({type(error).__name__}: {str(error)[:120]}); "
            f"run `make push-data TASK={task}` (it writes one), or score another dataset with a {split} split: "
            "ARGS='--dataset_name <repo or folder>'"
        ) from error
    if len(test) == 0:
        limit = "TEST_LIMIT" if split == "test" else "VALIDATION_LIMIT"
        raise UserError(f"{location} has an empty {split} split; run `make push-data TASK={task} {limit}=100`")


def measure_request(
    model: EvalModel,
    lm_eval_task: str,
    location: str,
    *,
    split: str = "test",
    limit: int | None,
    batch_size: int,
    latency_samples: int,
    device: str | None = None,
    max_gen_toks: int | None = None,
    backend: str = "transformers",
) -> MeasureRequest:
    """What ``eval.measure`` scores: one model, prompted as it is scored everywhere, on one lm-eval task over ``split``
    at ``location`` (``limit`` 0 or None: the whole split)."""
    return MeasureRequest(
        model_path=model.path,
        lm_eval_task=lm_eval_task,
        dataset_path=location,
        split=split,
        chat=model.chat,
        num_fewshot=model.num_fewshot,
        limit=limit or None,
        batch_size=batch_size,
        latency_samples=latency_samples,
        device=device,
        trust_remote_code=model.trust_remote_code,
        max_gen_toks=max_gen_toks,
        backend=backend,
    )


@functools.cache
def scoring_processes() -> multiprocessing.context.BaseContext:
    """Where scoring processes come from: one forkserver per runner, with ``eval.measure.PRELOAD`` imported once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()  # it imports while this process reads the board and discovers models
    return context


def run_measure(request: MeasureRequest, log_dir: Path, name: str | None = None) -> MeasureResult:
    """``eval.measure`` in a process of its own: its own peak memory, and a crash becomes a failed result. The log is
    ``<name>-<task>.log`` (``name``: the model's, so teacher variants of one folder keep their own logs)."""
    log_file = log_dir / f"{name or Path(request.model_path).name}-{request.split}-{request.lm_eval_task}.log"
    # This process's working directory and environment, so relative model and dataset paths (the default ./hub)
    # mean the same there whatever folder the forkserver started in.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as scratch:
        output_file = Path(scratch) / "result.json"
        process = scoring_processes().Process(
            target=score_in_child, args=(asdict(request), str(output_file), str(log_file), os.getcwd(), env)
        )
        process.start()
        process.join()
        if output_file.is_file():
            return MeasureResult(**json.loads(output_file.read_text()))
        tail = log_file.read_text()[-400:].strip().splitlines() if log_file.is_file() else []
        return MeasureResult(status="failed", error=f"scoring process exited {process.exitcode}: {' '.join(tail[-3:])}")


def result_row(model: EvalModel, result: MeasureResult, context: dict) -> dict:
    """One leaderboard row from a model and its result."""
    return {
        "model": model.name,
        "role": model.role,
        "task": context["task"],
        "split": context["split"],
        "variant": context["variant"],
        "lm_eval_task": context["lm_eval_task"],
        "metric": result.metric,
        "accuracy": result.accuracy,
        "stderr": result.stderr,
        "answer_nll": result.answer_nll,
        "answer_nll_stderr": result.answer_nll_stderr,
        "parsed_rate": result.parsed_rate,
        "n": result.n,
        "status": result.status,
        "error": result.error,
        "method": model.method,
        "size": model.size,
        "init": model.init,
        "lora": model.lora,
        "params_total": model.params_total,
        "params_non_embedding": model.params_non_embedding,
        "chat": model.chat,
        "num_fewshot": model.num_fewshot,
        "batch_size": context["batch_size"],
        "peak_rss_mb": result.peak_rss_mb,
        "peak_gpu_mb": result.peak_gpu_mb,
        "latency_s": result.latency_s,
        "tokens_per_s": result.tokens_per_s,
        "latency_s_batch1": result.latency_s_batch1,
        "tokens_per_s_batch1": result.tokens_per_s_batch1,
        "device": result.device,
        "model_repo": model.repo_id or model.path,
        "model_url": context["urls"].get(model.name),
        "revision": model.revision,
        "weights_key": model.weights_key,
        "dataset_repo": context["dataset_repo"],
        "dataset_revision": context["dataset_revision"],
        "limit": context["limit"],
        "lm_eval_version": result.lm_eval_version,
        "evaluated_at": context["evaluated_at"],
    }


def discover(args: EvalArguments, target: HubTarget, location: str) -> list[EvalModel]:
    """Teachers (named by the dataset repo or ``--teachers``) and the task's students, filtered by ``--models``."""
    from datasets import load_dataset

    from datasets_builders.teachers import PACKAGED_TEACHERS

    if args.teachers:
        specs = [t.strip() for t in args.teachers.split(",") if t.strip()]
    else:
        try:
            named = sorted(set(load_dataset(location, split="train")["teacher"]))
        except (ValueError, FileNotFoundError):
            named = []
        specs = [t for t in named if t in PACKAGED_TEACHERS]
        for other in sorted(set(named) - set(specs)):
            logger.warning("teacher %s is not packaged: pass --teachers <its spec> to score it", other)
    teachers = teacher_models(specs)
    if args.teacher_shots:
        teachers = [variant for teacher in teachers for variant in shot_variants(teacher, args.shot_list)]
    models = select(teachers + student_models(args.task, target), args.models)
    return [with_facts(m) for m in models]


def shot_variants(teacher: EvalModel, counts: list[int]) -> list[EvalModel]:
    """One teacher per worked-example count, named ``<teacher>-<k>shot`` unless ``k`` is how it is usually scored:
    each teacher gets its best prompt, picked on validation."""
    return [
        teacher if k == teacher.num_fewshot else replace(teacher, name=f"{teacher.name}-{k}shot", num_fewshot=k)
        for k in counts
    ]


def data_key(location: str, split: str, num_fewshot: int, revision: str | None) -> str:
    """What a score depends on in the dataset: the bytes of the scored split (and of train, which holds the
    few-shot examples) in a local repo, else its revision. A new commit that adds rationales to train keeps every
    zero-shot score cached; one that changes the questions scores them again."""
    splits = [split, "train"] if num_fewshot else [split]
    files = sorted(f for name in splits for f in (Path(location) / "data").glob(f"{name}-*.parquet"))
    if not files:
        return str(revision)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def main(args: EvalArguments) -> dict:
    """Score, publish, and return ``{"rows": [...], "answers": {variant: sentence}, "board": location}``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    target = HubTarget.from_env()
    target.check_writable()
    if args.dataset_name is None:
        target.require("dataset", dataset_repo_name(args.task), f"run `make push-data TASK={args.task}` first")
    elif not Path(args.dataset_name).exists() and args.dataset_name.count("/") != 1:
        raise ArgumentError(f"--dataset_name {args.dataset_name}: no such folder, and not a Hub id (namespace/name)")
    location = args.dataset_name or target.location("dataset", dataset_repo_name(args.task))
    check_test_split(location, args.task, args.split)
    scoring_processes()
    models = discover(args, target, location)
    if not models:
        raise UserError(
            f"nothing to score for {args.task}: no teacher in {location} and no model repo named {args.task}-* on "
            f"{target.kind} target; run `make push-data TASK={args.task}` and `make train TASK={args.task}` first"
        )
    cache = cache_dir("eval", args.task)
    log_dir = Path("outputs") / "eval" / args.task  # beside ./hub, in the working directory, as the trainers' outputs
    log_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "task": args.task,
        "split": args.split,
        "batch_size": args.batch_size,
        "dataset_repo": args.dataset_name or target.repo_id(dataset_repo_name(args.task)),
        "dataset_revision": folder_revision(location)
        if args.dataset_name
        else target.revision("dataset", dataset_repo_name(args.task)),
        "limit": args.limit or None,
        "evaluated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "urls": {m.name: target.url("model", m.name) for m in models if m.repo_id},
    }
    tasks_key = task_files_key()
    new_rows, new_samples = [], []
    for variant in args.variant_list:
        lm_eval_task = VARIANTS[variant].format(task=args.task)
        for model in models:
            request = measure_request(
                model,
                lm_eval_task,
                location,
                split=args.split,
                limit=args.limit,
                batch_size=args.batch_size,
                latency_samples=args.latency_samples,
                device=args.device,
                max_gen_toks=args.max_gen_toks,
                backend=args.teacher_backend if model.role == "teacher" and variant == "cot" else "transformers",
            )
            data = data_key(location, args.split, request.num_fewshot, context["dataset_revision"])
            key_parts = [model.weights_key, tasks_key, data, json.dumps(asdict(request))]
            key = hashlib.sha256("|".join(map(str, key_parts)).encode()).hexdigest()[:20]
            cached = cache / f"{model.name}-{variant}-{key}.json"
            if model.problem:
                result = MeasureResult(status="failed", error=model.problem)
            elif cached.is_file() and not args.force:
                result = MeasureResult(**json.loads(cached.read_text()))
                print(f"{model.name} [{variant}]: cached ({cached.name})")
            else:
                print(f"{model.name} [{variant}]: scoring {args.limit or 'all'} questions ...", flush=True)
                result = run_measure(request, log_dir, model.name)
                if result.status == "ok":
                    cached.write_text(json.dumps(asdict(result)))
            row = result_row(model, result, {**context, "variant": variant, "lm_eval_task": lm_eval_task})
            new_rows.append(row)
            if args.split == "test":  # the Space shows test answers side by side
                new_samples += [{"model": model.name, "variant": variant, **s} for s in result.samples]
            score = "–" if result.accuracy is None else f"{100 * result.accuracy:.1f}%"
            if result.answer_nll is not None:
                score = f"answer NLL {result.answer_nll:.3f} nats"
            print(f"  {model.name} [{variant}]: {result.status} {score} {result.error or ''}".rstrip(), flush=True)

    old_rows, old_samples = load_board(target, args.task)
    rows = merge(old_rows, new_rows)
    samples = merge_samples(old_samples, new_samples)
    test_rows, validation_rows = split_rows(rows, "test"), split_rows(rows, "validation")
    answers, plots = {}, {}
    for variant in args.variant_list:
        answers[variant] = scaling_down_answer(test_rows, args.task, variant, validation_rows)
        plots[variant] = plot_scaling_down(test_rows, args.task, log_dir / f"scaling_down_{variant}.png", variant)
    report = log_dir / "report.md"
    report.write_text(
        f"# Scaling down: {args.task}\n\n"
        + "\n\n".join(answers.values())
        + "\n\n"
        + "".join(f"![{v}](scaling_down_{v}.png)\n" for v in plots)
        + "\n"
        + markdown_table(rows)
        + "\n"
    )
    print(markdown_table(rows))
    board = leaderboard_repo_name(args.task)
    if args.push:
        commit = push_board(target, args.task, rows, samples, answers, plots)
        print(f"pushed {target.location('dataset', board)} @ {commit[:10]}")
        for model in models:
            if model.role != "teacher":
                mine = [r for r in test_rows if r["model"] == model.name]
                verdict = card_verdict(model.name, test_rows, validation_rows)
                update_model_card(
                    target, model.name, mine, target.repo_id(board), target.url("dataset", board), verdict
                )
    for sentence in answers.values():
        print(f"\n{sentence}")
    print(f"\nreport: {report} (plot beside it)")
    return {"rows": rows, "answers": answers, "board": target.location("dataset", board), "report": str(report)}


def cli(argv: list[str] | None = None) -> dict:
    parser = TrlParser(
        (EvalArguments,),
        description="Score the teachers and students of a task and publish its leaderboard.",
        epilog="--config RECIPE.yaml (recipes/eval/) reads any of these options from a YAML recipe; flags given win.",
    )
    (args,) = parse_recipe(parser, argv)
    return main(args)


if __name__ == "__main__":
    run_cli(cli)
