"""Importance-pruned students (Minitron: Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation"): the teacher's layers, attention heads, MLP neurons and hidden channels ranked on
calibration text from the task's train split, the least important cut away to a target shape, weights copied.

Importance is measured once on the full model, in one pass over the calibration rows:

* depth: a layer's Block Importance (ShortGPT), ``1 - cos(input, output)`` averaged over tokens: a layer that
  barely turns the residual stream does little;
* width, from activations (the paper's choice; aggregated as an L2 norm over each sequence, then a mean over
  sequences): MLP neurons by the input of ``down_proj``, attention heads by their slice of the input of
  ``o_proj`` (a KV group by the sum over its query heads, so grouped-query attention keeps its shape), hidden
  channels by the outputs of every RMSNorm.

The pruned model is then distilled from the teacher (``make train METHOD=kd SIZE=135M-minitron-60M``), as the
paper recommends. Here the RMSNorms normalise over the kept channels only, so a width-pruned model needs that
training; pruning only what contributes nothing (dead neurons, zeroed heads, identity layers) changes no output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

CALIBRATION_ROWS = 256  # rows of the train split scored for importance (the paper uses 1024 samples)


@dataclass(frozen=True)
class MinitronShape:
    """The pruned architecture: hidden channels, decoder layers, KV groups (each keeps its query heads), MLP width."""

    hidden_size: int
    num_layers: int
    kv_groups: int
    intermediate_size: int

    def apply(self, config):
        """``config`` (the teacher's, copied) with this shape; head size and everything else unchanged."""
        config = config.__class__.from_dict(config.to_dict())
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_group = config.num_attention_heads // config.num_key_value_heads
        config.head_dim = head_dim
        config.hidden_size = self.hidden_size
        config.num_hidden_layers = self.num_layers
        config.num_key_value_heads = self.kv_groups
        config.num_attention_heads = self.kv_groups * per_group
        config.intermediate_size = self.intermediate_size
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[: self.num_layers]
        return config


@dataclass
class Importance:
    """Per-unit scores from the calibration pass (higher = keep)."""

    layers: torch.Tensor  # [L] block importance
    hidden: torch.Tensor  # [hidden]
    neurons: list[torch.Tensor]  # per layer [intermediate]
    groups: list[torch.Tensor]  # per layer [kv heads]


@torch.inference_mode()
def measure_importance(model, batches: Sequence[dict]) -> Importance:
    """Scores of every layer, hidden channel, MLP neuron and KV group over ``batches`` (``input_ids`` and
    ``attention_mask``), from forward hooks on the teacher."""
    config = model.config
    layers = model.model.layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_group = config.num_attention_heads // config.num_key_value_heads
    sums = {
        "hidden": torch.zeros(config.hidden_size),
        "neurons": [torch.zeros(config.intermediate_size) for _ in layers],
        "groups": [torch.zeros(config.num_key_value_heads) for _ in layers],
        "cosine": torch.zeros(len(layers)),
    }
    state = {"mask": None, "sequences": 0, "tokens": 0}

    def per_sequence_norm(x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C]`` -> ``[C]``: L2 over each sequence's real tokens, summed over sequences (mean taken later)."""
        mask = state["mask"].unsqueeze(-1).to(x.dtype)
        return (x.float() * mask).pow(2).sum(1).sqrt().sum(0)

    def on_norm(_module, _args, output):
        sums["hidden"] += per_sequence_norm(output)

    def on_down(index):
        def hook(_module, args):
            sums["neurons"][index] += per_sequence_norm(args[0])

        return hook

    def on_o_proj(index):
        def hook(_module, args):
            heads = args[0].unflatten(-1, (config.num_attention_heads, head_dim)).float()
            per_head = per_sequence_norm(heads.pow(2).sum(-1).sqrt())  # [heads]
            sums["groups"][index] += per_head.view(config.num_key_value_heads, per_group).sum(-1)

        return hook

    def on_layer(index):
        def hook(_module, args, output):
            before, after = args[0], output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
            sums["cosine"][index] += (cosine * state["mask"]).sum()

        return hook

    handles = [model.model.norm.register_forward_hook(on_norm)]
    for index, layer in enumerate(layers):
        handles += [
            layer.input_layernorm.register_forward_hook(on_norm),
            layer.post_attention_layernorm.register_forward_hook(on_norm),
            layer.mlp.down_proj.register_forward_pre_hook(on_down(index)),
            layer.self_attn.o_proj.register_forward_pre_hook(on_o_proj(index)),
            layer.register_forward_hook(on_layer(index)),
        ]
    device = next(model.parameters()).device
    try:
        for batch in batches:
            state["mask"] = batch["attention_mask"].to(device)
            state["sequences"] += batch["input_ids"].shape[0]
            state["tokens"] += int(state["mask"].sum())
            model(input_ids=batch["input_ids"].to(device), attention_mask=state["mask"], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    n = max(state["sequences"], 1)
    return Importance(
        layers=1 - sums["cosine"] / max(state["tokens"], 1),
        hidden=sums["hidden"] / n,
        neurons=[s / n for s in sums["neurons"]],
        groups=[s / n for s in sums["groups"]],
    )


def top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, in their original order (ties: the earlier one)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:keep]), dtype=torch.long)


