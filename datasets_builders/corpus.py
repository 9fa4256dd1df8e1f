"""A pre-training corpus as a dataset repo (``{ORG}/pretrain-corpus``): what ``make pretrain`` trains on.

    python -m datasets_builders.corpus                     # offline default: teacher-written documents + task questions
    python -m datasets_builders.corpus --config recipes/corpus/fineweb-edu.yaml      # a Hub dataset, streamed
    python -m datasets_builders.corpus --sources files --files 'notes/*.txt' --text_unit paragraph

Sources (``--sources``, comma-separated, in this order):

- ``synthetic``: the packaged teachers write short documents on several topics in several styles (textbook section,
  story, worked explanation, questions and answers: Cosmopedia-style prompts), sampled; sharded under ``--work_dir``
  as they are made, so an interrupted build resumes where it stopped.
- ``task``: the task's training questions, each with its worked solution when the source has one.
- ``files``: local files (``.txt``/``.md``: one document per file, paragraph or line, see ``--text_unit``;
  ``.jsonl``/``.json``/``.parquet``/``.csv``: one per row, from ``--text_column``).
- ``hub``: a Hub dataset streamed with ``datasets.load_dataset(..., streaming=True)`` (FineWeb-Edu, Cosmopedia, a
  code dataset), the first ``--max_documents`` rows of its ``--text_column``; nothing else is downloaded.

Filters run in this order, each can be switched off, and every drop is counted per source in the card: too short,
refusals and moralising boilerplate (Dolphin-style), exact duplicates (hash of the normalised words), near
duplicates (MinHash LSH on word 5-grams), and decontamination against the test split of every eval task that can be
read here (local copies under ``--eval_data``, else the Hub); the overlap found is reported per task.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datasets import Features, Value, load_dataset
from huggingface_hub import DatasetCard, DatasetCardData
from tqdm.auto import tqdm

from datasets_builders.decontamination import containing_pairs, normalized_words, overlapping_pairs
from datasets_builders.rationales import REFUSAL_PATTERNS, finish_rationale
from datasets_builders.shards import ShardStore
from datasets_builders.tasks import TASKS, get_task, load_examples
from datasets_builders.teacher_base import GenerationSettings, TeacherPrompt
from datasets_builders.teachers import DEFAULT_TEACHERS, load_teacher, teacher_name
from model_cards import template_path
from scalingdown.dataset_repo import RepoConfig, write_data_files
from scalingdown.hub import CORPUS_REPO_NAME, HubTarget
from scalingdown.schema import format_question

logger = logging.getLogger("corpus")

SOURCES = ("synthetic", "task", "files", "hub")
TEXT_UNITS = ("file", "paragraph", "line")
CORPUS_FEATURES = Features({"id": Value("string"), "source": Value("string"), "text": Value("string")})
TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst"}
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class CorpusArguments:
    """Every option of the corpus build (``make pretrain`` runs it first); also settable from a YAML recipe."""

    task: str = field(default="synthetic_gsm", metadata={"help": "Task whose training questions the corpus mixes in."})
    sources: str = field(default="synthetic,task", metadata={"help": f"Comma-separated, any of {SOURCES}."})
    corpus_repo: str = field(default=CORPUS_REPO_NAME, metadata={"help": "Dataset repo name (or ORG/NAME) to push."})
    # synthetic
    teachers: str = field(default=DEFAULT_TEACHERS, metadata={"help": "Teachers that write synthetic documents."})
    documents_per_teacher: int = field(default=32, metadata={"help": "Synthetic documents each teacher writes."})
    max_new_tokens: int = field(default=192, metadata={"help": "Longest synthetic document, in tokens."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of synthetic documents."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling of synthetic documents."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    shard_size: int = field(default=16, metadata={"help": "Synthetic documents per shard written while generating."})
    seed: int = field(default=42, metadata={"help": "Sampling seed; also the synthetic task's seed (as push-data's)."})
    # task
    task_data: str | None = field(
        default=None, metadata={"help": "Local copy of the task in its original format (like push-data's --data)."}
    )
    task_limit: int = field(default=0, metadata={"help": "Training questions to mix in; 0 = all."})
    # files
    files: str | None = field(default=None, metadata={"help": "Comma-separated files, folders or globs (``files``)."})
    text_unit: str = field(
        default="file", metadata={"help": f"Plain-text files: one document per {'|'.join(TEXT_UNITS)}."}
    )
    # hub
    hub_dataset: str | None = field(default=None, metadata={"help": "Hub dataset id (or folder) to stream (``hub``)."})
    hub_config: str | None = field(default=None, metadata={"help": "Its config (e.g. sample-10BT)."})
    hub_data_dir: str | None = field(default=None, metadata={"help": "Its data_dir (e.g. data/python)."})
    hub_split: str = field(default="train", metadata={"help": "Its split."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text (hub and table files)."})
    max_documents: int = field(default=10_000, metadata={"help": "Documents per files/hub source; 0 = all."})
    # filters
    min_chars: int = field(default=50, metadata={"help": "Drop documents shorter than this."})
    filter_refusals: bool = field(
        default=True, metadata={"help": "Drop refusals and moralising boilerplate (Dolphin-style)."}
    )
    dedup_exact: bool = field(default=True, metadata={"help": "Drop exact duplicates (normalised words)."})
    dedup_near: bool = field(default=True, metadata={"help": "Drop near duplicates (MinHash LSH, word 5-grams)."})
    near_duplicate_threshold: float = field(
        default=0.8, metadata={"help": "Estimated Jaccard similarity at which a document is a near duplicate."}
    )
    decontaminate: bool = field(
        default=True, metadata={"help": "Drop documents overlapping any eval task's test split."}
    )
    eval_tasks: str = field(default="all", metadata={"help": "Tasks whose test split decontaminates; 'all' or a list."})
    eval_data: str | None = field(
        default="../shared/data",
        metadata={"help": "Folder with <task>/test.jsonl copies; tasks not found there are read from the Hub."},
    )
    ngram: int = field(default=13, metadata={"help": "n of the n-gram decontamination rule (GPT-3: 13)."})
    # where
    work_dir: str = field(default="outputs/corpus", metadata={"help": "Where synthetic shards are kept between runs."})
    hub_target: str | None = field(default=None, metadata={"help": "local (default) or hf; env HUB_TARGET."})
    hub_dir: str | None = field(default=None, metadata={"help": "Root of the local Hub; env HUB_DIR (./hub)."})
    org: str | None = field(default=None, metadata={"help": "Organisation of the repos; env ORG."})
    push: bool = field(default=True, metadata={"help": "Push the dataset repo."})

    def __post_init__(self) -> None:
        get_task(self.task)
        unknown = sorted(set(self.source_list) - set(SOURCES))
        if unknown or not self.source_list:
            raise ValueError(f"--sources {self.sources!r}: use a comma-separated list of {SOURCES}")
        if self.text_unit not in TEXT_UNITS:
            raise ValueError(f"--text_unit must be one of {TEXT_UNITS}, got {self.text_unit!r}")
        if "files" in self.source_list and not self.files:
            raise ValueError("--sources files needs --files (comma-separated files, folders or globs)")
        if "hub" in self.source_list and not self.hub_dataset:
            raise ValueError("--sources hub needs --hub_dataset (e.g. HuggingFaceFW/fineweb-edu)")
        most = sum(len(s) for s in TOPICS.values()) * len(STYLES)
        if not 0 < self.documents_per_teacher <= most:
            raise ValueError(f"--documents_per_teacher must be 1..{most} (topics x subtopics x styles)")

    @property
    def source_list(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]

    @property
    def teacher_specs(self) -> list[str]:
        return [t.strip() for t in self.teachers.split(",") if t.strip()]

    def generation_settings(self) -> GenerationSettings:
        # No stop strings: a document ends at the teacher's end-of-turn token or at max_new_tokens.
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            batch_size=self.batch_size,
            stop=[],
        )


@dataclass
class Document:
    id: str
    source: str
    text: str


# -- synthetic documents ---------------------------------------------------------------------------------------

TOPICS_VERSION = "v1"  # bump when TOPICS or STYLES change: it is part of the shard fingerprint
TOPICS = {
    "arithmetic": [
        "adding and subtracting money",
        "multiplying and dividing",
        "fractions of a whole",
        "percentages in a shop sale",
        "measuring time and distance",
        "sharing things equally",
    ],
    "science": [
        "the water cycle",
        "how plants make food",
        "magnets",
        "states of matter",
        "the solar system",
        "why the sky is blue",
    ],
    "health and the body": [
        "the heart and blood",
        "sleep",
        "germs and washing hands",
        "bones and muscles",
        "healthy food",
        "how vaccines work",
    ],
    "geography": ["rivers", "deserts", "volcanoes", "maps and compasses", "weather and climate", "oceans"],
    "history": [
        "the invention of writing",
        "the printing press",
        "ancient Egypt",
        "the first airplanes",
        "the history of money",
        "Roman roads",
    ],
    "everyday reasoning": [
        "planning a trip",
        "cooking for guests",
        "saving pocket money",
        "catching a bus on time",
        "sharing chores at home",
        "comparing prices",
    ],
    "computing": [
        "what an algorithm is",
        "how computers store numbers",
        "how the internet sends messages",
        "sorting a list",
        "variables in programming",
        "batteries and electricity",
    ],
}
# style -> (instruction for chat teachers, opening for base teachers); {subtopic} and {topic} are filled in
STYLES = {
    "textbook": (
        "Write a short textbook section for middle-school students about {subtopic} ({topic}).",
        "Textbook section for middle-school students ({topic}): {subtopic}\n\n",
    ),
    "story": (
        "Write a short story for children in which a character learns about {subtopic}.",
        "A short story for children about {subtopic}.\n\n",
    ),
    "explanation": (
        "Explain {subtopic} step by step, with one worked example.",
        "{subtopic}, explained step by step with a worked example ({topic}).\n\n",
    ),
    "questions": (
        "Write three questions a student might ask about {subtopic}, each followed by a clear answer.",
        "Three questions and answers about {subtopic} ({topic}).\n\nQ:",
    ),
}


def synthetic_prompts(count: int, seed: int) -> list[dict]:
    """``count`` (topic, subtopic, style) requests, cycling through the topics so each gets its share."""
    rng = random.Random(seed)
    by_topic = []
    for topic, subtopics in TOPICS.items():
        combos = [(topic, s, style) for s in subtopics for style in STYLES]
        rng.shuffle(combos)
        by_topic.append(combos)
    order = [combo for round_ in zip(*by_topic, strict=True) for combo in round_]
    prompts = []
    for topic, subtopic, style in order[:count]:
        instruction, opening = STYLES[style]
        prompts.append(
            {
                "id": f"{topic.replace(' ', '_')}-{TOPICS[topic].index(subtopic)}-{style}",
                "topic": topic,
                "style": style,
                "prompt": TeacherPrompt(
                    messages=[{"role": "user", "content": instruction.format(topic=topic, subtopic=subtopic)}],
                    text=opening.format(topic=topic, subtopic=subtopic),
                ),
            }
        )
    return prompts


def shard_dir(args: CorpusArguments, spec: str) -> Path:
    """One teacher's shards, keyed by everything that changes what it writes (not by batch or shard size)."""
    settings = asdict(args.generation_settings())
    settings.pop("batch_size")
    key = json.dumps([spec, TOPICS_VERSION, settings], sort_keys=True)
    return Path(args.work_dir) / "synthetic" / f"{teacher_name(spec)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def generate_documents(args: CorpusArguments, spec: str) -> dict:
    """Write this teacher's missing synthetic documents shard by shard; return what the card says about it."""
    store = ShardStore(shard_dir(args, spec))
    stats_file = store.root / "teacher.json"
    info = json.loads(stats_file.read_text()) if stats_file.exists() else {"generated_tokens": 0, "seconds": 0.0}
    prompts = synthetic_prompts(args.documents_per_teacher, args.seed)
    done = store.done_keys()
    todo = [p for p in prompts if p["id"] not in done]
    name = teacher_name(spec)
    if not todo:
        logger.info("%s: all %d synthetic documents already written in %s", name, len(prompts), store.root)
        return {"name": name, **info}
    teacher = load_teacher(spec)
    info.update(teacher.describe())
    settings = args.generation_settings()
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=f"{name} documents", unit="doc") as bar:
        for start in range(0, len(todo), args.shard_size):
            chunk = todo[start : start + args.shard_size]
            began = time.perf_counter()
            generations = teacher.generate([p["prompt"] for p in chunk], settings)
            info["seconds"] += time.perf_counter() - began
            info["generated_tokens"] += sum(g.num_tokens for g in generations)
            store.write(
                [
                    {
                        "id": p["id"],
                        "topic": p["topic"],
                        "style": p["style"],
                        "text": g.text,
                        "num_tokens": g.num_tokens,
                    }
                    for p, g in zip(chunk, generations, strict=True)
                ]
            )
            stats_file.write_text(json.dumps(info))
            bar.update(len(chunk))
    teacher.close()
    return {"name": name, **info}


