"""The scaling-down answer: the smallest student that beats the best teacher, and the plot that shows it.

A student "beats" a teacher when its accuracy is higher; the sentence also says whether the margin exceeds
the combined standard error (sqrt(se_s^2 + se_t^2)), because on a few hundred test questions a couple of
points is noise. Where the board has a student pre-trained here (size ``X-pt``, ``make pretrain``) and the same
size trained from scratch on the task alone (size ``X``), a sentence per pair says which is better; each ensemble
(``make train METHOD=ensemble``) gets a sentence against the single student of its total size and the teacher.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from scalingdown.hub import PRETRAINED_HERE

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _ok(rows: list[dict], variant: str) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r["variant"] == variant and r["accuracy"] is not None]


def _pct(row: dict) -> str:
    stderr = f" ± {100 * row['stderr']:.1f}" if row.get("stderr") is not None else ""
    return f"{100 * row['accuracy']:.1f}%{stderr}"


def _params(row: dict) -> str:
    total = row.get("params_total")
    if not total:
        return "unknown size"
    return f"{total / 1e9:.2f}B params" if total >= 1e9 else f"{total / 1e6:.1f}M params"


def _against_noise(margin: float, first: dict, second: dict) -> str:
    combined = math.sqrt((first.get("stderr") or 0) ** 2 + (second.get("stderr") or 0) ** 2)
    # rounded, so a margin of exactly one standard error (0.02 vs 0.0200000001) is not called "more than"
    if combined and round(abs(margin), 9) > round(combined, 9):
        return "more than one combined standard error"
    if margin > 0:
        return "within one combined standard error, so not yet a clear win"
    return "within one combined standard error"


def scaling_down_answer(rows: list[dict], task: str, variant: str = "cot") -> str:
    """One sentence (or two) answering the project's question for one task and variant, followed by what
    pre-training here bought (``pretraining_comparison``) when the board has both rows, and how each ensemble
    compares with a single student of its size and with the teacher (``ensemble_comparison``)."""
    comparisons = [*pretraining_comparison(rows, variant), *ensemble_comparison(rows, variant)]
    return " ".join([teacher_answer(rows, task, variant), *comparisons])


def ensemble_size(size: str | None) -> int | None:
    """How many students an ensemble's size label (``2x1M+3M``, from ``make train METHOD=ensemble``) counts."""
    counts = re.findall(r"(\d+)x", size or "")
    return sum(int(n) for n in counts) or None


def ensemble_comparison(rows: list[dict], variant: str = "cot") -> list[str]:
    """For each ensemble, one sentence: its accuracy vs the single student closest to it in total parameters
    (log scale) and vs the best teacher: can several small students together match one large one?"""
    # a student that never wrote a parseable answer failed with a measured 0%: still the single student to beat
    scored = [r for r in rows if r["variant"] == variant and r.get("accuracy") is not None]
    students = [r for r in scored if r["role"] == "student" and r.get("params_total")]
    rows = _ok(rows, variant)
    teachers = [r for r in rows if r["role"] == "teacher"]
    sentences = []
    for ensemble in sorted((r for r in rows if r["role"] == "ensemble"), key=lambda r: r.get("params_total") or 0):
        n = ensemble_size(ensemble.get("size"))
        parts = [
            f"Ensemble{f' of {n} students' if n else ''}: {ensemble['model']} ({ensemble.get('size') or 'ensemble'}, "
            f"{_params(ensemble)}) at {_pct(ensemble)}"
        ]
        if students and ensemble.get("params_total"):
            single = min(
                students,
                key=lambda r: (abs(math.log(r["params_total"] / ensemble["params_total"])), -r["accuracy"]),
            )
            margin = ensemble["accuracy"] - single["accuracy"]
            unparsed = "" if single["status"] == "ok" else ", no parseable answer"
            parts.append(
                f"vs {single['model']} ({_params(single)}, the single student closest in total parameters{unparsed}) "
                f"at {_pct(single)}: {100 * margin:+.1f} points, {_against_noise(margin, ensemble, single)}"
            )
        if teachers:
            best = max(teachers, key=lambda r: r["accuracy"])
            margin = ensemble["accuracy"] - best["accuracy"]
            parts.append(
                f"vs the best teacher {best['model']} ({_params(best)}) at {_pct(best)}: {100 * margin:+.1f} points, "
                f"{_against_noise(margin, ensemble, best)}"
            )
        sentences.append("; ".join(parts) + ".")
    return sentences


