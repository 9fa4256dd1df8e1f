"""The scaling-down answer: the smallest student that beats the best teacher (its figure: ``eval.plots``).

A student "beats" a teacher when its accuracy is higher by more than two combined standard errors
(sqrt(se_s^2 + se_t^2)): on a few hundred test questions a couple of points is noise. Every margin is given in
those units too. The best teacher is the teacher variant (model, shots) best on the validation split where it was
scored there; its test accuracy is the one compared. Where the board has a student pre-trained here (size
``X-pt``, ``make pretrain``) and the same size trained from scratch on the task alone (size ``X``), a sentence per
pair says which is better: by accuracy (also when one of them never wrote a parseable answer: a measured 0%) and,
where the ``nll`` variant scored both, by the log-likelihood of the gold answer, which still ranks students whose
accuracy ties at 0%. Each ensemble
(``make train METHOD=ensemble``) gets a sentence against the single student of its total size and the teacher.
"""

from __future__ import annotations

import math
import re

from scalingdown.hub import PRETRAINED_HERE

GRADED = "nll"  # the variant scored by the gold answer's log-likelihood (lower is better) instead of accuracy


def scored_rows(rows: list[dict], variant: str) -> list[dict]:
    """Rows of ``variant`` scored successfully, with an accuracy."""
    return [r for r in rows if r["status"] == "ok" and r["variant"] == variant and r["accuracy"] is not None]


def graded_rows(rows: list[dict]) -> list[dict]:
    """Rows of the ``nll`` variant with a score."""
    return [r for r in rows if r["status"] == "ok" and r["variant"] == GRADED and r.get("answer_nll") is not None]


def _nll(row: dict, unit: str = " nats") -> str:
    stderr = f" ± {row['answer_nll_stderr']:.2f}" if row.get("answer_nll_stderr") is not None else ""
    return f"{row['answer_nll']:.2f}{stderr}{unit}"


def _parsed(row: dict) -> str:
    """What an accuracy does not say: that the model never wrote a final answer, or how often it did."""
    if row["status"] != "ok":
        return " (no parseable answer)"
    rate = row.get("parsed_rate")
    return f" ({rate:.0%} parseable)" if rate is not None and rate < 1 else ""


def _pct(row: dict) -> str:
    stderr = f" ± {100 * row['stderr']:.1f}" if row.get("stderr") is not None else ""
    return f"{100 * row['accuracy']:.1f}%{stderr}"


def params_label(row: dict) -> str:
    """A row's total parameters as the sentences and figures write them: ``8.0M params``."""
    total = row.get("params_total")
    if not total:
        return "unknown size"
    return f"{total / 1e9:.2f}B params" if total >= 1e9 else f"{total / 1e6:.1f}M params"


def run_suffix(row: dict) -> str:
    """What a student's repo name adds after ``{task}-{method}-{size}`` (``trainers.sft --suffix``), e.g. the one
    teacher it learned from; empty for the plain run."""
    stem = f"{row.get('task')}-{row.get('method')}-{row.get('size')}"
    name = row["model"].removesuffix("-lora")
    return name[len(stem) + 1 :] if name.startswith(stem + "-") else ""


def run_label(row: dict) -> str:
    """What a student row ablates: its method, plus its repo suffix (``sft (smollm2)``) when it has one."""
    suffix = run_suffix(row)
    return f"{row.get('method') or row['role']}{f' ({suffix})' if suffix else ''}"


def series_label(row: dict) -> str:
    """A student's curve on the scaling-down plots: its run label, and apart from the scratch curve when it has
    LoRA, was pre-trained here (size ``X-pt``) or was cut from a pretrained model (``init`` pruned or minitron)."""
    label = f"{run_label(row) if row.get('method') else 'student'}{' (LoRA)' if row.get('lora') else ''}"
    if (row.get("size") or "").endswith(PRETRAINED_HERE):
        label += ", pre-trained here"
    # evenly spaced layers dropped, or pruned by importance: two curves, compared at matched parameters
    label += {"pruned": ", pruned", "minitron": ", Minitron"}.get(row.get("init"), "")
    return label


