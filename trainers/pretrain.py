"""Pre-train one scratch size from random weights on the corpus repo, and say what it cost (``make pretrain``).

    python -m trainers.pretrain --config recipes/pretrain/scratch.yaml --size 8M
    python -m trainers.pretrain --config recipes/pretrain/scratch.yaml --size 8M --price_per_device_hour 0.05
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m trainers.pretrain \
        --config recipes/pretrain/scratch-gpu.yaml --size 60M
    sbatch recipes/slurm/pretrain.sbatch        # several nodes (SIZE, RECIPE, CONFIG are variables there)

The corpus is a dataset repo with a ``text`` column (``{ORG}/pretrain-corpus``, built by
``python -m datasets_builders.corpus``; ``make pretrain`` builds it first). Each document is closed by
``<|endoftext|>`` and the stream is packed into ``max_length`` blocks (TRL's ``wrapped`` packing: no padding), with
the loss on every token, a cosine schedule with warm-up, checkpoints every ``save_steps``; a re-run resumes from the
last checkpoint, and the wall time of earlier runs travels in each checkpoint so the cost covers them all.

The result is the model repo ``pretrain-<size>``: weights, the SmolLM2 tokenizer, and a card with the cost: tokens/s,
MFU, wall time and dollars at a price per device-hour (``trainers/cost.py``), per million parameters and per billion
tokens, extrapolated to the Chinchilla-optimal 20 tokens per parameter. ``make train SIZE=<size>-pt`` then starts a
student from it (``trainers/sizes.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import transformers
from datasets import Dataset, load_dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoTokenizer, TrainerCallback, set_seed
from trl import ModelConfig, SFTConfig, TrlParser

from model_cards import template_path
from scalingdown.hub import CORPUS_REPO_NAME, HubTarget, folder_revision, pretrain_repo_name
from trainers.cost import (
    CHINCHILLA_TOKENS_PER_PARAM,
    device_price,
    dollar_cost,
    format_dollars,
    format_duration,
    training_cost,
)
from trainers.sft import code_revision, output_dir_and_checkpoint
from trainers.sft import load_model as load_student_model
from trainers.sizes import StudentSize, format_params, get_size
from trainers.student_trainer import StudentSFTTrainer

logger = logging.getLogger("trainers.pretrain")

DOCUMENT_END = "<|endoftext|>"  # SmolLM2's document separator (its base models' BOS/EOS)


@dataclass
class PretrainArguments:
    """What to pre-train, on what, and at which price. Model options (dtype, attention) come from ``ModelConfig``."""

    size: str = field(default="1M", metadata={"help": "Scratch size to pre-train (python -m trainers.sizes)."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": f"Corpus repo (path or Hub id); default: {{ORG}}/{CORPUS_REPO_NAME} on the Hub target."},
    )
    text_column: str = field(default="text", metadata={"help": "The corpus column holding the documents."})
    max_documents: int = field(default=0, metadata={"help": "Train on at most this many documents; 0 = all."})
    price_per_device_hour: float | None = field(
        default=None,
        metadata={"help": "USD per device-hour (per GPU, or per CPU core); default: the list price of --device_kind."},
    )
    device_kind: str | None = field(
        default=None,
        metadata={"help": "cpu-core, a10g, a100 or h100 (trainers/cost.py DEVICE_HOUR_PRICES); default: detected."},
    )
    push: bool = field(default=True, metadata={"help": "Push the pre-trained model to the Hub target."})
    recipe: str | None = field(default=None, metadata={"help": "Recorded in the card (set by --config)."})

    def __post_init__(self) -> None:
        size = get_size(self.size)
        if size.init != "scratch":
            raise ValueError(f"--size {self.size} is {size.init}; pre-training starts from a scratch size")


# -- data, tokenizer, model ----------------------------------------------------------------------------


def load_corpus(script_args: PretrainArguments, location: str) -> Dataset:
    """The corpus documents as a one-column ``text`` dataset."""
    rows = load_dataset(location, split="train")
    if script_args.text_column not in rows.column_names:
        raise ValueError(f"{location} has no column {script_args.text_column!r} (columns: {rows.column_names})")
    rows = rows.select_columns([script_args.text_column])
    if script_args.text_column != "text":
        rows = rows.rename_column(script_args.text_column, "text")
    rows = rows.filter(lambda row: bool(row["text"] and row["text"].strip()))
    if script_args.max_documents:
        rows = rows.select(range(min(script_args.max_documents, len(rows))))
    if len(rows) == 0:
        raise ValueError(f"no documents in {location}")
    return rows


def load_tokenizer(size: StudentSize):
    """The family's tokenizer as a base model's: documents end with ``<|endoftext|>``, no chat template (SFT adds
    its own when a student starts from this model)."""
    tokenizer = AutoTokenizer.from_pretrained(size.tokenizer_source())
    if DOCUMENT_END in tokenizer.get_vocab():  # as in SmolLM2's base models; the tokenizer adds no BOS itself
        tokenizer.bos_token = DOCUMENT_END
        tokenizer.eos_token = DOCUMENT_END
        tokenizer.pad_token = DOCUMENT_END
    tokenizer.chat_template = None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(size: StudentSize, model_args: ModelConfig, tokenizer, seed: int):
    """The randomly initialised model as ``make train`` builds it, with the base tokenizer's BOS in its config too."""
    model = load_student_model(size, model_args, tokenizer, seed)
    model.config.bos_token_id = tokenizer.bos_token_id
    return model


