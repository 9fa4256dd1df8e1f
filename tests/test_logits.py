"""`make push-data LOGITS=k`: the teacher's top-k per assistant token, stored compactly, resumable, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_build_args
from datasets import get_dataset_config_names, load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from datasets_builders import logits as logits_module
from datasets_builders.logits import (
    LOGPROB_STEP,
    TeacherScorer,
    encode_logprobs,
    score_batch,
    teacher_logprobs,
    tokenize_conversation,
    tokenizer_identity,
)
from datasets_builders.push_data import main as push_data
from scalingdown.prompts import chatml_training_template
from trainers.kd_losses import storage_fidelity


def conversation(answer: str) -> list[dict]:
    return [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": answer}]


def test_the_span_is_exactly_what_sft_trains_on(tiny_teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    encoded = tokenize_conversation(tokenizer, conversation("2 + 3 = 5. The answer is 5."))
    span = encoded["input_ids"][encoded["span_start"] : encoded["span_end"]]
    assert tokenizer.decode(span) == "2 + 3 = 5. The answer is 5.<|im_end|>"
    # the same positions TRL's assistant_only_loss marks with the SFT template
    tokenizer.chat_template = chatml_training_template(
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    trl_view = tokenizer.apply_chat_template(
        conversation("2 + 3 = 5. The answer is 5."), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert trl_view["input_ids"] == encoded["input_ids"]
    assert [i for i, m in enumerate(trl_view["assistant_masks"]) if m] == list(
        range(encoded["span_start"], encoded["span_end"])
    )


def test_batched_left_padded_scoring_equals_one_sequence_at_a_time(tiny_teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    sequences = [
        tokenize_conversation(tokenizer, conversation(text))
        for text in ["5.", "First 2 + 3 = 5, so the answer is 5.", "It is five. The answer is 5."]
    ]
    batched = score_batch(model, sequences, k=6, pad_id=tokenizer.pad_token_id)
    for seq, (ids, values, written) in zip(sequences, batched, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([seq["input_ids"]])).logits[0]
        logprobs = logits[seq["span_start"] - 1 : seq["span_end"] - 1].log_softmax(-1)
        expected = logprobs.topk(6)
        own = torch.tensor(seq["input_ids"][seq["span_start"] : seq["span_end"]])
        torch.testing.assert_close(
            torch.from_numpy(written), logprobs.gather(-1, own[:, None])[:, 0], atol=1e-4, rtol=1e-4
        )
        assert ids.shape == (seq["span_end"] - seq["span_start"], 6)
        torch.testing.assert_close(torch.from_numpy(values), expected.values, atol=1e-4, rtol=1e-4)
        assert (torch.from_numpy(ids) == expected.indices).float().mean() > 0.95  # ties may swap


def test_stored_log_probs_round_trip_within_half_a_step_and_keep_the_kd_loss():
    torch.manual_seed(0)
    teacher = (torch.randn(300, 512) * 3).log_softmax(-1)  # peaked and flat positions alike
    values, ids = teacher.topk(64)
    row = {**encode_logprobs(values.numpy()), "k": 64}
    decoded = torch.from_numpy(teacher_logprobs(row))
    assert len(row["top_logprob"]) == 300 and max(row["logprob_gaps"]) < 2**16
    assert (decoded - values).abs().max() <= LOGPROB_STEP / 2 + 1e-2 * values[:, :1].abs().max()
    assert torch.all(decoded[:, 1:] <= decoded[:, :-1])  # still best first
    # the loss and gradient a fixed student gets from the stored values, against the exact ones
    fidelity = storage_fidelity(torch.randn(300, 512) * 2, ids, values, decoded)
    assert fidelity["relative"] < 5e-3 and fidelity["cosine"] > 0.999


def test_a_config_written_before_the_gaps_still_reads():
    old = {"k": 2, "topk_logprobs": [-0.1, -2.5, -0.7, -0.9]}
    decoded = teacher_logprobs(old)
    assert decoded.shape == (2, 2) and decoded.ravel().tolist() == pytest.approx(old["topk_logprobs"], abs=1e-6)


@pytest.fixture
def logits_hub(hub_dir, tiny_teacher_dir, tmp_path):
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=6, logits=8, shard_size=2))
    return hub_dir / "datasets" / "testorg" / "synthetic_gsm-rationales"


def test_push_data_stores_top_k_compactly_with_the_tokenizer_identity(logits_hub, tiny_teacher_dir):
    assert "logits-tiny-llama" in get_dataset_config_names(str(logits_hub))
    rows = load_dataset(str(logits_hub), "logits-tiny-llama", split="train")
    text = load_dataset(str(logits_hub), split="train")
    assert len(rows) == len(text) and rows["id"] == text["id"]

    schema = pq.read_schema(next((logits_hub / "logits" / "tiny-llama").glob("*.parquet")))
    assert str(schema.field("topk_ids").type) == "list<element: uint16>"
    assert str(schema.field("top_logprob").type) == "list<element: halffloat>"
    assert str(schema.field("logprob_gaps").type) == "list<element: uint16>"
    assert (
        pq.ParquetFile(next((logits_hub / "logits" / "tiny-llama").glob("*.parquet")))
        .metadata.row_group(0)
        .column(0)
        .compression
        == "ZSTD"
    )

    identity = tokenizer_identity(AutoTokenizer.from_pretrained(tiny_teacher_dir), "tiny-llama")
    row = rows[0]
    assert (row["tokenizer_hash"], row["vocab_size"], row["k"]) == (identity["tokenizer_hash"], 49152, 8)
    span = row["span_end"] - row["span_start"]
    assert len(row["topk_ids"]) == len(row["logprob_gaps"]) == 8 * span and len(row["top_logprob"]) == span
    probs = torch.from_numpy(teacher_logprobs(row)).exp()
    assert torch.all(probs.sum(-1) <= 1.0 + 1e-3) and torch.all(probs[:, :-1] >= probs[:, 1:] - 1e-3)  # best first
    # the stored sequence is the default row's conversation, tokenized as the student sees it
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    assert row["input_ids"] == tokenize_conversation(tokenizer, text[0]["messages"])["input_ids"]

    build = json.loads((logits_hub / "scalingdown_build.json").read_text())
    (info,) = build["logits"]
    files = sum(p.stat().st_size for p in (logits_hub / "logits" / "tiny-llama").glob("*.parquet"))
    tokens = sum(r["span_end"] - r["span_start"] for r in rows)
    assert info["assistant_tokens"] == tokens and info["bytes_per_token"] == round(files / tokens, 2)
    assert info["tokenizer_hash"] == identity["tokenizer_hash"] and info["k"] == 8
    card = (logits_hub / "README.md").read_text()
    assert "## Offline teacher logits" in card and identity["tokenizer_hash"] in card and "logits-tiny-llama" in card


class Killed(Exception):
    pass


def test_an_interrupted_logits_run_resumes_without_rescoring(hub_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    calls, resumed_run = [], False
    real_score = TeacherScorer.score

    def flaky(self, sequences, k):
        calls.append(len(sequences))
        if len(calls) == 2 and not resumed_run:
            raise Killed  # the process dies after the first shard was written
        return real_score(self, sequences, k)

    monkeypatch.setattr(TeacherScorer, "score", flaky)
    args = dict(limit=6, logits=8, shard_size=2, logits_batch_size=2)
    with pytest.raises(Killed):
        push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, **args))
    rows_before = sum(calls[:1])
    calls.clear()
    resumed_run = True
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, **args))
    total = len(load_dataset(str(hub_dir / "datasets/testorg/synthetic_gsm-rationales"), split="train"))
    assert sum(calls) == total - rows_before  # only the rows the first run did not finish

    resumed = load_dataset(str(hub_dir / "datasets/testorg/synthetic_gsm-rationales"), "logits-tiny-llama")["train"]
    monkeypatch.setattr(TeacherScorer, "score", real_score)
    fresh, _ = logits_module.build_logits(
        [dict(r) for r in load_dataset(str(hub_dir / "datasets/testorg/synthetic_gsm-rationales"), split="train")],
        TeacherScorer("tiny-llama", str(tiny_teacher_dir)),
        logits_module.LogitsSettings(k=8),
        tmp_path / "fresh",
    )
    assert resumed["topk_ids"] == [r["topk_ids"] for r in fresh]


def test_logits_need_a_teacher_that_can_score(tiny_teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="--logits_teachers"):
        tiny_build_args(tmp_path, "openai:m@http://127.0.0.1:1/v1", logits=8)
    with pytest.raises(ValueError, match="number of top log-probs"):
        tiny_build_args(tmp_path, tiny_teacher_dir, logits=-1)


def test_no_logits_config_without_logits(hub_dir, tiny_teacher_dir, tmp_path):
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4))
    assert not [
        c
        for c in get_dataset_config_names(str(hub_dir / "datasets/testorg/synthetic_gsm-rationales"))
        if c.startswith("logits")
    ]
    assert (
        Path(hub_dir / "datasets/testorg/synthetic_gsm-rationales/README.md").read_text().count("Offline teacher") == 0
    )
