"""EndpointScorer: offline top-k logits from a vLLM-style completions endpoint (echo + prompt log-probs).

The server here is a stand-in for `vllm serve`: FastAPI on loopback, answering POST /v1/completions in vLLM's
format from a real forward pass of the tiny teacher. The served model name picks how it (mis)behaves.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import torch
from conftest import free_port, tiny_build_args
from datasets import load_dataset
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from transformers import AutoTokenizer

from datasets_builders.logits import (
    LOGPROB_STEP,
    LogitsError,
    TeacherScorer,
    teacher_logprobs,
    tokenize_conversation,
    tokenizer_identity,
)
from datasets_builders.openai_backend import EndpointScorer, TeacherUnreachableError
from datasets_builders.push_data import main as push_data

K = 8
SILENT_CAP = 3  # "tiny-capped" returns this many alternatives whatever is asked
REFUSED_ABOVE = 5  # "tiny-max5" refuses larger logprobs with HTTP 400, as vLLM does above --max-logprobs
SECRET_KEY = "sk-test-do-not-leak-0987654321"
ANSWERS = ["5.", "First 2 + 3 = 5, so the answer is 5.", "It is five. The answer is 5.", "2+3 gives 5; answer: 5"]


def conversation(answer: str) -> list[dict]:
    return [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": answer}]


def fake_vllm(model, tokenizer) -> tuple[FastAPI, dict]:
    """/v1/completions with echo and logprobs like vLLM's: per prompt position the k best next tokens plus the
    actual one (entry 0 None), keys ``token_id:N`` when return_tokens_as_token_ids is set, else token strings.

    Served model names: ``tiny`` (vLLM), ``tiny-strings`` (ignores return_tokens_as_token_ids), ``tiny-unmappable``
    (a key the tokenizer lacks), ``tiny-capped`` (silently at most SILENT_CAP best), ``tiny-max5`` (HTTP 400 above
    REFUSED_ABOVE), ``tiny-no-prompt-logprobs`` (log-probs of the generated token only)."""
    stats = {"in_flight": 0, "max_in_flight": 0, "requests": []}
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/completions")
    def completions(body: dict):
        with lock:
            stats["requests"].append(body)
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            time.sleep(0.05)  # long enough for concurrent requests to overlap
            return answer(body)
        finally:
            with lock:
                stats["in_flight"] -= 1

    def answer(body: dict):
        mode, k, prompt = body["model"], body["logprobs"], body["prompt"]
        if mode == "tiny-max5" and k > REFUSED_ABOVE:
            message = f"Requested prompt logprobs of {k}, which is greater than max allowed: {REFUSED_ABOVE}"
            return JSONResponse({"error": {"message": message, "type": "BadRequestError", "code": 400}}, 400)
        assert body["echo"] is True and body["max_tokens"] == 1 and body["temperature"] == 0
        assert isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
        with torch.no_grad():
            logprobs = model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
        as_ids = body.get("return_tokens_as_token_ids") and mode == "tiny"
        shown = min(k, SILENT_CAP) if mode == "tiny-capped" else k

        def key(token: int) -> str:
            return f"token_id:{token}" if as_ids else tokenizer.convert_ids_to_tokens(token)

        def alternatives(dist: torch.Tensor, actual: int) -> dict[str, float]:
            top = dist.topk(shown)
            entries = {key(actual): dist[actual].item()}  # vLLM puts the actual token first
            entries.update({key(t): v for t, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)})
            return entries

        generated = int(logprobs[-1].argmax())
        tokens = [*prompt, generated]
        top_logprobs = [None] + [alternatives(logprobs[t - 1], tokens[t]) for t in range(1, len(tokens))]
        if mode == "tiny-unmappable":
            for entries in top_logprobs[1:]:
                entries["<no-such-token>"] = -1.0  # far above a random model's top log-probs
        token_logprobs = [None] + [logprobs[t - 1, tokens[t]].item() for t in range(1, len(tokens))]
        if mode == "tiny-no-prompt-logprobs":  # logprobs of the generated token only, as servers without echo do
            tokens, top_logprobs, token_logprobs = tokens[-1:], top_logprobs[-1:], token_logprobs[-1:]
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": mode,
            "choices": [
                {
                    "index": 0,
                    "text": tokenizer.decode(tokens),
                    "logprobs": {
                        "text_offset": list(range(len(tokens))),
                        "token_logprobs": token_logprobs,
                        "tokens": [key(t) for t in tokens],
                        "top_logprobs": top_logprobs,
                    },
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1},
        }

    return app, stats


@pytest.fixture(scope="module")
def endpoint(teacher):
    """The fake vLLM on 127.0.0.1 (uvicorn in a thread): ``(base_url, request stats)``."""
    import uvicorn

    app, stats = fake_vllm(teacher.model, teacher.tokenizer)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fake vLLM server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", stats
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def tokenizer(tiny_teacher_dir):
    return AutoTokenizer.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def sequences(tokenizer) -> list[dict]:
    return [tokenize_conversation(tokenizer, conversation(answer)) for answer in ANSWERS]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir) -> TeacherScorer:
    """The transformers teacher: the reference, and the model the fake server runs."""
    return TeacherScorer("tiny", str(tiny_teacher_dir), device="cpu")


@pytest.fixture(scope="module")
def reference(teacher, sequences):
    return teacher.score(sequences, K)


def scorer(endpoint, tokenizer, model: str = "tiny", **kwargs) -> EndpointScorer:
    """A scorer of the fake server's ``model`` with an already loaded tokenizer (push_data loads it by name)."""
    return EndpointScorer(model, endpoint[0], model, tokenizer=tokenizer, max_retries=0, **kwargs)


