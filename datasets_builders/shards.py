"""Append-only parquet shards, so a long generation (or logit caching) run resumes after an interrupt.

Each shard is written to a temporary name and renamed into place, so a killed process leaves either a
whole shard or none: resuming never duplicates rows and never misses one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ShardStore:
    """A folder of ``shard-00000.parquet`` files holding rows keyed by ``key`` (default ``id``)."""

    def __init__(self, root: str | Path, key: str = "id"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key
        for stale in self.root.glob("*.tmp"):
            stale.unlink()  # a shard a killed process was writing: its rows will be generated again

    def shard_paths(self) -> list[Path]:
        return sorted(self.root.glob("shard-*.parquet"))

    def done_keys(self) -> set[str]:
        keys: set[str] = set()
        for path in self.shard_paths():
            keys.update(pq.read_table(path, columns=[self.key]).column(self.key).to_pylist())
        return keys

    def write(self, rows: list[dict]) -> Path:
        """Write one shard atomically and return its path."""
        index = len(self.shard_paths())
        path = self.root / f"shard-{index:05d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
        return path

    def rows(self) -> Iterable[dict]:
        for path in self.shard_paths():
            yield from pq.read_table(path).to_pylist()
