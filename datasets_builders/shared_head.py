"""The worked examples every prompt of a batch opens with, held in the KV cache once and attended by every row.

Copying the head's keys and values to each row makes every decode step read (and ``torch.cat`` grow) one copy per
row: at batch 16 with a 620-token head, nearly as many bytes as SmolLM2's weights, on CPUs bound by memory traffic.
Here each layer keeps the head once (batch 1) beside the rows' own tokens, and the attention function scores the
rows' queries against the head as one matrix product (rows folded into the query axis) and against their own keys
as usual, with one softmax over both. It is registered with transformers' ``AttentionInterface`` and set on the
model only inside :func:`attending`, for models whose layers all attend to the whole context: sliding-window layers
(Gemma-3) keep per-row copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "scalingdown_shared_head"
_active: ContextVar[SharedHeadCache | None] = ContextVar("shared_head", default=None)


class SharedHeadLayer(DynamicLayer):
    """A layer's head keys and values (batch 1) and, as a DynamicLayer, the rows' own tokens after it."""

    def __init__(self, head_keys: torch.Tensor, head_values: torch.Tensor):
        super().__init__()
        self.head_keys, self.head_values = head_keys, head_values

    def get_seq_length(self) -> int:  # masks and positions count the head
        return self.head_keys.shape[-2] + super().get_seq_length()

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a shared head serves any number of rows as it is: do not repeat it")


class SharedHeadCache(DynamicCache):
    """The KV cache of one head, for a batch of rows that continue it differently."""

    def __init__(self, head: DynamicCache):
        Cache.__init__(self, layers=[SharedHeadLayer(layer.keys, layer.values) for layer in head.layers])


def supports(model) -> bool:
    """Whether every layer of ``model`` attends to the whole context (no sliding window), as this attention assumes."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


@contextmanager
def attending(model, cache: SharedHeadCache) -> Iterator[None]:
    """Within this block ``model`` attends through this module, reading the head from ``cache``; its own attention
    implementation is back afterwards (continuous batching, eval and logits use it)."""
    AttentionInterface.register(ATTENTION, shared_head_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    token = _active.set(cache)
    try:
        yield
    finally:
        _active.reset(token)
        model.set_attn_implementation(previous)


def shared_head_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention over [head; the row's own tokens]: ``key``/``value`` hold only the rows' own tokens."""
    cache = _active.get()
    if cache is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer = cache.layers[module.layer_idx]
    head_keys, head_values = layer.head_keys, layer.head_values  # [1, kv_heads, P, d]
    rows, heads, q_len, dim = query.shape
    kv_heads, head_len, own_len = key.shape[1], head_keys.shape[-2], key.shape[-2]
    groups = heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling
    grouped = query.reshape(rows, kv_heads, groups * q_len, dim)  # query head h reads kv head h // groups
    folded = grouped.transpose(0, 1).reshape(1, kv_heads, rows * groups * q_len, dim)
    head_scores = (folded @ head_keys.transpose(-1, -2)).reshape(kv_heads, rows, groups * q_len, head_len)
    scores = torch.cat([head_scores.transpose(0, 1), grouped @ key.transpose(-1, -2)], dim=-1) * scaling
    scores = scores.float()
    if attention_mask is None:  # no padding: only causality within the rows' own tokens
        attention_mask = torch.ones(q_len, head_len + own_len, dtype=torch.bool, device=query.device).tril(
            head_len + own_len - q_len
        )[None, None]
    mask = attention_mask[:, :, -q_len:, -(head_len + own_len) :]
    mask = mask.unsqueeze(2).expand(-1, -1, groups, -1, -1).flatten(2, 3)  # one row of the mask per grouped query
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = scores.softmax(dim=-1).to(query.dtype)
    head_weights = weights[..., :head_len].transpose(0, 1).reshape(1, kv_heads, rows * groups * q_len, head_len)
    out = (head_weights @ head_values).reshape(kv_heads, rows, groups * q_len, dim).transpose(0, 1)
    out = out + weights[..., head_len:] @ value
    return out.reshape(rows, heads, q_len, dim).transpose(1, 2).contiguous(), None