def synthetic_documents(args: CorpusArguments, spec: str) -> Iterator[Document]:
    wanted = {p["id"] for p in synthetic_prompts(args.documents_per_teacher, args.seed)}
    name = teacher_name(spec)
    for row in ShardStore(shard_dir(args, spec)).rows():
        if row["id"] in wanted:  # written under a larger --documents_per_teacher earlier: not part of this build
            yield Document(f"synthetic-{name}-{row['id']}", f"synthetic:{name}", row["text"])


# -- the task, local files, a streamed Hub dataset ---------------------------------------------------------


def task_documents(args: CorpusArguments) -> Iterator[Document]:
    """The task's training questions, each followed by its worked solution (or its answer) as students write it."""
    examples, _ = load_examples(args.task, "train", data=args.task_data, limit=args.task_limit or None, seed=args.seed)
    for row in examples:
        solution = finish_rationale(row["gold_rationale"] or "", row["answer"])
        text = f"Question: {format_question(row['question'], row['choices'])}\n\nAnswer: {solution}"
        yield Document(f"task-{row['id']}", f"task:{args.task}", text)


def expand_files(spec: str) -> list[Path]:
    """The files a comma-separated list of files, folders (searched recursively) and globs names."""
    paths: list[Path] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        path = Path(item).expanduser()
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(str(path), recursive=True)) if Path(p).is_file()]
        readable = [p for p in found if p.suffix.lower() in TEXT_SUFFIXES | set(TABLE_SUFFIXES)]
        if not readable:
            raise FileNotFoundError(
                f"--files {item!r} matches no readable file ({', '.join(sorted(TEXT_SUFFIXES | set(TABLE_SUFFIXES)))})"
            )
        paths += readable
    return paths