def assert_same_top_k(ids, values, expected_ids, expected_values, atol=1e-4):
    """Log-probs within ``atol``; ids equal wherever the expected ranking has no near-tie."""
    np.testing.assert_allclose(values, expected_values, atol=atol, rtol=0)
    gaps = np.abs(np.diff(expected_values, axis=-1))
    tied = np.zeros(expected_ids.shape, dtype=bool)
    tied[:, 1:] |= gaps < atol
    tied[:, :-1] |= gaps < atol
    assert np.array_equal(ids[~tied], expected_ids[~tied])


@pytest.mark.parametrize("model", ["tiny", "tiny-strings"])
def test_endpoint_scores_equal_the_transformers_teacher(endpoint, tokenizer, sequences, reference, model):
    """Token-id keys (vLLM with return_tokens_as_token_ids) and token-string keys both give the teacher's top-k."""
    requests_before = len(endpoint[1]["requests"])
    scored = scorer(endpoint, tokenizer, model, max_concurrency=4).score(sequences, K)
    assert len(scored) == len(sequences)
    for seq, (ids, values, written), (expected_ids, expected_values, expected_written) in zip(
        sequences, scored, reference, strict=True
    ):
        assert ids.shape == values.shape == (seq["span_end"] - seq["span_start"], K)
        assert values.dtype == np.float32 and np.all(np.diff(values, axis=-1) <= 0)  # best first
        assert_same_top_k(ids, values, expected_ids, expected_values)
        np.testing.assert_allclose(written, expected_written, atol=1e-4)
    sent = endpoint[1]["requests"][requests_before:]
    assert sorted(r["prompt"] for r in sent) == sorted(s["input_ids"] for s in sequences)  # one request each
    assert all(r["logprobs"] == K and r["return_tokens_as_token_ids"] is True for r in sent)
    assert endpoint[1]["max_in_flight"] > 1, "requests should run concurrently"