def prune(model, importance: Importance, shape: MinitronShape):
    """A new model of ``shape`` holding the teacher's most important layers, groups, neurons and channels."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if shape.num_layers > config.num_hidden_layers or shape.hidden_size > config.hidden_size:
        raise ValueError(f"{shape} is larger than the model it prunes")
    if shape.kv_groups > config.num_key_value_heads or shape.intermediate_size > config.intermediate_size:
        raise ValueError(f"{shape} is larger than the model it prunes")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_group = config.num_attention_heads // config.num_key_value_heads
    kept_layers = top(importance.layers, shape.num_layers)
    channels = top(importance.hidden, shape.hidden_size)
    pruned = AutoModelForCausalLM.from_config(shape.apply(config), dtype=next(model.parameters()).dtype)

    def rows_of(groups: torch.Tensor, heads_each: int) -> torch.Tensor:
        """Weight rows of whole heads: ``heads_each`` heads per kept group, ``head_dim`` rows per head."""
        heads = (groups[:, None] * heads_each + torch.arange(heads_each)).flatten()
        return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()

    with torch.no_grad():
        pruned.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[:, channels])
        pruned.model.norm.weight.copy_(model.model.norm.weight[channels])
        for new, old_index in zip(pruned.model.layers, kept_layers.tolist(), strict=True):
            old = model.model.layers[old_index]
            groups = top(importance.groups[old_index], shape.kv_groups)
            neurons = top(importance.neurons[old_index], shape.intermediate_size)
            q_rows, kv_rows = rows_of(groups, per_group), rows_of(groups, 1)
            attention, mlp = old.self_attn, old.mlp
            new.input_layernorm.weight.copy_(old.input_layernorm.weight[channels])
            new.post_attention_layernorm.weight.copy_(old.post_attention_layernorm.weight[channels])
            new.self_attn.q_proj.weight.copy_(attention.q_proj.weight[q_rows][:, channels])
            new.self_attn.k_proj.weight.copy_(attention.k_proj.weight[kv_rows][:, channels])
            new.self_attn.v_proj.weight.copy_(attention.v_proj.weight[kv_rows][:, channels])
            new.self_attn.o_proj.weight.copy_(attention.o_proj.weight[channels][:, q_rows])
            for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                bias = getattr(attention, name).bias
                if bias is not None:
                    getattr(new.self_attn, name).bias.copy_(bias[rows])
            new.mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[neurons][:, channels])
            new.mlp.up_proj.weight.copy_(mlp.up_proj.weight[neurons][:, channels])
            new.mlp.down_proj.weight.copy_(mlp.down_proj.weight[channels][:, neurons])
    pruned.tie_weights()
    pruned.config.pruned_from = {
        "method": "minitron",
        "kept_layers": kept_layers.tolist(),
        "hidden_channels": shape.hidden_size,
        "kv_groups": shape.kv_groups,
        "intermediate_size": shape.intermediate_size,
    }
    return pruned


def calibration_batches(tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> list[dict]:
    """``texts`` (at most :data:`CALIBRATION_ROWS`) tokenized into right-padded batches."""
    texts = list(texts)[:CALIBRATION_ROWS]
    if not texts:
        raise ValueError("Minitron pruning needs calibration text from the task's train split; none was given")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = [
            tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts[start : start + batch_size]
        ]
        longest = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, sequence in enumerate(encoded):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def minitron_prune(source: str, shape: MinitronShape, texts: Sequence[str], dtype: torch.dtype = torch.float32):
    """The model at ``source`` pruned to ``shape`` by importance on ``texts``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).eval()
    importance = measure_importance(model, calibration_batches(tokenizer, texts))
    return prune(model, importance, shape)
