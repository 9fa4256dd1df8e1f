"""Turn a task into a teacher-rationale dataset repo on a Hub target (the ``make push-data`` stage).

    python -m datasets_builders.push_data --task gsm8k --data ../shared/data/gsm8k --limit 50 \
        --teachers smollm2-135m-instruct,gemma3-270m
    python -m datasets_builders.push_data --config recipes/push_data/synthetic_gsm.yaml
    python -m datasets_builders.push_data --config recipes/push_data/synthetic_gsm-easy.yaml --num_samples 4 --keep 2

Each teacher's generations (one per example and sample) are written as parquet shards under ``--work_dir`` while
it runs, so an interrupted build resumes at the first missing sample. Filters run when the repo is assembled, so
changing a filter never needs a teacher again.
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
from datasets_builders.rationale_selection import SELECTION_REASONS, SelectionSettings, select_rationales
from datasets_builders.rationales import (
    PROMPT_MODES,
    PROMPT_VERSION,
    FilterSettings,
    WorkedExample,
    build_prompt,
    check_rationale,
    finish_rationale,
)
from datasets_builders.shards import ShardStore
from datasets_builders.synthetic_gsm import SyntheticGSMConfig
from datasets_builders.tasks import LoadReport, get_task, has_split, load_examples
from datasets_builders.teacher_base import GenerationSettings
from datasets_builders.teacher_shards import TeacherRequest, generate_into_shards, teacher_shard_dir
from datasets_builders.teachers import (
    BACKENDS,
    DEFAULT_TEACHERS,
    check_teacher_spec,
    resolve_model_source,
    teacher_name,
)
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
    validation_limit: int = field(
        default=100, metadata={"help": "Held-out examples in the validation split (where the task has one); 0 = all."}
    )
    mode: str = field(default="teacher_forced", metadata={"help": f"Prompt mode, one of {PROMPT_MODES}."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest rationale, in tokens."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    backend: str = field(
        default="transformers",
        metadata={
            "help": "Local teachers' inference library: transformers (the worked examples run once per batch: "
            "fastest on push-data's prompts, bench/bench_generation.py) or ctranslate2."
        },
    )
    int8: bool = field(
        default=False,
        metadata={
            "help": "int8 weights: ctranslate2's own, or (transformers, CPU) linear layers quantised dynamically. "
            "Faster; outputs differ from float32's (bench/bench_generation.py prints how many stay identical)."
        },
    )
    continuous_batching: bool = field(
        default=False,
        metadata={
            "help": "transformers backend: its continuous batching (finished rows refilled at once, the worked "
            "examples' KV blocks shared; the same greedy texts). On CPU its attention runs over every row's cache "
            "at once: 0.43x the batched path (docs/benchmarks.md); meant for GPUs with flash attention."
        },
    )
    batch_tokens: int = field(
        default=256, metadata={"help": "Continuous batching: most tokens in one forward pass (prefill chunks too)."}
    )
    workers: int = field(
        default=0,
        metadata={
            "help": "transformers backend on CPU: processes of one thread each that share each shard's prompts; "
            "0 = one per core. Independent decoders keep the cores busier than one with a thread per core "
            "(docs/benchmarks.md)."
        },
    )
    num_samples: int = field(default=1, metadata={"help": "Rationales sampled per (example, teacher)."})
    shots: int = field(
        default=3,
        metadata={
            "help": "Worked examples before each request: the last train rows with a gold solution (never built "
            "into the dataset); 0, or a task without gold solutions: one built-in example."
        },
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "Sampling temperature; 0 = greedy. Default: 0.7 with --num_samples > 1, else greedy."},
    )
    keep: int = field(
        default=0, metadata={"help": "Most distinct passing rationales kept per (example, teacher); 0 = all."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for sampling and the synthetic task."})
    min_chars: int = field(default=20, metadata={"help": "Drop rationales shorter than this."})
    max_chars: int = field(default=2000, metadata={"help": "Drop rationales longer than this."})
    consistency: str = field(
        default="drop", metadata={"help": "drop: remove rationales whose answer disagrees with gold; flag: keep."}
    )
    require_derivation: bool = field(
        default=True,
        metadata={"help": "Numeric tasks: drop rationales whose last written 'a op b = c' step is not their answer."},
    )
    shard_size: int = field(
        default=128, metadata={"help": "Generations per shard, each one generate() call: at least --batch_size."}
    )
    min_steps: int | None = field(default=None, metadata={"help": "synthetic_gsm: fewest steps per problem."})
    max_steps: int | None = field(default=None, metadata={"help": "synthetic_gsm: most steps per problem."})
    min_value: int | None = field(default=None, metadata={"help": "synthetic_gsm: smallest stated number."})
    max_value: int | None = field(default=None, metadata={"help": "synthetic_gsm: largest stated number."})
    max_total: int | None = field(default=None, metadata={"help": "synthetic_gsm: bound on every result."})
    num_distractors: int | None = field(default=None, metadata={"help": "synthetic_gsm: irrelevant sentences."})
    operations: str | None = field(
        default=None, metadata={"help": "synthetic_gsm: step kinds used, of add,sub,mul,div,pct."}
    )
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
        check_count(self.validation_limit, "--validation_limit", "validation examples", "VALIDATION_LIMIT", zero="all")
        check_count(self.max_new_tokens, "--max_new_tokens", "tokens", "MAX_NEW_TOKENS")
        check_count(self.batch_size, "--batch_size", "prompts per batch", "BATCH_SIZE")
        check_count(self.batch_tokens, "--batch_tokens", "tokens per forward pass")
        check_count(self.workers, "--workers", "generation processes", zero="one per core")
        check_choice(self.backend, BACKENDS, "--backend")
        check_count(self.shard_size, "--shard_size", "examples per shard")
        check_count(self.logits_batch_size, "--logits_batch_size", "sequences per batch")
        check_count(self.min_chars, "--min_chars", "characters", zero="no minimum")
        check_range(self.max_chars, "--max_chars", self.min_chars, low_inclusive=False, what="(above --min_chars)")
        check_count(self.num_samples, "--num_samples", "rationales per question", "SAMPLES")
        check_count(self.keep, "--keep", "rationales kept per question", "KEEP", zero="every distinct one")
        check_range(self.temperature, "--temperature", 0.0, variable="SAMPLE_TEMPERATURE")
        check_choice(self.consistency, ("drop", "flag"), "--consistency", "CONSISTENCY")
        self.synthetic_config()  # refuses knobs given to another task, or out of range

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

    def synthetic_config(self) -> SyntheticGSMConfig | None:
        """The generator's difficulty knobs (defaults where unset); None for a task that is not generated."""
        knobs = {name: getattr(self, name) for name in SYNTHETIC_KNOBS if getattr(self, name) is not None}
        if self.task != "synthetic_gsm":
            if knobs:
                raise ValueError(f"{', '.join(knobs)} only apply to --task synthetic_gsm, not {self.task}")
            return None
        return SyntheticGSMConfig(**knobs, seed=self.seed)

    def generation_settings(self) -> GenerationSettings:
        temperature = self.temperature if self.temperature is not None else (0.7 if self.num_samples > 1 else 0.0)
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 0.7,
            seed=self.seed,
            batch_size=self.batch_size,
            backend=self.backend,
            int8=self.int8,
            continuous_batching=self.continuous_batching and self.backend == "transformers",
            batch_tokens=self.batch_tokens,
            workers=self.workers if self.backend == "transformers" else 1,
        )

    def filter_settings(self) -> FilterSettings:
        return FilterSettings(
            min_chars=self.min_chars,
            max_chars=self.max_chars,
            consistency=self.consistency,
            require_derivation=self.require_derivation,
        )

    def selection_settings(self) -> SelectionSettings:
        return SelectionSettings(keep=self.keep)

    def worked_examples(self, kind: str) -> list[WorkedExample]:
        """The ``--shots`` worked examples every request opens with: the train split's last rows that carry a gold
        solution, so a larger ``--limit`` later keeps the prompts (and the shards) unchanged."""
        if not self.shots:
            return []
        try:
            train, _ = self.examples("train", 0)
        except ValueError as error:  # narrow synthetic knobs cannot fill the generator's whole train split
            logger.warning("no worked examples from the train split (%s); using the built-in one", error)
            return []
        solved = [r for r in train if r.get("gold_rationale")]
        return [WorkedExample(r["question"], r["choices"], r["answer"], r["gold_rationale"]) for r in solved][
            -self.shots :
        ]

    def examples(self, split: str, limit: int) -> tuple[Dataset, LoadReport]:
        return load_examples(
            self.task, split, data=self.data, limit=limit or None, seed=self.seed, synthetic=self.synthetic_config()
        )