def split_text(text: str, unit: str) -> list[str]:
    """A plain-text file as documents: the whole file, its blank-line separated paragraphs, or its lines."""
    if unit == "file":
        parts = [text]
    elif unit == "paragraph":
        parts = re.split(r"\n\s*\n", text)
    else:
        parts = text.splitlines()
    return [p.strip() for p in parts if p.strip()]


def file_documents(args: CorpusArguments) -> Iterator[Document]:
    count = 0
    for path in expand_files(args.files):
        suffix = path.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            texts: Iterable[str] = split_text(path.read_text(encoding="utf-8", errors="replace"), args.text_unit)
        else:
            rows = load_dataset(TABLE_SUFFIXES[suffix], data_files=str(path), split="train")
            if args.text_column not in rows.column_names:
                raise ValueError(f"{path} has no column {args.text_column!r} (columns: {rows.column_names})")
            texts = (t for t in rows[args.text_column] if isinstance(t, str))
        for index, text in enumerate(texts):
            if args.max_documents and count >= args.max_documents:
                return
            count += 1
            yield Document(f"file-{path.name}-{index:06d}", "files", text)


def hub_documents(args: CorpusArguments) -> Iterator[Document]:
    """The first ``max_documents`` rows of a Hub dataset, streamed: only what is read is downloaded."""
    rows = load_dataset(
        args.hub_dataset, args.hub_config, data_dir=args.hub_data_dir, split=args.hub_split, streaming=True
    )
    for index, row in enumerate(rows):
        if args.max_documents and index >= args.max_documents:
            return
        if args.text_column not in row:
            raise ValueError(f"{args.hub_dataset} has no column {args.text_column!r} (columns: {sorted(row)})")
        yield Document(f"hub-{index:08d}", f"hub:{args.hub_dataset}", row[args.text_column] or "")


