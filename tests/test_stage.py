"""The stage runner (trainers/stage.py): a run's folder follows from its settings and inputs, so a new dataset commit
trains a new model; an unchanged re-run resumes without training; every pushed repo carries its TensorBoard logs and
a loss curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_build_args, train_configs
from PIL import Image
from safetensors.torch import load
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datasets_builders.push_data import main as push_data
from eval.plots import loss_curve
from trainers.sft import main as train
from trainers.stage import SETTINGS_FILE, SettingsChanged, differences, prepare_output_dir, save_settings

STEPS = 3


def stage_configs(tmp_path, **overrides):
    """A 3-step run with no --output_dir (the runner derives it) and a checkpoint at its last step."""
    values = dict(output_dir="trainer_output", max_steps=STEPS, save_strategy="steps", save_steps=STEPS)
    return train_configs(tmp_path, **(values | overrides))


def pushed(location: str) -> tuple[dict[str, torch.Tensor], dict]:
    return load((Path(location) / "model.safetensors").read_bytes()), json.loads(
        Path(location, "training_cost.json").read_text()
    )


def test_a_new_dataset_commit_trains_a_new_model_and_an_unchanged_rerun_does_not_retrain(
    hub_dir, tiny_teacher_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # outputs/ lands here
    push_data(tiny_build_args(tmp_path / "work-a", tiny_teacher_dir, limit=4, test_limit=2))
    first, first_cost = pushed(train(*stage_configs(tmp_path)))
    assert first_cost["this_run"]["tokens"] > 0

    # `make push-data LIMIT=8` on the same Hub: a new commit of the dataset repo, other rows.
    push_data(tiny_build_args(tmp_path / "work-b", tiny_teacher_dir, limit=8, test_limit=2))
    location = train(*stage_configs(tmp_path))
    second, second_cost = pushed(location)
    assert second_cost["this_run"]["tokens"] > 0 and second_cost["total"]["tokens"] == second_cost["this_run"]["tokens"]
    assert not torch.equal(first["model.embed_tokens.weight"], second["model.embed_tokens.weight"])
    folders = sorted(p.name for p in (tmp_path / "outputs" / "train").iterdir())
    assert len(folders) == 2 and all(f.startswith("synthetic_gsm-sft-1M-") for f in folders)
    revisions = {json.loads((tmp_path / "outputs/train" / f / SETTINGS_FILE).read_text())["inputs"]["dataset_revision"]
                 for f in folders}  # fmt: skip
    assert len(revisions) == 2 and json.loads(Path(location, SETTINGS_FILE).read_text())["inputs"][
        "dataset_revision"
    ] in (Path(location, "README.md").read_text())

    # The same settings again: resumed from the finished checkpoint, nothing trained, the same weights.
    third, third_cost = pushed(train(*stage_configs(tmp_path)))
    assert third_cost["this_run"]["tokens"] == 0 and third_cost["total"]["tokens"] == second_cost["total"]["tokens"]
    assert torch.equal(second["model.embed_tokens.weight"], third["model.embed_tokens.weight"])
    assert len(list((tmp_path / "outputs" / "train").iterdir())) == 2

    # Another learning rate is another run, in its own folder.
    fourth, _ = pushed(train(*stage_configs(tmp_path, learning_rate=1e-3)))
    assert not torch.equal(second["model.embed_tokens.weight"], fourth["model.embed_tokens.weight"])
    assert len(list((tmp_path / "outputs" / "train").iterdir())) == 3


def test_resuming_an_explicit_output_dir_with_other_settings_is_refused(tmp_path):
    args = train_configs(tmp_path)[1]
    settings = {"inputs": {"dataset_revision": "aaa"}, "training": {"learning_rate": 0.003, "seed": 0}}
    output_dir, checkpoint = prepare_output_dir(args, "train", "repo", settings)
    assert output_dir == tmp_path / "out" and checkpoint is None
    assert "tensorboard" in args.report_to and args.include_num_input_tokens_seen == "non_padding"
    save_settings(output_dir, settings)
    (output_dir / "checkpoint-2").mkdir()
    (output_dir / "checkpoint-2" / "trainer_state.json").write_text("{}")

    assert prepare_output_dir(train_configs(tmp_path)[1], "train", "repo", settings)[1].endswith("checkpoint-2")
    (output_dir / "checkpoint-4").mkdir()  # a run killed while saving: no state, never resumed from
    assert prepare_output_dir(train_configs(tmp_path)[1], "train", "repo", settings)[1].endswith("checkpoint-2")
    assert (output_dir / "checkpoint-4.incomplete").is_dir()
    changed = {"inputs": {"dataset_revision": "bbb"}, "training": {"learning_rate": 0.003, "seed": 1}}
    with pytest.raises(SettingsChanged, match=r"inputs.dataset_revision: 'aaa' -> 'bbb'; training.seed: 0 -> 1"):
        prepare_output_dir(train_configs(tmp_path)[1], "train", "repo", changed)
    assert differences(settings, settings) == []


def test_the_pushed_repo_carries_tensorboard_logs_and_a_loss_curve(hub_dir, tiny_teacher_dir, tmp_path):
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4, test_limit=2))
    location = Path(train(*train_configs(tmp_path, max_steps=4, report_to="none")))  # as every recipe says

    (events,) = (location / "runs").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    losses = [event.value for event in accumulator.Scalars("train/loss")]
    logged = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert losses == pytest.approx([entry["loss"] for entry in logged if "loss" in entry], rel=1e-5)
    assert len(losses) == 4

    with Image.open(location / "loss_curve.png") as image:
        assert image.format == "PNG" and image.size[0] >= 300
    assert "![Training loss](loss_curve.png)" in (location / "README.md").read_text()


def test_loss_curve_draws_train_and_eval_losses_and_skips_an_empty_history(tmp_path):
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_loss": 2.5}]
    path = loss_curve(history, tmp_path / "curve.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert loss_curve([{"step": 1, "train_runtime": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