def validation_after_train(args: PushDataArguments, used: int) -> tuple[Dataset, LoadReport]:
    """A validation split for a source without one: the ``--validation_limit`` train rows right after the ``used``
    training rows (never the last ``--shots`` rows, which open the teachers' prompts), so choices made on it never
    touch test and it never overlaps train."""
    source, report = args.examples("train", 0)
    wanted, free = args.validation_limit, len(source) - used - args.shots
    if wanted > free:
        raise ArgumentError(
            f"VALIDATION_LIMIT={wanted} (--validation_limit): {args.task} has no validation split here, so it comes "
            f"from the train rows after the {used} training ones, and only {max(free, 0)} are free "
            f"({len(source)} usable, the last {args.shots} are the worked examples); lower LIMIT or VALIDATION_LIMIT"
        )
    rows = source.select(range(used, used + wanted))
    note = LoadReport(args.task, "validation", f"train rows {used + 1}-{used + wanted} of {report.source}")
    note.total = note.kept = wanted
    return rows, note


SYNTHETIC_KNOBS = ("min_steps", "max_steps", "min_value", "max_value", "max_total", "num_distractors", "operations")


def shard_dir(args: PushDataArguments, spec: str) -> Path:
    """Shards of one teacher's rationales for this task, data, difficulty, prompt mode and prompt version.

    The number of samples is not part of it: asking for more samples later generates only the new ones.
    """
    synthetic = args.synthetic_config()
    inputs = [args.task, args.data and str(Path(args.data).resolve()), args.mode, PROMPT_VERSION, "per-sample ids"]
    inputs.append(f"{args.shots} shots")
    if synthetic is not None:
        inputs.append(asdict(synthetic))
    return teacher_shard_dir(Path(args.work_dir) / args.task, spec, args.generation_settings(), inputs)