# -- filters ---------------------------------------------------------------------------------------------------

# Dolphin-style: instruction data that refuses, moralises or talks about being an AI teaches a base model the
# same habits. The refusal patterns are the rationale filter's; these add the moralising boilerplate.
MORALISING_PATTERNS = [
    r"\bit(?:'s| is) (?:important|crucial|essential) to (?:note|remember|consider) that\b",
    r"\b(?:ethical|safety) guidelines\b",
    r"\bI (?:do not|don't) have (?:personal )?(?:opinions|feelings|beliefs|emotions)\b",
    r"\b(?:it is|it's) not appropriate\b",
    r"\bagainst my programming\b",
    r"\bI cannot fulfill\b",
    r"\bOpenAI\b",
]
_BOILERPLATE_RE = re.compile("|".join(REFUSAL_PATTERNS + MORALISING_PATTERNS), re.IGNORECASE)
_WORD = re.compile(r"\w+")

REASONS = {
    "too_short": "fewer characters than --min_chars",
    "refusal": "a refusal or moralising boilerplate (Dolphin-style patterns)",
    "exact_duplicate": "the same normalised words as an earlier document",
    "near_duplicate": "estimated Jaccard similarity of word 5-grams with an earlier document >= the threshold",
    "contaminated": "overlaps a test question of an eval task (see Decontamination)",
}


