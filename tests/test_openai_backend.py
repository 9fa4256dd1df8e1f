"""OpenAITeacher against a real `transformers serve` on loopback: a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from datasets_builders.openai_backend import (
    OpenAITeacher,
    TeacherRequestError,
    TeacherUnreachableError,
    estimate_num_tokens,
)
from datasets_builders.teacher_base import GenerationSettings, TeacherPrompt, cut_at_stop

SERVER_START_TIMEOUT_S = 120
MAX_NEW_TOKENS = 8
SECRET_KEY = "sk-test-do-not-leak-1234567890"

QUESTIONS = ["What is 2 + 3?", "Name a primary colour.", "Is the sky green? Answer yes or no."]
PROMPTS = [TeacherPrompt(messages=[{"role": "user", "content": q}], text=f"Question: {q}\nAnswer:") for q in QUESTIONS]
GREEDY = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
GREEDY_NO_STOP = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, stop=[])


@dataclass
class ServedModel:
    base_url: str
    model: str


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def transformers_cli() -> str:
    beside_python = Path(sys.executable).with_name("transformers")
    return str(beside_python) if beside_python.exists() else shutil.which("transformers") or "transformers"


def wait_for_health(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"transformers serve not healthy at {url} after {timeout_s}s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path):
    """`transformers serve <tiny model folder>` on 127.0.0.1, offline, stopped when the module is done."""
    model_dir = tiny_teacher_dir
    log_path = tmp_path_factory.mktemp("serve-log") / "serve.log"
    port = free_loopback_port()
    command = [transformers_cli(), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_health(process, f"http://127.0.0.1:{port}/health", log_path, SERVER_START_TIMEOUT_S)
        yield ServedModel(base_url=f"http://127.0.0.1:{port}/v1", model=str(model_dir))
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assert_plausible(generations, count: int) -> None:
    assert len(generations) == count
    for generation in generations:
        assert generation.text.strip(), generation
        assert 0 < generation.num_tokens <= MAX_NEW_TOKENS, generation


def test_chat_mode_answers_each_prompt_in_order(served_model: ServedModel):
    teacher = OpenAITeacher("tiny-chat", base_url=served_model.base_url, model=served_model.model, chat=True)
    batch = teacher.generate(PROMPTS, GREEDY)
    assert_plausible(batch, len(PROMPTS))
    # Sent concurrently, yet each answer sits at its prompt's index: the same as asking one at a time.
    one_by_one = [teacher.generate([prompt], GREEDY)[0] for prompt in PROMPTS]
    assert batch == one_by_one
    assert len({g.text for g in batch}) > 1, "distinct prompts should give distinct greedy answers"
    assert not any(stop in g.text for g in batch for stop in GREEDY.stop)
    teacher.close()


def test_completions_mode_answers_each_prompt_and_greedy_repeats(served_model: ServedModel):
    teacher = OpenAITeacher(
        "tiny-base", base_url=served_model.base_url, model=served_model.model, chat=False, max_concurrency=2
    )
    first = teacher.generate(PROMPTS, GREEDY_NO_STOP)
    assert_plausible(first, len(PROMPTS))
    assert teacher.generate(PROMPTS, GREEDY_NO_STOP) == first
    # Plain-text prompts are not wrapped in the chat template, so the answers differ from chat mode's.
    chat = OpenAITeacher("tiny-chat", base_url=served_model.base_url, model=served_model.model, chat=True)
    assert chat.generate(PROMPTS[:1], GREEDY_NO_STOP)[0].text != first[0].text
    assert teacher.describe()["num_tokens"].startswith("usage.completion_tokens")
    teacher.close()
    chat.close()


def test_server_rejection_names_the_prompt(served_model: ServedModel):
    teacher = OpenAITeacher("wrong-model", base_url=served_model.base_url, model="not/the-served-model")
    with pytest.raises(TeacherRequestError, match=r"prompt 0 failed with HTTP 400.*not/the-served-model"):
        teacher.generate(PROMPTS, GREEDY)


def test_wrong_port_says_where_and_how_to_start_a_server():
    # A bound socket that never listens: connections to it are refused, and no other test can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        teacher = OpenAITeacher("nobody-home", base_url=base_url, model="HuggingFaceTB/SmolLM2-135M-Instruct")
        started = time.monotonic()
        with pytest.raises(TeacherUnreachableError, match=re.escape(base_url)) as raised:
            teacher.generate(PROMPTS, GREEDY)
        elapsed = time.monotonic() - started
    assert "transformers serve HuggingFaceTB/SmolLM2-135M-Instruct" in str(raised.value)
    assert "vllm serve" in str(raised.value)
    assert elapsed < 15, f"took {elapsed:.1f}s to report a refused connection"


def test_describe_and_repr_never_show_the_api_key(monkeypatch: pytest.MonkeyPatch):
    given = OpenAITeacher("t", base_url="http://127.0.0.1:9/v1", model="m", api_key=SECRET_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    from_env = OpenAITeacher("t", base_url="http://127.0.0.1:9/v1", model="m")
    for teacher in (given, from_env):
        assert teacher.describe() == {
            "name": "t",
            "backend": "openai-compatible endpoint",
            "source": "m at http://127.0.0.1:9/v1",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "parameters": "unknown (served)",
            "prompt_format": "chat completions",
            "api": "chat.completions",
            "num_tokens": "usage.completion_tokens reported by the server",
        }
        assert SECRET_KEY not in repr(teacher)
        assert SECRET_KEY not in str(teacher.describe())
        assert SECRET_KEY not in str(vars(teacher))
        teacher.close()


def test_token_estimate_and_stop_truncation_for_servers_that_differ():
    assert estimate_num_tokens("") == 0
    assert estimate_num_tokens("The answer is 5.") == 4
    assert estimate_num_tokens("x" * 40) == 10
    assert cut_at_stop("5 because 2+3=5.\nQuestion: next", ["\nQuestion:", "<|im_end|>"]) == "5 because 2+3=5."
    assert cut_at_stop("no stop here", ["\nQuestion:"]) == "no stop here"


def test_push_data_with_an_endpoint_teacher(served_model: ServedModel, hub_dir: Path, tmp_path: Path):
    """`--teachers openai:<model>@<base_url>` builds a dataset repo through the server, like a vLLM teacher."""
    from datasets import load_dataset

    from datasets_builders.push_data import PushDataArguments, main

    spec = f"openai:{served_model.model}@{served_model.base_url}"
    args = PushDataArguments(
        teachers=spec, limit=3, test_limit=2, max_new_tokens=8, consistency="flag", require_derivation=False,
        min_chars=0, work_dir=str(tmp_path / "work"),
    )  # fmt: skip
    train = load_dataset(main(args), split="train")
    assert len(train) == 3 and set(train["teacher"]) == {Path(served_model.model).name}
    card = (hub_dir / "datasets" / "testorg" / "synthetic_gsm-rationales" / "README.md").read_text()
    assert served_model.base_url in card and "OpenAITeacher" not in card
