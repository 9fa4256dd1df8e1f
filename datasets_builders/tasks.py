"""The task registry and its loaders: every benchmark, in its original or its Hub format, mapped into one schema.

    from datasets_builders.tasks import load_examples
    examples, report = load_examples("gsm8k", "train", data="../shared/data/gsm8k", limit=200)

``data=None`` reads the task's Hub dataset; ``data=PATH`` reads local files in the original release format (a folder
with ``{split}.jsonl`` / ``.json`` / ``.parquet``, or one file), the Hub's format, or rows already in our schema.
Rows that cannot be mapped are dropped, counted per reason in a :class:`LoadReport` and logged; a build never crashes
on one bad row. A JSON Lines line that does not parse, or is no object, is counted the same way at ``file:line``;
local data with no usable row at all is refused, naming the file and the reasons.

Ids: the source's id where it has one (ARC/OpenBookQA ``id``, the PubMedQA PMID), else ``{task}-{split}-{index:05d}``
with ``index`` the row's 0-based position in the source file, so ids do not move when ``limit`` changes.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import datasets

from datasets_builders.synthetic_gsm import DEFAULT_SPLIT_SIZES, SyntheticGSMConfig, generate_examples
from scalingdown.answers import LETTERS, YESNO, normalize_number
from scalingdown.errors import UserError
from scalingdown.schema import EXAMPLE_FEATURES, Example

logger = logging.getLogger(__name__)

# Why a row was dropped (the keys of LoadReport.dropped).
NO_ANSWER = "no_answer"
UNPARSABLE_ANSWER = "unparsable_answer"
ANSWER_NOT_IN_CHOICES = "answer_not_in_choices"
DUPLICATE_ID = "duplicate_id"
WRONG_TASK = "wrong_task"
MALFORMED_ROW = "malformed_row"
INVALID_JSON = "invalid_json"  # a line that does not parse (corrupt, truncated)
NOT_AN_OBJECT = "not_an_object"  # a line that parses to something other than one record ([1,2,3], "text")


class TaskError(UserError, ValueError):
    """An unknown task name; the message lists the valid ones."""


class TaskDataError(UserError, FileNotFoundError):
    """Task data that cannot be read or holds no usable row; the message names the file (and line)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its data lives, how its answers look, and what its card must credit."""

    name: str
    answer_kind: str  # "numeric" | "letter" | "yesno" (scalingdown.answers.ANSWER_KINDS)
    description: str
    license: str
    citation: str
    hub_id: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split name -> the Hub's split name
    # The Hub has no test split: test is this many seeded rows of the Hub split, train the rest.
    seeded_test_size: int | None = None
    # Local JSON is one object keyed by id (PubMedQA's ori_pqal.json), which the datasets JSON reader cannot take.
    json_keyed_by_id: bool = False
    num_few_shot: int = 0  # few-shot examples in the usual evaluation prompt (8 for GSM8K chain of thought)


_ARC_CITATION = "Clark et al. 2018, Think you have Solved Question Answering? Try ARC (arXiv:1803.05457)"
_ARC_SPLITS = {"train": "train", "validation": "validation", "test": "test"}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="gsm8k",
            answer_kind="numeric",
            description="Grade-school math word problems with worked solutions.",
            license="mit",
            citation="Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems (arXiv:2110.14168)",
            hub_id="openai/gsm8k",
            hub_config="main",
            hub_splits={"train": "train", "test": "test"},
            num_few_shot=8,
        ),
        TaskSpec(
            name="aqua_rat",
            answer_kind="letter",
            description="Algebra word problems with five options and rationales.",
            license="apache-2.0",
            citation="Ling et al. 2017, Program Induction by Rationale Generation (ACL 2017)",
            hub_id="deepmind/aqua_rat",
            hub_config="raw",
            hub_splits=dict(_ARC_SPLITS),
        ),
        TaskSpec(
            name="arc_easy",
            answer_kind="letter",
            description="Grade-school science multiple choice, easy set.",
            license="cc-by-sa-4.0",
            citation=_ARC_CITATION,
            hub_id="allenai/ai2_arc",
            hub_config="ARC-Easy",
            hub_splits=dict(_ARC_SPLITS),
        ),
        TaskSpec(
            name="arc_challenge",
            answer_kind="letter",
            description="Grade-school science multiple choice, challenge set.",
            license="cc-by-sa-4.0",
            citation=_ARC_CITATION,
            hub_id="allenai/ai2_arc",
            hub_config="ARC-Challenge",
            hub_splits=dict(_ARC_SPLITS),
        ),
        TaskSpec(
            name="openbookqa",
            answer_kind="letter",
            description="Elementary science multiple choice needing a core fact plus common knowledge.",
            license="unknown",
            citation="Mihaylov et al. 2018, Can a Suit of Armor Conduct Electricity? (EMNLP 2018)",
            hub_id="allenai/openbookqa",
            hub_config="main",
            hub_splits=dict(_ARC_SPLITS),
        ),
        TaskSpec(
            name="pubmedqa",
            answer_kind="yesno",
            description="Biomedical yes/no/maybe questions over PubMed abstracts (expert-labelled PQA-L).",
            license="mit",
            citation="Jin et al. 2019, PubMedQA: A Dataset for Biomedical Research Question Answering (EMNLP 2019)",
            hub_id="qiaojin/PubMedQA",
            hub_config="pqa_labeled",
            hub_splits={"train": "train", "test": "train"},
            seeded_test_size=500,
            json_keyed_by_id=True,
        ),
        TaskSpec(
            name="synthetic_gsm",
            answer_kind="numeric",
            description="Seeded multi-step arithmetic word problems (datasets_builders/synthetic_gsm.py).",
            license="apache-2.0",
            citation="ScalingDown synthetic_gsm generator",
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; an unknown name lists the valid ones."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r} (TASK=, --task); valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


@dataclass
class LoadReport:
    """What happened to the source rows: ``total == kept + sum(dropped.values())``.

    With ``limit``, reading stops at the limit-th kept row, so the counts cover the rows read.
    """

    task: str
    split: str
    source: str
    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    bad_ids: dict[str, list[str]] = field(default_factory=dict)  # a few ids per reason, to find the rows

    MAX_BAD_IDS: ClassVar[int] = 5

    def drop(self, reason: str, row_id: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        ids = self.bad_ids.setdefault(reason, [])
        if len(ids) < self.MAX_BAD_IDS:
            ids.append(row_id)

    def summary(self) -> str:
        text = f"{self.task}/{self.split} from {self.source}: kept {self.kept} of {self.total} rows"
        for reason, count in self.dropped.items():
            text += f"; dropped {count} {reason} (e.g. {', '.join(self.bad_ids[reason])})"
        return text


class _BadRow(Exception):
    """A row that cannot be mapped into the schema, with the LoadReport reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---- one mapper per source family: (record, task, row id) -> Example, or _BadRow ----

_CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def _gsm8k_example(record: dict, task: str, row_id: str) -> Example:
    """GSM8K (original and Hub): the answer follows the last ``####``; ``<<48/2=24>>`` calculator notes go."""
    solution = record.get("answer")
    if not isinstance(solution, str) or "####" not in solution:
        raise _BadRow(NO_ANSWER)
    working, _, final = solution.rpartition("####")
    answer = normalize_number(final.strip())
    if answer is None:
        raise _BadRow(UNPARSABLE_ANSWER)
    rationale = _CALCULATOR_ANNOTATION.sub("", working).strip()
    question = record["question"].strip()
    return Example(id=row_id, task=task, question=question, answer=answer, gold_rationale=rationale or None)


_OPTION_PREFIX = re.compile(r"^\s*\(?[A-J]\s*\)\s?")


def _aqua_rat_example(record: dict, task: str, row_id: str) -> Example:
    """AQuA-RAT (original and Hub): ``options`` are ``"A)32400"`` strings, ``correct`` the letter."""
    choices = [_OPTION_PREFIX.sub("", option, count=1).strip() for option in record["options"]]
    answer = _letter_for_label(record.get("correct"), list(LETTERS[: len(choices)]), case_sensitive=False)
    rationale = (record.get("rationale") or "").strip()
    question = record["question"].strip()
    return Example(
        id=row_id, task=task, question=question, answer=answer, choices=choices, gold_rationale=rationale or None
    )


