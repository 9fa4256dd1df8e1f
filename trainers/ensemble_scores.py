"""Each ensemble round scored on the test split: the teacher (once per run), the new student and the ensemble.

The loss is ``Trainer.evaluate``'s ``eval_loss`` on the reference sequences (the student prompt, then the gold
rationale closed by the answer sentence), labelled on the assistant tokens only; the accuracy is ``eval.measure``,
the scorer of ``make eval``, on the first ``accuracy_limit`` test questions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, Trainer, TrainingArguments
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from datasets_builders.logits import tokenize_conversation, tokenizer_identity
from datasets_builders.rationales import finish_rationale
from eval.measure import measure
from eval.models import EvalModel, has_chat_template, teacher_models
from eval.run import VARIANTS, measure_request
from trainers.ensemble_model import EnsembleForCausalLM

logger = logging.getLogger("trainers.ensemble")


def reference_dataset(location: str, tokenizer, limit: int = 0) -> Dataset:
    """The test split as labelled sequences, tokenized as KD rows are; labels -100 outside the assistant turn."""
    rows = load_dataset(location, split="test")
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    sequences = {"input_ids": [], "labels": []}
    for row in rows:
        response = finish_rationale(row["gold_rationale"] or "", row["answer"])
        encoded = tokenize_conversation(tokenizer, [row["messages"][0], {"role": "assistant", "content": response}])
        ids, start, end = encoded["input_ids"], encoded["span_start"], encoded["span_end"]
        sequences["input_ids"].append(ids)
        sequences["labels"].append([-100] * start + ids[start:end] + [-100] * (len(ids) - end))
    return Dataset.from_dict(sequences)


def evaluation_loss(model, dataset: Dataset, pad_id: int, batch_size: int, output_dir: Path) -> dict:
    """``eval_loss`` of ``Trainer.evaluate`` (the model's own loss on the labelled tokens) and its perplexity."""
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=batch_size,
        prediction_loss_only=True,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
    )
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_id)
    trainer = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    loss = trainer.evaluate()["eval_loss"]
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}


def task_accuracy(model: EvalModel, task: str, location: str, limit: int, batch_size: int, max_gen_toks) -> dict:
    """lm-eval accuracy (the ``cot`` variant of ``make eval``) on the first ``limit`` test questions, in this
    process; a failure is recorded, and the run goes on."""
    lm_eval_task = VARIANTS["cot"].format(task=task)
    request = measure_request(
        model, lm_eval_task, location, limit=limit, batch_size=batch_size, latency_samples=0, max_gen_toks=max_gen_toks
    )
    try:
        result = measure(request)
    except Exception as error:  # a round's log records the failure
        logger.warning("accuracy of %s failed: %s", model.path, error)
        return {"accuracy": None, "n": 0, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"accuracy": result.accuracy, "n": result.n}


@dataclass
class TeacherScore:
    """The teacher beside each round: its name, and its test loss and accuracy (scored once per run)."""

    name: str | None = None
    loss: float | None = None
    ppl: float | None = None
    accuracy: float | None = None
    note: str = ""

    @classmethod
    def from_log(cls, log: list[dict], test_rows: int, with_accuracy: bool) -> TeacherScore | None:
        """The teacher's scores from a pushed log, when taken on the same test rows (a resumed run)."""
        last = log[-1] if log else {}
        if last.get("teacher") is None or last.get("test_rows") != test_rows:
            return None
        if with_accuracy and last.get("teacher_accuracy") is None:
            return None
        return cls(
            name=last["teacher"],
            loss=last.get("teacher_loss"),
            ppl=last.get("teacher_ppl"),
            accuracy=last.get("teacher_accuracy"),
            note=last.get("teacher_note") or "",
        )


