"""`make train METHOD=gkd`: TRL's on-policy GKDTrainer runs a few steps on tiny models, samples from the student,
pushes a model repo whose card says how it was distilled, and refuses a teacher of another vocabulary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import tiny_build_args, train_configs
from trl.experimental.gkd import GKDTrainer

from datasets_builders.logits import LogitsError
from datasets_builders.push_data import main as push_data
from trainers.kd import DistillationArguments
from trainers.sft import main as train


def test_gkd_samples_from_the_student_and_pushes_a_card_that_says_so(hub_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4))
    sampled = []
    real = GKDTrainer.generate_on_policy_outputs

    def spy(model, inputs, generation_config, *args, **kwargs):
        outputs = real(model, inputs, generation_config, *args, **kwargs)
        sampled.append(outputs[0].shape[1] - inputs["prompts"].shape[1])
        return outputs

    monkeypatch.setattr(GKDTrainer, "generate_on_policy_outputs", staticmethod(spy))
    configs = train_configs(
        tmp_path, method="gkd", kd_teacher=str(tiny_teacher_dir), lmbda=1.0, beta=0.5, temperature=0.9,
        max_new_tokens=6, max_steps=3, max_length=256, per_device_train_batch_size=2,
    )  # fmt: skip
    location = train(*configs)
    assert location.endswith("synthetic_gsm-gkd-1M")
    assert len(sampled) == 3 and all(0 < n <= 6 for n in sampled)  # lmbda=1: every batch is the student's own
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) and x >= 0 for x in losses)

    card = (Path(location) / "README.md").read_text()
    for expected in ["method-gkd", "on-policy-distillation", "GKDTrainer", "beta = 0.5", "tiny-llama"]:
        assert expected in card, expected


def test_gkd_refuses_a_teacher_of_another_vocabulary_before_training(
    hub_dir, tiny_teacher_dir, tmp_path, other_tokenizer_teacher
):
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4))
    with pytest.raises(LogitsError, match="online teacher 'other-vocab'"):
        train(*train_configs(tmp_path, method="gkd", kd_teacher=str(other_tokenizer_teacher), max_steps=1))
    assert not (tmp_path / "out" / "trainer_state.json").exists()


def test_bad_gkd_options_fail_at_parse_time():
    with pytest.raises(ValueError, match="lmbda"):
        DistillationArguments(lmbda=1.5)
    with pytest.raises(ValueError, match="beta"):
        DistillationArguments(beta=-0.1)
