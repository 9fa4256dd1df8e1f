"""The stage runner every trainer goes through: parse → output folder from the settings → resume → train → measure →
card → push. A trainer module (``trainers/sft.py``, ``trainers/pretrain.py``) supplies its data, model and loss.

    python -m trainers.sft --config recipes/train/synthetic_gsm/sft.yaml --size 1M
    python -m trainers.pretrain --config recipes/pretrain/scratch.yaml --size 8M

A run's output folder is ``outputs/<stage>/<repo>-<settings key>``: the key hashes its inputs at their revisions
(dataset commit, base model) and every option that changes the weights, and ``run_settings.json`` inside lists them.
A re-run with the same settings resumes; one with other settings starts in its own folder. An explicit
``--output_dir`` holding a run with other settings is refused, naming the differences.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import transformers
from huggingface_hub import ModelCard, ModelCardData
from transformers import TrainerCallback, TrainerState, set_seed
from transformers.trainer_utils import TrainOutput, get_last_checkpoint
from trl import TrlParser

from model_cards import template_path
from scalingdown.arguments import ArgumentError, check_count, check_range, parse_recipe
from scalingdown.hub import HubTarget, folder_revision
from trainers.cost import measure_peak_flops, training_cost
from trainers.sizes import StudentSize, format_params

logger = logging.getLogger("trainers.stage")

SETTINGS_FILE = "run_settings.json"
LOSS_CURVE_FILE = "loss_curve.png"
DEFAULT_OUTPUT_DIRS = (None, "", "trainer_output")  # what TRL/transformers put when --output_dir is not given
# Options that do not change the weights a step produces: where a run writes, whether it pushes, how it is
# priced, and how long it runs (extending max_steps, or an ensemble's rounds, resumes the same run).
NOT_SETTINGS = {"push", "recipe", "price_per_device_hour", "device_kind", "rounds", "dry_run"}
TRAINING_SETTINGS = (
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "optim",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "packing",
    "packing_strategy",
    "padding_free",
    "truncation_mode",
    "dataset_text_field",
    "completion_only_loss",
    "neftune_noise_alpha",
    "seed",
    "data_seed",
    "bf16",
    "fp16",
)


class SettingsChanged(ArgumentError):
    """A resume into a folder whose run had other settings; the message names each difference."""


# -- parse --------------------------------------------------------------------------------------------------------


def parse(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """TrlParser over ``dataclass_types`` (CLI flags over ``--config`` YAML); the recipe path lands in the first
    dataclass that has a ``recipe`` field, so the card can name it."""
    argv = sys.argv[1:] if argv is None else argv
    parsed = parse_recipe(TrlParser(dataclass_types), argv)
    if "--config" in argv:
        for args in parsed:
            if getattr(args, "recipe", "absent") is None:
                args.recipe = argv[argv.index("--config") + 1]
                break
    for args in parsed:
        if isinstance(args, transformers.TrainingArguments):
            check_training_args(args)
    HubTarget.from_env().check_writable()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return parsed


def check_training_args(training_args) -> None:
    """What transformers accepts but no run can use: zero or negative batch sizes, steps, rates."""
    check_count(training_args.per_device_train_batch_size, "--per_device_train_batch_size", "rows per device")
    check_count(training_args.gradient_accumulation_steps, "--gradient_accumulation_steps", "steps")
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise ArgumentError(f"--max_steps {training_args.max_steps}: must be a positive number of steps, or -1")
    if training_args.max_steps == -1:
        check_range(training_args.num_train_epochs, "--num_train_epochs", 0.0, low_inclusive=False)
    check_range(training_args.learning_rate, "--learning_rate", 0.0)
    max_length = getattr(training_args, "max_length", None)
    check_count(max_length, "--max_length", "tokens")


def setup(training_args) -> None:
    """Seed and logging, as every stage starts."""
    set_seed(training_args.seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


# -- inputs and settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """What a run reads, pinned: its dataset repo at a commit, and the checkpoint it starts from."""

    dataset_repo: str  # the Hub id a card names (or the path given with --dataset_name)
    dataset_location: str  # what load_dataset reads
    dataset_revision: str | None
    base_model: str | None = None  # from_pretrained source; None from scratch
    base_revision: str | None = None
    student_shape: str | None = None  # what the size cuts or builds (a size redefined is a new run)


def pin_inputs(
    dataset_name: str | None,
    dataset_repo: str,
    size: StudentSize,
    target: HubTarget,
    made_by: str = "run `make push-data` first",
) -> Inputs:
    """The dataset (``--dataset_name``, else ``dataset_repo`` on the Hub target, which ``made_by`` makes when it is
    missing) and the size's base model, each with the revision the run reads."""
    if dataset_name:
        if not Path(dataset_name).exists() and dataset_name.count("/") != 1:
            raise ArgumentError(f"--dataset_name {dataset_name}: no such folder, and not a Hub id (namespace/name)")
    else:
        target.require("dataset", dataset_repo, made_by)
    location = dataset_name or target.location("dataset", dataset_repo)
    revision = folder_revision(location) if dataset_name else target.revision("dataset", dataset_repo)
    base, base_revision = None, None
    if size.init != "scratch":
        base = size.source
        base_revision = folder_revision(base) if Path(base).is_dir() else None
    return Inputs(
        dataset_repo=dataset_name or target.repo_id(dataset_repo),
        dataset_location=location,
        dataset_revision=(revision or "").strip() or None,
        base_model=base,
        base_revision=(base_revision or "").strip() or None,
        student_shape=size.shape(),
    )


