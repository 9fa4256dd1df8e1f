"""Turn a task into a teacher-rationale dataset repo on a Hub target (the ``make push-data`` stage).

    python -m datasets_builders.push_data --task gsm8k --data ../shared/data/gsm8k --limit 50 \
        --teachers smollm2-135m-instruct,gemma3-270m
    python -m datasets_builders.push_data --config recipes/push_data/synthetic_gsm.yaml

Each teacher's generations are written as parquet shards under ``--work_dir`` while it runs, so an
interrupted build resumes where it stopped. Filters run when the repo is assembled, so changing a
filter never needs a teacher again.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset, Features, List, Value
from huggingface_hub import DatasetCard, DatasetCardData

from datasets_builders.decontamination import find_overlap
from datasets_builders.logits import LogitsSettings, build_logits, logits_config, storage_figures
from datasets_builders.rationales import (
    PROMPT_MODES,
    PROMPT_VERSION,
    FilterSettings,
    build_prompt,
    check_rationale,
    finish_rationale,
)
from datasets_builders.shards import ShardStore
from datasets_builders.tasks import get_task, load_examples
from datasets_builders.teacher_base import GenerationSettings
from datasets_builders.teacher_shards import TeacherRequest, generate_into_shards, teacher_shard_dir
from datasets_builders.teachers import DEFAULT_TEACHERS, check_teacher_spec, resolve_model_source, teacher_name
from model_cards import template_path
from scalingdown.answers import format_final_answer
from scalingdown.arguments import ArgumentError, check_choice, check_count, check_range, parse_recipe
from scalingdown.cache import cache_dir
from scalingdown.dataset_repo import RepoConfig, write_data_files
from scalingdown.errors import UserError, run_cli
from scalingdown.hub import HubTarget, dataset_repo_name
from scalingdown.prompts import student_messages
from scalingdown.schema import EXAMPLE_FEATURES

logger = logging.getLogger("push_data")

MESSAGES = List({"role": Value("string"), "content": Value("string")})
RATIONALE_FEATURES = Features(
    {
        **EXAMPLE_FEATURES,
        "teacher": Value("string"),
        "mode": Value("string"),
        "rationale": Value("string"),
        "consistent": Value("bool"),
        "messages": MESSAGES,
    }
)
# Every example of the build, whether or not a rationale survived: what the `label` baseline trains on.
EXAMPLE_ROW_FEATURES = Features({**EXAMPLE_FEATURES, "messages": MESSAGES})


@dataclass
class PushDataArguments:
    """Every option of ``make push-data``; also settable from a YAML recipe with ``--config``."""

    task: str = field(default="synthetic_gsm", metadata={"help": "Task name (see datasets_builders/tasks.py)."})
    teachers: str = field(
        default=DEFAULT_TEACHERS,
        metadata={"help": "Comma-separated teachers: registered names, Hub ids, folders, .gguf files, openai:M@URL."},
    )
    data: str | None = field(
        default=None, metadata={"help": "Local folder/file in the task's original format; default: the Hub id."}
    )
    limit: int = field(default=64, metadata={"help": "Training examples to explain (per teacher); 0 = all."})
    test_limit: int = field(default=100, metadata={"help": "Held-out test examples in the test split; 0 = all."})
    mode: str = field(default="teacher_forced", metadata={"help": f"Prompt mode, one of {PROMPT_MODES}."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest rationale, in tokens."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (with --do_sample)."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling and the synthetic task."})
    min_chars: int = field(default=20, metadata={"help": "Drop rationales shorter than this."})
    max_chars: int = field(default=2000, metadata={"help": "Drop rationales longer than this."})
    consistency: str = field(
        default="drop", metadata={"help": "drop: remove rationales whose answer disagrees with gold; flag: keep."}
    )
    shard_size: int = field(default=32, metadata={"help": "Examples per shard written while generating."})
    logits: int = field(
        default=0,
        metadata={"help": "Also store each logits teacher's top-k log-probs at every training token (k); 0 = none."},
    )
    logits_teachers: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated teachers that score the rows for --logits (default: every one of "
            "--teachers that runs locally; openai:... teachers are used when listed here)."
        },
    )
    logits_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Endpoint (openai:...) logits teachers: the tokenizer the server uses (folder, Hub id or "
            "packaged name; default: the served model name)."
        },
    )
    logits_batch_size: int = field(default=8, metadata={"help": "Sequences per teacher forward pass for --logits."})
    work_dir: str | None = field(
        default=None, metadata={"help": "Where shards are kept between runs. Default: <SCALINGDOWN_CACHE>/push-data."}
    )
    hub_target: str | None = field(default=None, metadata={"help": "local (default) or hf; env HUB_TARGET."})
    hub_dir: str | None = field(default=None, metadata={"help": "Root of the local Hub; env HUB_DIR (./hub)."})
    org: str | None = field(default=None, metadata={"help": "Organisation of the repos; env ORG."})
    push: bool = field(default=True, metadata={"help": "Push the dataset repo (else only build shards)."})

    def __post_init__(self) -> None:
        self.work_dir = self.work_dir or str(cache_dir("push-data"))
        get_task(self.task)  # fails early, listing valid task names
        check_choice(self.mode, PROMPT_MODES, "--mode", "MODE")
        if not self.teacher_specs:
            raise ArgumentError("TEACHERS (--teachers) is empty: name at least one teacher")
        if self.logits < 0:
            raise ArgumentError(
                f"LOGITS={self.logits} (--logits) is the number of top log-probs kept per token: 0 (none) or more"
            )
        if self.logits and not self.logits_specs:
            raise ArgumentError("--logits needs a teacher to score the rows: set --logits_teachers")
        check_count(self.limit, "--limit", "training examples", "LIMIT", zero="all")
        check_count(self.test_limit, "--test_limit", "test examples", "TEST_LIMIT", zero="all")
        check_count(self.max_new_tokens, "--max_new_tokens", "tokens", "MAX_NEW_TOKENS")
        check_count(self.batch_size, "--batch_size", "prompts per batch", "BATCH_SIZE")
        check_count(self.shard_size, "--shard_size", "examples per shard")
        check_count(self.logits_batch_size, "--logits_batch_size", "sequences per batch")
        check_count(self.min_chars, "--min_chars", "characters", zero="no minimum")
        check_range(self.max_chars, "--max_chars", self.min_chars, low_inclusive=False, what="(above --min_chars)")
        if self.do_sample:
            check_range(self.temperature, "--temperature", 0.0, low_inclusive=False)
        check_choice(self.consistency, ("drop", "flag"), "--consistency", "CONSISTENCY")

    @property
    def teacher_specs(self) -> list[str]:
        return [t.strip() for t in self.teachers.split(",") if t.strip()]

    @property
    def logits_specs(self) -> list[str]:
        if not self.logits:
            return []
        if self.logits_teachers:
            return [t.strip() for t in self.logits_teachers.split(",") if t.strip()]
        return [t for t in self.teacher_specs if not t.startswith("openai:")]

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            temperature=self.temperature,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def filter_settings(self) -> FilterSettings:
        return FilterSettings(min_chars=self.min_chars, max_chars=self.max_chars, consistency=self.consistency)


def shard_dir(args: PushDataArguments, spec: str) -> Path:
    """Shards of one teacher's rationales for this task, data, prompt mode and prompt version."""
    inputs = [args.task, args.data and str(Path(args.data).resolve()), args.mode, PROMPT_VERSION]
    return teacher_shard_dir(Path(args.work_dir) / args.task, spec, args.generation_settings(), inputs)