def sample_id(example_id: str, sample: int) -> str:
    """The shard key of one (example, sample): resuming skips exactly the samples already written."""
    return f"{example_id}#{sample}"


def generate_rationales(
    args: PushDataArguments, spec: str, examples: Dataset, kind: str, shots: list[WorkedExample]
) -> dict:
    """Generate this teacher's missing samples shard by shard; return what the card records of it."""
    requests = []
    for row in examples:
        prompt = build_prompt(row["question"], row["choices"], row["answer"], kind, args.mode, shots)
        requests += [
            TeacherRequest(sample_id(row["id"], k), prompt, {"example_id": row["id"], "sample": k})
            for k in range(args.num_samples)
        ]
    root = shard_dir(args, spec)
    return generate_into_shards(spec, requests, args.generation_settings(), root, args.shard_size)


def assemble_train_rows(args: PushDataArguments, examples: Dataset, kind: str) -> tuple[list[dict], list[dict]]:
    """Join each teacher's samples with the examples, filter, drop duplicates, apply ``--keep``, and count.

    Per teacher, ``sampled`` = ``kept`` + the sum of ``dropped``; ``covered`` counts examples with a kept row.
    """
    by_id = {row["id"]: row for row in examples}
    filters, selection = args.filter_settings(), args.selection_settings()
    rows, counts = [], []
    for spec in args.teacher_specs:
        name = teacher_name(spec)
        samples: dict[str, list[dict]] = {}
        for shard_row in ShardStore(shard_dir(args, spec)).rows():
            # Rows of a larger --limit or --num_samples earlier are not part of this build.
            if shard_row["example_id"] in by_id and shard_row["sample"] < args.num_samples:
                samples.setdefault(shard_row["example_id"], []).append(shard_row)
        dropped: Counter[str] = Counter()
        sampled = kept = consistent = covered = 0
        for example_id, group in samples.items():
            example = by_id[example_id]
            group.sort(key=lambda r: r["sample"])
            num_choices = len(example["choices"] or [])
            results = [check_rationale(r["text"], example["answer"], kind, num_choices, filters) for r in group]
            verdicts = select_rationales(
                [(r["text"], res.reason) for r, res in zip(group, results, strict=True)], selection
            )
            sampled += len(group)
            consistent += sum(res.consistent for res in results)
            covered += any(v is None for v in verdicts)
            for shard_row, result, verdict in zip(group, results, verdicts, strict=True):
                if verdict:
                    dropped[verdict] += 1
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
            {
                "teacher": name,
                "sampled": sampled,
                "kept": kept,
                "keep_rate": round(kept / sampled, 3) if sampled else 0.0,
                "consistent": consistent,
                "covered": covered,
                "examples": len(examples),
                "coverage": round(covered / len(examples), 3) if len(examples) else 0.0,
                "dropped": dict(dropped),
            }
        )
    rows.sort(key=lambda r: (r["id"], r["teacher"]))  # stable: a question's samples stay in sample order
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


def held_out_rows(examples: Dataset, kind: str) -> list[dict]:
    """Held-out rows (validation, test): same columns as train, no teacher, only the user turn in ``messages``."""
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


