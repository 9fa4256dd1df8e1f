"""The student-side prompt: what a student is asked, in training, evaluation and the Space alike.

One function, so a model trained on ``make train`` data sees the same words under lm-eval and in the Space.
"""

from __future__ import annotations

import json

from scalingdown.schema import format_question

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

ANSWER_INSTRUCTIONS = {
    "numeric": "Solve the problem step by step, then finish with 'The answer is <number>.'",
    "letter": "Reason step by step, then finish with 'The answer is <letter>.'",
    "yesno": "Reason step by step, then finish with 'The answer is yes.', 'The answer is no.' or "
    "'The answer is maybe.'",
}

# Where an answer ends, for teachers, lm-eval (eval/tasks/_cot_template_yaml's ``until``) and the Space alike:
# the end of a chat turn, the end of a few-shot shot, and the instruction's tail (a base model that writes the
# next question anyway is cut before its 'The answer is', so the last final answer is still its own).
# A model that starts the next question ('\nQuestion:') has finished its answer: a base model without shots does.
STOP_STRINGS = ("<|im_end|>", "\n\n\n", ", then finish with 'The answer is", "\nQuestion:")
# Teachers also get the few-shot 'Question:' prompt of datasets_builders/rationales.py.
TEACHER_FEW_SHOT_STOP_STRINGS = ("\n\nQuestion",)
TEACHER_STOP_STRINGS = STOP_STRINGS + TEACHER_FEW_SHOT_STOP_STRINGS


def student_prompt(question: str, choices: list[str] | None, answer_kind: str) -> str:
    """The user turn a student answers: the question, its choices, and the expected closing sentence."""
    return f"{format_question(question, choices)}\n\n{ANSWER_INSTRUCTIONS[answer_kind]}"


def student_messages(question: str, choices: list[str] | None, answer_kind: str, response: str | None = None):
    """Chat messages for TRL: the user turn, plus the assistant turn when a response is given."""
    messages = [{"role": "user", "content": student_prompt(question, choices, answer_kind)}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def chatml_training_template(default_system: str) -> str:
    """SmolLM2's ChatML template with ``{% generation %}`` around what the assistant must learn to write.

    The markers let TRL's ``assistant_only_loss`` mask everything else; ``<|im_end|>`` is inside them so the
    student learns to stop. Rendering is unchanged from SmolLM2's own template apart from the default system.
    """
    system = json.dumps(default_system)
    return (
        "{%- for message in messages %}"
        "{%- if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\n' + " + system + " + '<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- if message['role'] == 'assistant' %}"
        "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{{ '\\n' }}"
        "{%- else %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
    )
