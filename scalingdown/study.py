"""A study: one recipe runs the data, a ladder of students and method ablations, eval on validation, eval on test
once, and the report (``make study``).

    python -m scalingdown.study --config recipes/study/synthetic_gsm.yaml            # make study
    python -m scalingdown.study --config recipes/study/synthetic_gsm.yaml --dry_run  # print the commands

Each step is the stage's own command (``python -m datasets_builders.push_data ...``, ``trainers.sft``, ``eval.run``)
run in a process of its own, so a study is exactly the ``make`` commands it prints, and each stage skips what it has
already built: an interrupted study resumes where it stopped. Every model is scored on the validation split first;
the test split is scored once, at the end, with each teacher at the shot count that was best on validation. The
report (``outputs/study/<name>/``) holds the answer, the teacher and student tables with validation and test
accuracy, the majority-answer baseline, the plot and the wall time of every step.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scalingdown.errors import UserError, run_cli

STUDY_KEYS = {"name", "task", "org", "push_data", "train", "eval"}
TRAIN_MODULES = {"ensemble": "trainers.ensemble"}  # every other method trains through trainers.sft


@dataclass
class Step:
    """One stage command of the study."""

    name: str
    module: str
    flags: dict = field(default_factory=dict)

    def argv(self) -> list[str]:
        args = []
        for key, value in self.flags.items():
            if value is None:
                continue
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        return [sys.executable, "-m", self.module, *args]

    def command(self) -> str:
        return shlex.join(["python", *self.argv()[1:]])


def load_study(path: str | Path) -> dict:
    """The recipe, checked: unknown keys and missing stage recipes are named before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CONFIG={path}: no such study recipe; the studies are {sorted(map(str, recipe_files()))}")
    study = yaml.safe_load(path.read_text()) or {}
    unknown = set(study) - STUDY_KEYS
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; a study has {sorted(STUDY_KEYS)}")
    for key in ("task", "push_data", "train", "eval"):
        if key not in study:
            raise UserError(f"{path}: no `{key}:` section")
    configs = [study["push_data"].get("config"), study["eval"].get("config")]
    configs += [run.get("config") for run in study["train"].get("runs", [])]
    for config in filter(None, configs):
        if not Path(config).is_file():
            raise UserError(f"{path}: stage recipe {config} does not exist")
    if "org" in study:
        from scalingdown.hub import HubError, check_repo_id

        try:
            check_repo_id(f"{study['org']}/{study['task']}")
        except HubError as error:
            raise UserError(f"{path}: org {study['org']!r}: {error}") from None
    study.setdefault("name", path.stem)
    return study


def recipe_files() -> list[Path]:
    return sorted(Path("recipes/study").glob("*.yaml"))


def data_step(study: dict) -> Step:
    return Step("data", "datasets_builders.push_data", {"task": study["task"], **study["push_data"]})


def train_steps(study: dict) -> list[Step]:
    """One step per (run, size): the run's recipe, the study's shared settings, then the run's own."""
    shared = {k: v for k, v in study["train"].items() if k != "runs"}
    steps = []
    for run in study["train"]["runs"]:
        run = dict(run)
        sizes = run.pop("sizes")
        for size in sizes:
            flags = {"config": run.get("config"), "task": study["task"], **shared, **run, "size": size}
            method = flags.get("method") or yaml.safe_load(Path(flags["config"]).read_text()).get("method", "sft")
            name = f"train {method}{'-' + run['suffix'] if run.get('suffix') else ''} {size}"
            steps.append(Step(name, TRAIN_MODULES.get(method, "trainers.sft"), flags))
    return steps


def eval_step(study: dict, split: str, models: str | None = None, variant: str | None = None) -> Step:
    flags = {k: v for k, v in study["eval"].items() if k not in ("validation_limit", "test_limit")}
    flags.update(task=study["task"], split=split, limit=study["eval"].get(f"{split}_limit"), models=models)
    if variant:
        flags["variants"] = variant
    return Step(f"eval {split}{f' {variant}' if variant else ''}", "eval.run", flags)


def steps_on_test(study: dict, validation: list[dict] | None) -> list[Step]:
    """The test split, scored once: per accuracy variant its best teacher variants on validation and every student
    (one step per variant, so no teacher writes test answers in a variant where another of its prompts won).
    ``validation`` None (a dry run, before validation is scored) names the teachers by a placeholder."""
    students = f"{study['task']}-*"
    variants = accuracy_variants(study)

    def teachers(variant: str) -> list[str]:
        return best_teacher_variants(validation, variant) if validation is not None else ["<best teacher variants>"]

    return [
        eval_step(study, "test", ",".join([*teachers(v), students]), v if len(variants) > 1 else None) for v in variants
    ]