def repo_configs(
    rows: list[dict], train: Dataset, held_out: dict[str, Dataset], kind: str, num_samples: int = 1
) -> list[RepoConfig]:
    """The repo's configs, ``default`` first; more (e.g. offline logits) are appended here.

    ``held_out``: the ``validation`` (where the task has one; choices are made on it) and ``test`` examples.
    """
    per = (
        "(example, teacher)" if num_samples == 1 else f"distinct kept sample (of {num_samples} per example and teacher)"
    )
    names = " and ".join(f"`{split}`" for split in held_out)
    return [
        RepoConfig(
            "default",
            "data",
            RATIONALE_FEATURES,
            {"train": rows, **{split: held_out_rows(ds, kind) for split, ds in held_out.items()}},
            f"one row per {per} whose rationale passed the filters; held-out {names} without rationales",
        ),
        RepoConfig(
            "examples",
            "examples",
            EXAMPLE_ROW_FEATURES,
            {
                "train": example_rows(train, kind, with_answer=True),
                **{split: example_rows(ds, kind, with_answer=False) for split, ds in held_out.items()},
            },
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
    shots: list[WorkedExample] = (),
):
    first = examples[0]
    prompt = build_prompt(first["question"], first["choices"], first["answer"], kind, args.mode, shots)
    reasons = sorted(
        {r for c in counts for r in c["dropped"]}
        | {"refusal", "too_short", "too_long", "repetitive", "bad_arithmetic", "underived", "inconsistent"}
        | set(SELECTION_REASONS)
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
        size_categories=["n<1K" if total_rows < 1000 else "1K<n<10K" if total_rows < 10000 else "10K<n<100K"],
        **card_meta,
    )
    synthetic = args.synthetic_config()
    if synthetic is not None:
        card_data.synthetic_gsm = asdict(synthetic)  # the difficulty, in the card's YAML metadata
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
        num_samples=args.num_samples,
        keep=args.keep,
        near_duplicate=args.selection_settings().near_duplicate,
        synthetic=asdict(synthetic) if synthetic is not None else None,
        filters=asdict(args.filter_settings()),
        reasons=reasons,
        filter_rows=counts,
        load_report=load_report,
        decontamination=contamination,
        logits=list(logits_info),
    )


def print_summary(counts: list[dict], repo_location: str) -> None:
    header = f"{'teacher':<28}{'sampled':>10}{'kept':>8}{'consistent':>12}{'coverage':>10}  dropped"
    print("\n" + header + "\n" + "-" * len(header))
    for c in counts:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(c["dropped"].items())) or "-"
        print(
            f"{c['teacher']:<28}{c['sampled']:>10}{c['kept']:>8}{c['consistent']:>12}"
            f"{c['covered']:>5}/{c['examples']:<4}  {dropped}"
        )
    print(f"\ndataset repo: {repo_location}")


def main(args: PushDataArguments) -> str | None:
    """Build (or resume) the rationales of every teacher, then assemble and push the dataset repo."""
    task_spec = get_task(args.task)
    kind = task_spec.answer_kind
    target = HubTarget.from_env(args.hub_target, args.org, args.hub_dir)
    target.check_writable()
    for spec in args.teacher_specs + args.logits_specs:
        check_teacher_spec(spec)
    train, train_report = args.examples("train", args.limit)
    reports = {"train": train_report}
    held_out = {}
    for split, limit in (("validation", args.validation_limit), ("test", args.test_limit)):
        if split == "test" or has_split(args.task, split, args.data):
            held_out[split], reports[split] = args.examples(split, limit)
    if "validation" not in held_out and args.validation_limit:
        held_out["validation"], reports["validation"] = validation_after_train(args, len(train))
    test = held_out["test"]
    if len(train) == 0:
        raise UserError(f"no usable training examples for {args.task}: {train_report.summary()}")
    if len(test) == 0:
        raise UserError(f"no usable test examples for {args.task}: {reports['test'].summary()}")
    if args.test_limit and len(test) < args.test_limit:
        raise ArgumentError(
            f"TEST_LIMIT={args.test_limit} (--test_limit): the {args.task} test source holds only {len(test)} usable "
            f"examples ({reports['test'].source}); set TEST_LIMIT={len(test)} or 0 for all of them"
        )
    sizes = ", ".join(f"{len(ds)} {split}" for split, ds in {"train": train, **held_out}.items())
    logger.info("%s: %s examples", args.task, sizes)
    contamination = find_overlap(
        [(r["id"], r["question"]) for r in train], [(r["id"], r["question"]) for r in test]
    ).to_dict()
    shots = args.worked_examples(kind)
    teachers = [generate_rationales(args, spec, train, kind, shots) for spec in args.teacher_specs]
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
    load_report = {split: asdict(report) for split, report in reports.items()}
    build = {"arguments": asdict(args), "teachers": teachers, "counts": counts, "decontamination": contamination}
    with tempfile.TemporaryDirectory() as tmp:
        configs = repo_configs(rows, train, held_out, kind, args.num_samples)
        configs += [logits_config(r, info) for r, info in logits]
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
            shots=shots,
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
