"""Which of one question's sampled rationales are kept: the distinct ones that passed the filters, at most ``keep``.

Duplicates are found with normalised exact matching (case, punctuation and spacing ignored) and, for near
duplicates, the word-level similarity of :class:`difflib.SequenceMatcher` (``2 * matching words / all words``)
against every rationale already kept for the question. A question has a handful of samples, so comparing every pair
is exact and cheap; a sketching library (MinHash) pays off only across many documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher

DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
OVER_KEEP = "over_keep"
SELECTION_REASONS = (DUPLICATE, NEAR_DUPLICATE, OVER_KEEP)


@dataclass(frozen=True)
class SelectionSettings:
    """``keep``: most rationales kept per (question, teacher), 0 = every distinct one. ``near_duplicate``: the word
    similarity from which two rationales count as the same."""

    keep: int = 0
    near_duplicate: float = 0.9


def normalise(text: str) -> str:
    """Lower case, words and numbers only, single spaces: what two copies of one rationale share."""
    return " ".join(re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower()))


def similarity(a: list[str], b: list[str]) -> float:
    """Share of words two normalised texts have in common, in order (1.0: the same words)."""
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def select_rationales(candidates: Iterable[tuple[str, str | None]], settings: SelectionSettings) -> list[str | None]:
    """For each ``(text, filter_reason)`` of one question, in sample order: None if kept, else why it was dropped.

    A filter reason is passed through; a passing rationale is then checked against those kept before it.
    """
    kept: list[list[str]] = []
    verdicts: list[str | None] = []
    for text, reason in candidates:
        if reason is None:
            words = normalise(text).split()
            if words in kept:
                reason = DUPLICATE
            elif any(similarity(words, other) >= settings.near_duplicate for other in kept):
                reason = NEAR_DUPLICATE
            elif settings.keep and len(kept) >= settings.keep:
                reason = OVER_KEEP
            else:
                kept.append(words)
        verdicts.append(reason)
    return verdicts
