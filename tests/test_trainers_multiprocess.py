"""`accelerate launch` of the training stage on two CPU processes: both ranks train, rank 0 alone pushes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_build_args
from transformers import AutoModelForCausalLM

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


def test_two_process_launch_trains_on_both_ranks_and_pushes_once(dataset_hub, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    out = tmp_path / "out"
    command = [
        str(accelerate), "launch",
        "--config_file", str(ACCELERATE_CONFIG),
        "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(free_loopback_port()),
        "-m", "trainers.sft",
        "--config", "recipes/train/synthetic_gsm/sft.yaml",
        "--size", "1M",
        "--max_steps", "3",
        "--per_device_train_batch_size", "2",
        "--max_length", "128",
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

    # Two processes ran the stage, and the trainer saw a global batch of 2 ranks x 2 rows.
    assert log.count("training rows from") == 2, log[-4000:]
    assert re.search(r"Total train batch size \(w\. parallel, distributed & accumulation\) = 4\b", log), log[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert state["epoch"] == pytest.approx(3 / 3)  # 12 rows / (2 x 2) = 3 steps per epoch

    # Rank 0 alone reported, wrote the card and pushed: one model repo, one commit.
    assert log.count("tokens/s, MFU") == 1 and log.count("pushed ") == 1, log[-4000:]
    models = dataset_hub / "models" / "testorg"
    assert [p.name for p in models.iterdir()] == ["synthetic_gsm-sft-1M"]
    commits = subprocess.run(
        ["git", "log", "--format=%s"], cwd=models / "synthetic_gsm-sft-1M", capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert commits == ["Train synthetic_gsm-sft-1M (sft, 1M)"]
    card = (models / "synthetic_gsm-sft-1M" / "README.md").read_text()
    assert "batch_size=2x1x2" in card  # per device x accumulation x world size

    model = AutoModelForCausalLM.from_pretrained(models / "synthetic_gsm-sft-1M")
    assert model.config.num_hidden_layers == 5
