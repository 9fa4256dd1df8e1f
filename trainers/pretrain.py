"""Pre-train one scratch size from random weights on the corpus repo, and say what it cost (``make pretrain``).

    python -m trainers.pretrain --config recipes/pretrain/scratch.yaml --size 8M
    python -m trainers.pretrain --config recipes/pretrain/scratch.yaml --size 8M --price_per_device_hour 0.05
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m trainers.pretrain \
        --config recipes/pretrain/scratch-gpu.yaml --size 60M
    sbatch recipes/slurm/pretrain.sbatch        # several nodes (untested; SIZE and RECIPE are variables there)

The corpus is a dataset repo with a ``text`` column (``{ORG}/pretrain-corpus``, built by
``python -m datasets_builders.corpus``; ``make pretrain`` builds it first). Each document is closed by
``<|endoftext|>`` and the stream is packed into ``max_length`` blocks (TRL's ``wrapped`` packing: no padding), with
the loss on every token. ``trainers/stage.py`` runs the rest (output folder from the settings, resume, measure,
card, push); this module adds the price: dollars per device-hour (``trainers/cost.py``), per million parameters and
per billion tokens, extrapolated to the Chinchilla-optimal 20 tokens per parameter.

The result is the model repo ``pretrain-<size>``. ``make train SIZE=<size>-pt`` then starts a
student from it (``trainers/sizes.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import Dataset, load_dataset
from transformers import AutoTokenizer
from trl import ModelConfig, SFTConfig

from scalingdown.arguments import ArgumentError, check_count, check_range
from scalingdown.errors import run_cli
from scalingdown.hub import CORPUS_REPO_NAME, HubTarget, pretrain_repo_name
from trainers.cost import (
    CHINCHILLA_TOKENS_PER_PARAM,
    DEVICE_HOUR_PRICES,
    DevicePrice,
    device_price,
    dollar_cost,
    format_dollars,
    format_duration,
)
from trainers.sft import load_model as load_student_model
from trainers.sizes import StudentSize, format_params, get_size
from trainers.stage import (
    CardContext,
    Measurement,
    Publication,
    count_input_tokens,
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
    dry_run: bool = field(
        default=False,
        metadata={"help": "Check every option and exit before any work (make pretrain does, before the corpus)."},
    )

    def __post_init__(self) -> None:
        size = get_size(self.size)
        if size.init != "scratch":
            raise ArgumentError(f"--size {self.size} is {size.init}; pre-training starts from a scratch size")
        check_count(self.max_documents, "--max_documents", "documents", zero="all")
        check_range(self.price_per_device_hour, "--price_per_device_hour", 0.0, variable="PRICE", what="USD")
        if self.device_kind and self.device_kind not in DEVICE_HOUR_PRICES and self.price_per_device_hour is None:
            raise ArgumentError(
                f"DEVICE_KIND={self.device_kind} (--device_kind) has no list price: use one of "
                f"{', '.join(DEVICE_HOUR_PRICES)}, or give its price with PRICE="
            )


# -- data, tokenizer, model ----------------------------------------------------------------------------


def load_corpus(script_args: PretrainArguments, location: str) -> Dataset:
    """The corpus documents as a one-column ``text`` dataset."""
    rows = load_dataset(location, split="train")
    if script_args.text_column not in rows.column_names:
        raise ArgumentError(f"{location} has no column {script_args.text_column!r} (columns: {rows.column_names})")
    rows = rows.select_columns([script_args.text_column])
    if script_args.text_column != "text":
        rows = rows.rename_column(script_args.text_column, "text")
    rows = rows.filter(lambda row: bool(row["text"] and row["text"].strip()))
    if script_args.max_documents:
        rows = rows.select(range(min(script_args.max_documents, len(rows))))
    if len(rows) == 0:
        raise ArgumentError(f"no documents in {location}: rebuild the corpus (make pretrain)")
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


def build_trainer(
    size: StudentSize, rows: Dataset, training_args: SFTConfig, model_args: ModelConfig, callbacks: tuple = ()
):
    """``(trainer, tokenizer)``: TRL's trainer on plain text, the loss on every token (``StudentSFTTrainer``, whose
    compact LM head is the fast one on a CPU)."""
    tokenizer = load_tokenizer(size)
    model = load_model(size, model_args, tokenizer, training_args.seed)
    training_args.dataset_text_field = "text"
    training_args.assistant_only_loss = False
    count_input_tokens(training_args)
    trainer = StudentSFTTrainer(
        model=model, args=training_args, train_dataset=rows, processing_class=tokenizer, callbacks=list(callbacks)
    )
    return trainer, tokenizer


# -- cost, card and push ----------------------------------------------------------------------------------------


def share(fraction: float) -> str:
    """A percentage that stays readable when tiny: ``12.34%``, ``0.0018%``."""
    return f"{fraction:.2%}" if fraction >= 1e-4 else f"{100 * fraction:.2g}%"


def money(measured: Measurement, price: DevicePrice) -> dict:
    """Dollars of every run of this checkpoint folder, and the Chinchilla-optimal extrapolation."""
    return dollar_cost(measured.params["total"], measured.tokens_total, measured.seconds_total, price)


def cost_lines(measured: Measurement, dollars: dict) -> list[str]:
    """What ``main`` prints after training (the card holds the same figures)."""
    total = measured.params["total"]
    return [
        f"pre-trained {measured.tokens_total:,} tokens in {format_duration(measured.seconds_total)} (all runs)",
        f"cost {format_dollars(dollars['dollars'])} at {dollars['devices']} x {dollars['device_kind']} x "
        f"{format_dollars(dollars['price_per_device_hour'])}/device-hour: "
        f"{format_dollars(dollars['dollars_per_million_params'])} per million parameters "
        f"({format_params(total)}), {format_dollars(dollars['dollars_per_billion_tokens'])} per billion tokens",
        f"Chinchilla-optimal ({CHINCHILLA_TOKENS_PER_PARAM} tokens/param = {dollars['chinchilla_tokens']:,} tokens, "
        f"{share(dollars['chinchilla_fraction'])} done): {format_duration(dollars['chinchilla_seconds'])}, "
        f"{format_dollars(dollars['chinchilla_dollars'])} at this throughput",
    ]


def money_fields(dollars: dict, price: DevicePrice) -> dict:
    """The pre-training card's cost lines."""
    return dict(
        price=price.describe(),
        dollars=format_dollars(dollars["dollars"]),
        dollars_per_million_params=format_dollars(dollars["dollars_per_million_params"]),
        dollars_per_billion_tokens=format_dollars(dollars["dollars_per_billion_tokens"]),
        chinchilla_tokens_per_param=CHINCHILLA_TOKENS_PER_PARAM,
        chinchilla_tokens=f"{dollars['chinchilla_tokens']:,}",
        chinchilla_fraction=share(dollars["chinchilla_fraction"]),
        chinchilla_time=format_duration(dollars["chinchilla_seconds"]),
        chinchilla_dollars=format_dollars(dollars["chinchilla_dollars"]),
        chinchilla_dollars_per_million_params=format_dollars(dollars.get("chinchilla_dollars_per_million_params")),
    )


