"""Answer extraction and comparison: one function per answer kind, shared by filters and eval.

Kinds: ``numeric`` (GSM8K, synthetic_gsm), ``letter`` (AQuA-RAT, ARC, OpenBookQA) and
``yesno`` (PubMedQA: yes/no/maybe).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

AnswerKind = Literal["numeric", "letter", "yesno"]
ANSWER_KINDS: tuple[str, ...] = ("numeric", "letter", "yesno")
LETTERS = "ABCDEFGHIJ"
YESNO = ("yes", "no", "maybe")

# A number as people write it: optional sign and currency, thousands separators, decimals.
_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
# "The answer is 42", "#### 42", "answer: $1,234.50" — the explicit markers win over a trailing number.
_NUMERIC_MARKERS = [
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"answer\s*(?:is|:|=)?\s*[:=]?\s*\**\s*(" + _NUMBER + ")", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
]
_LETTER_MARKERS = [
    # "The answer is (C)", "Answer: B", "answer is **C**". A bare lowercase letter is the article in "the answer is a
    # bacterial ...", so lowercase counts only inside parentheses: "the answer is (c)".
    re.compile(r"(?i:answer\s*(?:is|:)?)\s*[:=]?\s*\**\s*(?:\(\s*([A-Ja-j])\s*\)|([A-J])\b)"),
    re.compile(r"\(([A-J])\)\s*$"),
    re.compile(r"^\s*\(?([A-J])[\).:]?\s*$", re.MULTILINE),
]
_YESNO_MARKER = re.compile(r"answer\s*(?:is|:)?\s*[:=]?\s*\**\s*(yes|no|maybe)\b", re.IGNORECASE)
_YESNO_ANY = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def normalize_number(text: str) -> str | None:
    """Canonical form of a written number: ``'$1,234.50'`` -> ``'1234.5'``, ``'-3.0'`` -> ``'-3'``."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if not cleaned or cleaned in {"-", "."}:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():  # "inf" and "nan" parse as Decimals but are not answers
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_numeric_answer(text: str) -> str | None:
    """Final numeric answer of a solution: an explicit marker if present, else the last number."""
    for marker in _NUMERIC_MARKERS:
        found = marker.findall(text)
        if found:
            return normalize_number(found[-1])
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def extract_letter_answer(text: str, num_choices: int = 5) -> str | None:
    """Final option letter of a solution (``'... the answer is (C)'`` -> ``'C'``), within the choices."""
    valid = LETTERS[:num_choices]
    for marker in _LETTER_MARKERS:
        letters = [next(group for group in match.groups() if group).upper() for match in marker.finditer(text.strip())]
        found = [letter for letter in letters if letter in valid]
        if found:
            return found[-1]
    return None


def extract_yesno_answer(text: str) -> str | None:
    """Final yes/no/maybe of a solution: the explicit 'answer is' if present, else the last one said."""
    found = _YESNO_MARKER.findall(text) or _YESNO_ANY.findall(text)
    return found[-1].lower() if found else None


def extract_answer(text: str, kind: str, num_choices: int = 5) -> str | None:
    """Dispatch to the extractor of one answer kind."""
    if kind == "numeric":
        return extract_numeric_answer(text)
    if kind == "letter":
        return extract_letter_answer(text, num_choices)
    if kind == "yesno":
        return extract_yesno_answer(text)
    raise ValueError(f"unknown answer kind {kind!r}; expected one of {ANSWER_KINDS}")


def answers_match(predicted: str | None, gold: str, kind: str) -> bool:
    """Whether a predicted answer equals the gold one (numbers compared by value)."""
    if predicted is None:
        return False
    if kind == "numeric":
        a, b = normalize_number(predicted), normalize_number(gold)
        return a is not None and a == b
    return predicted.strip().lower() == gold.strip().lower()


def format_final_answer(answer: str) -> str:
    """The one closing sentence students and teachers are asked to end with."""
    return f"The answer is {answer}."