def best_teacher_variants(rows: list[dict], variant: str = "cot") -> list[str]:
    """Per teacher, the variant (shot count) with the best validation accuracy: the only one scored on test."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["role"] != "teacher" or row["variant"] != variant or row.get("accuracy") is None:
            continue
        base = row["model"].rsplit("-", 1)[0] if row["model"].endswith("shot") else row["model"]
        if base not in best or row["accuracy"] > best[base]["accuracy"]:
            best[base] = row
    return sorted(r["model"] for r in best.values())


def accuracy_variants(study: dict) -> list[str]:
    """The eval variants scored by accuracy (``cot``, ``mc``): each gets its best teachers on test and its report."""
    variants = str(study["eval"].get("variants") or "cot").split(",")
    return [v.strip() for v in variants if v.strip() and v.strip() != "nll"] or ["cot"]


def board_rows(task: str) -> list[dict]:
    from eval.leaderboard import load_board
    from scalingdown.hub import HubTarget

    return load_board(HubTarget.from_env(), task)[0]


# -- the report ---------------------------------------------------------------------------------------


def majority_baseline(task: str) -> dict | None:
    """Answering every test question with the train split's most common answer: the floor a student must clear."""
    from datasets import get_dataset_config_names, load_dataset

    from scalingdown.hub import HubTarget, dataset_repo_name

    location = HubTarget.from_env().location("dataset", dataset_repo_name(task))
    config = "examples" if "examples" in get_dataset_config_names(location) else None
    answers = load_dataset(location, config, split="train")["answer"]
    test = load_dataset(location, split="test")["answer"]
    if not answers or not test:
        return None
    answer, _ = collections.Counter(answers).most_common(1)[0]
    accuracy = sum(a == answer for a in test) / len(test)
    return {"answer": answer, "accuracy": accuracy, "stderr": math.sqrt(accuracy * (1 - accuracy) / len(test))}


def _acc(row: dict | None) -> str:
    if row is None:
        return "–"
    if row.get("accuracy") is None:
        return "failed"
    return f"{100 * row['accuracy']:.1f} ± {100 * (row.get('stderr') or 0):.1f}"


def report(study: dict, timings: list[dict], folder: Path) -> Path:
    """``report.md`` and ``scaling_down.png`` in ``folder``: per variant the answer, plot and tables; the
    baseline and wall times."""
    from scalingdown.hub import HubTarget

    task = study["task"]
    board, baseline = board_rows(task), majority_baseline(task)
    variants = accuracy_variants(study)
    lines = [f"# Study: {study['name']}", "", f"Repos: `{HubTarget.from_env().org}/` on the Hub target.", ""]
    for variant in variants:
        plot = "scaling_down.png" if variant == variants[0] else f"scaling_down-{variant}.png"
        lines += variant_report(board, task, variant, baseline, folder / plot, titled=len(variants) > 1)
    if baseline:
        lines += [
            f"Majority baseline (every answer {baseline['answer']!r}, the train split's most common): "
            f"{100 * baseline['accuracy']:.1f} ± {100 * baseline['stderr']:.1f} on test.",
            "",
        ]
    lines += ["## Wall time", "", "| step | command | seconds | peak RSS |", "| --- | --- | ---: | ---: |"]
    for t in timings:
        peak = t.get("peak_rss_mb")
        if t["step"].startswith("eval "):
            # Models are scored in forkserver processes the step never waits for: the largest on the board counts.
            split, *variant = t["step"].removeprefix("eval ").split()
            rows = [r for r in board if r.get("split") == split and (not variant or r.get("variant") == variant[0])]
            peak = max([r.get("peak_rss_mb") or 0 for r in rows], default=0) or None
        rss = f"{peak / 1024:.1f} GB" if peak else "–"
        lines.append(f"| {t['step']} | `{t['command']}` | {t['seconds']:.0f} | {rss} |")
    lines.append(f"| total | | {sum(t['seconds'] for t in timings):.0f} | |")
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def variant_report(board: list[dict], task: str, variant: str, baseline: dict | None, plot: Path, titled: bool):
    """One variant's answer, plot and tables (markdown lines); the plot is written to ``plot``."""
    from eval.leaderboard import split_rows
    from eval.plots import scaling_down_figure
    from eval.report import run_label, scaling_down_answer

    rows = [r for r in board if r["variant"] == variant]
    test, validation = split_rows(rows, "test"), split_rows(rows, "validation")
    on_validation = {r["model"]: r for r in validation}
    answer = scaling_down_answer(test, task, variant, validation)
    scaling_down_figure(test, task, variant, baseline=baseline).savefig(plot)
    lines = [f"## Variant `{variant}`", ""] if titled else []
    lines += [answer, "", f"![scaling down]({plot.name})", ""]
    lines += ["### Teachers", "", "| teacher variant | params | validation | test |", "| --- | ---: | ---: | ---: |"]
    teachers = sorted({r["model"] for r in rows if r["role"] == "teacher"})
    by_test = {r["model"]: r for r in test}
    for name in teachers:
        params = next(r.get("params_total") for r in rows if r["model"] == name)
        size = f"{params / 1e6:.1f}M" if params else "–"
        lines.append(f"| {name} | {size} | {_acc(on_validation.get(name))} | {_acc(by_test.get(name))} |")
    lines += ["", "### Students (accuracy %, validation / test)", ""]
    students = [r for r in rows if r["role"] != "teacher"]
    labels = sorted({run_label(r) for r in students})
    sizes = sorted({(r.get("params_total") or 0, r.get("size") or "?") for r in students})
    lines += ["| size | params | " + " | ".join(labels) + " |", "| --- | ---: |" + " ---: |" * len(labels)]
    for params, size in sizes:
        cells = []
        for label in labels:
            match = [r for r in students if run_label(r) == label and (r.get("size") or "?") == size]
            names = {r["model"] for r in match}
            cells.append(
                " / ".join([_acc(on_validation.get(n)) + " / " + _acc(by_test.get(n)) for n in sorted(names)] or ["–"])
            )
        lines.append(f"| {size} | {params / 1e6:.1f}M | " + " | ".join(cells) + " |")
    return [*lines, ""]


