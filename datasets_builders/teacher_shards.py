"""One teacher's generations written as resumable parquet shards: what push-data's rationales and the corpus's
synthetic documents both are.

A shard folder is keyed by everything that changes what the teacher writes (the teacher, its decoding settings
apart from batch size, and the caller's inputs), so a re-run finds its finished shards and generates only the
requests no shard holds yet. The teacher's description and its token/time totals live beside the shards, so a
resumed or repeated build reports the same figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets_builders.shards import ShardStore
from datasets_builders.teacher_base import GenerationSettings, TeacherPrompt
from datasets_builders.teachers import load_teacher, teacher_name

logger = logging.getLogger("teacher_shards")


@dataclass
class TeacherRequest:
    """One prompt for the teacher; ``columns`` are stored beside its answer in the shard row."""

    id: str
    prompt: TeacherPrompt
    columns: dict = field(default_factory=dict)


def teacher_shard_dir(parent: str | Path, spec: str, settings: GenerationSettings, inputs: Sequence) -> Path:
    """``parent/<teacher>-<hash>``: the hash covers the teacher, its settings (not how the work is laid out: batch
    size, workers, the head's KV cache shared or copied) and ``inputs``."""
    decoding = asdict(settings)
    for parallelism in ("batch_size", "workers", "head_kv"):
        decoding.pop(parallelism)
    key = json.dumps([spec, decoding, list(inputs)], sort_keys=True, default=str)
    return Path(parent) / f"{teacher_name(spec)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def generate_into_shards(
    spec: str, requests: Sequence[TeacherRequest], settings: GenerationSettings, root: Path, shard_size: int
) -> dict:
    """Write the teacher's answers to the requests no shard holds yet, ``shard_size`` per shard.

    Each shard row is ``{id, **columns, text, num_tokens}``. Returns what a card records of the teacher: its name,
    description, generated tokens and seconds.
    """
    store = ShardStore(root)
    info = store.read_stats({"generated_tokens": 0, "seconds": 0.0})
    done = store.done_keys()
    todo = [request for request in requests if request.id not in done]
    name = teacher_name(spec)
    if not todo:
        logger.info("%s: all %d generations already written in %s", name, len(requests), store.root)
        return {"name": name, **info}
    teacher = load_teacher(spec, backend=settings.backend)
    info.update(teacher.describe())

    def generate(chunk: list[TeacherRequest]) -> list[dict]:
        began = time.perf_counter()
        generations = teacher.generate([request.prompt for request in chunk], settings)
        info["seconds"] += time.perf_counter() - began
        info["generated_tokens"] += sum(g.num_tokens for g in generations)
        return [
            {"id": request.id, **request.columns, "text": g.text, "num_tokens": g.num_tokens}
            for request, g in zip(chunk, generations, strict=True)
        ]

    store.fill(todo, shard_size, generate, info, total=len(requests), desc=name)
    teacher.close()
    return {"name": name, **info}
