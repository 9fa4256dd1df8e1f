"""The student-side prompt: what a student is asked, in training, evaluation and the Space alike.

One function, so a model trained on ``make train`` data sees the same words under lm-eval and in the Space.
"""

from __future__ import annotations

from scalingdown.schema import format_question

ANSWER_INSTRUCTIONS = {
    "numeric": "Solve the problem step by step, then finish with 'The answer is <number>.'",
    "letter": "Reason step by step, then finish with 'The answer is <letter>.'",
    "yesno": "Reason step by step, then finish with 'The answer is yes.', 'The answer is no.' or "
    "'The answer is maybe.'",
}


def student_prompt(question: str, choices: list[str] | None, answer_kind: str) -> str:
    """The user turn a student answers: the question, its choices, and the expected closing sentence."""
    return f"{format_question(question, choices)}\n\n{ANSWER_INSTRUCTIONS[answer_kind]}"


def student_messages(question: str, choices: list[str] | None, answer_kind: str, response: str | None = None):
    """Chat messages for TRL: the user turn, plus the assistant turn when a response is given."""
    messages = [{"role": "user", "content": student_prompt(question, choices, answer_kind)}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages
