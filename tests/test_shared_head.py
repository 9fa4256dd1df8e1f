"""The worked examples' KV cache held once for a batch (datasets_builders/shared_head.py) gives the scores of a copy
per row: real tiny models, left padding between the head and each row's own tokens, grouped-query attention."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, Gemma3ForCausalLM, Gemma3TextConfig

from datasets_builders import shared_head
from scalingdown.compat import kv_cache_argument


def head_and_rows(vocab: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """A 40-token head, then three rows of 3, 7 and 5 own tokens, left-padded to 7 (padding after the head)."""
    generator = torch.Generator().manual_seed(1)
    head = torch.randint(3, vocab, (40,), generator=generator).tolist()
    own = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (3, 7, 5)]
    ids = torch.tensor([[0] * (7 - len(row)) + row for row in own])
    mask = torch.tensor([[0] * (7 - len(row)) + [1] * len(row) for row in own])
    head_mask = torch.ones(3, 40, dtype=torch.long)
    return head, torch.cat([torch.tensor([head] * 3), ids], 1), torch.cat([head_mask, mask], 1)


@torch.no_grad()
def generate(model, head: list[int], ids, mask, shared: bool):
    prefill = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([head]), use_cache=True, **{kv_cache_argument(): prefill})
    if shared:
        cache = shared_head.SharedHeadCache(prefill)
    else:
        cache = copy.deepcopy(prefill)
        cache.batch_repeat_interleave(ids.shape[0])
    with shared_head.attending(model, cache) if shared else contextlib.nullcontext():
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=12,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            **{kv_cache_argument(): cache},
        )


def test_a_shared_head_scores_every_step_as_copies_do(tiny_teacher_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # grouped queries are exercised
    assert shared_head.supports(model)
    head, ids, mask = head_and_rows(model.config.vocab_size)
    copied = generate(model, head, ids, mask, shared=False)
    shared = generate(model, head, ids, mask, shared=True)
    assert model.config._attn_implementation == "sdpa"  # the model's own attention is back after the block
    assert torch.equal(shared.sequences, copied.sequences)
    largest = max((a - b).abs().max().item() for a, b in zip(shared.scores, copied.scores, strict=True))
    spread = copied.scores[0].std().item()
    assert largest < 1e-4 * spread, (largest, spread)


def test_a_head_cache_refuses_to_be_repeated(tiny_teacher_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    head, _, _ = head_and_rows(model.config.vocab_size)
    prefill = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([head]), use_cache=True, **{kv_cache_argument(): prefill})
    cache = shared_head.SharedHeadCache(prefill)
    assert cache.get_seq_length() == len(head)
    with pytest.raises(NotImplementedError):
        cache.batch_repeat_interleave(2)


def test_sliding_window_models_keep_a_copy_per_row():
    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4,
    )  # fmt: skip
    assert not shared_head.supports(Gemma3ForCausalLM(config))
