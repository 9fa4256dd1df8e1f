"""Rationale prompts (TinyLLM teacher-forced chain of thought, or plain CoT) and the filters after them.

Teacher-forced: the teacher sees the question, the choices and the gold answer, and is asked for the
reasoning that leads to it (TinyLLM, arXiv 2402.04616; "distilling step-by-step" uses the same idea).
Plain CoT: the teacher is not told the answer; kept for comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasets_builders.teacher_base import TeacherPrompt
from scalingdown.answers import answers_match, extract_answer, format_final_answer
from scalingdown.schema import format_question

PROMPT_MODES = ("teacher_forced", "cot")
PROMPT_VERSION = "v1"  # bump when a template below changes: it is part of the shard fingerprint

SYSTEM_PROMPT = "You are a patient teacher. You explain solutions step by step, briefly and correctly."

_FORCED_INSTRUCTION = (
    "The correct answer is {answer}. Explain step by step, in a few short sentences, why this is the answer. "
    "Do not say that you were given the answer. Finish with the sentence '{final}'"
)
_COT_INSTRUCTION = (
    "Think step by step, in a few short sentences, then finish with the sentence 'The answer is <answer>.'"
)

# Few-shot examples for base (non-chat) teachers, one per answer kind, written for this project.
_SHOTS = {
    "numeric": (
        "A baker makes 4 trays of 12 muffins and sells 30 of them. How many muffins are left?",
        None,
        "18",
        "The baker makes 4 * 12 = 48 muffins. After selling 30, 48 - 30 = 18 muffins are left.",
    ),
    "letter": (
        "Which of these is a source of light?",
        ["a mirror", "the Sun", "the Moon", "a window"],
        "B",
        "A mirror, the Moon and a window only reflect or let through light. The Sun makes its own light.",
    ),
    "yesno": (
        "Does regular exercise lower resting heart rate in adults? Context: In a trial of 200 adults, 12 weeks of "
        "aerobic training lowered resting heart rate by 6 beats per minute compared with controls.",
        None,
        "yes",
        "The trial compared trained adults with controls and found a lower resting heart rate after training.",
    ),
}


def build_prompt(question: str, choices: list[str] | None, answer: str, kind: str, mode: str) -> TeacherPrompt:
    """Both forms of one rationale request: chat messages and a few-shot plain-text prompt."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; choose one of {PROMPT_MODES}")
    body = format_question(question, choices)
    final = format_final_answer(answer)
    instruction = (
        _FORCED_INSTRUCTION.format(answer=answer, final=final) if mode == "teacher_forced" else _COT_INSTRUCTION
    )
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Question: {body}\n\n{instruction}"},
    ]
    shot_q, shot_choices, shot_answer, shot_text = _SHOTS[kind]
    shot = _plain_block(format_question(shot_q, shot_choices), shot_answer, mode)
    shot += f" {shot_text} {format_final_answer(shot_answer)}\n\n"
    text = shot + _plain_block(body, answer, mode)
    return TeacherPrompt(messages=messages, text=text)


def _plain_block(body: str, answer: str, mode: str) -> str:
    given = f"Correct answer: {answer}\n" if mode == "teacher_forced" else ""
    return f"Question: {body}\n{given}Explanation:"


# Refusals and assistant boilerplate (also the corpus's refusal filter, datasets_builders/corpus/filters.py) ...
REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) sorry\b",
    r"\bI (?:cannot|can't|can not|won't) (?:help|answer|provide|assist)",
    r"\bas an AI\b",
    r"\blanguage model\b",
    r"\bI apologi[sz]e\b",
]
# ... and rationales that lean on having been told the answer (teacher-forced prompts only).
ANSWER_LEAK_PATTERNS = [
    r"\b(?:given|provided|stated) (?:correct )?answer\b",
    r"\bcorrect answer is given\b",
]
_REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS + ANSWER_LEAK_PATTERNS), re.IGNORECASE)


_EQUATION = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*([-+*/x×÷])\s*(\d[\d,]*(?:\.\d+)?)\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)")
_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "x": lambda a, b: a * b,
    "×": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
    "÷": lambda a, b: a / b if b else None,
}


def wrong_equations(text: str) -> list[str]:
    """Written steps ``a op b = c`` whose arithmetic is wrong (a calculator check, as in GSM8K's annotations)."""
    wrong = []
    for a, op, b, c in _EQUATION.findall(text):
        left = _OPS[op](float(a.replace(",", "")), float(b.replace(",", "")))
        if left is None or abs(left - float(c.replace(",", ""))) > 1e-6 * max(1.0, abs(left)):
            wrong.append(f"{a} {op} {b} = {c}")
    return wrong


def repetition_ratio(text: str) -> float:
    """Share of non-empty lines (or sentences, for one-line text) that repeat an earlier one."""
    # Digits are masked so "Step 1: ..." and "Step 2: ..." count as the same line.
    units = [re.sub(r"\d+", "#", u.strip().lower()) for u in re.split(r"\n+|(?<=[.!?])\s+", text) if u.strip()]
    return 1 - len(set(units)) / len(units) if units else 0.0


@dataclass
class FilterSettings:
    """Which rationales are kept. Recorded in the dataset card."""

    min_chars: int = 20
    max_chars: int = 2000
    max_repetition: float = 0.3  # degenerate loops ("Step 5: The answer is 10." ten times) are not reasoning
    check_arithmetic: bool = True  # numeric tasks: drop rationales with a wrong "a op b = c" step
    consistency: str = "drop"  # drop | flag: what to do when the rationale's own answer disagrees with gold

    def __post_init__(self) -> None:
        if self.consistency not in ("drop", "flag"):
            raise ValueError("consistency must be 'drop' or 'flag'")


@dataclass
class FilterResult:
    consistent: bool
    predicted: str | None
    reason: str | None  # None when the rationale is kept


def check_rationale(rationale: str, answer: str, kind: str, num_choices: int, settings: FilterSettings) -> FilterResult:
    """Apply the refusal, length, repetition, arithmetic and consistency filters in that order.

    The first failure names the reason, so the card's counts add up to the rows dropped.
    """
    predicted = extract_answer(rationale, kind, num_choices or 5)
    consistent = answers_match(predicted, answer, kind)
    if _REFUSAL_RE.search(rationale):
        return FilterResult(consistent, predicted, "refusal")
    if len(rationale) < settings.min_chars:
        return FilterResult(consistent, predicted, "too_short")
    if len(rationale) > settings.max_chars:
        return FilterResult(consistent, predicted, "too_long")
    if repetition_ratio(rationale) > settings.max_repetition:
        return FilterResult(consistent, predicted, "repetitive")
    if kind == "numeric" and settings.check_arithmetic and wrong_equations(rationale):
        return FilterResult(consistent, predicted, "bad_arithmetic")
    if not consistent and settings.consistency == "drop":
        return FilterResult(consistent, predicted, "inconsistent")
    return FilterResult(consistent, predicted, None)


def finish_rationale(rationale: str, answer: str) -> str:
    """The assistant turn a student learns: the rationale, closed by the canonical final sentence."""
    text = rationale.strip()
    final = format_final_answer(answer)
    # Drop any trailing restatements so the answer appears once, at the end, in the one format eval parses.
    text = re.sub(r"(?:\s*(?:the )?(?:final )?answer is[^.\n]*\.?)+\s*$", "", text, flags=re.IGNORECASE).strip()
    # Small teachers often open with the answer they were shown; the student should reason first.
    text = re.sub(r"^\s*(?:the )?(?:final |correct )?answer is[^.\n]*\.\s*", "", text, flags=re.IGNORECASE).strip()
    return f"{text} {final}".strip() if text else final
