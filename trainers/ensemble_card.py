"""The ensemble repo's card: the stage runner's ``CardContext`` with the ensemble's own lines, rendered from
``model_cards/ensemble_card.md``."""

from __future__ import annotations

import dataclasses

from trainers.sizes import StudentSize, format_params
from trainers.stage import CardContext, Inputs, Measurement

METHOD = "ensemble"
TEMPLATE = "ensemble_card.md"


def fmt(value, spec: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
    """A figure of the rounds table, or ``–`` when it was not measured."""
    return "–" if value is None else f"{format(scale * value, spec)}{suffix}"


def composition(sizes: list[str]) -> str:
    """The ensemble's size label from its members' sizes, in round order: ``2x1M+3M``."""
    counts: dict[str, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return "+".join(f"{n}x{size}" for size, n in counts.items())


def ensemble_size(first: StudentSize, members: list[dict]) -> StudentSize:
    """The size a card and ``make eval`` name the ensemble by (``2x1M``); init and base model are its first member's."""
    label = composition([m["size"] for m in members])
    return dataclasses.replace(first, name=label, description=f"{len(members)} students ({label})")


def card_tags(task: str, members: list[dict], kd: dict) -> list[str]:
    """Tags ``make eval`` reads (method, size from the card context) and the rounds and losses it was made with."""
    tags = ["distillation", "ensemble", task, f"method-{METHOD}", f"rounds-{len(members)}"]
    if any(m.get("boosting") for m in members):
        tags.append("boosting")
    return tags + [f"kd-{kd['kd_loss']}", f"kd-{kd['kd_source']}"]


def card_context(
    *,
    first_size: StudentSize,
    members: list[dict],
    log: list[dict],
    combine: str,
    weights: list[float],
    boosting: float,
    measured: Measurement,
    model_name: str,
    repo_location: str,
    inputs: Inputs,
    train_rows: int,
    hyperparameters: str,
    recipe: str | None,
    settings_key: str,
    task: str,
    kd: dict,
    example_messages: str,
) -> CardContext:
    """What the card says: the runner's lines (data, settings, the last round's cost) and the ensemble's (members,
    rounds, combination, parameters summed over members)."""
    total = sum(m.get("params_total") or 0 for m in members)
    non_embedding = sum(m.get("params_non_embedding") or 0 for m in members)
    return CardContext(
        model_name=model_name,
        repo_location=repo_location,
        size=ensemble_size(first_size, members),
        inputs=inputs,
        train_rows=train_rows,
        hyperparameters=hyperparameters,
        recipe=recipe,
        measured=measured,
        settings_key=settings_key,
        method_fields=dict(
            task=task,
            kd=kd,
            example_messages=example_messages,
            members=members,
            rounds=log,
            combine=combine,
            weights=[round(w, 4) for w in weights],
            boosting=boosting,
            params_total=format_params(total),
            params_total_exact=f"{total:,}",
            params_non_embedding=format_params(non_embedding),
            params_non_embedding_exact=f"{non_embedding:,}",
            ensemble_tokens=f"{sum(entry.get('train_tokens') or 0 for entry in log):,}",
            teacher=log[-1].get("teacher") if log else None,
            teacher_note=log[-1].get("teacher_note") if log else "",
            fmt=fmt,
        ),
    )