# -- running ------------------------------------------------------------------------------------------


def run_step(step: Step, folder: Path) -> dict:
    """Run one stage command, its output teed to ``<folder>/logs/``; a failed stage stops the study."""
    log = folder / "logs" / (step.name.replace(" ", "_") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n== {step.name}: {step.command()}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(step.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            handle.write(line)
            if not line.startswith(("Loading weights", "Converting", "Writing model")):
                sys.stdout.write(line)
        # wait4, not wait: the step's own peak memory (that of its process and the children it waited for)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = code = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if code:
        raise UserError(
            f"study step `{step.name}` failed (exit {code}); its log: {log}. Fix it and re-run: each stage skips "
            "what it has already built"
        )
    return {"step": step.name, "command": step.command(), "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/study/synthetic_gsm.yaml", help="The study recipe.")
    parser.add_argument("--dry_run", action="store_true", help="Print the commands and stop.")
    parser.add_argument(
        "--only", default=None, help="Comma-separated parts to run: data, train, eval, report (default: all)."
    )
    parser.add_argument(
        "--steps", default=None, help="Comma-separated globs of step names to run ('train sft *'; default: all)."
    )
    args = parser.parse_args(argv)
    study = load_study(args.config)
    if study.get("org") and not os.environ.get("ORG"):
        # The study's own organisation, so that two studies of one task never overwrite each other's repos; every
        # stage reads ORG (an ORG set by the user wins).
        os.environ["ORG"] = str(study["org"])
    parts = set((args.only or "data,train,eval,report").split(","))
    if parts - {"data", "train", "eval", "report"}:
        raise UserError(f"--only {args.only}: use data, train, eval and/or report")
    folder = Path("outputs") / "study" / study["name"]
    folder.mkdir(parents=True, exist_ok=True)
    before = [data_step(study)] * ("data" in parts) + train_steps(study) * ("train" in parts)
    if args.steps:
        wanted = [glob.strip() for glob in args.steps.split(",") if glob.strip()]
        before = [step for step in before if any(fnmatch.fnmatch(step.name, glob) for glob in wanted)]
    if args.dry_run:
        if os.environ.get("ORG"):
            print(f"export ORG={shlex.quote(os.environ['ORG'])}")
        for step in [*before, eval_step(study, "validation"), *steps_on_test(study, None)]:
            print(step.command())
        return None
    timings_file = folder / "timings.json"
    timings = {t["step"]: t for t in json.loads(timings_file.read_text())} if timings_file.is_file() else {}

    def record(step: Step) -> None:
        timings[step.name] = run_step(step, folder)
        timings_file.write_text(json.dumps(list(timings.values()), indent=1))

    for step in before:
        record(step)
    if "eval" in parts:
        record(eval_step(study, "validation"))
        validation = [r for r in board_rows(study["task"]) if r.get("split") == "validation"]
        for step in steps_on_test(study, validation):
            record(step)
    if "report" in parts:
        path = report(study, list(timings.values()), folder)
        summary = path.read_text().split("## Wall time")[0].splitlines()
        answers = [line for line in summary if line and not line.startswith(("#", "|", "!"))]
        print("\n" + "\n".join(answers) + f"\n\nreport: {path}")
        return path
    return None


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_cli(main)
