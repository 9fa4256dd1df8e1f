"""Figures drawn from training and evaluation records, with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path


def loss_curve(log_history: list[dict], path: str | Path, title: str = "") -> Path | None:
    """The training loss per step (and the eval loss, when logged) from ``trainer.state.log_history``, saved as a
    PNG at ``path``; None when nothing was logged."""
    from matplotlib.figure import Figure

    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    if not train and not evaluation:
        return None
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for points, label, style in ((train, "train loss", "-"), (evaluation, "eval loss", "o--")):
        if points:
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)  # a bare Figure renders with Agg: no pyplot state, safe in any thread
    return Path(path)
