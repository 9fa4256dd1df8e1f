"""Offline top-k teacher logits: one teacher forward pass over the training rows, stored beside the rationales.

``make push-data LOGITS=16`` tokenizes every training row (prompt + rationale) in the student's chat format,
runs each logits teacher over it once, and keeps, per position of the assistant span, the teacher's top-k
token ids and log-probs (true log-probs over the whole vocabulary, so the tail mass stays known). They become
a config ``logits-<teacher>`` of the dataset repo; ``make train METHOD=kd`` streams it (memory-mapped by
``datasets``) and never loads the teacher.

Layout of a row (flat lists keep parquet at one offset array per column, not one per position)::

    id, teacher (who wrote the rationale), logits_teacher (who scored it)
    input_ids        [L]       the whole sequence as the student sees it (uint16 when the vocabulary fits)
    span_start/end             the assistant tokens input_ids[span_start:span_end] (loss positions)
    topk_ids         [n*k]     for each of the n = span_end - span_start tokens, the teacher's k best ids, best first
    top_logprob      [n]       the best log-prob at each position (float16)
    logprob_gaps     [n*k]     the k log-probs as steps down from the best, quantised to ``logprob_step`` nats and
                               delta-coded along the ranks (uint16; the first of each position is 0)
    token_logprob    [n]       the log-prob the teacher gave each written token (float16)
    token_chars      [n]       how many characters of the rationale each token spells (uint16)
    logprob_step, k, tokenizer, tokenizer_hash, vocab_size, tokenizer_source   (constant per config)

Sorted log-probs fall in small steps, so the gaps are small integers that zstd packs to about a byte; with the
ids the config takes about 2.1 bytes per token per k at k = 64 (``bench/bench_kd.py storage``), against 3.5 for
float16 log-probs. Rounding to 1/16 nat moves each probability by at most 3%, and the errors average out in the
KD loss. Configs written before (``topk_logprobs``, float16) still load: :func:`teacher_logprobs` reads both.

The sequences are the conversation in the student's chat format, tokenized by the teacher's own tokenizer; its
identity (a hash of the token -> id map) travels with every row. A student with the same tokenizer trains on these
very tokens; one with another tokenizer aligns its tokens with the teacher's by the text they spell
(``token_chars``) and merges multi-token spans with ``token_logprob`` (``trainers/cross_tokenizer.py``).
Rows are computed in shards (``ShardStore``), so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Features, List, Value

from datasets_builders.shards import ShardStore
from scalingdown.dataset_repo import RepoConfig
from scalingdown.errors import UserError
from scalingdown.prompts import SMOLLM2_DEFAULT_SYSTEM, chatml_training_template
from trainers.cross_tokenizer import token_chars

logger = logging.getLogger(__name__)

LOGITS_VERSION = "3"  # bump when what a stored row means changes (template, span, encoding)
LOGPROB_STEP = 1 / 16  # nats per quantisation step of the stored log-probs
STUDENT_SYSTEM = SMOLLM2_DEFAULT_SYSTEM  # the system turn of the stored sequences (and of KD students' template)


class LogitsError(UserError, ValueError):
    """Logits cannot be built or used as asked; the message names the fix."""


def config_name(teacher: str) -> str:
    return f"logits-{teacher}"


def id_dtype(vocab_size: int) -> str:
    """The smallest integer type that holds every token id."""
    return "uint16" if vocab_size <= 2**16 else "int32"


def logits_features(vocab_size: int) -> Features:
    ids = id_dtype(vocab_size)
    return Features(
        {
            "id": Value("string"),
            "teacher": Value("string"),
            "logits_teacher": Value("string"),
            "input_ids": List(Value(ids)),
            "span_start": Value("int32"),
            "span_end": Value("int32"),
            "topk_ids": List(Value(ids)),
            "top_logprob": List(Value("float16")),
            "logprob_gaps": List(Value("uint16")),
            "logprob_step": Value("float32"),
            "token_logprob": List(Value("float16")),
            "token_chars": List(Value("uint16")),
            "k": Value("int32"),
            "tokenizer": Value("string"),
            "tokenizer_hash": Value("string"),
            "vocab_size": Value("int32"),
            "tokenizer_source": Value("string"),
        }
    )


def encode_logprobs(values: np.ndarray, step: float = LOGPROB_STEP) -> dict:
    """``[n, k]`` log-probs, best first, as the stored columns: the best per position and the quantised gaps."""
    values = np.asarray(values, dtype=np.float32)
    top = values[:, :1].astype(np.float16)
    offsets = np.round((top.astype(np.float32) - values) / step).clip(0, None)
    offsets = np.maximum.accumulate(offsets, axis=1)  # never rising: a float16 top can round above its neighbour
    gaps = np.diff(offsets, axis=1, prepend=0).clip(0, np.iinfo(np.uint16).max).astype(np.uint16)
    return {"top_logprob": top[:, 0].tolist(), "logprob_gaps": gaps.reshape(-1).tolist(), "logprob_step": step}


def teacher_logprobs(row: dict) -> np.ndarray:
    """The ``[n, k]`` float32 log-probs of a stored row, from either layout (gaps now, float16 before)."""
    k = row["k"]
    if row.get("topk_logprobs") is not None:
        return np.asarray(row["topk_logprobs"], dtype=np.float32).reshape(-1, k)
    gaps = np.asarray(row["logprob_gaps"], dtype=np.float32).reshape(-1, k)
    top = np.asarray(row["top_logprob"], dtype=np.float32)[:, None]
    return top - row["logprob_step"] * np.cumsum(gaps, axis=1)


def tokenizer_identity(tokenizer, name: str) -> dict:
    """What makes two tokenizers interchangeable for distillation: the same token -> id map."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"tokenizer": name, "tokenizer_hash": digest, "vocab_size": len(tokenizer)}