def build_trainer(size: StudentSize, rows: Dataset, training_args: SFTConfig, model_args: ModelConfig, callbacks=()):
    """``(trainer, tokenizer)``: TRL's trainer on plain text (``StudentSFTTrainer``, whose compact LM head is the
    fast one on a CPU), counting the tokens it trains on."""
    tokenizer = load_tokenizer(size)
    model = load_model(size, model_args, tokenizer, training_args.seed)
    training_args.dataset_text_field = "text"
    training_args.assistant_only_loss = False
    if training_args.include_num_input_tokens_seen in (None, "no", False):
        training_args.include_num_input_tokens_seen = "non_padding"
    trainer = StudentSFTTrainer(
        model=model, args=training_args, train_dataset=rows, processing_class=tokenizer, callbacks=list(callbacks)
    )
    return trainer, tokenizer


class TrainingClock(TrainerCallback):
    """Wall seconds spent training, carried across resumes: each checkpoint holds the total up to it, so a run
    resumed after an interrupt reports (and prices) every run's time, not only its own."""

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


# -- card and push ------------------------------------------------------------------------------------------


def training_losses(trainer) -> tuple[float | None, float | None]:
    """First and last logged training loss of the whole training (resumed runs included)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return (losses[0], losses[-1]) if losses else (None, None)


def render_model_card(context: dict) -> ModelCard:
    card_data = ModelCardData(
        datasets=[context["corpus_repo"]],
        tags=["scalingdown", "pretraining", "method-pretrain", f"size-{context['size']}"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=context["model_name"],
    )
    return ModelCard.from_template(card_data, template_path=template_path("pretrain_card.md"), **context)


def share(fraction: float) -> str:
    """A percentage that stays readable when tiny: ``12.34%``, ``0.0018%``."""
    return f"{fraction:.2%}" if fraction >= 1e-4 else f"{100 * fraction:.2g}%"


def cost_lines(counts: dict, cost: dict, money: dict) -> list[str]:
    """What ``main`` prints at the end (the card holds the same figures)."""
    return [
        f"pre-trained {cost['tokens']:,} tokens in {format_duration(cost['seconds'])} (all runs): "
        f"{cost['tokens_per_second']:.0f} tokens/s this run, MFU {cost['mfu']:.2%} of "
        f"{cost['peak_flops'] / 1e9:.1f} GFLOP/s on {cost['device']}",
        f"cost {format_dollars(money['dollars'])} at {money['devices']} x {money['device_kind']} x "
        f"{format_dollars(money['price_per_device_hour'])}/device-hour: "
        f"{format_dollars(money['dollars_per_million_params'])} per million parameters "
        f"({format_params(counts['total'])}), {format_dollars(money['dollars_per_billion_tokens'])} per billion tokens",
        f"Chinchilla-optimal ({CHINCHILLA_TOKENS_PER_PARAM} tokens/param = {money['chinchilla_tokens']:,} tokens, "
        f"{share(money['chinchilla_fraction'])} done): {format_duration(money['chinchilla_seconds'])}, "
        f"{format_dollars(money['chinchilla_dollars'])} at this throughput",
    ]


# -- the stage -------------------------------------------------------------------------------------------------


def main(script_args: PretrainArguments, training_args: SFTConfig, model_args: ModelConfig) -> str:
    """Pre-train one size and push it; returns the model repo's location (the output dir when not pushed)."""
    set_seed(training_args.seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())

    size = get_size(script_args.size)
    target = HubTarget.from_env()
    repo = pretrain_repo_name(size.name)
    output_dir, last_checkpoint = output_dir_and_checkpoint(training_args, "pretrain", repo)
    resume = training_args.resume_from_checkpoint or last_checkpoint

    location = script_args.dataset_name or target.location("dataset", CORPUS_REPO_NAME)
    if not script_args.dataset_name and not target.exists("dataset", CORPUS_REPO_NAME):
        raise SystemExit(
            f"no corpus at {location}: run `make pretrain` (it builds one) or python -m "
            "datasets_builders.corpus first, or pass --dataset_name"
        )
    corpus_revision = (
        folder_revision(location) if script_args.dataset_name else target.revision("dataset", CORPUS_REPO_NAME)
    )
    rows = load_corpus(script_args, location)
    logger.info("%d documents from %s", len(rows), location)

    clock = TrainingClock(resume)
    trainer, tokenizer = build_trainer(size, rows, training_args, model_args, callbacks=[clock])
    start_tokens = 0
    if resume:
        start_tokens = json.loads(Path(resume, "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    result = trainer.train(resume_from_checkpoint=resume)
    tokens_total = trainer.state.num_input_tokens_seen  # already summed over every process
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return str(output_dir)  # under accelerate only rank 0 measures, prints, writes the card and pushes

    counts = size.parameter_counts()
    seconds_this_run = clock.this_run()
    seconds_total = clock.before + seconds_this_run
    this_run = training_cost(counts["total"], tokens_total - start_tokens, seconds_this_run)
    cost = {**this_run, "tokens": tokens_total, "seconds": seconds_total}
    price = device_price(script_args.device_kind, script_args.price_per_device_hour, training_args.world_size)
    money = dollar_cost(counts["total"], tokens_total, seconds_total, price)
    first_loss, last_loss = training_losses(trainer)
    for line in cost_lines(counts, cost, money):
        print(line)
    print(f"training loss {first_loss:.3f} -> {last_loss:.3f}" if first_loss is not None else "no loss logged")
    if not script_args.push:
        return str(output_dir)

    folder = output_dir / "push"
    if folder.exists():
        shutil.rmtree(folder)
    trainer.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    location_out = target.location("model", repo)
    context = dict(
        model_name=target.repo_id(repo),
        repo_location=location_out,
        size=size.name,
        size_description=size.description,
        params_total=format_params(counts["total"]),
        params_non_embedding=format_params(counts["non_embedding"]),
        params_total_exact=f"{counts['total']:,}",
        params_non_embedding_exact=f"{counts['non_embedding']:,}",
        corpus_repo=script_args.dataset_name or target.repo_id(CORPUS_REPO_NAME),
        corpus_revision=(corpus_revision or "unknown").strip(),
        corpus_documents=len(rows),
        hyperparameters=(
            f"learning_rate={training_args.learning_rate}, lr_scheduler={scheduler}, "
            f"warmup_steps={training_args.warmup_steps} (below 1: a share of all steps), "
            f"weight_decay={training_args.weight_decay}, epochs={training_args.num_train_epochs}, "
            f"max_steps={training_args.max_steps}, batch_size={training_args.per_device_train_batch_size}"
            f"x{training_args.gradient_accumulation_steps}x{training_args.world_size}, "
            f"max_length={training_args.max_length}, "
            f"packing={training_args.packing_strategy if training_args.packing else 'off'}, "
            f"seed={training_args.seed}"
        ),
        recipe=script_args.recipe or "command line",
        code_revision=code_revision(),
        steps=trainer.state.global_step,
        resumed_from=Path(resume).name if resume else None,
        first_loss=f"{first_loss:.3f}" if first_loss is not None else "-",
        last_loss=f"{last_loss:.3f}" if last_loss is not None else "-",
        final_train_loss=f"{result.training_loss:.3f}",
        training_tokens=f"{tokens_total:,}",
        wall_time=format_duration(seconds_total),
        tokens_per_second=f"{this_run['tokens_per_second']:.0f}",
        model_flops=f"{6 * counts['total'] * tokens_total:.3g}",
        mfu=f"{this_run['mfu']:.2%}",
        peak_flops=f"{this_run['peak_flops'] / 1e9:.1f} GFLOP/s",
        peak_probe=this_run["peak_probe"],
        device=this_run["device"],
        price=price.describe(),
        dollars=format_dollars(money["dollars"]),
        dollars_per_million_params=format_dollars(money["dollars_per_million_params"]),
        dollars_per_billion_tokens=format_dollars(money["dollars_per_billion_tokens"]),
        chinchilla_tokens_per_param=CHINCHILLA_TOKENS_PER_PARAM,
        chinchilla_tokens=f"{money['chinchilla_tokens']:,}",
        chinchilla_fraction=share(money["chinchilla_fraction"]),
        chinchilla_time=format_duration(money["chinchilla_seconds"]),
        chinchilla_dollars=format_dollars(money["chinchilla_dollars"]),
        chinchilla_dollars_per_million_params=format_dollars(money.get("chinchilla_dollars_per_million_params")),
    )
    render_model_card(context).save(folder / "README.md")
    figures = {"this_run": this_run, "total": cost, "dollars": money, "params": counts}
    (folder / "training_cost.json").write_text(json.dumps(figures, indent=1, default=str))
    commit = target.push_folder(folder, "model", repo, f"Pre-train {size.name} ({tokens_total:,} tokens)")
    print(f"pushed {location_out} @ {commit[:10]}; distil it with `make train SIZE={size.name}-pt`")
    return location_out


def cli(argv: list[str] | None = None) -> str:
    parser = TrlParser((PretrainArguments, SFTConfig, ModelConfig))
    argv = sys.argv[1:] if argv is None else argv
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    if "--config" in argv and script_args.recipe is None:
        script_args.recipe = argv[argv.index("--config") + 1]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return main(script_args, training_args, model_args)


if __name__ == "__main__":
    cli()
