"""Leaderboard rows, the ``{task}-leaderboard`` dataset repo, and results written back into student cards.

One row per (model, task, split, variant): test, and validation where choices were made. A re-run replaces the
rows it scores and keeps every other row, so ``MODELS=`` runs add to the board and never duplicate it. The repo has
two configs: ``default`` (the rows) and ``samples`` (each model's answer per test example, which the Space shows
side by side).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from datasets import Features, Value, load_dataset
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard

from model_cards import template_path
from scalingdown.dataset_repo import RepoConfig, write_data_files
from scalingdown.hub import HubTarget, leaderboard_repo_name

ROW_FEATURES = Features(
    {
        "model": Value("string"),
        "role": Value("string"),
        "task": Value("string"),
        "split": Value("string"),  # test, or validation (where choices are made); empty in boards from before
        "variant": Value("string"),
        "lm_eval_task": Value("string"),
        "metric": Value("string"),
        "accuracy": Value("float64"),
        "stderr": Value("float64"),
        "answer_nll": Value("float64"),  # the nll variant's score (nats per answer, lower is better)
        "answer_nll_stderr": Value("float64"),
        "parsed_rate": Value("float64"),
        "n": Value("int64"),
        "status": Value("string"),
        "error": Value("string"),
        "method": Value("string"),
        "size": Value("string"),
        "init": Value("string"),
        "lora": Value("bool"),
        "params_total": Value("int64"),
        "params_non_embedding": Value("int64"),
        "chat": Value("bool"),
        "num_fewshot": Value("int64"),
        "batch_size": Value("int64"),
        "peak_rss_mb": Value("float64"),
        "peak_gpu_mb": Value("float64"),
        "latency_s": Value("float64"),
        "tokens_per_s": Value("float64"),
        "latency_s_batch1": Value("float64"),
        "tokens_per_s_batch1": Value("float64"),
        "device": Value("string"),
        "model_repo": Value("string"),
        "model_url": Value("string"),
        "revision": Value("string"),
        "weights_key": Value("string"),
        "dataset_repo": Value("string"),
        "dataset_revision": Value("string"),
        "limit": Value("int64"),
        "lm_eval_version": Value("string"),
        "evaluated_at": Value("string"),
    }
)
SAMPLE_FEATURES = Features(
    {
        "model": Value("string"),
        "variant": Value("string"),
        "id": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "response": Value("string"),
        "correct": Value("bool"),
    }
)
ROW_KEY = ("model", "task", "split", "variant")
VARIANT_NAMES = {"cot": "chain of thought", "mc": "log-likelihood", "nll": "log-likelihood of the gold answer"}


def row_key(row: dict) -> tuple:
    return tuple((row.get(k) or "test") if k == "split" else row[k] for k in ROW_KEY)


def split_rows(rows: list[dict], split: str) -> list[dict]:
    """The rows scored on ``split`` (rows from before the column existed were scored on test)."""
    return [r for r in rows if (r.get("split") or "test") == split]


def load_board(target: HubTarget, task: str) -> tuple[list[dict], list[dict]]:
    """``(rows, samples)`` already on the leaderboard repo (empty lists when it does not exist yet)."""
    name = leaderboard_repo_name(task)
    if not target.exists("dataset", name):
        return [], []
    location = target.location("dataset", name)
    # a board written before a column existed gets it empty, so old and new rows merge into one table
    rows = [{**dict.fromkeys(ROW_FEATURES), **r} for r in load_dataset(location, split="train").to_list()]
    try:
        samples = load_dataset(location, "samples", split="train").to_list()
    except ValueError:  # a board written before the samples config existed
        samples = []
    return rows, samples


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Old rows with every (model, task, split, variant) in ``new`` replaced; sorted for a stable board."""
    replaced = {row_key(r) for r in new}
    rows = [r for r in old if row_key(r) not in replaced] + list(new)
    role_order = {"teacher": 0, "ensemble": 1, "student": 2}
    return sorted(
        rows,
        key=lambda r: (
            (r.get("split") or "test") != "test",
            r["variant"],
            role_order.get(r["role"], 3),
            r["params_total"] or 0,
            r["model"],
        ),
    )


def merge_samples(old: list[dict], new: list[dict]) -> list[dict]:
    replaced = {(s["model"], s["variant"]) for s in new}
    return [s for s in old if (s["model"], s["variant"]) not in replaced] + list(new)


