"""The interactive scaling-down plot: every leaderboard row of one variant as a point, as a Vega-Lite chart.

Gradio's ``gr.Plot`` renders Vega-Lite specs (what Altair charts compile to) with hover tooltips; the spec is
written here as a dict, so the Space needs no plotting package. Failed rows stay on the plot, marked, at the
worst end of the axis; the axis ranges come from the points, so none falls outside.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from eval.report import GRADED, series_label

TOOLTIP = ["model", "role", "method", "parameters", "score", "status"]
MARKERS = {"student": "circle", "teacher": "diamond", "failed": "cross"}
DEFAULT_PARAMS = (1e6, 1e9)  # the x range when no row has a parameter count
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#72b7b2", "#eeca3b", "#9d755d", "#bab0ac", "#ff9da6"]
FAILED_COLOUR = "#e45756"  # not in PALETTE: a failed row never shares a method's colour


def _params_label(total: int | None) -> str:
    if not total:
        return "unknown"
    return f"{total / 1e9:.2f}B" if total >= 1e9 else f"{total / 1e6:.1f}M"


def _problem(row: dict, value: float | None) -> str | None:
    """Why a row is marked: an eval that failed, or a model that never wrote a parseable answer."""
    if row["status"] != "ok" or value is None:
        return f"failed: {row.get('error') or 'no score'}"
    if row.get("parsed_rate") == 0:
        return "no parseable answer"
    return None


def scaling_points(rows: list[dict], variant: str = "cot") -> pd.DataFrame:
    """One point per row of ``variant``: ``params`` (x), ``value`` with ``low``/``high`` (y, in % or nats), the
    tooltip fields, and ``failed`` for rows without a usable score (drawn at ``value`` = the worst end)."""
    graded = variant == GRADED
    field, spread, scale = ("answer_nll", "answer_nll_stderr", 1.0) if graded else ("accuracy", "stderr", 100.0)
    unit = " nats" if graded else "%"
    rows = [r for r in rows if r["variant"] == variant]
    known = [r["params_total"] for r in rows if r.get("params_total")]
    x_fallback = min(known) if known else math.sqrt(DEFAULT_PARAMS[0] * DEFAULT_PARAMS[1])
    tops = [scale * (r[field] + (r.get(spread) or 0)) for r in rows if r["status"] == "ok" and r.get(field) is not None]
    # failed rows sit where the worst score would: 0% accuracy, or past the highest NLL and its error bar
    worst = (max(tops, default=0.0) * 1.1 + 0.1) if graded else 0.0
    points = []
    for row in rows:
        raw = row.get(field) if row["status"] == "ok" else None
        problem = _problem(row, raw)
        value = worst if raw is None else scale * raw
        stderr = scale * (row.get(spread) or 0) if raw is not None else 0.0
        score = "no score" if raw is None else f"{value:.{2 if graded else 1}f}{unit} ± {stderr:.{2 if graded else 1}f}"
        role = row["role"]
        failed = problem is not None
        series = (
            "failed"
            if failed
            else (f"teacher: {row['model']}" if role == "teacher" else f"students: {series_label(row)}")
        )
        points.append(
            {
                "model": row["model"],
                "role": role,
                "method": row.get("method") or "none",
                "params": float(row.get("params_total") or x_fallback),
                "parameters": _params_label(row.get("params_total")),
                "value": value,
                "stderr": stderr,
                "low": value - stderr,
                "high": value + stderr,
                "score": score,
                "status": problem or "ok",
                "failed": failed,
                "series": series,
                "marker": "failed" if failed else ("teacher" if role == "teacher" else "student"),
            }
        )
    return pd.DataFrame(points, columns=["series", "marker", "params", "value", "low", "high", "failed", *TOOLTIP])


def axis_ranges(points: pd.DataFrame) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(x, y)`` domains holding every point and error bar with a margin: x multiplicative (log axis)."""
    if points.empty:
        return DEFAULT_PARAMS, (0.0, 100.0)
    x_low, x_high = points["params"].min(), points["params"].max()
    factor = max(1.5, (x_high / x_low) ** 0.08)
    y_low, y_high = float(points["low"].min()), float(points["high"].max())
    pad = max(0.06 * (y_high - y_low), 0.05 * max(abs(y_high), 1.0))
    return (x_low / factor, x_high * factor), (y_low - pad, y_high + pad)


def scaling_spec(points: pd.DataFrame, task: str, variant: str = "cot") -> dict:
    """The Vega-Lite spec: students per method joined by lines, teachers as points with a dashed line and their
    standard-error band across the plot, failed rows as crosses; hover shows :data:`TOOLTIP`."""
    (x_low, x_high), (y_low, y_high) = axis_ranges(points)
    graded = variant == GRADED
    y_title = "gold-answer NLL (nats, lower is better)" if graded else f"accuracy on the {task} test split (%)"
    x = {
        "field": "params",
        "type": "quantitative",
        "title": "parameters (total, log scale)",
        "scale": {"type": "log", "domain": [x_low, x_high], "nice": False},
    }
    y = {
        "field": "value",
        "type": "quantitative",
        "title": y_title,
        "scale": {"domain": [y_low, y_high], "nice": False},
    }
    series = sorted(points["series"].unique(), key=lambda s: (s == "failed", not s.startswith("teacher"), s))
    others = iter(PALETTE * len(series))
    colours = [FAILED_COLOUR if s == "failed" else next(others) for s in series]
    colour = {"field": "series", "type": "nominal", "title": None, "scale": {"domain": series, "range": colours}}
    tooltip = [{"field": name, "type": "nominal"} for name in TOOLTIP]
    teachers = {"filter": "datum.marker == 'teacher'"}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"Scaling down: {task} ({'log-likelihood of the gold answer' if graded else variant})",
        "width": 600,
        "height": 420,
        "data": {"values": json.loads(points.to_json(orient="records"))},
        "layer": [
            {
                "transform": [teachers],
                "mark": {"type": "rect", "opacity": 0.08},
                "encoding": {"y": {**y, "field": "low"}, "y2": {"field": "high"}, "color": colour},
            },
            {
                "transform": [teachers],
                "mark": {"type": "rule", "strokeDash": [6, 4]},
                "encoding": {"y": y, "color": colour, "tooltip": tooltip},
            },
            {
                "transform": [{"filter": "datum.marker == 'student'"}],
                "mark": {"type": "line"},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": colour,
                    "detail": {"field": "series", "type": "nominal"},
                    "order": {"field": "params", "type": "quantitative"},
                },
            },
            {
                "transform": [{"filter": "!datum.failed"}],
                "mark": {"type": "rule"},
                "encoding": {"x": x, "y": {**y, "field": "low"}, "y2": {"field": "high"}, "color": colour},
            },
            {
                "mark": {"type": "point", "filled": True, "size": 90},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": colour,
                    "tooltip": tooltip,
                    "shape": {
                        "field": "marker",
                        "type": "nominal",
                        "title": None,
                        "scale": {"domain": list(MARKERS), "range": list(MARKERS.values())},
                    },
                },
            },
        ],
    }