def _against_noise(margin: float, first: dict, second: dict, stderr: str = "stderr") -> str:
    """``margin`` > 0 means ``first`` is the better one; ``stderr`` names the standard-error column. A clear win is a
    margin of more than two combined standard errors (sqrt(se_1^2 + se_2^2)); the sentence gives the ratio."""
    combined = math.sqrt((first.get(stderr) or 0) ** 2 + (second.get(stderr) or 0) ** 2)
    if not combined:
        return "within two combined standard errors (0.0)" if margin == 0 else "with no standard error to judge it by"
    ratio = abs(margin) / combined
    # rounded, so a margin of exactly two standard errors (0.04 vs 0.0400000001) is not called "more than"
    if round(ratio, 9) > 2:
        return f"more than two combined standard errors ({ratio:.1f})"
    if margin > 0:
        return f"within two combined standard errors ({ratio:.1f}), so not a clear win"
    return f"within two combined standard errors ({ratio:.1f})"


def clear_win(first: dict, second: dict, stderr: str = "stderr", lower_is_better: bool = False) -> bool:
    """``first`` beats ``second`` by more than two combined standard errors (the project's bar for "beats")."""
    key = "answer_nll" if lower_is_better else "accuracy"
    margin = (second[key] - first[key]) if lower_is_better else (first[key] - second[key])
    combined = math.sqrt((first.get(stderr) or 0) ** 2 + (second.get(stderr) or 0) ** 2)
    return margin > 0 and combined > 0 and round(margin / combined, 9) > 2


def scaling_down_answer(rows: list[dict], task: str, variant: str = "cot", validation_rows: list[dict] = ()) -> str:
    """One sentence (or two) answering the project's question for one task and variant, followed by what
    pre-training here bought (``pretraining_comparison``) when the board has both rows, and how each ensemble
    compares with a single student of its size and with the teacher (``ensemble_comparison``). The ``nll``
    variant answers by the gold answer's log-likelihood (``graded_answer``)."""
    if variant == GRADED:
        return " ".join([graded_answer(rows, task), *pretraining_comparison(rows, variant)])
    comparisons = [*pretraining_comparison(rows, variant), *ensemble_comparison(rows, variant)]
    return " ".join([teacher_answer(rows, task, variant, validation_rows), *comparisons])


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
    rows = scored_rows(rows, variant)
    teachers = [r for r in rows if r["role"] == "teacher"]
    sentences = []
    for ensemble in sorted((r for r in rows if r["role"] == "ensemble"), key=lambda r: r.get("params_total") or 0):
        n = ensemble_size(ensemble.get("size"))
        parts = [
            f"Ensemble{f' of {n} students' if n else ''}: {ensemble['model']} ({ensemble.get('size') or 'ensemble'}, "
            f"{params_label(ensemble)}) at {_pct(ensemble)}"
        ]
        if students and ensemble.get("params_total"):
            single = min(
                students,
                key=lambda r: (abs(math.log(r["params_total"] / ensemble["params_total"])), -r["accuracy"]),
            )
            margin = ensemble["accuracy"] - single["accuracy"]
            unparsed = "" if single["status"] == "ok" else ", no parseable answer"
            parts.append(
                f"vs {single['model']} ({params_label(single)}, the single student closest in total parameters"
                f"{unparsed}) at {_pct(single)}: {100 * margin:+.1f} points, {_against_noise(margin, ensemble, single)}"
            )
        if teachers:
            best = max(teachers, key=lambda r: r["accuracy"])
            margin = ensemble["accuracy"] - best["accuracy"]
            parts.append(
                f"vs the best teacher {best['model']} ({params_label(best)}) at {_pct(best)}: "
                f"{100 * margin:+.1f} points, {_against_noise(margin, ensemble, best)}"
            )
        sentences.append("; ".join(parts) + ".")
    return sentences