def test_push_data_writes_a_logits_config_from_the_endpoint(endpoint, teacher, hub_dir, tiny_teacher_dir, tmp_path):
    spec = f"openai:tiny@{endpoint[0]}"
    args = tiny_build_args(
        tmp_path / "work", tiny_teacher_dir, limit=3, test_limit=2, max_new_tokens=16,
        logits=K, logits_teachers=spec, logits_tokenizer=str(tiny_teacher_dir),
    )  # fmt: skip
    repo = push_data(args)
    rows = load_dataset(repo, "logits-tiny", split="train")
    assert len(rows) == len(load_dataset(repo, split="train")) > 0
    identity = teacher.identity()
    assert set(rows["logits_teacher"]) == {"tiny"} and set(rows["tokenizer_hash"]) == {identity["tokenizer_hash"]}
    sequences = [{name: row[name] for name in ("input_ids", "span_start", "span_end")} for row in rows]
    expected = teacher.score(sequences, K)
    for row, (expected_ids, expected_values, _) in zip(rows, expected, strict=True):
        assert row["k"] == K
        ids = np.array(row["topk_ids"]).reshape(-1, K)
        values = teacher_logprobs(row)  # stored to LOGPROB_STEP nats, the best to float16
        assert_same_top_k(ids, values, expected_ids, expected_values, LOGPROB_STEP / 2 + 1e-2)


def test_an_endpoint_without_prompt_logprobs_says_how_to_serve_one(endpoint, tokenizer, sequences):
    with pytest.raises(LogitsError, match="does not offer them") as raised:
        scorer(endpoint, tokenizer, "tiny-no-prompt-logprobs").score(sequences[:1], K)
    assert f"vllm serve tiny-no-prompt-logprobs --max-logprobs {K}" in str(raised.value)
    assert "transformers teacher" in str(raised.value)


def test_a_server_capping_alternatives_below_k_names_the_cap(endpoint, tokenizer, sequences):
    with pytest.raises(LogitsError, match=f"fewer than LOGITS={K}: the server caps log-probs at {SILENT_CAP}") as e:
        scorer(endpoint, tokenizer, "tiny-capped").score(sequences[:1], K)
    assert f"at most {SILENT_CAP}" in str(e.value) and f"--max-logprobs {K}" in str(e.value)
    # vLLM itself refuses logprobs above --max-logprobs with HTTP 400
    with pytest.raises(LogitsError, match=f"caps them at {REFUSED_ABOVE}") as e:
        scorer(endpoint, tokenizer, "tiny-max5").score(sequences[:1], K)
    assert f"at most {REFUSED_ABOVE}" in str(e.value) and f"vllm serve tiny-max5 --max-logprobs {K}" in str(e.value)
    assert len(scorer(endpoint, tokenizer, "tiny-max5").score(sequences[:1], REFUSED_ABOVE)) == 1


def test_a_token_string_the_tokenizer_lacks_names_the_fix(endpoint, tokenizer, sequences):
    with pytest.raises(LogitsError, match="'<no-such-token>', which is not a token") as raised:
        scorer(endpoint, tokenizer, "tiny-unmappable").score(sequences[:1], K)
    assert "--return-tokens-as-token-ids" in str(raised.value) and "--logits_tokenizer" in str(raised.value)


def test_an_unreachable_endpoint_says_where_and_how_to_start_one(tokenizer, sequences):
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        with pytest.raises(LogitsError, match=f"cannot reach an OpenAI-compatible server at {base_url}") as raised:
            scorer((base_url, None), tokenizer, "org/teacher").score(sequences[:1], K)
    assert isinstance(raised.value, TeacherUnreachableError)
    assert f"vllm serve org/teacher --max-logprobs {K} --port PORT" in str(raised.value)


def test_tokenizer_sources_and_the_api_key(tokenizer, monkeypatch):
    """A packaged teacher's name resolves to its tokenizer; a tokenizer that cannot load names the option; the
    key stays inside the client."""
    packaged = EndpointScorer.from_spec(
        "openai:HuggingFaceTB/SmolLM2-135M-Instruct@http://127.0.0.1:9/v1", tokenizer="smollm2-135m-instruct"
    )
    tiny = tokenizer_identity(tokenizer, "SmolLM2-135M-Instruct")  # the tiny teacher has SmolLM2's tokenizer
    assert packaged.name == "SmolLM2-135M-Instruct" and packaged.identity() == tiny
    with pytest.raises(LogitsError, match="--logits_tokenizer"):
        EndpointScorer.from_spec("openai:no-such-org/no-such-model@http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    keyed = EndpointScorer("m", "http://127.0.0.1:9/v1", "m", tokenizer=tokenizer)
    assert SECRET_KEY not in repr(keyed) and SECRET_KEY not in str(vars(keyed))
