"""The one example schema every task maps into (DESIGN.md, 'One example schema')."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from datasets import Features, List, Value

EXAMPLE_FEATURES = Features(
    {
        "id": Value("string"),
        "task": Value("string"),
        "question": Value("string"),
        "choices": List(Value("string")),
        "answer": Value("string"),
        "gold_rationale": Value("string"),
    }
)


@dataclass
class Example:
    """One task example. ``choices`` is None for open-answer tasks; ``answer`` is canonical."""

    id: str
    task: str
    question: str
    answer: str
    choices: list[str] | None = None
    gold_rationale: str | None = None

    def to_row(self) -> dict:
        return asdict(self)


def format_question(question: str, choices: list[str] | None) -> str:
    """Question text as every prompt shows it: choices listed as ``A) ...`` lines."""
    if not choices:
        return question
    from scalingdown.answers import LETTERS

    lines = [f"{LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return question + "\n" + "\n".join(lines)