def generate_rationales(args: PushDataArguments, spec: str, examples: Dataset, kind: str) -> dict:
    """Generate this teacher's missing rationales shard by shard; return what the card records of it."""
    requests = [
        TeacherRequest(row["id"], build_prompt(row["question"], row["choices"], row["answer"], kind, args.mode))
        for row in examples
    ]
    root = shard_dir(args, spec)
    return generate_into_shards(spec, requests, args.generation_settings(), root, args.shard_size)


def assemble_train_rows(args: PushDataArguments, examples: Dataset, kind: str) -> tuple[list[dict], list[dict]]:
    """Join each teacher's shards with the examples, filter, and count kept/dropped per teacher."""
    by_id = {row["id"]: row for row in examples}
    filters = args.filter_settings()
    rows, counts = [], []
    for spec in args.teacher_specs:
        name = teacher_name(spec)
        dropped: Counter[str] = Counter()
        generated = kept = consistent = 0
        for shard_row in ShardStore(shard_dir(args, spec)).rows():
            example = by_id.get(shard_row["id"])
            if example is None:  # generated under a larger --limit earlier; not part of this build
                continue
            generated += 1
            num_choices = len(example["choices"] or [])
            result = check_rationale(shard_row["text"], example["answer"], kind, num_choices, filters)
            consistent += result.consistent
            if result.reason:
                dropped[result.reason] += 1
                continue
            kept += 1
            response = finish_rationale(shard_row["text"], example["answer"])
            rows.append(
                {
                    **example,
                    "teacher": name,
                    "mode": args.mode,
                    "rationale": response,
                    "consistent": result.consistent,
                    "messages": student_messages(example["question"], example["choices"], kind, response),
                }
            )
        counts.append(
            {"teacher": name, "generated": generated, "kept": kept, "consistent": consistent, "dropped": dict(dropped)}
        )
    rows.sort(key=lambda r: (r["id"], r["teacher"]))
    return rows, counts