def _multiple_choice_example(record: dict, task: str, row_id: str) -> Example:
    """ARC and OpenBookQA: the AI2 release nests ``question{stem, choices[{text, label}]}``; the Hub has
    ``question`` (ARC) or ``question_stem`` (OpenBookQA) next to ``choices{text: [...], label: [...]}``."""
    question = record.get("question")
    if isinstance(question, dict):
        stem = question["stem"]
        texts = [choice["text"] for choice in question["choices"]]
        labels = [choice["label"] for choice in question["choices"]]
    else:
        stem = record["question_stem"] if "question_stem" in record else question
        texts, labels = list(record["choices"]["text"]), list(record["choices"]["label"])
    if not isinstance(stem, str) or not texts or len(texts) != len(labels) or len(texts) > len(LETTERS):
        raise _BadRow(MALFORMED_ROW)
    # Labels may be "1"-"4" (NYSEDREGENTS rows); the canonical answer is the letter of the label's position.
    answer = _letter_for_label(record.get("answerKey"), [str(label).strip() for label in labels])
    return Example(id=row_id, task=task, question=stem.strip(), answer=answer, choices=[t.strip() for t in texts])


def _letter_for_label(key: object, labels: list[str], case_sensitive: bool = True) -> str:
    if key is None or not str(key).strip():
        raise _BadRow(NO_ANSWER)
    key = str(key).strip() if case_sensitive else str(key).strip().upper()
    if key not in labels:
        raise _BadRow(ANSWER_NOT_IN_CHOICES)
    return LETTERS[labels.index(key)]


def _pubmedqa_example(record: dict, task: str, row_id: str) -> Example:
    """PubMedQA: the original record (``QUESTION, CONTEXTS, LABELS, final_decision, LONG_ANSWER``) or the Hub's
    (``question, context{contexts, labels}, final_decision, long_answer``)."""
    if "QUESTION" in record:
        question, contexts, labels = record["QUESTION"], record["CONTEXTS"], record.get("LABELS") or []
        long_answer = record.get("LONG_ANSWER")
    else:
        context = record["context"]
        question, contexts, labels = record["question"], context["contexts"], context.get("labels") or []
        long_answer = record.get("long_answer")
    decision = str(record.get("final_decision") or "").strip().lower()
    if not decision:
        raise _BadRow(NO_ANSWER)
    if decision not in YESNO:
        raise _BadRow(UNPARSABLE_ANSWER)
    question = format_pubmedqa_question(question, contexts, labels)
    rationale = (long_answer or "").strip()
    return Example(id=row_id, task=task, question=question, answer=decision, gold_rationale=rationale or None)


def format_pubmedqa_question(question: str, contexts: list[str], labels: list[str]) -> str:
    """The question, then the abstract as a ``Context:`` block, one ``Label: text`` line per section."""
    if len(labels) == len(contexts):
        lines = [f"{label.strip().capitalize()}: {text.strip()}" for label, text in zip(labels, contexts, strict=True)]
    else:
        lines = [text.strip() for text in contexts]
    return question.strip() + "\n\nContext:\n" + "\n".join(lines)


def _checked_schema_example(record: dict, task: str, kind: str) -> Example:
    """A row already in our schema (generated synthetic_gsm rows, an exported split): check it is canonical."""
    if record["task"] != task:
        raise _BadRow(WRONG_TASK)
    answer, choices = str(record["answer"] or "").strip(), record.get("choices") or None
    if not answer:
        raise _BadRow(NO_ANSWER)
    if kind == "numeric" and normalize_number(answer) != answer:
        raise _BadRow(UNPARSABLE_ANSWER)
    if kind == "yesno" and answer not in YESNO:
        raise _BadRow(UNPARSABLE_ANSWER)
    if kind == "letter" and answer not in LETTERS[: len(choices or [])]:
        raise _BadRow(ANSWER_NOT_IN_CHOICES)
    question = record["question"].strip()
    choices = list(choices) if choices else None
    return Example(
        id=str(record["id"]),
        task=task,
        question=question,
        answer=answer,
        choices=choices,
        gold_rationale=record["gold_rationale"],
    )


_Mapper = Callable[[dict, str, str], Example]
_MAPPERS: dict[str, _Mapper] = {
    "gsm8k": _gsm8k_example,
    "aqua_rat": _aqua_rat_example,
    "arc_easy": _multiple_choice_example,
    "arc_challenge": _multiple_choice_example,
    "openbookqa": _multiple_choice_example,
    "pubmedqa": _pubmedqa_example,
}
_SCHEMA_FIELDS = frozenset(EXAMPLE_FEATURES)


