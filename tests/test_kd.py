"""`make train METHOD=kd`: offline top-k logits vs an online teacher, tokenizer checks, a student that learns."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_build_args, train_configs
from transformers import AutoModelForCausalLM, AutoTokenizer

from datasets_builders.logits import LogitsError
from datasets_builders.push_data import main as push_data
from trainers.kd import DistillationArguments
from trainers.sft import build_run
from trainers.sft import main as train

VOCAB = 49152


def configs(tmp_path, **overrides):
    """A short KD run: 10 steps, sequences up to 256 tokens (the stored ones are never truncated)."""
    return train_configs(tmp_path, **{"method": "kd", "max_steps": 10, "max_length": 256, **overrides})


def first_batch_loss(tmp_path, **overrides) -> tuple[float, dict]:
    """The KD trainer's loss on the first two rows, and its per-term metrics, with a fixed student init."""
    run = build_run(*configs(tmp_path, **overrides))
    trainer = run.trainer
    batch = trainer.data_collator([dict(run.rows[i]) for i in range(2)])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = {key: values[-1] for key, values in trainer._metrics["eval"].items() if values}
    return loss.item(), metrics


def push(tmp_path, teacher, k, **overrides) -> str:
    return push_data(tiny_build_args(tmp_path / "work", teacher, limit=4, logits=k, shard_size=4, **overrides))


@pytest.fixture
def sharp_teacher_dir(tiny_teacher_dir, tmp_path) -> Path:
    """The tiny teacher with 6x larger logits: peaked like a trained model, not near-uniform like a random one."""
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(6.0)
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(folder)
    return folder


def test_offline_full_vocabulary_equals_online_and_top_k_is_close(hub_dir, sharp_teacher_dir, tmp_path):
    tiny_teacher_dir = sharp_teacher_dir
    common = dict(alpha=1.0)  # the KD term alone
    push(tmp_path, tiny_teacher_dir, k=VOCAB)
    offline_full, metrics = first_batch_loss(tmp_path, **common)
    online, _ = first_batch_loss(tmp_path, kd_source="online", kd_teacher=str(tiny_teacher_dir), **common)
    assert offline_full > 0.1
    assert offline_full == pytest.approx(online, rel=2e-3)  # the stored log-probs' rounding only
    assert metrics["kd_loss"] == pytest.approx(offline_full, rel=1e-5)

    push(tmp_path, tiny_teacher_dir, k=64)
    offline_64, _ = first_batch_loss(tmp_path, **common)
    online_64, _ = first_batch_loss(
        tmp_path, kd_source="online", kd_teacher=str(tiny_teacher_dir), kd_top_k=64, **common
    )
    assert offline_64 == pytest.approx(online_64, rel=2e-3)
    # the top-64 + tail bucket is a lower bound of the full KL, and close to it
    assert offline_64 <= offline_full * (1 + 1e-3)
    assert offline_64 >= 0.95 * offline_full, (offline_64, offline_full)  # measured: 99.2% of it


def test_kd_training_lowers_the_loss_and_the_card_records_the_logits(hub_dir, tiny_teacher_dir, tmp_path):
    push(tmp_path, tiny_teacher_dir, k=16)
    # the LM head's chunk size changes the memory, not the loss (gradients: tests/test_chunked_kd.py)
    whole, whole_metrics = first_batch_loss(tmp_path, kd_chunk_tokens=0)
    chunked, chunked_metrics = first_batch_loss(tmp_path, kd_chunk_tokens=5)
    assert chunked == pytest.approx(whole, rel=1e-5) and whole > 1.0
    assert chunked_metrics == pytest.approx(whole_metrics, rel=1e-5)
    location = train(*configs(tmp_path, alpha=0.5, kd_loss="fkl", temperature=2.0))
    assert location.endswith("synthetic_gsm-kd-1M")
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 10 and losses[-1] < losses[0] - 1.0, losses
    assert all("kd_loss" in h and "nll" in h for h in history if "loss" in h)

    card = (Path(location) / "README.md").read_text()
    for expected in [
        "method-kd",
        "kd-fkl",
        "kd-offline",
        "logits-tiny-llama",
        "top-k = 16",
        "0.5 · `fkl`",
        "temperature 2.0",
        "bucket",
    ]:
        assert expected in card, expected
    model = AutoModelForCausalLM.from_pretrained(location)
    tokenizer = AutoTokenizer.from_pretrained(location)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.parametrize("loss", ["rkl", "tvd", "bild"])
def test_every_kd_loss_trains(hub_dir, tiny_teacher_dir, tmp_path, loss):
    push(tmp_path, tiny_teacher_dir, k=8)
    train(*configs(tmp_path, kd_loss=loss, max_steps=6, push=False, temperature=3.0 if loss == "bild" else 1.0))
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0], losses


def test_another_tokenizer_needs_stored_alignment_offline_and_is_refused_online(
    hub_dir, other_tokenizer_teacher, tmp_path
):
    repo = Path(push(tmp_path, other_tokenizer_teacher, k=8))
    for path in (repo / "logits" / "other-vocab").glob("*.parquet"):  # a config written before logits v3
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["token_chars"]), path)
    with pytest.raises(LogitsError, match="one vocabulary") as error:
        train(*configs(tmp_path))
    assert "vocab 49153" in str(error.value) and "rebuild the logits" in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    with pytest.raises(LogitsError, match="online teacher 'other-vocab'"):
        train(*configs(tmp_path, kd_source="online", kd_teacher=str(other_tokenizer_teacher)))


def test_a_dataset_without_logits_names_the_command_that_adds_them(hub_dir, tiny_teacher_dir, tmp_path):
    push(tmp_path, tiny_teacher_dir, k=0)
    with pytest.raises(LogitsError, match="make push-data LOGITS=16"):
        train(*configs(tmp_path))


def test_bad_kd_options_fail_at_parse_time():
    with pytest.raises(ValueError, match="alpha"):
        DistillationArguments(alpha=1.5)
    with pytest.raises(ValueError, match="fkl"):
        DistillationArguments(kd_loss="mse")
    with pytest.raises(ValueError, match="offline"):
        DistillationArguments(kd_source="cached")
