"""`make study`: every study recipe expands into stage commands their modules parse, the best teacher variant is
picked on validation, and a tiny study runs end to end (data, a student, eval on validation then test, report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_makefile import parse_with_module, plain

from eval.leaderboard import load_board
from scalingdown.errors import UserError
from scalingdown.hub import HubTarget
from scalingdown.study import (
    best_teacher_variants,
    data_step,
    eval_step,
    load_study,
    main,
    steps_on_test,
    train_steps,
)

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "recipes" / "study").glob("*.yaml"))


@pytest.mark.parametrize("recipe", STUDIES, ids=lambda path: path.stem)
def test_every_study_step_is_a_command_its_module_parses(recipe, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(recipe)
    steps = [data_step(study), *train_steps(study), eval_step(study, "validation"), eval_step(study, "test", "x")]
    for step in steps:
        values = parse_with_module(step.module, step.argv()[3:])
        assert values["task"] == study["task"], step.command()
        for key, value in step.flags.items():
            if key not in ("config", "sizes") and value is not None:
                parsed = plain(values[key])
                assert parsed == value or str(parsed).lower() == str(value).lower(), (step.name, key, parsed)
    sizes = {step.flags["size"] for step in steps if step.name.startswith("train ")}
    assert len(sizes) >= (3 if study["name"] == "demo" else 5), "a study's curve has five sizes, the demo's three"
    assert steps[-1].flags["split"] == "test" and steps[-2].flags["split"] == "validation"


def test_a_bad_study_recipe_is_refused_naming_the_problem(tmp_path):
    recipe = tmp_path / "study.yaml"
    recipe.write_text(yaml.safe_dump({"task": "synthetic_gsm", "push_data": {}, "train": {"runs": []}, "evl": {}}))
    with pytest.raises(UserError, match=r"unknown keys \['evl'\]"):
        load_study(recipe)
    recipe.write_text(yaml.safe_dump({"task": "synthetic_gsm", "push_data": {"config": "nope.yaml"}, "train": {},
                                      "eval": {}}))  # fmt: skip
    with pytest.raises(UserError, match="nope.yaml does not exist"):
        load_study(recipe)
    recipe.write_text(yaml.safe_dump({"task": "synthetic_gsm", "org": "my org", "push_data": {}, "train": {},
                                      "eval": {}}))  # fmt: skip
    with pytest.raises(UserError, match="org 'my org': .* is not a valid Hub name"):
        load_study(recipe)
    with pytest.raises(UserError, match="no such study recipe"):
        load_study(tmp_path / "missing.yaml")


def test_each_teacher_is_scored_on_test_with_its_best_shot_count_on_validation():
    def teacher(model, accuracy):
        return {"model": model, "role": "teacher", "variant": "cot", "accuracy": accuracy}

    rows = [
        teacher("smollm2-135m-instruct", 0.20),
        teacher("smollm2-135m-instruct-3shot", 0.25),
        teacher("gemma3-270m-0shot", 0.05),
        teacher("gemma3-270m", 0.10),  # its usual one shot
        teacher("gemma3-270m-3shot", None),  # failed to score
        {**teacher("synthetic_gsm-sft-3M", 0.9), "role": "student"},
    ]
    assert best_teacher_variants(rows) == ["gemma3-270m", "smollm2-135m-instruct-3shot"]


def test_each_accuracy_variant_scores_test_with_its_own_best_teachers():
    """Gemma wins ``mc`` three-shot and ``cot`` zero-shot: its three-shot prompt never writes ``cot`` test answers."""
    rows = [
        {"model": model, "role": "teacher", "variant": variant, "accuracy": accuracy}
        for model, variant, accuracy in [
            ("gemma3-270m-0shot", "cot", 0.05),
            ("gemma3-270m-3shot", "cot", 0.04),
            ("gemma3-270m-0shot", "mc", 0.33),
            ("gemma3-270m-3shot", "mc", 0.34),
        ]
    ]
    study = {"task": "arc_easy", "eval": {"variants": "cot,mc", "test_limit": 400, "validation_limit": 100}}
    steps = steps_on_test(study, rows)
    assert [step.name for step in steps] == ["eval test cot", "eval test mc"]
    assert [(s.flags["variants"], s.flags["models"], s.flags["limit"]) for s in steps] == [
        ("cot", "gemma3-270m-0shot,arc_easy-*", 400),
        ("mc", "gemma3-270m-3shot,arc_easy-*", 400),
    ]
    one = steps_on_test({"task": "arc_easy", "eval": {"test_limit": 400}}, rows)  # cot only: the step keeps its name
    assert [(s.name, s.flags["models"]) for s in one] == [("eval test", "gemma3-270m-0shot,arc_easy-*")]
    dry = steps_on_test(study, None)  # --dry_run, before validation is scored: the steps that will run
    assert [s.flags["models"] for s in dry] == ["<best teacher variants>,arc_easy-*"] * 2


def test_a_tiny_study_runs_end_to_end_and_resumes(tmp_path, hub_dir, tiny_teacher_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORG")  # so the recipe's org applies (main sets it; monkeypatch restores the environment)
    teacher = str(tiny_teacher_dir)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "task": "synthetic_gsm",
                "org": "tinystudy",
                "push_data": {
                    "teachers": teacher,
                    "limit": 8,
                    "validation_limit": 4,
                    "test_limit": 4,
                    "max_new_tokens": 16,
                    "batch_size": 4,
                    "consistency": "flag",  # a random teacher is never right
                    "require_derivation": False,  # ... nor writes arithmetic
                    "min_steps": 1,
                    "max_steps": 1,
                },
                "train": {
                    "max_steps": 2,
                    "per_device_train_batch_size": 4,
                    "save_strategy": "steps",
                    "save_steps": 2,
                    "report_to": "none",
                    "runs": [{"config": str(REPO / "recipes/train/sft.yaml"), "suffix": "one", "sizes": ["1M"]}],
                },
                "eval": {
                    "teachers": teacher,
                    "teacher_shots": "0,1",
                    "validation_limit": 3,
                    "test_limit": 4,
                    "batch_size": 4,
                    "max_gen_toks": 12,
                    "latency_samples": 0,
                },
            }
        )
    )
    report = main(["--config", str(recipe)])
    assert not HubTarget(org="scalingdown", root=hub_dir).exists("dataset", "synthetic_gsm-rationales")
    rows, _ = load_board(HubTarget(org="tinystudy", root=hub_dir), "synthetic_gsm")
    scored = {(r["model"], r["split"]): r["n"] for r in rows}
    # both teacher variants on validation, only the better one on test; the student on both
    validation = {m for m, split in scored if split == "validation"}
    assert validation == {"tiny-llama", "tiny-llama-1shot", "synthetic_gsm-sft-1M-one"}
    test = {m for m, split in scored if split == "test"}
    assert len(test & {"tiny-llama", "tiny-llama-1shot"}) == 1 and "synthetic_gsm-sft-1M-one" in test
    assert scored[("synthetic_gsm-sft-1M-one", "validation")] == 3 and scored[("synthetic_gsm-sft-1M-one", "test")] == 4

    text = report.read_text()
    assert (report.parent / "scaling_down.png").stat().st_size > 0
    assert "| tiny-llama-1shot |" in text and "Majority baseline" in text
    assert "| 1M | 7.3M |" in text
    timings = json.loads((report.parent / "timings.json").read_text())
    assert [t["step"] for t in timings] == ["data", "train sft-one 1M", "eval validation", "eval test"]
    assert all(t["peak_rss_mb"] > 100 for t in timings)  # each step's own process: torch alone is more
    # models are scored in processes the eval step does not wait for: its peak is the largest on the board
    peak = max(r["peak_rss_mb"] for r in rows if r["split"] == "test")
    assert f"| {peak / 1024:.1f} GB |" in next(line for line in text.splitlines() if line.startswith("| eval test |"))

    # a second run rebuilds nothing: the teacher's generations and the student's last checkpoint are reused
    main(["--config", str(recipe)])
    logs = report.parent / "logs"
    assert "all 8 generations already written" in (logs / "data.log").read_text()
    assert "nothing to train" in (logs / "train_sft-one_1M.log").read_text()
