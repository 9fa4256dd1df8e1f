"""Prompt, target and scoring functions of the ScalingDown lm-eval tasks (``!function utils.*`` in the YAMLs).

lm-eval imports this file by its path, so every project import here is absolute; the runner imports it as
``eval.tasks.utils`` for the task names. The answer kind of a row comes from its ``task`` column, so one set of
functions serves every task and a YAML differs from its siblings only in name and ``dataset_path``.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from datasets_builders.tasks import TASKS, get_task
from scalingdown.answers import LETTERS, YESNO, answers_match, extract_answer, format_final_answer
from scalingdown.prompts import student_prompt
from scalingdown.schema import format_question

TASKS_DIR = Path(__file__).resolve().parent  # what `--include_path` / `TaskManager(include_path=...)` takes
# ScalingDown task -> lm-eval task: chain of thought, scored on the answer extracted from the generation.
TASK_NAMES: dict[str, str] = {task: f"scalingdown_{task}" for task in TASKS}
# ScalingDown task -> lm-eval task: log-likelihood of each choice (tasks with a fixed set of answers only).
MC_TASK_NAMES: dict[str, str] = {
    task: f"scalingdown_{task}_mc" for task, spec in TASKS.items() if spec.answer_kind in ("letter", "yesno")
}
# ScalingDown task -> lm-eval task: log-likelihood of the gold closing sentence after the student prompt.
NLL_TASK_NAMES: dict[str, str] = {task: f"scalingdown_{task}_nll" for task in TASKS}


def answer_kind(doc: dict) -> str:
    """``numeric``, ``letter`` or ``yesno``: how the row's task writes its answers."""
    return get_task(doc["task"]).answer_kind


def one_row_per_example(dataset: datasets.Dataset) -> datasets.Dataset:
    """The first row of each example id, preferring one whose rationale agrees with the gold answer.

    Train holds one row per (example, teacher); without this, two few-shot shots could be the same question.
    """
    chosen: dict[str, int] = {}
    consistent = list(dataset["consistent"]) if "consistent" in dataset.column_names else [None] * len(dataset)
    for index, (row_id, agrees) in enumerate(zip(dataset["id"], consistent, strict=True)):
        if row_id not in chosen or (agrees and not consistent[chosen[row_id]]):
            chosen[row_id] = index
    if len(chosen) == len(dataset):
        return dataset
    return dataset.select(sorted(chosen.values()))


# ---- chain of thought (generate_until) ----


def doc_to_text(doc: dict) -> str:
    """The student's user turn, word for word as in training."""
    return student_prompt(doc["question"], doc["choices"], answer_kind(doc))


def doc_to_target(doc: dict) -> str:
    """A few-shot answer: the teacher's rationale (it ends with 'The answer is X.'), or that sentence alone."""
    return doc.get("rationale") or format_final_answer(doc["answer"])


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``exact_match``: the generation's final answer equals the gold one; ``parsed``: it has a final answer at all."""
    kind = answer_kind(doc)
    predicted = extract_answer(results[0], kind, len(doc["choices"] or []))
    return {"exact_match": int(answers_match(predicted, doc["answer"], kind)), "parsed": int(predicted is not None)}


# ---- log-likelihood of each choice (multiple_choice) ----


def doc_to_mc_text(doc: dict) -> str:
    """The question and its lettered choices, then 'Answer:' for the choice text to continue."""
    return f"Question: {format_question(doc['question'], doc['choices'])}\nAnswer:"


def doc_to_choice(doc: dict) -> list[str]:
    """The texts scored: the row's choices, or yes/no/maybe."""
    kind = answer_kind(doc)
    if kind == "letter":
        return list(doc["choices"])
    if kind == "yesno":
        return list(YESNO)
    raise ValueError(f"task {doc['task']!r} has open {kind} answers; it has no multiple-choice variant")


def doc_to_choice_index(doc: dict) -> int:
    """Index of the gold answer in :func:`doc_to_choice`."""
    return (LETTERS if answer_kind(doc) == "letter" else YESNO).index(doc["answer"])


# ---- log-likelihood of the gold answer sentence (loglikelihood) ----


def doc_to_answer_sentence(doc: dict) -> str:
    """The gold closing sentence, 'The answer is X.', exactly as students are trained to write it."""
    return format_final_answer(doc["answer"])


def doc_to_answer_line(doc: dict) -> str:
    """The gold sentence on a line of its own, for models scored without a chat template: lm-eval joins a
    ``loglikelihood`` target to the prompt with no ``target_delimiter`` (it adds one only to the shots)."""
    return "\n" + doc_to_answer_sentence(doc)


def process_nll_results(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """``answer_nll``: -log p(gold sentence | prompt) in nats; ``greedy``: it is the model's greedy continuation."""
    loglikelihood, is_greedy = results[0]
    return {"answer_nll": -float(loglikelihood), "greedy": int(is_greedy)}
