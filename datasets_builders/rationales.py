"""Rationale prompts (TinyLLM teacher-forced chain of thought, or plain CoT) and the filters after them.

Teacher-forced: the teacher sees the question, the choices and the gold answer, and is asked for the
reasoning that leads to it (TinyLLM, arXiv 2402.04616; "distilling step-by-step" uses the same idea).
Plain CoT: the teacher is not told the answer; kept for comparison.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from datasets_builders.teacher_base import TeacherPrompt
from scalingdown.answers import answers_match, extract_answer, format_final_answer
from scalingdown.schema import format_question

PROMPT_MODES = ("teacher_forced", "cot")
PROMPT_VERSION = "v2"  # bump when a template below changes: it is part of the shard fingerprint

SYSTEM_PROMPT = "You are a patient teacher. You explain solutions step by step, briefly and correctly."

_FORCED_INSTRUCTION = (
    "For each question you are given its correct answer. Explain step by step, in a few short sentences, why it "
    "is the answer. Do not say that you were given the answer.{hint} Finish with the sentence 'The answer is "
    "<answer>.'"
)
_COT_INSTRUCTION = (
    "Think step by step, in a few short sentences.{hint} Finish with the sentence 'The answer is <answer>.'"
)
# Numeric rationales must show their arithmetic: the derivation filter keeps only those whose last step computes
# the answer, so the request asks for it and the worked examples show it.
_HINTS = {"numeric": " Write every calculation out, as in '4 * 12 = 48'."}


class WorkedExample(NamedTuple):
    """A solved example shown before the request (the task's train split, else the built-in one below)."""

    question: str
    choices: list[str] | None
    answer: str
    rationale: str


# One built-in worked example per answer kind, written for this project, for tasks without gold solutions.
BUILT_IN_EXAMPLES = {
    "numeric": WorkedExample(
        "A baker makes 4 trays of 12 muffins and sells 30 of them. How many muffins are left?",
        None,
        "18",
        "The baker makes 4 * 12 = 48 muffins. After selling 30, 48 - 30 = 18 muffins are left.",
    ),
    "letter": WorkedExample(
        "Which of these is a source of light?",
        ["a mirror", "the Sun", "the Moon", "a window"],
        "B",
        "A mirror, the Moon and a window only reflect or let through light. The Sun makes its own light.",
    ),
    "yesno": WorkedExample(
        "Does regular exercise lower resting heart rate in adults? Context: In a trial of 200 adults, 12 weeks of "
        "aerobic training lowered resting heart rate by 6 beats per minute compared with controls.",
        None,
        "yes",
        "The trial compared trained adults with controls and found a lower resting heart rate after training.",
    ),
}


def build_prompt(
    question: str,
    choices: list[str] | None,
    answer: str,
    kind: str,
    mode: str,
    shots: Sequence[WorkedExample] = (),
) -> TeacherPrompt:
    """Both forms of one rationale request after the same worked examples (``shots``, else the built-in one):
    chat messages, with the instruction as the system turn and each example as an earlier exchange, and a
    plain-text prompt for base models. Small teachers copy the form of what they are shown, so examples of the
    task itself (its gold solutions) keep far more rationales than a generic one."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; choose one of {PROMPT_MODES}")
    shots = list(shots) or [BUILT_IN_EXAMPLES[kind]]
    hint = _HINTS.get(kind, "")
    instruction = (_FORCED_INSTRUCTION if mode == "teacher_forced" else _COT_INSTRUCTION).format(hint=hint)
    messages = [{"role": "system", "content": f"{SYSTEM_PROMPT} {instruction}"}]
    text = ""
    for shot in shots:
        reply = f"{shot.rationale} {format_final_answer(shot.answer)}"
        request = _request(format_question(shot.question, shot.choices), shot.answer, mode)
        messages += [{"role": "user", "content": request}, {"role": "assistant", "content": reply}]
        text += f"{request}\nExplanation: {reply}\n\n"
    request = _request(format_question(question, choices), answer, mode)
    messages.append({"role": "user", "content": request})
    return TeacherPrompt(messages=messages, text=f"{text}{request}\nExplanation:")


def _request(body: str, answer: str, mode: str) -> str:
    given = f"\nCorrect answer: {answer}" if mode == "teacher_forced" else ""
    return f"Question: {body}{given}"


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


def derives(text: str, answer: str | None) -> bool:
    """The last written step ``a op b = c`` computes ``answer``: the rationale shows how it got there, unlike
    "Leila has 2 * 4 = 8 cookies left. The answer is 2." or a bare "The answer is 25."."""
    steps = _EQUATION.findall(text)
    if not steps or answer is None:
        return False
    try:
        return abs(float(steps[-1][3].replace(",", "")) - float(answer.replace(",", ""))) < 1e-6
    except ValueError:
        return False


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
    require_derivation: bool = True  # numeric tasks: the last "a op b = c" step must compute the final answer
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
    if kind == "numeric" and settings.require_derivation and not derives(rationale, predicted):
        return FilterResult(consistent, predicted, "underived")
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
