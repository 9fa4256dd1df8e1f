"""N-gram overlap between training questions and evaluation questions, reported in the dataset card.

The GPT-3 paper's 13-gram rule; questions shorter than ``n`` words are compared whole.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass
class ContaminationReport:
    n: int
    train_rows: int
    eval_rows: int
    train_rows_overlapping: int
    eval_rows_overlapping: int
    exact_duplicates: int  # training questions identical (after normalising case and spacing) to a test question
    examples: list[tuple[str, str]] = field(default_factory=list)  # (train id, eval id), a few

    def to_dict(self) -> dict:
        return asdict(self)


def find_overlap(train: list[tuple[str, str]], evaluation: list[tuple[str, str]], n: int = 13) -> ContaminationReport:
    """Which (id, question) pairs of ``train`` share an n-gram with a question of ``evaluation``."""
    index: dict[tuple[str, ...], str] = {}
    for eval_id, question in evaluation:
        for gram in ngrams(question, n):
            index.setdefault(gram, eval_id)
    eval_exact = {" ".join(_WORD.findall(q.lower())) for _, q in evaluation}
    exact = sum(" ".join(_WORD.findall(q.lower())) in eval_exact for _, q in train)
    train_hits, eval_hits, examples = set(), set(), []
    for train_id, question in train:
        for gram in ngrams(question, n):
            if gram in index:
                train_hits.add(train_id)
                eval_hits.add(index[gram])
                if len(examples) < 5:
                    examples.append((train_id, index[gram]))
                break
    return ContaminationReport(n, len(train), len(evaluation), len(train_hits), len(eval_hits), exact, examples)