def _source_id(record: dict) -> str | None:
    """The id the source gives a row (ARC/OBQA ``id``, PubMedQA PMID: ``PMID`` from the keyed JSON, Hub ``pubid``)."""
    for key in ("id", "PMID", "pubid"):
        value = record.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _map_record(spec: TaskSpec, record: dict, row_id: str) -> Example:
    try:
        if _SCHEMA_FIELDS <= record.keys():
            return _checked_schema_example(record, spec.name, spec.answer_kind)
        if spec.name not in _MAPPERS:
            raise _BadRow(MALFORMED_ROW)  # synthetic_gsm has no source format other than our schema
        return _MAPPERS[spec.name](record, spec.name, row_id)
    except (KeyError, TypeError, AttributeError) as err:  # a field missing or of the wrong shape
        logger.debug("%s: malformed row %s (%r)", spec.name, row_id, err)
        raise _BadRow(MALFORMED_ROW) from err


def examples_from_records(
    records: Iterable[dict], task: str, split: str, source: str, limit: int | None = None
) -> tuple[datasets.Dataset, LoadReport]:
    """Map source records (any supported format of ``task``) into an EXAMPLE_FEATURES dataset, in source order."""
    spec = get_task(task)
    report = LoadReport(task=task, split=split, source=source)
    rows: list[dict] = []
    seen: set[str] = set()
    for index, record in enumerate(records):
        if limit is not None and len(rows) >= limit:
            break
        report.total += 1
        if isinstance(record, _BadLine):
            report.drop(record.reason, record.where)
            continue
        row_id = _source_id(record) or f"{task}-{split}-{index:05d}"
        try:
            example = _map_record(spec, record, row_id)
        except _BadRow as bad:
            report.drop(bad.reason, row_id)
            continue
        if example.id in seen:
            report.drop(DUPLICATE_ID, example.id)
            continue
        seen.add(example.id)
        rows.append(example.to_row())
    report.kept = len(rows)
    if report.dropped:
        logger.warning(report.summary())
    else:
        logger.info(report.summary())
    columns = {name: [row[name] for row in rows] for name in EXAMPLE_FEATURES}  # from_list cannot make 0 rows
    return datasets.Dataset.from_dict(columns, features=EXAMPLE_FEATURES), report


def load_examples(
    task: str,
    split: str,
    data: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    synthetic: SyntheticGSMConfig | None = None,
) -> tuple[datasets.Dataset, LoadReport]:
    """Examples of ``task``/``split`` in the one schema, with a report of dropped rows.

    ``data``: None reads the Hub (or runs the synthetic generator); a folder or file reads local copies.
    ``limit``: keep the first N valid rows. ``seed``: the synthetic generator's seed, and the seed of PubMedQA's
    500/500 split of the Hub's single PQA-L split (use the same seed for train and test).
    ``synthetic``: the generator's difficulty knobs (its own ``seed`` is replaced by ``seed``).
    """
    spec = get_task(task)
    if data is not None:
        files = _local_files(Path(data), split)
        source = ", ".join(str(path) for path in files)
        examples, report = examples_from_records(_read_local(files, spec), task, split, source, limit)
        if report.kept == 0:
            raise TaskDataError(f"no usable {task} {split} example in {report.summary().split(' from ', 1)[1]}")
        return examples, report
    if spec.hub_id is None:  # synthetic_gsm
        if split not in DEFAULT_SPLIT_SIZES:
            raise ValueError(f"unknown split {split!r} for {task}; expected one of {sorted(DEFAULT_SPLIT_SIZES)}")
        n = DEFAULT_SPLIT_SIZES[split] if limit is None else min(limit, DEFAULT_SPLIT_SIZES[split])
        config = replace(synthetic or SyntheticGSMConfig(), seed=seed)
        records = (example.to_row() for example in generate_examples(n, split, config))
        return examples_from_records(records, task, split, f"generated (seed={seed})", limit)
    return examples_from_records(_hub_records(spec, split, seed), task, split, spec.hub_id, limit)