class NearDuplicateIndex:
    """MinHash signatures of word shingles with LSH banding (Broder 1997; Leskovec et al., *Mining of Massive
    Datasets*, ch. 3): a document whose estimated Jaccard similarity to an indexed one reaches ``threshold``
    is a near duplicate. 16 bands of 8 rows find pairs at 0.8 with probability 0.95."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, bands: int = 16, shingle: int = 5, seed: int = 0):
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        rng = np.random.default_rng(seed)
        # Multiply-shift hashing (Dietzfelbinger et al.): odd a, any b, arithmetic mod 2^64, keep the top 32 bits.
        self.a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.threshold, self.bands, self.rows, self.shingle = threshold, bands, num_perm // bands, shingle
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self.signatures: list[np.ndarray] = []
        self.ids: list[str] = []

    def signature(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        k = self.shingle
        shingles = {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}
        hashes = np.array(
            [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in shingles],
            dtype=np.uint64,
        )
        signature = np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(hashes), 4096):  # bounded memory for book-length documents
            chunk = hashes[start : start + 4096, None]
            signature = np.minimum(signature, ((chunk * self.a + self.b) >> np.uint64(32)).min(axis=0))
        return signature

    @staticmethod
    def similarity(first: np.ndarray, second: np.ndarray) -> float:
        """Estimated Jaccard similarity: the share of equal signature entries."""
        return float(np.mean(first == second))

    def add(self, doc_id: str, text: str) -> str | None:
        """Index a document unless it nearly duplicates one already indexed; then return that one's id."""
        signature = self.signature(text)
        keys = [signature[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]
        candidates = {c for band, key in enumerate(keys) for c in self.buckets[band].get(key, ())}
        for candidate in sorted(candidates):
            if self.similarity(signature, self.signatures[candidate]) >= self.threshold:
                return self.ids[candidate]
        index = len(self.ids)
        self.ids.append(doc_id)
        self.signatures.append(signature)
        for band, key in enumerate(keys):
            self.buckets[band].setdefault(key, []).append(index)
        return None


def exact_key(text: str) -> str:
    return hashlib.sha256(normalized_words(text).encode()).hexdigest()


@dataclass
class EvalQuestions:
    """One eval task's test questions and the rule that decides overlap with a document."""

    task: str
    questions: list[tuple[str, str]]
    templated: bool  # generated from sentence templates: n-grams are shared by design, so only whole questions count
    source: str

    def rule(self, n: int) -> str:
        if self.templated:
            return "contains a whole test question (a templated task shares its n-grams by design)"
        return f"shares a {n}-gram with a test question, or contains a whole shorter one of 8+ words"


def load_eval_questions(args: CorpusArguments) -> tuple[list[EvalQuestions], dict[str, str]]:
    """Every eval task's test questions that can be read here, and why the others could not."""
    names = list(TASKS) if args.eval_tasks.strip() == "all" else [t.strip() for t in args.eval_tasks.split(",")]
    found, missing = [], {}
    for name in names:
        spec = get_task(name)
        local = Path(args.eval_data) / name if args.eval_data else None
        data = local if local is not None and local.is_dir() else None
        try:
            examples, report = load_examples(name, "test", data=data, seed=args.seed)
        except Exception as error:  # offline and no local copy: reported in the card, never a crash
            missing[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            continue
        questions = [(row["id"], row["question"]) for row in examples]
        found.append(EvalQuestions(name, questions, templated=spec.hub_id is None, source=report.source))
    return found, missing


def contaminated_documents(documents: list[Document], evaluation: EvalQuestions, n: int) -> dict[str, str]:
    """``{document id: test question id}`` for the documents that overlap this task's test split."""
    texts = [(d.id, d.text) for d in documents]
    if evaluation.templated:
        return containing_pairs(texts, evaluation.questions)
    short = [(i, q) for i, q in evaluation.questions if len(_WORD.findall(q)) < n]
    return containing_pairs(texts, short) | overlapping_pairs(texts, evaluation.questions, n)


@dataclass
class FilterReport:
    """What each source gave and lost, and the overlap found with each eval task."""

    sources: dict[str, Counter] = field(default_factory=dict)  # source -> {"read": n, "kept": n, <reason>: n}
    decontamination: list[dict] = field(default_factory=list)
    not_checked: dict[str, str] = field(default_factory=dict)

    def count(self, source: str, what: str) -> None:
        self.sources.setdefault(source, Counter())[what] += 1

    def rows(self) -> list[dict]:
        return [
            {
                "source": source,
                "read": counts["read"],
                "kept": counts["kept"],
                "dropped": {r: counts[r] for r in REASONS if counts[r]},
            }
            for source, counts in self.sources.items()
        ]


def filter_documents(
    documents: Iterable[Document], args: CorpusArguments, evaluation: list[EvalQuestions]
) -> tuple[list[Document], FilterReport]:
    """Apply the filters in order; the first one a document fails names its reason."""
    report = FilterReport()
    seen: set[str] = set()
    near = NearDuplicateIndex(args.near_duplicate_threshold, seed=args.seed) if args.dedup_near else None
    survivors: list[Document] = []
    for doc in documents:
        report.count(doc.source, "read")
        text = doc.text.strip()
        if len(text) < args.min_chars:
            report.count(doc.source, "too_short")
            continue
        if args.filter_refusals and _BOILERPLATE_RE.search(text):
            report.count(doc.source, "refusal")
            continue
        if args.dedup_exact:
            key = exact_key(text)
            if key in seen:
                report.count(doc.source, "exact_duplicate")
                continue
            seen.add(key)
        if near is not None and near.add(doc.id, text) is not None:
            report.count(doc.source, "near_duplicate")
            continue
        survivors.append(Document(doc.id, doc.source, text))
    dropped: dict[str, str] = {}
    if args.decontaminate:
        for task in evaluation:
            pairs = contaminated_documents(survivors, task, args.ngram)
            for doc_id, question_id in pairs.items():
                dropped.setdefault(doc_id, question_id)
            report.decontamination.append(
                {
                    "task": task.task,
                    "source": task.source,
                    "test_questions": len(task.questions),
                    "rule": task.rule(args.ngram),
                    "documents": len(pairs),
                    "examples": list(pairs.items())[:3],
                }
            )
    kept = []
    for doc in survivors:
        if doc.id in dropped:
            report.count(doc.source, "contaminated")
        else:
            report.count(doc.source, "kept")
            kept.append(doc)
    return kept, report


# -- the stage ---------------------------------------------------------------------------------------------------


def read_sources(args: CorpusArguments) -> Iterator[Document]:
    for source in args.source_list:
        if source == "synthetic":
            for spec in args.teacher_specs:
                yield from synthetic_documents(args, spec)
        elif source == "task":
            yield from task_documents(args)
        elif source == "files":
            yield from file_documents(args)
        else:
            yield from hub_documents(args)


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def render_card(args, target, repo, kept, report, teachers, card_meta) -> DatasetCard:
    example = synthetic_prompts(1, args.seed)[0]["prompt"] if "synthetic" in args.source_list else None
    card_data = DatasetCardData(
        pretty_name="ScalingDown pre-training corpus",
        license="other",
        language=["en"],
        task_categories=["text-generation"],
        tags=["scalingdown", "pretraining", "synthetic" if "synthetic" in args.source_list else "text"],
        size_categories=[size_category(len(kept))],
        **card_meta,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=template_path("corpus_card.md"),
        repo_location=target.location("dataset", repo),
        num_documents=len(kept),
        num_words=sum(len(_WORD.findall(d.text)) for d in kept),
        num_chars=sum(len(d.text) for d in kept),
        sources=report.rows(),
        args=args,
        teachers=teachers,
        topics=TOPICS,
        styles=list(STYLES),
        example_instruction=example.messages[0]["content"] if example else "",
        example_opening=example.text if example else "",
        generation_settings=", ".join(f"{k}={v}" for k, v in asdict(args.generation_settings()).items()),
        reasons=REASONS,
        refusal_patterns=REFUSAL_PATTERNS + MORALISING_PATTERNS,
        decontamination=report.decontamination,
        not_checked=report.not_checked,
    )


def print_summary(report: FilterReport, kept: int, where: str) -> None:
    header = f"{'source':<40}{'read':>8}{'kept':>8}  dropped"
    print("\n" + header + "\n" + "-" * len(header))
    for row in report.rows():
        dropped = ", ".join(f"{k}={v}" for k, v in row["dropped"].items()) or "-"
        print(f"{row['source']:<40}{row['read']:>8}{row['kept']:>8}  {dropped}")
    for task in report.decontamination:
        print(
            f"decontamination {task['task']}: {task['documents']} documents overlap its {task['test_questions']} "
            f"test questions"
            + (f" (e.g. {task['examples'][0][0]} ~ {task['examples'][0][1]})" if task["examples"] else "")
        )
    for task, why in report.not_checked.items():
        print(f"decontamination {task}: not checked ({why})")
    print(f"\n{kept} documents -> {where}")


def main(args: CorpusArguments) -> str | None:
    """Generate (or resume) the synthetic documents, read the other sources, filter, and push the corpus repo."""
    teachers = (
        [generate_documents(args, spec) for spec in args.teacher_specs] if "synthetic" in args.source_list else []
    )
    evaluation, missing = load_eval_questions(args) if args.decontaminate else ([], {})
    kept, report = filter_documents(read_sources(args), args, evaluation)
    report.not_checked = missing
    target = HubTarget.from_env(args.hub_target, args.org, args.hub_dir)
    if not args.push:
        print_summary(report, len(kept), "(not pushed: --push false)")
        return None
    if not kept:
        print_summary(report, 0, "(not pushed: nothing left after the filters)")
        raise SystemExit("every document was filtered out (see the counts above); nothing to push")
    rows = [asdict(d) for d in kept]
    configs = [RepoConfig("default", "data", CORPUS_FEATURES, {"train": rows}, "one row per kept document")]
    with tempfile.TemporaryDirectory() as tmp:
        card_meta = write_data_files(Path(tmp), configs)
        render_card(args, target, args.corpus_repo, kept, report, teachers, card_meta).save(Path(tmp) / "README.md")
        build = {"arguments": asdict(args), "teachers": teachers, "sources": report.rows()}
        build |= {"decontamination": report.decontamination, "not_checked": report.not_checked}
        (Path(tmp) / "scalingdown_build.json").write_text(json.dumps(build, indent=2, default=str))
        commit = target.push_folder(
            tmp,
            "dataset",
            args.corpus_repo,
            f"Pre-training corpus: {len(kept)} documents from {args.sources}",
            delete_patterns=["data/*"],
        )
    location = target.location("dataset", args.corpus_repo)
    print_summary(report, len(kept), f"{location} @ {commit[:10]}")
    return location


def cli(argv: list[str] | None = None) -> str | None:
    from trl import TrlParser

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = TrlParser(
        (CorpusArguments,),
        description="Build the pre-training corpus dataset repo.",
        epilog="--config RECIPE.yaml reads any of these options from a YAML recipe; flags given too win.",
    )
    (args,) = parser.parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli(sys.argv[1:])