def markdown_table(rows: list[dict]) -> str:
    """The board as a markdown table (cards and the terminal)."""
    header = "| model | role | method | params | variant | accuracy | parsed | peak RSS | s/answer (batch) | "
    header += "tok/s (batch) | s/answer (bs 1) | status |\n"
    header += "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"

    def fmt(value, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = []
    for r in rows:
        accuracy = "–" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        if r["stderr"] is not None and r["accuracy"] is not None:
            accuracy += f" ± {100 * r['stderr']:.1f}"
        if r.get("answer_nll") is not None:  # the nll variant: a graded score in nats, not a percentage
            accuracy = f"NLL {r['answer_nll']:.2f}"
            accuracy += f" ± {r['answer_nll_stderr']:.2f}" if r.get("answer_nll_stderr") is not None else ""
        params = "–" if not r["params_total"] else f"{r['params_total'] / 1e6:.1f}M"
        variant = r["variant"] if (r.get("split") or "test") == "test" else f"{r['variant']} ({r['split']})"
        status = r["status"] if r["status"] == "ok" else f"failed: {(r['error'] or '')[:80]}"
        parsed = "–" if r["parsed_rate"] is None else f"{100 * r['parsed_rate']:.0f}%"
        lines.append(
            f"| {r['model']} | {r['role']} | {r['method'] or '–'} | {params} | {variant} | {accuracy} | {parsed} "
            f"| {fmt(r['peak_rss_mb'], '.0f')} MB | {fmt(r['latency_s'], '.2f')} | {fmt(r['tokens_per_s'], '.1f')} "
            f"| {fmt(r['latency_s_batch1'], '.2f')} | {status.replace('|', '/')} |"
        )
    return header + "\n".join(lines)


def push_board(
    target: HubTarget, task: str, rows: list[dict], samples: list[dict], answers: dict[str, str], plots: dict
) -> str:
    """Write the rows, samples, plots and card as the ``{task}-leaderboard`` dataset repo; return the commit."""
    name = leaderboard_repo_name(task)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        card_meta = write_data_files(
            folder,
            [
                RepoConfig("default", "data", ROW_FEATURES, {"train": rows}),
                RepoConfig("samples", "samples", SAMPLE_FEATURES, {"train": samples}),
            ],
        )
        for variant, plot in plots.items():
            (folder / f"scaling_down_{variant}.png").write_bytes(Path(plot).read_bytes())
        card_data = DatasetCardData(
            pretty_name=f"ScalingDown leaderboard: {task}",
            tags=["scalingdown", "leaderboard", "evaluation", task],
            **card_meta,
        )
        card = DatasetCard.from_template(
            card_data,
            template_path=template_path("leaderboard_card.md"),
            task=task,
            answers=answers,
            plots=sorted(plots),
            table=markdown_table(rows),
            repo_location=target.location("dataset", name),
            num_rows=len(rows),
            num_samples=len(samples),
        )
        card.save(folder / "README.md")
        return target.push_folder(
            folder,
            "dataset",
            name,
            f"make eval: {task} ({len(rows)} rows)",
            delete_patterns=["*.png", "data/*", "samples/*"],
        )


# -- student cards ------------------------------------------------------------------------------------

RESULTS_HEADING = "## Results"


def results_section(rows: list[dict], leaderboard: str, verdict: str | None = None) -> str:
    lines = [
        RESULTS_HEADING,
        "",
        *([verdict, ""] if verdict else []),
        f"Scored by `make eval` (lm-evaluation-harness); the full board is `{leaderboard}`.",
        "",
    ]
    lines.append(markdown_table(rows))
    return "\n".join(lines) + "\n"


def update_model_card(
    target: HubTarget, repo: str, rows: list[dict], leaderboard_repo: str, board_url: str, verdict: str | None = None
) -> str | None:
    """Put this model's rows into its card: ``model-index`` results and a filled results section, which opens with
    ``verdict`` (whether it beats the best teacher) when given."""
    folder = target.local_folder("model", repo)
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    card = ModelCard.load(readme)
    card.data.eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name=f"{r['task']} ({VARIANT_NAMES.get(r['variant'], r['variant'])})",
            dataset_type=r["dataset_repo"],
            dataset_name=f"{r['task']} {r.get('split') or 'test'} split",
            dataset_split=r.get("split") or "test",
            dataset_revision=r["dataset_revision"],
            metric_type="accuracy" if graded is None else "answer_nll",
            metric_name=f"{r['metric']} ({r['n']} questions)"
            + ("" if graded is None else ", nats per answer, lower is better"),
            metric_value=round(r["accuracy"] if graded is None else graded, 4),
            source_name="ScalingDown make eval (lm-evaluation-harness)",
            source_url=board_url,
        )
        for r in rows
        for graded in [r.get("answer_nll")]
        if r["status"] == "ok" and (r["accuracy"] is not None or graded is not None)
    ] or None
    if card.data.eval_results and not card.data.model_name:
        card.data.model_name = target.repo_id(repo)
    text = str(card)
    section = results_section(rows, leaderboard_repo, verdict)
    pattern = re.compile(rf"^{re.escape(RESULTS_HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text, count=1) if pattern.search(text) else f"{text}\n{section}"
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "README.md").write_text(text)
        return target.push_folder(scratch, "model", repo, "make eval: results in the card")
