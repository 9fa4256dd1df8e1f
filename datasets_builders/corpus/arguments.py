"""Every option of the corpus build, and the one row type all its sources yield."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets_builders.corpus.topics import MAX_REQUESTS
from datasets_builders.tasks import get_task
from datasets_builders.teacher_base import GenerationSettings
from datasets_builders.teachers import DEFAULT_TEACHERS
from scalingdown.arguments import ArgumentError, check_count, check_range
from scalingdown.cache import cache_dir
from scalingdown.hub import CORPUS_REPO_NAME

SOURCES = ("synthetic", "task", "files", "hub")
TEXT_UNITS = ("file", "paragraph", "line")


@dataclass
class Document:
    id: str
    source: str
    text: str


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
    work_dir: str | None = field(
        default=None, metadata={"help": "Where synthetic shards are kept (default: the cache root's corpus/)."}
    )
    hub_target: str | None = field(default=None, metadata={"help": "local (default) or hf; env HUB_TARGET."})
    hub_dir: str | None = field(default=None, metadata={"help": "Root of the local Hub; env HUB_DIR (./hub)."})
    org: str | None = field(default=None, metadata={"help": "Organisation of the repos; env ORG."})
    push: bool = field(default=True, metadata={"help": "Push the dataset repo."})

    def __post_init__(self) -> None:
        self.work_dir = self.work_dir or str(cache_dir("corpus"))
        get_task(self.task)
        unknown = sorted(set(self.source_list) - set(SOURCES))
        if unknown or not self.source_list:
            raise ArgumentError(f"--sources {self.sources!r}: use a comma-separated list of {SOURCES}")
        if self.text_unit not in TEXT_UNITS:
            raise ArgumentError(f"--text_unit must be one of {TEXT_UNITS}, got {self.text_unit!r}")
        if "files" in self.source_list and not self.files:
            raise ArgumentError("--sources files needs --files (comma-separated files, folders or globs)")
        if "hub" in self.source_list and not self.hub_dataset:
            raise ArgumentError("--sources hub needs --hub_dataset (e.g. HuggingFaceFW/fineweb-edu)")
        if not 0 < self.documents_per_teacher <= MAX_REQUESTS:
            raise ArgumentError(
                f"--documents_per_teacher {self.documents_per_teacher}: must be 1..{MAX_REQUESTS} "
                "(topics x subtopics x styles)"
            )
        check_count(self.max_new_tokens, "--max_new_tokens", "tokens")
        check_count(self.batch_size, "--batch_size", "prompts per batch")
        check_count(self.shard_size, "--shard_size", "documents per shard")
        check_count(self.task_limit, "--task_limit", "training questions", zero="all")
        check_count(self.max_documents, "--max_documents", "documents", zero="all")
        check_count(self.min_chars, "--min_chars", "characters", zero="no minimum")
        check_count(self.ngram, "--ngram", "words")
        check_range(self.temperature, "--temperature", 0.0, low_inclusive=False)
        check_range(self.top_p, "--top_p", 0.0, 1.0, low_inclusive=False)
        check_range(self.near_duplicate_threshold, "--near_duplicate_threshold", 0.0, 1.0, low_inclusive=False)
        if self.eval_tasks.strip() != "all":
            for name in (t.strip() for t in self.eval_tasks.split(",") if t.strip()):
                get_task(name)

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