def pretraining_comparison(rows: list[dict], variant: str = "cot") -> list[str]:
    """For each student pre-trained here and then trained on the task (size ``X-pt``), one sentence against the same
    size, method and LoRA setting trained from random weights on the task alone (size ``X``): their accuracies in
    ``variant`` (a student that never wrote a parseable answer has a measured 0%, said so), then, where the ``nll``
    variant scored both, which gives the gold answer the lower NLL (the only part for ``variant="nll"``)."""

    def by_key(candidates) -> dict:
        return {(r.get("size"), r.get("method"), bool(r.get("lora"))): r for r in candidates if r["role"] == "student"}

    measured = {}
    if variant != GRADED:
        measured = by_key(r for r in rows if r["variant"] == variant and r.get("accuracy") is not None)
    graded = by_key(graded_rows(rows))
    pairs = []
    for key in set(measured) | set(graded):
        size, method, lora = key
        if size and size.endswith(PRETRAINED_HERE):
            twin = (size.removesuffix(PRETRAINED_HERE), method, lora)
            pre = measured.get(key) or graded[key]
            pairs.append(((pre.get("params_total") or 0, str(key)), key, twin, method))
    sentences = []
    for _, key, twin, method in sorted(pairs):
        parts = []
        pre, scratch = measured.get(key), measured.get(twin)
        if pre and scratch:
            margin = pre["accuracy"] - scratch["accuracy"]
            verdict = "beats" if margin > 0 else "ties with" if margin == 0 else "does not beat"
            parts.append(
                f"{pre['model']} at {_pct(pre)}{_parsed(pre)} {verdict} {scratch['model']} (the same size from scratch "
                f"on the task alone) at {_pct(scratch)}{_parsed(scratch)}: {100 * margin:+.1f} points, "
                f"{_against_noise(margin, pre, scratch)}"
            )
        pre_nll, scratch_nll = graded.get(key), graded.get(twin)
        if pre_nll and scratch_nll:
            gain = scratch_nll["answer_nll"] - pre_nll["answer_nll"]  # > 0: the pre-trained one is better
            lower = "the pre-trained" if gain > 0 else "the from-scratch" if gain < 0 else "neither"
            who = "" if parts else f"{pre_nll['model']} vs {scratch_nll['model']} (the same size from scratch): "
            parts.append(
                f"{who}log-likelihood of the gold answer (nll variant, -log p in nats per answer, lower is better) "
                f"{_nll(pre_nll, '')} vs {_nll(scratch_nll)}: {lower} student's is lower by {abs(gain):.2f} nats, "
                f"{_against_noise(gain, pre_nll, scratch_nll, 'answer_nll_stderr')}"
            )
        if parts:
            sentences.append(f"Pre-trained here, then {method}: " + "; ".join(parts) + ".")
    return sentences


def best_teacher(rows: list[dict], validation_rows: list[dict] = ()) -> tuple[dict, str]:
    """``(the best teacher's test row, how it was picked)``: the teacher variant (model and shots) with the best
    validation accuracy where validation rows exist (the choice is never made on test), else the best on test."""
    teachers = [r for r in rows if r["role"] == "teacher"]
    on_validation = {r["model"]: r["accuracy"] for r in scored_rows(validation_rows, rows[0]["variant"])}
    candidates = [t for t in teachers if t["model"] in on_validation]
    if candidates:
        best = max(candidates, key=lambda r: (on_validation[r["model"]], r["accuracy"]))
        return best, f"best on validation of {len(on_validation)} teacher variants"
    return max(teachers, key=lambda r: r["accuracy"]), "the best on test: no validation scores"


def card_verdict(student: str, rows: list[dict], validation_rows: list[dict] = (), variant: str = "cot") -> str | None:
    """For a student's card: the sentence saying it beats the best teacher (by more than two combined standard
    errors, with the margin), or None when it does not."""
    scored = scored_rows(rows, variant)
    teachers = [r for r in scored if r["role"] == "teacher"]
    mine = next((r for r in scored if r["model"] == student), None)
    if not teachers or mine is None:
        return None
    best, picked = best_teacher(teachers, [r for r in validation_rows if r["role"] == "teacher"])
    if not clear_win(mine, best):
        return None
    margin = mine["accuracy"] - best["accuracy"]
    return (
        f"**This student beats the best teacher**, {best['model']} ({params_label(best)}, {picked}): {_pct(mine)} vs "
        f"{_pct(best)} on {mine.get('n') or 'the'} test questions, +{100 * margin:.1f} points, "
        f"{_against_noise(margin, mine, best)}."
    )


