"""Append-only parquet shards, so a long generation (or logit caching) run resumes after an interrupt.

Each shard is written to a temporary name and renamed into place, so a killed process leaves either a
whole shard or none: resuming never duplicates rows and never misses one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

Item = TypeVar("Item")


class ShardStore:
    """A folder of ``shard-00000.parquet`` files holding rows keyed by ``key`` (default ``id``), and a
    ``stats.json`` of running totals (tokens, seconds) kept in step with the shards."""

    def __init__(self, root: str | Path, key: str = "id"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.stats_path = self.root / "stats.json"
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

    def read_stats(self, default: dict) -> dict:
        """The running totals of earlier runs, or ``default`` for a new store."""
        return json.loads(self.stats_path.read_text()) if self.stats_path.exists() else dict(default)

    def fill(
        self,
        pending: Sequence[Item],
        shard_size: int,
        make_rows: Callable[[list[Item]], list[dict]],
        stats: dict,
        total: int,
        desc: str,
    ) -> None:
        """Turn ``pending`` items into shards, ``shard_size`` items each, writing ``stats`` after every shard.

        ``make_rows`` does the work for one shard's items (and may update ``stats``); ``total`` counts the items
        done before too, for the progress bar.
        """
        with tqdm(total=total, initial=total - len(pending), desc=desc) as progress:
            for start in range(0, len(pending), shard_size):
                chunk = list(pending[start : start + shard_size])
                self.write(make_rows(chunk))
                tmp = self.stats_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(stats))
                os.replace(tmp, self.stats_path)
                progress.update(len(chunk))