def run_settings(inputs: Inputs, training_args, *option_sets) -> dict:
    """Everything that decides the weights: the pinned inputs, each options dataclass (bar ``NOT_SETTINGS``) and the
    training arguments of ``TRAINING_SETTINGS``. JSON-normalised, so it compares equal to its saved copy."""
    options = {}
    for args in option_sets:
        if args is None:
            continue
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in NOT_SETTINGS}
        options[type(args).__name__] = values
    training = {name: getattr(training_args, name) for name in TRAINING_SETTINGS if hasattr(training_args, name)}
    settings = {"inputs": dataclasses.asdict(inputs), "options": options, "training": training}
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_key(settings: dict) -> str:
    """A short hash of the settings: the suffix of the run's output folder."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def differences(saved: dict, settings: dict, prefix: str = "") -> list[str]:
    """``path: old -> new`` for each setting that differs."""
    found = []
    for key in sorted(set(saved) | set(settings)):
        old, new = saved.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return found


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` that was saved whole (a run killed while saving leaves one without its state)."""
    while (last := get_last_checkpoint(str(output_dir))) and not (Path(last) / "trainer_state.json").is_file():
        logger.warning("%s was not saved whole (no trainer_state.json): set aside as %s.incomplete", last, last)
        Path(last).rename(f"{last}.incomplete")
    return last


def prepare_output_dir(training_args, stage: str, repo: str, settings: dict) -> tuple[Path, str | None]:
    """``(output folder, checkpoint to resume from)``; also turns on what every run logs (TensorBoard, tokens).
    ``save_settings`` records the settings once the run is built.

    Without ``--output_dir`` the folder is ``outputs/<stage>/<repo>-<settings key>``; a folder whose saved settings
    differ from this run's is refused when there is a checkpoint to resume.
    """
    if training_args.output_dir in DEFAULT_OUTPUT_DIRS:
        training_args.output_dir = str(Path("outputs") / stage / f"{repo}-{settings_key(settings)}")
    output_dir = Path(training_args.output_dir)
    saved_file = output_dir / SETTINGS_FILE
    last_checkpoint = None
    if output_dir.is_dir() and training_args.resume_from_checkpoint is None:
        last_checkpoint = last_complete_checkpoint(output_dir)
    if (last_checkpoint or training_args.resume_from_checkpoint) and saved_file.is_file():
        changed = differences(json.loads(saved_file.read_text()), settings)
        if changed:
            raise SettingsChanged(
                f"{output_dir} holds a run with other settings ({'; '.join(changed)}); resuming it would mix two "
                "runs: drop --output_dir (each setting gets its own folder) or pass a new one"
            )
    if last_checkpoint:
        logger.info("resuming from %s", last_checkpoint)
    log_to_tensorboard(training_args)
    count_input_tokens(training_args)
    return output_dir, last_checkpoint


