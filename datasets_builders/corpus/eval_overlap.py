"""Decontamination of the corpus: which documents overlap a test question of an eval task.

Exact n-gram overlap (the GPT-3 rule) for tasks with human-written questions; a whole-question match for templated
tasks, whose n-grams are shared by design.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datasets_builders.corpus.arguments import CorpusArguments, Document
from datasets_builders.decontamination import containing_pairs, overlapping_pairs
from datasets_builders.tasks import TASKS, get_task, load_examples

_WORD = re.compile(r"\w+")


@dataclass
class EvalQuestions:
    """One eval task's test questions and the rule that decides overlap with a document."""

    task: str
    questions: list[tuple[str, str]]
    templated: bool  # generated from sentence templates: n-grams are shared by design, so only whole questions count
    source: str

    def rule(self, n: int) -> str:
        if self.templated:
            return "contains a whole test question (a templated task shares its n-grams by design)"
        return f"shares a {n}-gram with a test question, or contains a whole shorter one of 8+ words"


def load_eval_questions(args: CorpusArguments) -> tuple[list[EvalQuestions], dict[str, str]]:
    """Every eval task's test questions that can be read here, and why the others could not."""
    names = list(TASKS) if args.eval_tasks.strip() == "all" else [t.strip() for t in args.eval_tasks.split(",")]
    found, missing = [], {}
    for name in names:
        spec = get_task(name)
        local = Path(args.eval_data) / name if args.eval_data else None
        data = local if local is not None and local.is_dir() else None
        try:
            examples, report = load_examples(name, "test", data=data, seed=args.seed)
        except Exception as error:  # offline and no local copy: reported in the card, never a crash
            missing[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            continue
        questions = [(row["id"], row["question"]) for row in examples]
        found.append(EvalQuestions(name, questions, templated=spec.hub_id is None, source=report.source))
    return found, missing


def contaminated_documents(documents: list[Document], evaluation: EvalQuestions, n: int) -> dict[str, str]:
    """``{document id: test question id}`` for the documents that overlap this task's test split."""
    texts = [(d.id, d.text) for d in documents]
    if evaluation.templated:
        return containing_pairs(texts, evaluation.questions)
    short = [(i, q) for i, q in evaluation.questions if len(_WORD.findall(q)) < n]
    return containing_pairs(texts, short) | overlapping_pairs(texts, evaluation.questions, n)