def teacher_logits(args: PushDataArguments, rows: list[dict]) -> list[tuple[list[dict], dict]]:
    """``(rows, figures)`` of every logits teacher's top-k config, resuming from its shards."""
    built = []
    settings = LogitsSettings(k=args.logits, batch_size=args.logits_batch_size, shard_size=args.shard_size)
    for spec in args.logits_specs:
        if spec.startswith("openai:"):
            from datasets_builders.openai_backend import EndpointScorer

            scorer = EndpointScorer.from_spec(spec, tokenizer=args.logits_tokenizer)
        else:
            name, source = resolve_model_source(spec)
            from datasets_builders.logits import TeacherScorer

            scorer = TeacherScorer(name, source)
        built.append(build_logits(rows, scorer, settings, Path(args.work_dir) / args.task))
        print(
            f"logits {built[-1][1]['config']}: top-{args.logits} of {len(rows)} rows "
            f"({built[-1][1]['assistant_tokens']} tokens) in {built[-1][1]['seconds']:.0f} s"
        )
    return built


def test_rows(examples: Dataset, kind: str) -> list[dict]:
    """Held-out rows: same columns as train, with no teacher and only the user turn in ``messages``."""
    return [
        {
            **row,
            "teacher": "",
            "mode": "",
            "rationale": None,
            "consistent": None,
            "messages": student_messages(row["question"], row["choices"], kind),
        }
        for row in examples
    ]


def example_rows(examples: Dataset, kind: str, with_answer: bool) -> list[dict]:
    """Rows of the ``examples`` config: the schema plus ``messages`` (answer-only assistant turn if asked)."""
    return [
        {
            **row,
            "messages": student_messages(
                row["question"], row["choices"], kind, format_final_answer(row["answer"]) if with_answer else None
            ),
        }
        for row in examples
    ]


def repo_configs(rows: list[dict], train: Dataset, test: Dataset, kind: str) -> list[RepoConfig]:
    """The repo's configs, ``default`` first; more (e.g. offline logits) are appended here."""
    return [
        RepoConfig(
            "default",
            "data",
            RATIONALE_FEATURES,
            {"train": rows, "test": test_rows(test, kind)},
            "one row per (example, teacher) whose rationale passed the filters; held-out `test` without rationales",
        ),
        RepoConfig(
            "examples",
            "examples",
            EXAMPLE_ROW_FEATURES,
            {"train": example_rows(train, kind, with_answer=True), "test": example_rows(test, kind, with_answer=False)},
            "every example of the build, rationale or not, answered only with 'The answer is X.' "
            "(what the `label` baseline trains on)",
        ),
    ]


def render_card(
    args,
    target,
    repo,
    task_spec,
    teachers,
    counts,
    load_report,
    contamination,
    examples,
    kind,
    configs,
    card_meta,
    logits_info=(),
):
    first = examples[0]
    prompt = build_prompt(first["question"], first["choices"], first["answer"], kind, args.mode)
    reasons = sorted(
        {r for c in counts for r in c["dropped"]}
        | {"refusal", "too_short", "too_long", "repetitive", "bad_arithmetic", "inconsistent"}
    )
    speed = {t["name"]: t for t in teachers}
    for c in counts:
        info = speed.get(c["teacher"], {})
        secs = info.get("seconds") or 0
        c["tokens_per_second"] = f"{info['generated_tokens'] / secs:.1f}" if secs else "-"
    total_rows = sum(c["kept"] for c in counts)
    card_data = DatasetCardData(
        pretty_name=f"{args.task} teacher rationales",
        license=task_spec.license,
        language=["en"],
        task_categories=["text-generation", "question-answering"],
        tags=["scalingdown", "distillation", "rationales", "chain-of-thought", args.task],
        size_categories=["n<1K" if total_rows < 1000 else "1K<n<10K"],
        **card_meta,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=template_path("dataset_card.md"),
        pretty_name=f"{args.task} teacher rationales",
        repo_location=target.location("dataset", repo),
        configs=[
            {
                "name": c.name,
                "data_dir": c.data_dir,
                "description": c.description,
                "splits": {split: len(rows) for split, rows in c.splits.items()},
            }
            for c in configs
        ],
        task=args.task,
        task_description=task_spec.description,
        answer_kind=kind,
        source=load_report["train"]["source"],
        source_license=task_spec.license,
        teachers=[
            {k: t.get(k, "") for k in ("name", "backend", "source", "parameters", "prompt_format")} for t in teachers
        ],
        mode=args.mode,
        mode_description="the teacher saw the gold answer and explained it (TinyLLM)"
        if args.mode == "teacher_forced"
        else "plain chain of thought, no gold answer shown",
        prompt_version=PROMPT_VERSION,
        example_chat_prompt="\n".join(f"[{m['role']}] {m['content']}" for m in prompt.messages),
        example_text_prompt=prompt.text,
        generation_settings=", ".join(f"{k}={v}" for k, v in asdict(args.generation_settings()).items()),
        filters=asdict(args.filter_settings()),
        reasons=reasons,
        filter_rows=counts,
        load_report=load_report,
        decontamination=contamination,
        logits=list(logits_info),
    )