def save_settings(output_dir: Path, settings: dict) -> None:
    """Write ``run_settings.json`` once the run is built (a run refused while building leaves no folder)."""
    if int(os.environ.get("RANK", "0")) == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, sort_keys=True))


def log_to_tensorboard(training_args) -> None:
    """TensorBoard event files whatever else ``report_to`` names: pushed under ``runs/``, the Hub shows them as the
    repo's metrics."""
    reporters = training_args.report_to or []
    reporters = [reporters] if isinstance(reporters, str) else list(reporters)
    reporters = [r for r in reporters if r != "none"]
    if "all" not in reporters and "tensorboard" not in reporters:
        reporters.append("tensorboard")
    training_args.report_to = reporters


def count_input_tokens(training_args) -> None:
    """Have the trainer count the (non-padding) tokens it trains on: the cost is per token."""
    if training_args.include_num_input_tokens_seen in (None, "no", False):
        training_args.include_num_input_tokens_seen = "non_padding"


# -- train and measure -----------------------------------------------------------------------------------------


class TrainingClock(TrainerCallback):
    """Wall seconds spent training, carried across resumes: each checkpoint holds the total up to it."""

    FILE = "training_clock.json"

    def __init__(self, resumed_from: str | None):
        saved = Path(resumed_from or "", self.FILE)
        self.before = json.loads(saved.read_text())["seconds"] if resumed_from and saved.is_file() else 0.0
        self.started: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def this_run(self) -> float:
        return time.perf_counter() - self.started if self.started is not None else 0.0

    def total(self) -> float:
        return self.before + self.this_run()

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / self.FILE).write_text(json.dumps({"seconds": self.total(), "step": state.global_step}))


@dataclass
class Measurement:
    """What one run of a stage did and cost; ``total`` covers every run of its output folder, resumes included."""

    params: dict[str, int]
    this_run: dict  # trainers.cost.training_cost of this run's tokens and seconds
    tokens_total: int
    seconds_total: float
    steps: int
    resumed_from: str | None
    losses: list[float] = field(default_factory=list)  # every logged training loss, resumed runs included
    final_train_loss: float | None = None

    @property
    def total(self) -> dict:
        return {**self.this_run, "tokens": self.tokens_total, "seconds": self.seconds_total}

    def figures(self) -> dict:
        """``training_cost.json``: this run, all runs, the parameter counts."""
        return {"this_run": self.this_run, "total": self.total, "params": self.params}

    def summary(self) -> str:
        cost = self.this_run
        return (
            f"{self.tokens_total:,} tokens in {self.steps} steps ({cost['tokens']:,} this run, "
            f"{cost['tokens_per_second']:.0f} tokens/s, MFU {cost['mfu']:.2%} of {cost['peak_flops'] / 1e9:.1f} "
            f"GFLOP/s on {cost['device']})"
            + (f"; train loss {self.losses[0]:.3f} -> {self.losses[-1]:.3f}" if self.losses else "")
        )


def finished(checkpoint: str, training_args) -> bool:
    """Whether a checkpoint already reached this run's ``max_steps`` (epoch-based runs: the trainer decides)."""
    state = json.loads(Path(checkpoint, "trainer_state.json").read_text())
    return 0 < training_args.max_steps <= state.get("global_step", 0)


def load_finished_checkpoint(trainer, checkpoint: str) -> None:
    """The checkpoint's weights (full, or the LoRA adapter) and trainer state, without a training step."""
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file, load_model

    model = trainer.model
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(str(Path(checkpoint, "adapter_model.safetensors"))))
    else:
        missing, unexpected = load_model(model, Path(checkpoint, "model.safetensors"), strict=False)
        tied = {name for name in missing if name.endswith("lm_head.weight")}  # saved once, as the embeddings
        if set(missing) - tied or unexpected:
            raise ValueError(f"{checkpoint} does not fit the model: missing {sorted(missing)[:3]}, extra {unexpected}")
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint, "trainer_state.json")))


