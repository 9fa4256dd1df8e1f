"""Rationale SFT of one student size on a teacher-rationale dataset repo (the ``make train`` stage).

    python -m trainers.sft --config recipes/train/synthetic_gsm/sft.yaml --size 1M
    accelerate launch -m trainers.sft --config recipes/train/gsm8k/sft-pretrained.yaml --size 360M --bf16 true
    python -m trainers.sft --config recipes/train/synthetic_gsm/sft.yaml --size 135M --use_peft true --lora_r 16

Methods: ``sft`` trains on the teachers' rationales (with several teachers, TinyLLM multi-task: a system turn
"Explain like <teacher>" keeps their styles apart); ``label`` is the answer-only baseline ("The answer is X.").
``kd`` distils the teacher's logits (``trainers/kd.py``). The loss covers assistant tokens only.

This module holds the data, the model and the loss; ``trainers/stage.py`` runs the rest (output folder from the
settings, resume, measure, card, push). The result is pushed as ``{task}-{method}-{size}[-lora]``: a plain (merged)
transformers model, its tokenizer and chat template, its TensorBoard logs, a loss curve and a card with the cost.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, get_dataset_config_names, load_dataset
from transformers import AutoTokenizer
from trl import ModelConfig, SFTConfig, get_peft_config

from datasets_builders.logits import STUDENT_SYSTEM, LogitsError, tokenizer_identity
from datasets_builders.tasks import get_task
from scalingdown.answers import format_final_answer
from scalingdown.arguments import ArgumentError, check_choice, check_count
from scalingdown.errors import run_cli
from scalingdown.hub import HubTarget, dataset_repo_name, model_repo_name
from scalingdown.prompts import SMOLLM2_DEFAULT_SYSTEM, chatml_training_template
from trainers import gkd
from trainers.kd import (
    CrossTeacher,
    DistillationArguments,
    KDTrainer,
    load_online_teacher,
    offline_rows,
    online_rows,
)
from trainers.minitron import CALIBRATION_ROWS
from trainers.sizes import StudentSize, get_size
from trainers.stage import (
    CardContext,
    Inputs,
    Measurement,
    Publication,
    hyperparameters,
    parse,
    pin_inputs,
    prepare_output_dir,
    run_settings,
    run_stage,
    save_settings,
    settings_key,
    setup,
)
from trainers.student_trainer import StudentSFTTrainer

logger = logging.getLogger("trainers.sft")

METHODS = {
    "sft": "rationale distillation: the student learns each teacher's explanation and its final answer",
    "label": "answer-only baseline: the student learns only the closing sentence 'The answer is X.'",
    "kd": "logit distillation: alpha * KD(teacher top-k || student) + (1 - alpha) * NLL on the rationale tokens",
    "gkd": "on-policy distillation: the teacher scores the student's own samples (TRL GKDTrainer: lmbda, beta)",
    "gold": "reference ceiling: the student learns the dataset's own gold solutions (no teacher involved)",
}
EXAMPLES_CONFIG = "examples"  # every training example of a dataset repo, rationale or not (push_data.repo_configs)


@dataclass
class ScriptArguments:
    """What to train: the data, the student size and the method. Model/LoRA options come from ``ModelConfig``."""

    task: str = field(default="synthetic_gsm", metadata={"help": "Task name; picks the dataset and model repo names."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Dataset repo (path or Hub id); default: {ORG}/{task}-rationales on the Hub target."},
    )
    size: str = field(default="1M", metadata={"help": "Student size (python -m trainers.sizes lists them)."})
    method: str = field(default="sft", metadata={"help": f"One of {sorted(METHODS)}."})
    teachers: str | None = field(
        default=None, metadata={"help": "Comma-separated teacher names to keep (default: every teacher in the repo)."}
    )
    teacher_tags: bool = field(
        default=True,
        metadata={"help": "With several teachers, name each in a system turn ('Explain like <teacher>')."},
    )
    default_teacher: str | None = field(
        default=None,
        metadata={"help": "Teacher whose style the student uses when no system turn is given (default: the first)."},
    )
    consistent_only: bool = field(
        default=False, metadata={"help": "Drop rows whose rationale's own answer disagrees with the gold one."}
    )
    max_train_rows: int = field(default=0, metadata={"help": "Use at most this many training rows; 0 = all."})
    suffix: str | None = field(
        default=None,
        metadata={"help": "Appended to the repo name ({task}-{method}-{size}-{suffix}): keeps variants apart."},
    )
    push: bool = field(default=True, metadata={"help": "Push the trained model to the Hub target."})
    recipe: str | None = field(default=None, metadata={"help": "Recorded in the card (set by --config)."})

    def __post_init__(self) -> None:
        check_choice(self.method, sorted(METHODS), "--method", "METHOD")
        get_task(self.task)
        get_size(self.size)  # fail at parse time with the list of sizes
        check_count(self.max_train_rows, "--max_train_rows", "training rows", zero="all")
        if self.suffix is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.suffix):
            raise ArgumentError(f"--suffix {self.suffix!r}: use letters, digits, '.', '_' and '-'")


# -- data ---------------------------------------------------------------------------------------------


def teacher_instruction(teacher: str) -> str:
    """The system turn that names a teacher in multi-teacher training (TinyLLM multi-task)."""
    return f"Explain like {teacher}."


def gold_rows(location: str) -> Dataset:
    """What the ``gold`` reference learns: every training example with a gold solution, from the ``examples`` config."""
    if EXAMPLES_CONFIG in get_dataset_config_names(location):
        rows = load_dataset(location, EXAMPLES_CONFIG, split="train")
        rows = rows.filter(lambda row: bool((row.get("gold_rationale") or "").strip()))
        if len(rows):
            return rows
    raise ArgumentError(
        f"--method gold: {location} has no training example with a gold solution (synthetic_gsm and gsm8k have "
        "them); re-run `make push-data` if it predates the examples config"
    )


def label_rows(location: str, rationale_rows: Dataset, script_args: ScriptArguments) -> Dataset:
    """What the answer-only baseline learns: every training example, once, from the repo's ``examples`` config.

    A baseline trained only on examples some teacher explained would see fewer examples than the students it is
    compared with could have, so the rationale rows are only a fallback for repos pushed before that config.
    """
    if EXAMPLES_CONFIG in get_dataset_config_names(location):
        if script_args.teachers or script_args.consistent_only:
            logger.info("label: --teachers/--consistent_only do not restrict the examples; all of them are used")
        return load_dataset(location, EXAMPLES_CONFIG, split="train")
    logger.warning(
        "%s has no %r config, so the label baseline trains only on examples with a surviving rationale "
        "(one row per example); re-run `make push-data` to add every training example",
        location,
        EXAMPLES_CONFIG,
    )
    seen: set[str] = set()
    return rationale_rows.filter(lambda row: not (row["id"] in seen or seen.add(row["id"])))


def load_training_rows(script_args: ScriptArguments, location: str) -> tuple[Dataset, list[str], bool]:
    """``(rows with a messages column, teachers kept, whether rows carry teacher system turns)``."""
    rows = load_dataset(location, split="train")
    available = sorted(set(rows["teacher"]))
    if script_args.teachers:
        wanted = [t.strip() for t in script_args.teachers.split(",") if t.strip()]
        unknown = sorted(set(wanted) - set(available))
        if unknown:
            raise ArgumentError(f"TEACHERS (--teachers) {unknown} are not in {location}; it has {available}")
        rows = rows.filter(lambda row: row["teacher"] in wanted)
    if script_args.consistent_only:
        rows = rows.filter(lambda row: bool(row["consistent"]))
    if len(rows) == 0:
        raise ArgumentError(f"no training rows left in {location} after the --teachers/--consistent_only filters")
    teachers = sorted(set(rows["teacher"]))
    if script_args.method == "label":
        rows = label_rows(location, rows, script_args)
    elif script_args.method == "gold":
        rows, teachers = gold_rows(location), ["gold"]
    tagged = script_args.method == "sft" and script_args.teacher_tags and len(teachers) > 1

    def to_messages(row: dict) -> dict:
        user = row["messages"][0]
        if script_args.method == "label":
            response = format_final_answer(row["answer"])
        elif script_args.method == "gold":
            response = f"{row['gold_rationale'].strip()} {format_final_answer(row['answer'])}"
        else:
            response = row["messages"][1]["content"]
        system = [{"role": "system", "content": teacher_instruction(row["teacher"])}] if tagged else []
        return {"messages": [*system, user, {"role": "assistant", "content": response}]}

    rows = rows.map(to_messages, remove_columns=[c for c in rows.column_names if c != "messages"])
    if script_args.max_train_rows:
        rows = rows.select(range(min(script_args.max_train_rows, len(rows))))
    return rows, teachers, tagged


# -- tokenizer and model ------------------------------------------------------------------------------


def load_tokenizer(size: StudentSize, default_system: str):
    """The student's tokenizer; ChatML tokenizers get the training template (TRL patches the others)."""
    tokenizer = AutoTokenizer.from_pretrained(size.tokenizer_source())
    if "<|im_start|>" in tokenizer.get_vocab() and "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.chat_template = chatml_training_template(default_system)
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(size: StudentSize, model_args: ModelConfig, tokenizer, seed: int, rows: Dataset | None = None):
    """The initialised student, with generation settings that stop at the end of the assistant turn. A ``minitron``
    size is pruned by importance on the first training conversations (``rows``), as the student sees them."""
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
    calibration = None
    if size.init == "minitron" and rows is not None:
        sample = rows.select(range(min(CALIBRATION_ROWS, len(rows))))
        calibration = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in sample]
    model = size.build_model(dtype=dtype, seed=seed, calibration=calibration)
    if model_args.attn_implementation:
        model.set_attn_implementation(model_args.attn_implementation)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


