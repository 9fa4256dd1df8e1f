"""The corpus's four sources, each yielding :class:`Document` rows: teacher-written documents, the task's training
questions, local files, and a streamed Hub dataset."""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from datasets import load_dataset

from datasets_builders.corpus.arguments import CorpusArguments, Document
from datasets_builders.corpus.topics import TOPICS_VERSION, synthetic_requests
from datasets_builders.rationales import finish_rationale
from datasets_builders.shards import ShardStore
from datasets_builders.tasks import load_examples
from datasets_builders.teacher_shards import generate_into_shards, teacher_shard_dir
from datasets_builders.teachers import teacher_name
from scalingdown.schema import format_question

TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst"}
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


# -- synthetic documents ---------------------------------------------------------------------------------------


def shard_dir(args: CorpusArguments, spec: str) -> Path:
    """One teacher's document shards (the topic table's version is part of the key)."""
    return teacher_shard_dir(Path(args.work_dir) / "synthetic", spec, args.generation_settings(), [TOPICS_VERSION])


def generate_documents(args: CorpusArguments, spec: str) -> dict:
    """Write this teacher's missing synthetic documents shard by shard; return what the card says about it."""
    requests = synthetic_requests(args.documents_per_teacher, args.seed)
    return generate_into_shards(spec, requests, args.generation_settings(), shard_dir(args, spec), args.shard_size)


def synthetic_documents(args: CorpusArguments, spec: str) -> Iterator[Document]:
    wanted = {request.id for request in synthetic_requests(args.documents_per_teacher, args.seed)}
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


def read_sources(args: CorpusArguments) -> Iterator[Document]:
    """Every source's documents, in the order ``--sources`` names them."""
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
