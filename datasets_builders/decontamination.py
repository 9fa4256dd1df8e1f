"""N-gram overlap between training questions and evaluation questions, reported in the dataset card.

The GPT-3 paper's 13-gram rule; questions shorter than ``n`` words are compared whole.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """Distinct n-grams in text order (a list, not a set, so 'the first found' is the same on every run)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return [tuple(words)] if words else []
    return list(dict.fromkeys(tuple(words[i : i + n]) for i in range(len(words) - n + 1)))


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
    pairs = overlapping_pairs(train, evaluation, n)
    train_grams = {gram for _, text in train for gram in ngrams(text, n)}
    eval_overlapping = sum(any(gram in train_grams for gram in ngrams(q, n)) for _, q in evaluation)
    eval_exact = {normalized_words(q) for _, q in evaluation}
    exact = sum(normalized_words(q) in eval_exact for _, q in train)
    examples = list(pairs.items())[:5]
    return ContaminationReport(n, len(train), len(evaluation), len(pairs), eval_overlapping, exact, examples)


def normalized_words(text: str) -> str:
    """Lower-cased words joined by single spaces: what 'identical' means for exact duplicates."""
    return " ".join(_WORD.findall(text.lower()))


def overlapping_pairs(train: list[tuple[str, str]], evaluation: list[tuple[str, str]], n: int = 13) -> dict[str, str]:
    """``{train id: eval id}`` for every training text sharing an n-gram with an evaluation text (the first found)."""
    index: dict[tuple[str, ...], str] = {}
    for eval_id, question in evaluation:
        for gram in ngrams(question, n):
            index.setdefault(gram, eval_id)
    pairs: dict[str, str] = {}
    for train_id, text in train:
        for gram in ngrams(text, n):
            if gram in index:
                pairs[train_id] = index[gram]
                break
    return pairs


def containing_pairs(
    documents: list[tuple[str, str]], evaluation: list[tuple[str, str]], min_words: int = 8, key_words: int = 5
) -> dict[str, str]:
    """``{document id: eval id}`` for documents that contain a whole evaluation question (as normalised words).

    The n-gram rule compares a question shorter than ``n`` words only as a whole text, which never matches a long
    document that quotes it; this is that rule for documents. Questions under ``min_words`` words ("The sun is
    responsible for") are everyday phrases, not leaks, and are skipped.
    """
    by_key: dict[tuple[str, ...], list[tuple[str, list[str]]]] = {}
    for eval_id, question in evaluation:
        words = _WORD.findall(question.lower())
        if len(words) >= min_words:
            by_key.setdefault(tuple(words[:key_words]), []).append((eval_id, words))
    pairs: dict[str, str] = {}
    for doc_id, text in documents:
        words = _WORD.findall(text.lower())
        for start in range(len(words)):
            found = next(
                (
                    eval_id
                    for eval_id, question in by_key.get(tuple(words[start : start + key_words]), ())
                    if words[start : start + len(question)] == question
                ),
                None,
            )
            if found:
                pairs[doc_id] = found
                break
    return pairs