def tokenize_conversation(tokenizer, messages: list[dict], system: str = STUDENT_SYSTEM) -> dict:
    """``input_ids`` of a conversation in the student's chat format and the assistant span ``[start, end)``.

    The same function serves offline logits and online KD, so both distil over identical token sequences.
    """
    encoded = tokenizer.apply_chat_template(
        messages,
        chat_template=chatml_training_template(system),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    mask = encoded["assistant_masks"]
    positions = [i for i, m in enumerate(mask) if m]
    if not positions:
        raise LogitsError("a training conversation has no assistant turn to distil")
    start, end = positions[0], positions[-1] + 1
    if start == 0 or end - start != len(positions):
        raise LogitsError(f"the assistant span is not one contiguous turn after the prompt (positions {positions})")
    return {"input_ids": list(encoded["input_ids"]), "span_start": start, "span_end": end}


@torch.inference_mode()
def score_batch(model, sequences: list[dict], k: int, pad_id: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Top-k ids and log-probs, and the written token's log-prob, at every assistant position of each sequence,
    in one left-padded forward.

    Left padding lines the sequences up at the end, where the assistant spans are, so only the last positions
    are projected on the vocabulary (``logits_to_keep``); explicit ``position_ids`` make padding invisible.
    """
    device = next(model.parameters()).device
    longest = max(len(s["input_ids"]) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(sequences):
        ids[row, longest - len(s["input_ids"]) :] = torch.tensor(s["input_ids"])
        mask[row, longest - len(s["input_ids"]) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # the logits at position p predict token p + 1: a span [start, end) needs positions start-1 .. end-2
    keep = max(len(s["input_ids"]) - s["span_start"] + 1 for s in sequences)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    results = []
    for row, s in enumerate(sequences):
        length, offset = len(s["input_ids"]), longest - keep
        first = longest - length + s["span_start"] - 1 - offset
        count = s["span_end"] - s["span_start"]
        logprobs = logits[row, first : first + count].float().log_softmax(-1)
        values, top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
        written = torch.tensor(s["input_ids"][s["span_start"] : s["span_end"]], device=logprobs.device)
        chosen = logprobs.gather(-1, written[:, None])[:, 0]
        results.append((top.cpu().numpy(), values.cpu().numpy(), chosen.cpu().numpy()))
    return results


@dataclass
class LogitsSettings:
    k: int
    batch_size: int = 8
    shard_size: int = 32


def row_key(row: dict) -> str:
    """A shard key that changes when the row's text does (a rebuilt rationale is scored again)."""
    text = json.dumps([row["id"], row["teacher"], row["messages"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class TeacherScorer:
    """A transformers teacher, loaded once, that scores tokenized conversations."""

    def __init__(self, name: str, source: str, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def identity(self) -> dict:
        return tokenizer_identity(self.tokenizer, self.name)

    def score(self, sequences: list[dict], k: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return score_batch(self.model, sequences, k, self.pad_id)


def stored_row(row: dict, sequence: dict, scored: tuple, teacher: str, identity: dict, tokenizer, k: int = 0) -> dict:
    """One row of a logits config: the training row's sequence, its scores (``score_batch``'s triple) kept to the
    best ``k`` (0: all scored) and the figures cross-tokenizer alignment needs."""
    top, values, chosen = scored
    k = k or top.shape[-1]
    span = sequence["input_ids"][sequence["span_start"] : sequence["span_end"]]
    return {
        "id": row["id"],
        "teacher": row["teacher"],
        "logits_teacher": teacher,
        **sequence,
        "topk_ids": top[:, :k].reshape(-1).astype(np.int64).tolist(),
        **encode_logprobs(values[:, :k]),
        "token_logprob": chosen.astype(np.float16).tolist(),
        "token_chars": token_chars(tokenizer, span),
        "k": int(k),
        **identity,
        "tokenizer_source": str(tokenizer.name_or_path),  # where a student loads it to map ids (hybrid KD)
    }


def build_logits(rows: list[dict], scorer, settings: LogitsSettings, work_dir: Path) -> tuple[list[dict], dict]:
    """The ``logits-<teacher>`` rows for ``rows`` (resuming from shards under ``work_dir``) and build figures."""
    identity = scorer.identity()
    digest = hashlib.sha256(json.dumps([LOGITS_VERSION, identity, settings.k]).encode()).hexdigest()[:12]
    store = ShardStore(Path(work_dir) / f"{config_name(scorer.name)}-k{settings.k}-{digest}", key="key")
    done = store.done_keys()
    keyed = [(row_key(row), row) for row in rows]
    todo = [(key, row) for key, row in keyed if key not in done]
    stats = store.read_stats({"seconds": 0.0, "tokens_scored": 0})
    if todo:
        logger.info("%s: scoring %d of %d rows (top-%d)", scorer.name, len(todo), len(rows), settings.k)

    def score(chunk: list[tuple[str, dict]]) -> list[dict]:
        tokenized = [tokenize_conversation(scorer.tokenizer, row["messages"]) for _, row in chunk]
        began = time.perf_counter()
        order = sorted(range(len(chunk)), key=lambda i: len(tokenized[i]["input_ids"]))
        scored: list = [None] * len(chunk)
        for b in range(0, len(order), settings.batch_size):
            batch = order[b : b + settings.batch_size]
            for index, result in zip(batch, scorer.score([tokenized[i] for i in batch], settings.k), strict=True):
                scored[index] = result
        stats["seconds"] += time.perf_counter() - began
        stats["tokens_scored"] += sum(len(seq["input_ids"]) for seq in tokenized)
        return [
            {"key": key, **stored_row(row, seq, result, scorer.name, identity, scorer.tokenizer)}
            for (key, row), seq, result in zip(chunk, tokenized, scored, strict=True)
        ]

    store.fill(todo, settings.shard_size, score, stats, total=len(rows), desc=f"logits {scorer.name}")
    by_key = {row["key"]: row for row in store.rows()}
    out = [{name: value for name, value in by_key[key].items() if name != "key"} for key, _ in keyed]
    assistant_tokens = sum(r["span_end"] - r["span_start"] for r in out)
    info = {
        "teacher": scorer.name,
        "config": config_name(scorer.name),
        "k": settings.k,
        **identity,
        "rows": len(out),
        "assistant_tokens": assistant_tokens,
        "seconds": round(stats["seconds"], 2),
        "tokens_per_second": round(stats["tokens_scored"] / stats["seconds"], 1) if stats["seconds"] else None,
    }
    return out, info


def logits_config(rows: list[dict], info: dict) -> RepoConfig:
    return RepoConfig(
        info["config"],
        f"logits/{info['teacher']}",
        logits_features(info["vocab_size"]),
        {"train": rows},
        f"top-{info['k']} log-probs of {info['teacher']} at every assistant token of `default`'s train rows "
        f"(tokenizer {info['tokenizer']}, hash {info['tokenizer_hash']}); what `make train METHOD=kd` reads",
        compression="zstd",  # the gaps are small integers: zstd packs them to about a byte, snappy does not
    )


def storage_figures(folder: Path, info: dict, text_dir: str = "data") -> dict:
    """Bytes per assistant token of a written logits config, and its size relative to the text config."""
    logits_bytes = sum(p.stat().st_size for p in (Path(folder) / "logits" / info["teacher"]).glob("*.parquet"))
    text_bytes = sum(p.stat().st_size for p in (Path(folder) / text_dir).glob("*.parquet"))
    return {
        "bytes": logits_bytes,
        "bytes_per_token": round(logits_bytes / max(info["assistant_tokens"], 1), 2),
        "bytes_per_token_per_k": round(logits_bytes / max(info["assistant_tokens"], 1) / info["k"], 3),
        "relative_to_text": round(logits_bytes / text_bytes, 2) if text_bytes else None,
    }
