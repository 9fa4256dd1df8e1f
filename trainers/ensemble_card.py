"""The ensemble repo's card: ``model_cards/ensemble_card.md`` rendered with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from model_cards import template_path
from trainers.sizes import format_params

METHOD = "ensemble"


def fmt(value, spec: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
    """A figure of the rounds table, or ``–`` when it was not measured."""
    return "–" if value is None else f"{format(scale * value, spec)}{suffix}"


def composition(sizes: list[str]) -> str:
    """The ensemble's size label from its members' sizes, in round order: ``2x1M+3M``."""
    counts: dict[str, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return "+".join(f"{n}x{size}" for size, n in counts.items())


def card_context(
    *, members: list[dict], log: list[dict], combine: str, weights: list[float], boosting: float, **run
) -> dict:
    """What the card says: members, rounds and combination, plus the run's facts (``run``: model_name,
    repo_location, task, kd, dataset_repo, dataset_revision, hyperparameters, recipe, code_revision,
    example_messages)."""
    total = sum(m.get("params_total") or 0 for m in members)
    non_embedding = sum(m.get("params_non_embedding") or 0 for m in members)
    return dict(
        run,
        size=composition([m["size"] for m in members]),
        members=members,
        rounds=log,
        combine=combine,
        weights=[round(w, 4) for w in weights],
        params_total=format_params(total),
        params_total_exact=f"{total:,}",
        params_non_embedding=format_params(non_embedding),
        boosting=boosting,
        teacher=log[-1].get("teacher") if log else None,
        teacher_note=log[-1].get("teacher_note") if log else "",
        fmt=fmt,
    )


def render_card(folder: Path, context: dict) -> None:
    """``README.md`` of the ensemble repo, tagged so ``make eval`` finds its method and size."""
    tags = ["scalingdown", "distillation", "ensemble", context["task"], f"method-{METHOD}", f"size-{context['size']}"]
    tags.append(f"rounds-{len(context['members'])}")
    if any(m.get("boosting") for m in context["members"]):
        tags.append("boosting")
    tags += [f"kd-{context['kd']['kd_loss']}", f"kd-{context['kd']['kd_source']}"]
    card_data = ModelCardData(
        datasets=[context["dataset_repo"]],
        tags=tags,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=context["model_name"],
    )
    card = ModelCard.from_template(card_data, template_path=template_path("ensemble_card.md"), **context)
    card.save(folder / "README.md")


def hyperparameters(training_args) -> str:
    """Every round's training settings in one line (each round's seed is ``seed + round - 1``)."""
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    return (
        f"learning_rate={training_args.learning_rate}, lr_scheduler={scheduler}, "
        f"epochs={training_args.num_train_epochs}, max_steps={training_args.max_steps}, "
        f"batch_size={training_args.per_device_train_batch_size}x{training_args.gradient_accumulation_steps}"
        f"x{training_args.world_size}, max_length={training_args.max_length}, seed={training_args.seed} + round - 1"
    )