def train(trainer, last_checkpoint: str | None, params: dict[str, int], resume_from: str | None = None):
    """Train from the checkpoint (if any), save the trainer state, and measure: ``(TrainOutput, Measurement)``.

    Tokens and seconds of this run exclude what its checkpoint had seen; the totals include it.
    """
    resume = resume_from or last_checkpoint
    start_tokens = 0
    if resume:
        start_tokens = json.loads(Path(resume, "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    clock = TrainingClock(resume)
    if resume and finished(resume, trainer.args):
        # Trainer.train resumed mid-epoch at max_steps still takes one more step (transformers 5.24), so a finished
        # checkpoint is loaded, not trained on.
        logger.info("%s already reached max_steps=%d: nothing to train", resume, trainer.args.max_steps)
        load_finished_checkpoint(trainer, resume)
        result = TrainOutput(trainer.state.global_step, float("nan"), {})
        seconds = 0.0
    else:
        trainer.add_callback(clock)
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = clock.this_run()
        trainer.save_state()
    tokens_total = trainer.state.num_input_tokens_seen  # already summed over every process
    measured = Measurement(
        params=params,
        this_run=training_cost(params["total"], tokens_total - start_tokens, seconds, measure_peak_flops()),
        tokens_total=tokens_total,
        seconds_total=clock.before + seconds,
        steps=trainer.state.global_step,
        resumed_from=Path(resume).name if resume else None,
        losses=[entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        final_train_loss=None if math.isnan(result.training_loss) else result.training_loss,
    )
    return result, measured


# -- card and push ---------------------------------------------------------------------------------------------


def code_revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def hyperparameters(training_args, *extra: str) -> str:
    """The card's one-line summary of the training arguments."""
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    return ", ".join(
        [
            f"learning_rate={training_args.learning_rate}",
            f"lr_scheduler={scheduler}",
            *extra,
            f"epochs={training_args.num_train_epochs}",
            f"max_steps={training_args.max_steps}",
            f"batch_size={training_args.per_device_train_batch_size}x{training_args.gradient_accumulation_steps}"
            f"x{training_args.world_size}",
            f"max_length={training_args.max_length}",
            f"seed={training_args.seed}",
        ]
    )


@dataclass
class CardContext:
    """What every model card says: the repo, the model, its data, how it was trained and what that cost. A trainer
    adds its own lines in ``method_fields`` (rendered as top-level template variables)."""

    model_name: str
    repo_location: str
    size: StudentSize
    inputs: Inputs
    train_rows: int
    hyperparameters: str
    recipe: str | None
    measured: Measurement
    settings_key: str
    loss_curve: str | None = None
    method_fields: dict = field(default_factory=dict)

    def template_values(self) -> dict:
        params, cost, m = self.measured.params, self.measured.this_run, self.measured
        return {
            "model_name": self.model_name,
            "repo_location": self.repo_location,
            "size": self.size.name,
            "size_description": self.size.description,
            "init": self.size.init,
            "base_model": self.size.base_model,
            "params_total": format_params(params["total"]),
            "params_non_embedding": format_params(params["non_embedding"]),
            "params_total_exact": f"{params['total']:,}",
            "params_non_embedding_exact": f"{params['non_embedding']:,}",
            "dataset_repo": self.inputs.dataset_repo,
            "dataset_revision": self.inputs.dataset_revision or "unknown",
            "train_rows": self.train_rows,
            "hyperparameters": self.hyperparameters,
            "recipe": self.recipe or "command line",
            "code_revision": code_revision(),
            "settings_key": self.settings_key,
            "steps": m.steps,
            "resumed_from": m.resumed_from,
            "first_loss": f"{m.losses[0]:.3f}" if m.losses else "-",
            "last_loss": f"{m.losses[-1]:.3f}" if m.losses else "-",
            "training_tokens": f"{m.tokens_total:,}",
            "tokens_this_run": f"{cost['tokens']:,}",
            "wall_time": format_seconds(m.seconds_total),
            "tokens_per_second": f"{cost['tokens_per_second']:.0f}",
            "model_flops": f"{6 * params['total'] * m.tokens_total:.3g}",
            "mfu": f"{cost['mfu']:.2%}",
            "peak_flops": f"{cost['peak_flops'] / 1e9:.1f} GFLOP/s",
            "peak_probe": cost["peak_probe"],
            "device": cost["device"],
            "loss_curve": self.loss_curve,
            **self.method_fields,
        }

    def render(self, template: str, tags: list[str]) -> ModelCard:
        """The card from ``model_cards/<template>``, its YAML metadata from the Hub's own card classes."""
        card_data = ModelCardData(
            base_model=self.size.base_model,
            datasets=[self.inputs.dataset_repo],
            tags=["scalingdown", *tags, f"size-{self.size.name}"],
            license="apache-2.0",
            library_name="transformers",
            pipeline_tag="text-generation",
            model_name=self.model_name,
        )
        return ModelCard.from_template(card_data, template_path=template_path(template), **self.template_values())


def format_seconds(seconds: float) -> str:
    from trainers.cost import format_duration

    return format_duration(seconds) if seconds >= 60 else f"{seconds:.1f} s"


def copy_training_logs(output_dir: Path, folder: Path) -> None:
    """The TensorBoard event files of every run of ``output_dir`` into ``folder/runs`` (the Hub's metrics tab)."""
    runs = output_dir / "runs"
    if runs.is_dir():
        shutil.copytree(runs, folder / "runs", dirs_exist_ok=True)


@dataclass
class Publication:
    """How a trainer's result becomes a model repo: the repo name, its files, its card."""

    repo: str
    save: Callable[[Path], None]  # writes weights, tokenizer (and any extra file) into the folder
    template: str  # a file in model_cards/
    tags: list[str]
    commit_message: str | Callable[[Measurement], str]
    card: Callable[[Measurement], CardContext]
    figures: Callable[[Measurement], dict] | None = None  # the trainer's own lines of training_cost.json
    report: Callable[[Measurement], list[str]] | None = None  # what it prints after training, pushed or not
    log_history: Callable[[], list[dict]] | None = None  # what the loss curve draws (default: the trainer's)


def publish(publication: Publication, trainer, output_dir: Path, measured: Measurement) -> str:
    """Save the model with its training logs, loss curve, cost and card into ``output_dir/push``; push it; return
    the repo's location."""
    from eval.plots import loss_curve

    target = HubTarget.from_env()
    folder = output_dir / "push"
    if folder.exists():
        shutil.rmtree(folder)
    publication.save(folder)
    copy_training_logs(output_dir, folder)
    context = publication.card(measured)
    history = publication.log_history() if publication.log_history else trainer.state.log_history
    if loss_curve(history, folder / LOSS_CURVE_FILE, title=context.model_name):
        context.loss_curve = LOSS_CURVE_FILE
    context.render(publication.template, publication.tags).save(folder / "README.md")
    figures = measured.figures() | (publication.figures(measured) if publication.figures else {})
    (folder / "training_cost.json").write_text(json.dumps(figures, indent=1, default=str))
    (folder / SETTINGS_FILE).write_text((output_dir / SETTINGS_FILE).read_text())
    # The repo's logs are those of the run that made its weights, not of an older run with other settings.
    message = publication.commit_message
    message = message if isinstance(message, str) else message(measured)
    commit = target.push_folder(folder, "model", publication.repo, message, ["runs/*"])
    location = target.location("model", publication.repo)
    print(f"pushed {location} @ {commit[:10]}")
    return location


def run_stage(
    trainer,
    output_dir: Path,
    last_checkpoint: str | None,
    params: dict[str, int],
    publication: Publication,
    push: bool = True,
    resume_from: str | None = None,
) -> tuple[str, Measurement]:
    """Train, measure, print, and (on the main process) publish: ``(repo location or output folder, measurement)``.

    Under ``accelerate launch`` only rank 0 prints, writes the card and pushes: one commit per run.
    """
    _, measured = train(trainer, last_checkpoint, params, resume_from)
    if not trainer.is_world_process_zero():
        return str(output_dir), measured
    print(f"trained {publication.repo}: {measured.summary()}")
    for line in publication.report(measured) if publication.report else []:
        print(line)
    if not push:
        return str(output_dir), measured
    return publish(publication, trainer, output_dir, measured), measured