def pretraining_comparison(rows: list[dict], variant: str = "cot") -> list[str]:
    """For each student pre-trained here and then trained on the task (size ``X-pt``), one sentence against the same
    size, method and LoRA setting trained from random weights on the task alone (size ``X``)."""
    students = {
        (r.get("size"), r.get("method"), bool(r.get("lora"))): r for r in _ok(rows, variant) if r["role"] == "student"
    }
    sentences = []
    for (size, method, lora), pre in sorted(
        students.items(), key=lambda item: (item[1].get("params_total") or 0, str(item[0]))
    ):
        if not size or not size.endswith(PRETRAINED_HERE):
            continue
        scratch = students.get((size.removesuffix(PRETRAINED_HERE), method, lora))
        if scratch is None:
            continue
        margin = pre["accuracy"] - scratch["accuracy"]
        verdict = "beats" if margin > 0 else "does not beat"
        sentences.append(
            f"Pre-trained here, then {method}: {pre['model']} at {_pct(pre)} {verdict} {scratch['model']} (the same "
            f"size from scratch on the task alone) at {_pct(scratch)}: {100 * margin:+.1f} points, "
            f"{_against_noise(margin, pre, scratch)}."
        )
    return sentences


def teacher_answer(rows: list[dict], task: str, variant: str = "cot") -> str:
    """The smallest student that beats the best teacher, or how far the best student is behind."""
    rows = _ok(rows, variant)
    teachers = [r for r in rows if r["role"] == "teacher"]
    students = [r for r in rows if r["role"] in ("student", "ensemble")]
    if not teachers:
        return f"{task}: no teacher was scored successfully, so there is nothing to beat yet."
    best = max(teachers, key=lambda r: r["accuracy"])
    if not students:
        return f"{task}: no student was scored successfully yet; the best teacher is {best['model']} at {_pct(best)}."
    winners = sorted(
        (r for r in students if r["accuracy"] > best["accuracy"]),
        key=lambda r: (r.get("params_total") or math.inf, -r["accuracy"]),
    )
    if not winners:
        top = max(students, key=lambda r: r["accuracy"])
        gap = 100 * (best["accuracy"] - top["accuracy"])
        return (
            f"{task}: no student beats the best teacher yet. Best teacher: {best['model']} ({_params(best)}) at "
            f"{_pct(best)}; best student: {top['model']} ({_params(top)}) at {_pct(top)}, {gap:.1f} points behind."
        )
    win = winners[0]
    margin = win["accuracy"] - best["accuracy"]
    significance = _against_noise(margin, win, best)
    return (
        f"{task}: the smallest student that beats the best teacher is {win['model']} ({_params(win)}) at "
        f"{_pct(win)} vs {best['model']} ({_params(best)}) at {_pct(best)}: +{100 * margin:.1f} points, "
        f"{significance}."
    )


def scaling_down_figure(rows: list[dict], task: str, variant: str = "cot") -> Figure:
    """Accuracy vs parameters (log x): one series per method, teachers as horizontal lines.

    A bare ``matplotlib.figure.Figure`` (no pyplot state), so a long-running Space can draw one per request
    without leaking figures.
    """
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    rows = _ok(rows, variant)
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    students = [r for r in rows if r["role"] != "teacher" and r.get("params_total")]
    series: dict[str, list[dict]] = {}
    for row in students:
        label = f"{row.get('method') or 'student'}{' (LoRA)' if row.get('lora') else ''}"
        series.setdefault(label, []).append(row)
    for label, members in sorted(series.items()):
        members.sort(key=lambda r: r["params_total"])
        ax.errorbar(
            [r["params_total"] for r in members],
            [100 * r["accuracy"] for r in members],
            yerr=[100 * (r.get("stderr") or 0) for r in members],
            marker="o",
            capsize=3,
            label=f"students: {label}",
        )
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(sorted((r for r in rows if r["role"] == "teacher"), key=lambda r: -r["accuracy"])):
        colour = colours[(i + len(series)) % len(colours)]
        ax.axhline(
            100 * row["accuracy"], linestyle="--", color=colour, label=f"teacher: {row['model']} ({_params(row)})"
        )
        if row.get("stderr"):
            low, high = 100 * (row["accuracy"] - row["stderr"]), 100 * (row["accuracy"] + row["stderr"])
            ax.axhspan(low, high, color=colour, alpha=0.1)
    ax.set_xscale("log")
    ax.set_xlabel("student parameters (total, log scale)")
    ax.set_ylabel(f"accuracy on the {task} test split (%)")
    ax.set_title(f"Scaling down: {task} ({'chain of thought' if variant == 'cot' else 'log-likelihood'})")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_scaling_down(rows: list[dict], task: str, path: str | Path, variant: str = "cot") -> Path:
    """The scaling-down figure saved as a PNG at ``path`` (the leaderboard repo's plot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scaling_down_figure(rows, task, variant).savefig(path)
    return path