# -- the stage -------------------------------------------------------------------------------------------------


def main(script_args: PretrainArguments, training_args: SFTConfig, model_args: ModelConfig) -> str:
    """Pre-train one size and push it; returns the model repo's location (the output dir when not pushed)."""
    setup(training_args)
    size = get_size(script_args.size)
    target = HubTarget.from_env()
    repo = pretrain_repo_name(size.name)
    if script_args.dry_run:
        print(f"pretrain {size.name}: options checked")
        return ""
    made_by = "run `make pretrain` (it builds one) or python -m datasets_builders.corpus first, or pass --dataset_name"
    inputs = pin_inputs(script_args.dataset_name, CORPUS_REPO_NAME, size, target, made_by)
    settings = run_settings(inputs, training_args, script_args, model_args)
    output_dir, last_checkpoint = prepare_output_dir(training_args, "pretrain", repo, settings)
    rows = load_corpus(script_args, inputs.dataset_location)
    logger.info("%d documents from %s", len(rows), inputs.dataset_location)
    trainer, tokenizer = build_trainer(size, rows, training_args, model_args)
    save_settings(output_dir, settings)
    price = device_price(script_args.device_kind, script_args.price_per_device_hour, training_args.world_size)

    def save(folder):
        trainer.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    def card(measured: Measurement) -> CardContext:
        return CardContext(
            model_name=target.repo_id(repo),
            repo_location=target.location("model", repo),
            size=size,
            inputs=inputs,
            train_rows=len(rows),
            hyperparameters=hyperparameters(
                training_args,
                f"warmup_steps={training_args.warmup_steps} (below 1: a share of all steps)",
                f"weight_decay={training_args.weight_decay}",
                f"packing={training_args.packing_strategy if training_args.packing else 'off'}",
            ),
            recipe=script_args.recipe,
            measured=measured,
            settings_key=settings_key(settings),
            method_fields=money_fields(money(measured, price), price),
        )

    publication = Publication(
        repo=repo,
        save=save,
        template="pretrain_card.md",
        tags=["pretraining", "method-pretrain"],
        commit_message=lambda measured: f"Pre-train {size.name} ({measured.tokens_total:,} tokens)",
        card=card,
        figures=lambda measured: {"dollars": money(measured, price)},
        report=lambda measured: cost_lines(measured, money(measured, price)),
    )
    location, _ = run_stage(
        trainer,
        output_dir,
        last_checkpoint,
        size.parameter_counts(),
        publication,
        push=script_args.push,
        resume_from=training_args.resume_from_checkpoint,
    )
    if script_args.push and trainer.is_world_process_zero():
        print(f"distil it with `make train SIZE={size.name}-pt`")
    return location


def cli(argv: list[str] | None = None) -> str:
    return main(*parse((PretrainArguments, SFTConfig, ModelConfig), argv))


if __name__ == "__main__":
    run_cli(cli)