# -- the stage ----------------------------------------------------------------------------------------


def save_for_push(trainer: StudentSFTTrainer, tokenizer, folder: Path, lora: bool) -> None:
    """A plain transformers folder: merged weights (adapter kept in ``adapter/``), tokenizer, chat template."""
    if folder.exists():
        shutil.rmtree(folder)
    model = trainer.model
    if lora:
        model.save_pretrained(folder / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@dataclass
class TrainingRun:
    """Everything ``build_run`` built before training: the trainer and what the card needs to say about it."""

    trainer: StudentSFTTrainer  # KDTrainer for --method kd
    tokenizer: object
    size: StudentSize
    repo: str
    output_dir: Path
    last_checkpoint: str | None
    inputs: Inputs
    settings: dict
    rows: Dataset
    teachers: list[str]
    tagged: bool
    default_teacher: str
    default_system: str
    kd_info: dict | None = None
    example_user: str = ""

    @property
    def dataset_repo(self) -> str:
        return self.inputs.dataset_repo

    @property
    def dataset_revision(self) -> str | None:
        return self.inputs.dataset_revision


def distillation_data(
    script_args: ScriptArguments, kd_args: DistillationArguments, location: str, rows: Dataset, tokenizer, size
) -> tuple[Dataset, object, dict, list[CrossTeacher]]:
    """``(tokenized rows, online teacher or None, what the card records, teachers with other tokenizers)`` for
    ``--method kd``.

    Every check (stored logits present, tokenizer shared with the teacher) runs here, before any model is built.
    """
    student = tokenizer_identity(tokenizer, size.source)
    if kd_args.kd_source == "offline":
        kd_rows, info, cross = offline_rows(location, student, kd_args, script_args.teachers, tokenizer)
        teacher_model = None
    else:
        spec = kd_args.online_teacher(load_dataset(location, split="train")["teacher"])
        teacher_model, info = load_online_teacher(spec, student)
        cross = []
        info["k"] = kd_args.kd_top_k or "vocabulary"
        kd_rows = online_rows(rows, tokenizer)
    if script_args.max_train_rows:
        kd_rows = kd_rows.select(range(min(script_args.max_train_rows, len(kd_rows))))
    return kd_rows, teacher_model, {**info, **kd_args.describe()}, cross


def build_run(
    script_args: ScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    kd_args: DistillationArguments | None = None,
    kd_trainer: Callable[..., KDTrainer] = KDTrainer,
) -> TrainingRun:
    """Inputs pinned, output folder from the settings, then data, tokenizer, model and the TRL trainer.

    ``kd_trainer`` builds the ``--method kd`` trainer (``trainers.ensemble`` passes one that weights tokens).
    """
    size = get_size(script_args.size)
    target = HubTarget.from_env()
    repo = model_repo_name(script_args.task, script_args.method, size.name, bool(model_args.use_peft))
    if script_args.suffix:
        repo = f"{repo}-{script_args.suffix}"
    made_by = f"run `make push-data TASK={script_args.task}` first"
    inputs = pin_inputs(script_args.dataset_name, dataset_repo_name(script_args.task), size, target, made_by)
    distils = script_args.method in ("kd", "gkd")
    if distils:
        kd_args = kd_args or DistillationArguments()
    settings = run_settings(inputs, training_args, script_args, model_args, kd_args if distils else None)
    output_dir, last_checkpoint = prepare_output_dir(training_args, "train", repo, settings)

    location = inputs.dataset_location
    rows, teachers, tagged = load_training_rows(script_args, location)
    default_teacher = script_args.default_teacher or teachers[0]
    default_system = teacher_instruction(default_teacher) if tagged else SMOLLM2_DEFAULT_SYSTEM
    if script_args.method == "kd":
        default_system = STUDENT_SYSTEM  # the system turn of the sequences the teacher scored
    tokenizer = load_tokenizer(size, default_system)

    kd_info, example_user, text_rows = None, rows[0]["messages"][-2]["content"], rows
    if script_args.method == "gkd":
        spec = kd_args.online_teacher(teachers)
        teacher_model, kd_info = load_online_teacher(spec, tokenizer_identity(tokenizer, size.source))
        kd_info = {**kd_info, **kd_args.describe("gkd")}
    elif script_args.method == "kd":
        rows, teacher_model, kd_info, cross = distillation_data(script_args, kd_args, location, rows, tokenizer, size)
        if training_args.packing or training_args.padding_free or training_args.truncation_mode != "keep_start":
            raise LogitsError("--method kd needs unpacked, right-truncated rows: drop --packing/--padding_free")
        training_args.remove_unused_columns = False  # the teacher's top-k columns reach the collator
        training_args.assistant_only_loss = False  # labels come with the rows
    else:
        training_args.assistant_only_loss = True
    logger.info("%d training rows from %s (teachers %s)", len(rows), location, teachers)
    model = load_model(size, model_args, tokenizer, training_args.seed, text_rows)

    common = dict(
        model=model,
        args=training_args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if script_args.method == "gkd":
        trainer = gkd.gkd_trainer(
            model, teacher_model, training_args, kd_args, rows, tokenizer, get_peft_config(model_args)
        )
    elif kd_info is not None:
        trainer = kd_trainer(**common, kd_args=kd_args, teacher_model=teacher_model, cross_teachers=cross)
    else:
        trainer = StudentSFTTrainer(**common)
    save_settings(output_dir, settings)
    return TrainingRun(
        trainer=trainer,
        tokenizer=tokenizer,
        size=size,
        repo=repo,
        output_dir=output_dir,
        last_checkpoint=last_checkpoint,
        inputs=inputs,
        settings=settings,
        rows=rows,
        teachers=teachers,
        tagged=tagged,
        default_teacher=default_teacher,
        default_system=default_system,
        kd_info=kd_info,
        example_user=example_user,
    )


def publication(
    run: TrainingRun, script_args: ScriptArguments, training_args: SFTConfig, model_args: ModelConfig
) -> Publication:
    """How a student becomes its model repo: merged weights, tokenizer, and the card's method lines."""
    lora = bool(model_args.use_peft)
    target = HubTarget.from_env()
    tags = ["distillation", script_args.task, f"method-{script_args.method}"] + (["lora"] if lora else [])
    if run.kd_info and script_args.method == "kd":
        tags += [f"kd-{run.kd_info['kd_loss']}", f"kd-{run.kd_info['kd_source']}"]
        if run.kd_info.get("cross_teachers"):
            tags += ["cross-tokenizer-kd", f"kd-{run.kd_info['cross_teachers'][0]['loss']}"]
    elif run.kd_info:
        tags += ["on-policy-distillation", f"gkd-lmbda-{run.kd_info['lmbda']}"]

    def card(measured: Measurement) -> CardContext:
        return CardContext(
            model_name=target.repo_id(run.repo),
            repo_location=target.location("model", run.repo),
            size=run.size,
            inputs=run.inputs,
            train_rows=len(run.rows),
            hyperparameters=hyperparameters(training_args),
            recipe=script_args.recipe,
            measured=measured,
            settings_key=settings_key(run.settings),
            method_fields=dict(
                task=script_args.task,
                method=script_args.method,
                method_description=METHODS[script_args.method],
                default_system=run.default_system,
                train_config=(run.kd_info or {}).get("logits_config") or run.rows.info.config_name or "default",
                kd=run.kd_info,
                teachers=run.teachers,
                teacher_tags=run.tagged,
                teacher_instruction_example=teacher_instruction(run.default_teacher),
                lora=lora,
                lora_r=model_args.lora_r,
                lora_alpha=model_args.lora_alpha,
                lora_targets=model_args.lora_target_modules or "peft's defaults (q_proj, v_proj)",
                example_messages=repr([{"role": "user", "content": run.example_user}]),
            ),
        )

    return Publication(
        repo=run.repo,
        save=lambda folder: save_for_push(run.trainer, run.tokenizer, folder, lora),
        template="model_card.md",
        tags=tags,
        commit_message=f"Train {run.repo} ({script_args.method}, {run.size.name})",
        card=card,
    )


def main(
    script_args: ScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    kd_args: DistillationArguments | None = None,
) -> str:
    """Train one size with one method and push it; returns the model repo's location (the output dir unpushed)."""
    setup(training_args)
    run = build_run(script_args, training_args, model_args, kd_args)
    location, _ = run_stage(
        run.trainer,
        run.output_dir,
        run.last_checkpoint,
        run.size.parameter_counts(),
        publication(run, script_args, training_args, model_args),
        push=script_args.push,
        resume_from=training_args.resume_from_checkpoint,
    )
    return location


def cli(argv: list[str] | None = None) -> str:
    return main(*parse((ScriptArguments, SFTConfig, ModelConfig, DistillationArguments), argv))


if __name__ == "__main__":
    run_cli(cli)
