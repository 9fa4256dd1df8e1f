"""Every figure the project draws: the scaling-down plot of the leaderboard, the ensemble's rounds and a
training run's loss curve.

Every figure is a bare ``matplotlib.figure.Figure`` (no pyplot state), so a long-running Space can draw one per
request without leaking figures; ``loss_curve`` saves its figure as a PNG for the model repo.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eval.report import GRADED, graded_rows, params_label, scored_rows, series_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def scaling_down_figure(rows: list[dict], task: str, variant: str = "cot", baseline: dict | None = None) -> Figure:
    """Accuracy (or the ``nll`` variant's gold-answer NLL) vs parameters (log x): one series per ``series_label``
    (method, repo suffix: ``sft (smollm2)``, pruned or pre-trained here), teachers as horizontal lines,
    ``baseline`` (``accuracy``, ``answer``: the majority answer) as a dotted one."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    graded = variant == GRADED
    rows = graded_rows(rows) if graded else scored_rows(rows, variant)
    value, spread, scale = ("answer_nll", "answer_nll_stderr", 1) if graded else ("accuracy", "stderr", 100)
    fig = Figure(figsize=(9.5, 4.5), dpi=120)
    ax = fig.subplots()
    students = [r for r in rows if r["role"] != "teacher" and r.get("params_total")]
    series: dict[str, list[dict]] = {}
    for row in students:
        series.setdefault(series_label(row), []).append(row)
    for label, members in sorted(series.items()):
        members.sort(key=lambda r: r["params_total"])
        ax.errorbar(
            [r["params_total"] for r in members],
            [scale * r[value] for r in members],
            yerr=[scale * (r.get(spread) or 0) for r in members],
            marker="o",
            capsize=3,
            label=f"students: {label}",
        )
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    teachers = sorted((r for r in rows if r["role"] == "teacher"), key=lambda r: r[value], reverse=not graded)
    for i, row in enumerate(teachers):  # best first
        colour = colours[(i + len(series)) % len(colours)]
        label = f"teacher: {row['model']} ({params_label(row)})"
        ax.axhline(scale * row[value], linestyle="--", color=colour, label=label)
        if row.get(spread):
            low, high = scale * (row[value] - row[spread]), scale * (row[value] + row[spread])
            ax.axhspan(low, high, color=colour, alpha=0.1)
    if baseline and not graded:
        label = f"majority answer ({baseline['answer']}): {scale * baseline['accuracy']:.1f}%"
        ax.axhline(scale * baseline["accuracy"], linestyle=":", color="black", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("student parameters (total, log scale)")
    if graded:
        ax.set_ylabel("gold-answer NLL (nats, lower is better)")
    else:
        ax.set_ylabel(f"accuracy on the {task} test split (%)")
    kind = {"cot": "chain of thought", GRADED: "log-likelihood of the gold answer"}.get(variant, "log-likelihood")
    ax.set_title(f"Scaling down: {task} ({kind})")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, over no point
    fig.tight_layout()
    return fig


def plot_scaling_down(rows: list[dict], task: str, path: str | Path, variant: str = "cot") -> Path:
    """The scaling-down figure saved as a PNG at ``path`` (the leaderboard repo's plot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scaling_down_figure(rows, task, variant).savefig(path)
    return path


def rounds_figure(log: list[dict]) -> Figure:
    """An ensemble's rounds (``rounds.json`` of ``make train METHOD=ensemble``): test loss and task accuracy per
    round of the new student and the ensemble so far, the teacher as a horizontal line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=110)
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    rounds = [entry["round"] for entry in log]
    for ax, key, label in ((loss_ax, "loss", "test loss (nats/token)"), (accuracy_ax, "accuracy", "accuracy (%)")):
        scale = 100 if key == "accuracy" else 1
        for who, style in (("student", "o"), ("ensemble", "s-")):
            values = [entry.get(f"{who}_{key}") for entry in log]
            points = [(r, scale * v) for r, v in zip(rounds, values, strict=True) if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, label="new student" if who == "student" else who)
        teacher = next((entry.get(f"teacher_{key}") for entry in log if entry.get(f"teacher_{key}") is not None), None)
        if teacher is not None:
            ax.axhline(scale * teacher, linestyle="--", color="grey", label=f"teacher {log[0].get('teacher') or ''}")
        if key == "accuracy":
            ax.set_ylim(0, max([5.0, *ax.get_ylim()[1:]]))
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_xticks(rounds)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Ensemble rounds: each round adds one student")
    fig.tight_layout()
    return fig


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