def print_summary(counts: list[dict], repo_location: str) -> None:
    header = f"{'teacher':<28}{'generated':>10}{'kept':>8}{'consistent':>12}  dropped"
    print("\n" + header + "\n" + "-" * len(header))
    for c in counts:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(c["dropped"].items())) or "-"
        print(f"{c['teacher']:<28}{c['generated']:>10}{c['kept']:>8}{c['consistent']:>12}  {dropped}")
    print(f"\ndataset repo: {repo_location}")


def main(args: PushDataArguments) -> str | None:
    """Build (or resume) the rationales of every teacher, then assemble and push the dataset repo."""
    task_spec = get_task(args.task)
    kind = task_spec.answer_kind
    target = HubTarget.from_env(args.hub_target, args.org, args.hub_dir)
    target.check_writable()
    for spec in args.teacher_specs + args.logits_specs:
        check_teacher_spec(spec)
    train, train_report = load_examples(args.task, "train", data=args.data, limit=args.limit or None, seed=args.seed)
    test, test_report = load_examples(args.task, "test", data=args.data, limit=args.test_limit or None, seed=args.seed)
    if len(train) == 0:
        raise UserError(f"no usable training examples for {args.task}: {train_report.summary()}")
    if len(test) == 0:
        raise UserError(f"no usable test examples for {args.task}: {test_report.summary()}")
    if args.test_limit and len(test) < args.test_limit:
        raise ArgumentError(
            f"TEST_LIMIT={args.test_limit} (--test_limit): the {args.task} test source holds only {len(test)} usable "
            f"examples ({test_report.source}); set TEST_LIMIT={len(test)} or 0 for all of them"
        )
    logger.info("%s: %d train examples, %d test examples", args.task, len(train), len(test))
    contamination = find_overlap(
        [(r["id"], r["question"]) for r in train], [(r["id"], r["question"]) for r in test]
    ).to_dict()
    teachers = [generate_rationales(args, spec, train, kind) for spec in args.teacher_specs]
    rows, counts = assemble_train_rows(args, train, kind)
    logits = teacher_logits(args, rows) if args.push and rows else []
    repo = dataset_repo_name(args.task)
    if not args.push:
        print_summary(counts, "(not pushed: --push false)")
        return None
    if not rows:
        print_summary(counts, "(not pushed: nothing left after the filters)")
        raise SystemExit(
            "every rationale was filtered out (see the counts above); nothing to push. Try more examples, "
            "another teacher, or --consistency flag to keep inconsistent rationales."
        )
    load_report = {"train": asdict(train_report), "test": asdict(test_report)}
    build = {"arguments": asdict(args), "teachers": teachers, "counts": counts, "decontamination": contamination}
    with tempfile.TemporaryDirectory() as tmp:
        configs = repo_configs(rows, train, test, kind) + [logits_config(r, info) for r, info in logits]
        card_meta = write_data_files(Path(tmp), configs)
        for _, info in logits:
            info.update(storage_figures(Path(tmp), info))
            print(
                f"{info['config']}: {info['bytes_per_token']} bytes per token at k={info['k']} "
                f"({info['bytes_per_token_per_k']} per k), {info['relative_to_text']}x the text config"
            )
        build["logits"] = [info for _, info in logits]
        card = render_card(
            *(args, target, repo, task_spec, teachers, counts, load_report, contamination, train, kind, configs),
            card_meta,
            logits_info=build["logits"],
        )
        card.save(Path(tmp) / "README.md")
        (Path(tmp) / "scalingdown_build.json").write_text(json.dumps(build, indent=2, default=str))
        names = ", ".join(c["teacher"] for c in counts)
        commit = target.push_folder(
            tmp,
            "dataset",
            repo,
            f"Rationales for {args.task} from {names} ({len(rows)} rows, {len(train)} examples)",
            delete_patterns=[f"{c.data_dir}/*" for c in configs],
        )
    location = target.location("dataset", repo)
    print_summary(counts, f"{location} @ {commit[:10]}")
    return location


def cli(argv: list[str] | None = None) -> None:
    from trl import TrlParser

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = TrlParser(
        (PushDataArguments,),
        description="Build a teacher-rationale dataset repo for one task.",
        epilog="--config RECIPE.yaml reads any of these options from a YAML recipe; flags given too win.",
    )
    (args,) = parse_recipe(parser, argv)
    main(args)


if __name__ == "__main__":
    run_cli(lambda: cli(sys.argv[1:]))
