"""Rationale SFT of one student size on a teacher-rationale dataset repo (the ``make train`` stage).

    python -m trainers.sft --config recipes/train/synthetic_gsm/sft.yaml --size 1M
    accelerate launch -m trainers.sft --config recipes/train/gsm8k/sft-pretrained.yaml --size 360M --bf16 true
    python -m trainers.sft --config recipes/train/synthetic_gsm/sft.yaml --size 135M --use_peft true --lora_r 16

Methods: ``sft`` trains on the teachers' rationales (with several teachers, TinyLLM multi-task: a system turn
"Explain like <teacher>" keeps their styles apart); ``label`` is the answer-only baseline ("The answer is X.").
The loss covers assistant tokens only. Checkpoints land in ``--output_dir`` and a re-run resumes from the last
one. The result is pushed as ``{task}-{method}-{size}[-lora]``: a plain (merged) transformers model, its
tokenizer and chat template, and a card with the training cost (tokens/s, MFU).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from datasets import Dataset, get_dataset_config_names, load_dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoTokenizer, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

from datasets_builders.logits import STUDENT_SYSTEM, LogitsError, tokenizer_identity
from model_cards import template_path
from scalingdown.answers import format_final_answer
from scalingdown.hub import HubTarget, dataset_repo_name, folder_revision, model_repo_name
from scalingdown.prompts import SMOLLM2_DEFAULT_SYSTEM, chatml_training_template
from trainers.cost import training_cost
from trainers.kd import DistillationArguments, KDTrainer, load_online_teacher, offline_rows, online_rows
from trainers.sizes import StudentSize, format_params, get_size
from trainers.student_trainer import StudentSFTTrainer

logger = logging.getLogger("trainers.sft")

METHODS = {
    "sft": "rationale distillation: the student learns each teacher's explanation and its final answer",
    "label": "answer-only baseline: the student learns only the closing sentence 'The answer is X.'",
    "kd": "logit distillation: alpha * KD(teacher top-k || student) + (1 - alpha) * NLL on the rationale tokens",
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
    push: bool = field(default=True, metadata={"help": "Push the trained model to the Hub target."})
    recipe: str | None = field(default=None, metadata={"help": "Recorded in the card (set by --config)."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {sorted(METHODS)}")
        get_size(self.size)  # fail at parse time with the list of sizes


# -- data ---------------------------------------------------------------------------------------------


def teacher_instruction(teacher: str) -> str:
    """The system turn that names a teacher in multi-teacher training (TinyLLM multi-task)."""
    return f"Explain like {teacher}."


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
            raise ValueError(f"teachers {unknown} are not in {location}; it has {available}")
        rows = rows.filter(lambda row: row["teacher"] in wanted)
    if script_args.consistent_only:
        rows = rows.filter(lambda row: bool(row["consistent"]))
    if len(rows) == 0:
        raise ValueError(f"no training rows left in {location} after the teacher/consistency filters")
    teachers = sorted(set(rows["teacher"]))
    if script_args.method == "label":
        rows = label_rows(location, rows, script_args)
    tagged = script_args.method == "sft" and script_args.teacher_tags and len(teachers) > 1

    def to_messages(row: dict) -> dict:
        user = row["messages"][0]
        if script_args.method == "label":
            response = format_final_answer(row["answer"])
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


def load_model(size: StudentSize, model_args: ModelConfig, tokenizer, seed: int):
    """The initialised student, with generation settings that stop at the end of the assistant turn."""
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
    model = size.build_model(dtype=dtype, seed=seed)
    if model_args.attn_implementation:
        model.set_attn_implementation(model_args.attn_implementation)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


# -- cost -------------------------------------------------------------------------------------------


# -- card and push ----------------------------------------------------------------------------------


def code_revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def render_model_card(context: dict) -> ModelCard:
    """The model card: YAML metadata for the Hub plus the training story and cost."""
    size: StudentSize = context["size_spec"]
    card_data = ModelCardData(
        base_model=size.base_model,
        datasets=[context["dataset_repo"]],
        tags=["scalingdown", "distillation", context["task"], f"method-{context['method']}", f"size-{size.name}"]
        + (["lora"] if context["lora"] else [])
        + ([f"kd-{context['kd']['kd_loss']}", f"kd-{context['kd']['kd_source']}"] if context.get("kd") else []),
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=context["model_name"],
    )
    return ModelCard.from_template(card_data, template_path=template_path("model_card.md"), **context)


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


# -- the stage ----------------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    """Everything ``main`` built before training: the trainer and what the card needs to say about it."""

    trainer: StudentSFTTrainer  # KDTrainer for --method kd
    tokenizer: object
    size: StudentSize
    repo: str
    output_dir: Path
    last_checkpoint: str | None
    dataset_repo: str
    dataset_revision: str | None
    rows: Dataset
    teachers: list[str]
    tagged: bool
    default_teacher: str
    default_system: str
    kd_info: dict | None = None
    example_user: str = ""


def output_dir_and_checkpoint(training_args, stage: str, repo: str) -> tuple[Path, str | None]:
    """``outputs/<stage>/<repo>`` unless ``--output_dir`` is given, and the checkpoint a re-run resumes from."""
    if training_args.output_dir in (None, "trainer_output"):
        training_args.output_dir = str(Path("outputs") / stage / repo)
    output_dir = Path(training_args.output_dir)
    last_checkpoint = None
    if output_dir.is_dir() and training_args.resume_from_checkpoint is None:
        last_checkpoint = get_last_checkpoint(str(output_dir))
        if last_checkpoint:
            logger.info("resuming from %s", last_checkpoint)
    return output_dir, last_checkpoint


def distillation_data(
    script_args: ScriptArguments, kd_args: DistillationArguments, location: str, rows: Dataset, tokenizer, size
) -> tuple[Dataset, object, dict]:
    """``(tokenized rows, online teacher or None, what the card records)`` for ``--method kd``.

    Every check (stored logits present, tokenizer shared with the teacher) runs here, before any model is built.
    """
    student = tokenizer_identity(tokenizer, size.source)
    if kd_args.kd_source == "offline":
        kd_rows, info = offline_rows(location, student, kd_args, teachers=script_args.teachers)
        teacher_model = None
    else:
        spec = kd_args.kd_teacher or sorted(set(load_dataset(location, split="train")["teacher"]))[0]
        teacher_model, info = load_online_teacher(spec, student)
        info["k"] = kd_args.kd_top_k or "vocabulary"
        kd_rows = online_rows(rows, tokenizer)
    if script_args.max_train_rows:
        kd_rows = kd_rows.select(range(min(script_args.max_train_rows, len(kd_rows))))
    return kd_rows, teacher_model, {**info, **kd_args.describe()}


def build_run(
    script_args: ScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    kd_args: DistillationArguments | None = None,
    kd_trainer: Callable[..., KDTrainer] = KDTrainer,
) -> TrainingRun:
    """Data, tokenizer, model and the TRL trainer for one run (resuming from the last checkpoint if any).

    ``kd_trainer`` builds the ``--method kd`` trainer (``trainers.ensemble`` passes one that weights tokens).
    """
    size = get_size(script_args.size)
    target = HubTarget.from_env()
    repo = model_repo_name(script_args.task, script_args.method, size.name, bool(model_args.use_peft))
    output_dir, last_checkpoint = output_dir_and_checkpoint(training_args, "train", repo)

    data_repo = dataset_repo_name(script_args.task)
    location = script_args.dataset_name or target.location("dataset", data_repo)
    revision = folder_revision(location) if script_args.dataset_name else target.revision("dataset", data_repo)
    rows, teachers, tagged = load_training_rows(script_args, location)
    default_teacher = script_args.default_teacher or teachers[0]
    default_system = teacher_instruction(default_teacher) if tagged else SMOLLM2_DEFAULT_SYSTEM
    if script_args.method == "kd":
        default_system = STUDENT_SYSTEM  # the system turn of the sequences the teacher scored
    tokenizer = load_tokenizer(size, default_system)

    kd_info, example_user = None, rows[0]["messages"][-2]["content"]
    if script_args.method == "kd":
        kd_args = kd_args or DistillationArguments()
        rows, teacher_model, kd_info = distillation_data(script_args, kd_args, location, rows, tokenizer, size)
        if training_args.packing or training_args.padding_free or training_args.truncation_mode != "keep_start":
            raise LogitsError("--method kd needs unpacked, right-truncated rows: drop --packing/--padding_free")
        training_args.remove_unused_columns = False  # the teacher's top-k columns reach the collator
        training_args.assistant_only_loss = False  # labels come with the rows
    else:
        training_args.assistant_only_loss = True
    logger.info("%d training rows from %s (teachers %s)", len(rows), location, teachers)
    model = load_model(size, model_args, tokenizer, training_args.seed)

    if training_args.include_num_input_tokens_seen in (None, "no", False):
        training_args.include_num_input_tokens_seen = "non_padding"
    common = dict(
        model=model,
        args=training_args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if kd_info is not None:
        trainer = kd_trainer(**common, kd_args=kd_args, teacher_model=teacher_model)
    else:
        trainer = StudentSFTTrainer(**common)
    return TrainingRun(
        trainer=trainer,
        tokenizer=tokenizer,
        size=size,
        repo=repo,
        output_dir=output_dir,
        last_checkpoint=last_checkpoint,
        dataset_repo=script_args.dataset_name or target.repo_id(data_repo),
        dataset_revision=(revision or "").strip() or None,
        rows=rows,
        teachers=teachers,
        tagged=tagged,
        default_teacher=default_teacher,
        default_system=default_system,
        kd_info=kd_info,
        example_user=example_user,
    )


def run_training(run: TrainingRun, training_args: SFTConfig) -> tuple[object, float, int]:
    """Train (from the last checkpoint if any) and save the trainer state: ``(TrainOutput, seconds, tokens)``, the
    tokens and seconds of this run only (a resumed run does not count what its checkpoint had seen)."""
    start_tokens = 0
    if run.last_checkpoint:
        state = json.loads(Path(run.last_checkpoint, "trainer_state.json").read_text())
        start_tokens = state.get("num_input_tokens_seen", 0)
    start = time.perf_counter()
    result = run.trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or run.last_checkpoint)
    seconds = time.perf_counter() - start
    tokens = run.trainer.state.num_input_tokens_seen - start_tokens  # already summed over every process
    run.trainer.save_state()
    return result, seconds, tokens


def main(
    script_args: ScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    kd_args: DistillationArguments | None = None,
) -> str:
    """Train one size with one method and push it; returns the model repo's location."""
    set_seed(training_args.seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())

    run = build_run(script_args, training_args, model_args, kd_args)
    trainer, tokenizer, size, repo, output_dir = run.trainer, run.tokenizer, run.size, run.repo, run.output_dir
    rows, teachers, tagged = run.rows, run.teachers, run.tagged
    lora = bool(model_args.use_peft)
    target = HubTarget.from_env()
    counts = size.parameter_counts()

    result, seconds, tokens = run_training(run, training_args)
    if not trainer.is_world_process_zero():
        # Under `accelerate launch` only rank 0 probes the device (the probe's cache file is shared), prints the
        # cost, writes the card and pushes: one commit per run, whatever the number of processes or nodes.
        return str(output_dir)
    cost = training_cost(counts["total"], tokens, seconds)
    print(
        f"trained {size.name} ({format_params(counts['total'])} params): {tokens} tokens in {seconds:.1f} s = "
        f"{cost['tokens_per_second']:.0f} tokens/s, MFU {cost['mfu']:.2%} of {cost['peak_flops'] / 1e9:.1f} "
        f"GFLOP/s on {cost['device']}; final train loss {result.training_loss:.3f}"
    )
    if not script_args.push:
        return str(output_dir)

    folder = output_dir / "push"
    save_for_push(trainer, tokenizer, folder, lora)
    location_out = target.location("model", repo)
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    context = dict(
        size_spec=size,
        model_name=target.repo_id(repo),
        repo_location=location_out,
        task=script_args.task,
        size=size.name,
        size_description=size.description,
        init=size.init,
        base_model=size.base_model,
        params_total=format_params(counts["total"]),
        params_non_embedding=format_params(counts["non_embedding"]),
        params_total_exact=f"{counts['total']:,}",
        params_non_embedding_exact=f"{counts['non_embedding']:,}",
        default_system=run.default_system,
        dataset_repo=run.dataset_repo,
        dataset_revision=run.dataset_revision or "unknown",
        train_rows=len(rows),
        train_config=(run.kd_info or {}).get("logits_config") or rows.info.config_name or "default",
        kd=run.kd_info,
        teachers=teachers,
        teacher_tags=tagged,
        teacher_instruction_example=teacher_instruction(run.default_teacher),
        method=script_args.method,
        method_description=METHODS[script_args.method],
        lora=lora,
        lora_r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_targets=model_args.lora_target_modules or "peft's defaults (q_proj, v_proj)",
        hyperparameters=(
            f"learning_rate={training_args.learning_rate}, lr_scheduler={scheduler}, "
            f"epochs={training_args.num_train_epochs}, max_steps={training_args.max_steps}, "
            f"batch_size={training_args.per_device_train_batch_size}x{training_args.gradient_accumulation_steps}"
            f"x{training_args.world_size}, max_length={training_args.max_length}, seed={training_args.seed}"
        ),
        recipe=script_args.recipe or "command line",
        code_revision=code_revision(),
        example_messages=repr([{"role": "user", "content": run.example_user}]),
        training_tokens=f"{trainer.state.num_input_tokens_seen:,}",
        steps=trainer.state.global_step,
        wall_time=f"{seconds:.1f} s (this run)",
        tokens_per_second=f"{cost['tokens_per_second']:.0f}",
        model_flops=f"{cost['model_flops']:.3g}",
        mfu=f"{cost['mfu']:.2%}",
        peak_flops=f"{cost['peak_flops'] / 1e9:.1f} GFLOP/s",
        peak_probe=cost["peak_probe"],
        device=cost["device"],
    )
    render_model_card(context).save(folder / "README.md")
    (folder / "training_cost.json").write_text(json.dumps({**cost, "params": counts}, indent=1))
    commit = target.push_folder(folder, "model", repo, f"Train {repo} ({script_args.method}, {size.name})")
    print(f"pushed {location_out} @ {commit[:10]}")
    return location_out


def cli(argv: list[str] | None = None) -> str:
    parser = TrlParser((ScriptArguments, DistillationArguments, SFTConfig, ModelConfig))
    argv = sys.argv[1:] if argv is None else argv
    script_args, kd_args, training_args, model_args = parser.parse_args_and_config(argv)
    if "--config" in argv and script_args.recipe is None:
        script_args.recipe = argv[argv.index("--config") + 1]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return main(script_args, training_args, model_args, kd_args)


if __name__ == "__main__":
    cli()
