"""`accelerate launch` of the training (sft, kd) and pre-training stages on two CPU processes: both ranks train,
rank 0 alone measures, prices and pushes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_build_args, tiny_corpus_args
from transformers import AutoModelForCausalLM

from datasets_builders.corpus import main as build_corpus
from datasets_builders.push_data import main as push_data

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIG = REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dataset_hub(hub_dir, tiny_teacher_dir, tmp_path) -> Path:
    """A local Hub holding a 12-row synthetic_gsm rationale repo made by `make push-data` with the tiny teacher."""
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, test_limit=2, batch_size=12, shard_size=12))
    return hub_dir


GLOBAL_BATCH = re.compile(r"Total train batch size \(w\. parallel, distributed & accumulation\) = (\d+)\b")


def accelerate_launch(module: str, out: Path, *args: str) -> str:
    """``accelerate launch`` of ``-m module`` on two CPU processes over gloo on loopback, logging every step and
    saving no checkpoint into ``out``; the combined log, after checking that the trainer's global batch is 2 ranks x
    2 rows (every caller passes ``--per_device_train_batch_size 2``)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch",
        "--config_file", str(ACCELERATE_CONFIG),
        "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(free_loopback_port()),
        "-m", module, *args,
        "--logging_steps", "1",
        "--save_strategy", "no",
        "--output_dir", str(out),
        "--use_cpu", "true",
        "--log_level", "info",  # rank 0 logs the trainer's batch arithmetic
        "--disable_tqdm", "true",
    ]  # fmt: skip
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "TOKENIZERS_PARALLELISM": "false",
    }  # HUB_TARGET/HUB_DIR/ORG come from the hub_dir fixture
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    batches = {int(n) for n in GLOBAL_BATCH.findall(log)}
    assert batches == {4}, log[-4000:]
    return log


def commit_messages(repo: Path) -> list[str]:
    done = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_two_process_launch_trains_on_both_ranks_and_pushes_once(dataset_hub, tmp_path):
    out = tmp_path / "out"
    log = accelerate_launch(
        "trainers.sft",
        out,
        "--config", "recipes/train/sft.yaml",
        "--size", "1M",
        "--max_steps", "3",
        "--per_device_train_batch_size", "2",
        "--max_length", "128",
    )  # fmt: skip

    # Two processes ran the stage, and the trainer saw a global batch of 2 ranks x 2 rows.
    assert log.count("training rows from") == 2, log[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert state["epoch"] == pytest.approx(3 / 3)  # 12 rows / (2 x 2) = 3 steps per epoch

    # Rank 0 alone reported, wrote the card and pushed: one model repo, one commit.
    assert log.count("tokens/s, MFU") == 1 and log.count("pushed ") == 1, log[-4000:]
    models = dataset_hub / "models" / "testorg"
    assert [p.name for p in models.iterdir()] == ["synthetic_gsm-sft-1M"]
    assert commit_messages(models / "synthetic_gsm-sft-1M") == ["Train synthetic_gsm-sft-1M (sft, 1M)"]
    card = (models / "synthetic_gsm-sft-1M" / "README.md").read_text()
    assert "batch_size=2x1x2" in card  # per device x accumulation x world size

    model = AutoModelForCausalLM.from_pretrained(models / "synthetic_gsm-sft-1M")
    assert model.config.num_hidden_layers == 5


PRETRAIN_STEPS, PRETRAIN_ROWS, PRETRAIN_BLOCK = 3, 2, 64


@pytest.fixture
def corpus_hub(hub_dir) -> Path:
    """A local Hub holding a corpus repo of 60 synthetic_gsm training questions with their worked solutions."""
    build_corpus(tiny_corpus_args(task_limit=60))
    return hub_dir


def test_two_process_pretraining_counts_tokens_once_prices_both_devices_and_pushes_once(corpus_hub, tmp_path):
    out = tmp_path / "out"
    log = accelerate_launch(
        "trainers.pretrain",
        out,
        "--config", "recipes/pretrain/scratch.yaml",
        "--size", "1M",
        "--max_steps", str(PRETRAIN_STEPS),
        "--per_device_train_batch_size", str(PRETRAIN_ROWS),
        "--max_length", str(PRETRAIN_BLOCK),
        "--warmup_steps", "0",
    )  # fmt: skip

    # Both ranks read the corpus and trained; the trainer's global batch is 2 ranks x 2 blocks.
    assert log.count("documents from") == 2, log[-4000:]
    global_tokens = PRETRAIN_STEPS * 2 * PRETRAIN_ROWS * PRETRAIN_BLOCK  # 768: packed blocks, no padding
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == PRETRAIN_STEPS
    assert state["num_input_tokens_seen"] == global_tokens  # gathered over both ranks (one rank alone: 384)

    # Rank 0 alone measured, priced, printed and pushed: one model repo, one commit.
    assert log.count("per million parameters") == 1 and log.count("pushed ") == 1, log[-4000:]
    assert f"pre-trained {global_tokens:,} tokens" in log  # counted once, not once per rank
    models = corpus_hub / "models" / "testorg"
    assert [p.name for p in models.iterdir()] == ["pretrain-1M"]
    assert commit_messages(models / "pretrain-1M") == [f"Pre-train 1M ({global_tokens:,} tokens)"]
    cost = json.loads((models / "pretrain-1M" / "training_cost.json").read_text())
    assert cost["total"]["tokens"] == cost["this_run"]["tokens"] == global_tokens
    money = cost["dollars"]
    assert (money["device_kind"], money["devices"]) == ("cpu-core", 2)  # one core per process, both billed
    assert money["dollars"] == pytest.approx(2 * money["price_per_device_hour"] * cost["total"]["seconds"] / 3600)
    card = (models / "pretrain-1M" / "README.md").read_text()
    assert "batch_size=2x1x2" in card and "2 x cpu-core at $0.00375/device-hour" in card

    model = AutoModelForCausalLM.from_pretrained(models / "pretrain-1M")
    assert model.config.num_hidden_layers == 5


@pytest.fixture
def logits_hub(hub_dir, tiny_teacher_dir, tmp_path) -> Path:
    """The 12-row rationale repo with the tiny teacher's top-16 logits (``make push-data LOGITS=16``)."""
    args = tiny_build_args(tmp_path / "work", tiny_teacher_dir, test_limit=2, batch_size=12, shard_size=12, logits=16)
    push_data(args)
    return hub_dir


def test_two_process_kd_runs_the_chunked_head_under_ddp_and_pushes_once(logits_hub, tmp_path):
    out = tmp_path / "out"
    log = accelerate_launch(
        "trainers.sft",
        out,
        "--config", "recipes/train/kd.yaml",
        "--size", "1M",
        "--max_steps", "3",
        "--per_device_train_batch_size", "2",
        "--kd_chunk_tokens", "16",  # several LM-head chunks per micro-batch
    )  # fmt: skip

    assert log.count("training rows from") == 2, log[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 3 and all(h["kd_loss"] > 0 and h["nll"] > 0 and h["grad_norm"] > 0 for h in steps), steps
    assert log.count("pushed ") == 1, log[-4000:]
    repo = logits_hub / "models" / "testorg" / "synthetic_gsm-kd-1M"
    assert commit_messages(repo) == ["Train synthetic_gsm-kd-1M (kd, 1M)"]
    assert "kd-offline" in (repo / "README.md").read_text()