def has_split(task: str, split: str, data: str | Path | None = None) -> bool:
    """Whether ``task`` offers ``split`` from ``data`` (or, with None, from the Hub or the generator)."""
    spec = get_task(task)
    if data is not None:
        try:
            _local_files(Path(data), split)
        except FileNotFoundError:
            return False
        return True
    return split in (DEFAULT_SPLIT_SIZES if spec.hub_id is None else spec.hub_splits)


# ---- sources ----

_SPLIT_ALIASES = {"validation": ("validation", "dev", "valid", "val")}  # AQuA ships dev.json


def _local_files(data: Path, split: str) -> list[Path]:
    """The file(s) holding ``split``: ``data`` itself, or ``{split}.jsonl|.json|.parquet`` (also Hub-style
    ``{split}-*.parquet`` shards, directly or under ``data/``) inside the folder ``data``."""
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise TaskDataError(f"DATA={data} (--data): no such file or folder")
    for name in _SPLIT_ALIASES.get(split, (split,)):
        patterns = (f"{name}.jsonl", f"{name}.json", f"{name}.parquet", f"{name}-*.parquet", f"data/{name}-*.parquet")
        for pattern in patterns:
            found = sorted(data.glob(pattern))
            if found:
                return found
    present = sorted(path.name for path in data.iterdir())
    raise TaskDataError(f"DATA={data} (--data): no {split}.jsonl/.json/.parquet there (it holds {present})")


def _read_local(files: list[Path], spec: TaskSpec) -> Iterable[dict | _BadLine]:
    if all(path.suffix == ".parquet" for path in files):
        return datasets.load_dataset("parquet", data_files=[str(path) for path in files], split="train")
    records = (record for path in files for record in _read_json_records(path))
    return _expand_keyed(records) if spec.json_keyed_by_id else records


@dataclass(frozen=True)
class _BadLine:
    """A line of a JSON Lines file that is no record: counted under ``reason`` at ``file:line``."""

    reason: str
    where: str


def _read_json_records(path: Path) -> Iterable[dict | _BadLine]:
    """The records of a ``.json`` file (one array or object) or of JSON Lines, in file order; a line that does
    not parse, or parses to no object, becomes a :class:`_BadLine` so the build goes on with the others."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            pass  # JSON Lines under a .json name
        else:
            items = parsed if isinstance(parsed, list) else [parsed]
            for number, item in enumerate(items, 1):
                yield item if isinstance(item, dict) else _BadLine(NOT_AN_OBJECT, f"{path.name} item {number}")
            return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            yield _BadLine(INVALID_JSON, f"{path.name}:{number}")
            continue
        yield record if isinstance(record, dict) else _BadLine(NOT_AN_OBJECT, f"{path.name}:{number}")


def _expand_keyed(records: Iterable[dict | _BadLine]) -> Iterable[dict | _BadLine]:
    """Records of JSON keyed by id: ``ori_pqal.json`` is one ``{PMID: record}`` object, the shared slices have one
    such object per line. The PMID goes into the record as ``PMID``. Plain records (Hub format) pass through."""
    for obj in records:
        if isinstance(obj, dict) and obj and all(isinstance(value, dict) for value in obj.values()):
            yield from ({"PMID": key, **value} for key, value in obj.items())
        else:
            yield obj


def _hub_records(spec: TaskSpec, split: str, seed: int) -> datasets.Dataset:
    if split not in spec.hub_splits:
        raise ValueError(f"{spec.name} has no split {split!r} on the Hub; expected one of {sorted(spec.hub_splits)}")
    try:
        dataset = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_splits[split])
    except ConnectionError as err:
        raise ConnectionError(
            f"could not download {spec.hub_id} ({spec.hub_config}) from the Hub: {err}. Offline? Pass a local copy of "
            f"the original files instead: DATA=path/to/{spec.name} with make, or --data path/to/{spec.name}."
        ) from err
    if spec.seeded_test_size:
        # No official test split on the Hub (the 500 official test PMIDs are a separate file): a seeded split,
        # source order kept within each side.
        test_rows = set(random.Random(seed).sample(range(len(dataset)), spec.seeded_test_size))
        dataset = dataset.select([i for i in range(len(dataset)) if (i in test_rows) == (split == "test")])
    return dataset