def teacher_answer(rows: list[dict], task: str, variant: str = "cot", validation_rows: list[dict] = ()) -> str:
    """The smallest student that beats the best teacher by more than two combined standard errors, or how close
    the best student comes. ``validation_rows`` pick the best teacher (``best_teacher``)."""
    rows = scored_rows(rows, variant)
    validation_rows = [r for r in validation_rows if r["role"] == "teacher"]
    teachers = [r for r in rows if r["role"] == "teacher"]
    students = [r for r in rows if r["role"] in ("student", "ensemble")]
    if not teachers and validation_rows:
        return f"{task}: nothing is scored on test yet (validation only; test is scored once, at the end)."
    if not teachers:
        return f"{task}: no teacher was scored successfully, so there is nothing to beat yet."
    best, picked = best_teacher(teachers, validation_rows)
    teacher = f"{best['model']} ({params_label(best)}, {picked}) at {_pct(best)}"
    if not students:
        return f"{task}: no student was scored successfully yet; the best teacher is {teacher}."
    winners = sorted(
        (r for r in students if clear_win(r, best)),
        key=lambda r: (r.get("params_total") or math.inf, -r["accuracy"]),
    )
    if winners:
        win = winners[0]
        margin = win["accuracy"] - best["accuracy"]
        share = ""
        if win.get("params_total") and best.get("params_total"):
            share = f", {100 * win['params_total'] / best['params_total']:.0f}% of the teacher's parameters"
        return (
            f"{task}: the smallest student that beats the best teacher is {win['model']} ({params_label(win)}{share}) "
            f"at {_pct(win)} vs {teacher}: +{100 * margin:.1f} points, {_against_noise(margin, win, best)}."
        )
    top = max(students, key=lambda r: r["accuracy"])
    margin = top["accuracy"] - best["accuracy"]
    where = f"{100 * margin:+.1f} points, {_against_noise(margin, top, best)}"
    return (
        f"{task}: no student beats the best teacher by more than two combined standard errors yet. Best teacher: "
        f"{teacher}; best student: {top['model']} ({params_label(top)}) at {_pct(top)}, {where}."
    )


def graded_answer(rows: list[dict], task: str) -> str:
    """The ``nll`` variant's answer: the smallest student whose gold-answer NLL is below the best teacher's."""
    rows = graded_rows(rows)
    teachers = [r for r in rows if r["role"] == "teacher"]
    students = [r for r in rows if r["role"] in ("student", "ensemble")]
    what = f"{task} (log-likelihood of the gold answer, nats per answer, lower is better)"
    if not teachers:
        return f"{what}: no teacher was scored successfully, so there is nothing to beat yet."
    best = min(teachers, key=lambda r: r["answer_nll"])
    if not students:
        return f"{what}: no student was scored yet; the best teacher is {best['model']} at {_nll(best)}."
    winners = sorted(
        (r for r in students if r["answer_nll"] < best["answer_nll"]),
        key=lambda r: (r.get("params_total") or math.inf, r["answer_nll"]),
    )
    if not winners:
        top = min(students, key=lambda r: r["answer_nll"])
        return (
            f"{what}: no student gives the gold answer a lower NLL than the best teacher yet. Best teacher: "
            f"{best['model']} ({params_label(best)}) at {_nll(best)}; best student: {top['model']} "
            f"({params_label(top)}) at {_nll(top)}, {top['answer_nll'] - best['answer_nll']:.2f} nats higher."
        )
    win = winners[0]
    gain = best["answer_nll"] - win["answer_nll"]
    return (
        f"{what}: the smallest student below the best teacher is {win['model']} ({params_label(win)}) at "
        f"{_nll(win)} vs {best['model']} ({params_label(best)}) at {_nll(best)}: {gain:.2f} nats lower, "
        f"{_against_noise(gain, win, best, 'answer_nll_stderr')}."
    )