@dataclass
class RoundScorer:
    """Scores each round on the test split: the teacher once per run, then the new student and the ensemble."""

    task: str
    location: str
    teacher_spec: str | None
    output_dir: Path
    batch_size: int = 8
    loss_limit: int = 0
    accuracy_limit: int = 0
    max_gen_toks: int | None = None
    references: Dataset | None = None
    teacher: TeacherScore | None = None

    def loss(self, model, pad_id: int) -> dict:
        return evaluation_loss(model, self.references, pad_id, self.batch_size, self.output_dir)

    def accuracy(self, model: EvalModel) -> dict:
        return task_accuracy(model, self.task, self.location, self.accuracy_limit, self.batch_size, self.max_gen_toks)

    def score_teacher(self, spec: str | None, tokenizer) -> TeacherScore:
        """Test loss (only when the teacher shares the student's tokenizer, so both count the same tokens) and
        accuracy, prompted as ``make eval`` prompts it; what could not be measured is said in ``note``."""
        if not spec:
            return TeacherScore(note="no teacher to score (pass --eval_teacher)")
        (teacher,) = teacher_models([spec])
        if teacher.problem:
            return TeacherScore(name=teacher.name, note=f"teacher {spec} not scored: {teacher.problem}")
        score = TeacherScore(name=teacher.name)
        student_hash = tokenizer_identity(tokenizer, "student")["tokenizer_hash"]
        teacher_tokenizer = AutoTokenizer.from_pretrained(teacher.path)
        if tokenizer_identity(teacher_tokenizer, teacher.name)["tokenizer_hash"] == student_hash:
            model = AutoModelForCausalLM.from_pretrained(teacher.path, dtype=torch.float32)
            figures = self.loss(model, tokenizer.pad_token_id)
            score.loss, score.ppl = figures["loss"], figures["ppl"]
            del model
        else:
            score.note = f"{teacher.name} has another tokenizer, so its test loss counts other tokens: not compared"
        if self.accuracy_limit:
            score.accuracy = self.accuracy(teacher)["accuracy"]
        return score

    def score(self, run, member_folder: Path, ensemble_folder: Path, log: list[dict]) -> dict:
        """The log entry's scores for the round whose student is in ``member_folder``."""
        tokenizer, pad_id = run.tokenizer, run.tokenizer.pad_token_id
        if self.references is None:
            self.references = reference_dataset(self.location, tokenizer, self.loss_limit)
        if self.teacher is None:
            spec = self.teacher_spec or (run.kd_info or {}).get("logits_teacher")
            reused = TeacherScore.from_log(log, len(self.references), bool(self.accuracy_limit)) if spec else None
            self.teacher = reused or self.score_teacher(spec, tokenizer)
            if self.teacher.note:
                logger.warning(self.teacher.note)
        alone = self.loss(AutoModelForCausalLM.from_pretrained(member_folder), pad_id)
        together = self.loss(EnsembleForCausalLM.from_pretrained(str(ensemble_folder)), pad_id)
        scores = {
            "teacher": self.teacher.name,
            "teacher_loss": self.teacher.loss,
            "teacher_ppl": self.teacher.ppl,
            "teacher_note": self.teacher.note,
            "student_loss": alone["loss"],
            "student_ppl": alone["ppl"],
            "ensemble_loss": together["loss"],
            "ensemble_ppl": together["ppl"],
            "test_rows": len(self.references),
            "teacher_accuracy": self.teacher.accuracy,
            "student_accuracy": None,
            "ensemble_accuracy": None,
            "accuracy_n": 0,
        }
        if self.accuracy_limit:
            member = EvalModel("member", "student", str(member_folder), chat=has_chat_template(member_folder))
            chat = has_chat_template(ensemble_folder)
            ensemble = EvalModel("ensemble", "ensemble", str(ensemble_folder), chat=chat, trust_remote_code=True)
            student, combined = self.accuracy(member), self.accuracy(ensemble)
            scores.update(
                student_accuracy=student["accuracy"], ensemble_accuracy=combined["accuracy"], accuracy_n=combined["n"]
            )
        return scores
