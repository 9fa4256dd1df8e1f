"""Minitron students: importance ranks what contributes nothing last, pruning it changes no output, and the
registered sizes have the parameters they are named for and still generate."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import ModelConfig

from trainers.minitron import MinitronShape, calibration_batches, measure_importance, prune, top
from trainers.sft import load_model
from trainers.sizes import SizeError, get_size, model_parameter_counts

DEAD_NEURONS = list(range(8, 24))
DEAD_GROUP = 1  # of 2 KV groups
IDENTITY_LAYER = 1
DEAD_CHANNEL = 5


def tiny_model_with_dead_parts() -> LlamaForCausalLM:
    """A random tiny Llama where some parts contribute nothing: dead MLP neurons and a silent KV group in every
    layer, one layer that returns its input, one hidden channel every RMSNorm zeroes."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    head_dim = 8
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight[DEAD_NEURONS] = 0  # silu(0) * up = 0
            layer.self_attn.v_proj.weight[DEAD_GROUP * head_dim : (DEAD_GROUP + 1) * head_dim] = 0
        model.model.layers[IDENTITY_LAYER].self_attn.o_proj.weight.zero_()
        model.model.layers[IDENTITY_LAYER].mlp.down_proj.weight.zero_()
    return model


def random_batches(count: int = 3) -> list[dict]:
    torch.manual_seed(1)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, 100, (4, 12))
        mask = torch.ones_like(ids)
        mask[0, 9:] = 0  # one right-padded row: its padding must not count
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def test_importance_ranks_the_parts_that_do_nothing_last():
    model = tiny_model_with_dead_parts()
    with torch.no_grad():
        for norm in [model.model.norm, *(n for layer in model.model.layers for n in (
            layer.input_layernorm, layer.post_attention_layernorm))]:  # fmt: skip
            norm.weight[DEAD_CHANNEL] = 0
    importance = measure_importance(model, random_batches())
    assert importance.layers[IDENTITY_LAYER] == pytest.approx(0.0, abs=1e-6)
    assert importance.layers.argmin() == IDENTITY_LAYER and importance.layers.min() < importance.layers.max()
    for neurons, groups in zip(importance.neurons, importance.groups, strict=True):
        assert torch.all(neurons[DEAD_NEURONS] == 0) and neurons.max() > 0
        assert groups[DEAD_GROUP] == 0 and groups[1 - DEAD_GROUP] > 0
    assert importance.hidden[DEAD_CHANNEL] == 0 and DEAD_CHANNEL not in top(importance.hidden, 31)


def test_pruning_what_contributes_nothing_changes_no_output():
    model = tiny_model_with_dead_parts()
    batches = random_batches()
    importance = measure_importance(model, batches)
    shape = MinitronShape(hidden_size=32, num_layers=2, kv_groups=1, intermediate_size=64 - len(DEAD_NEURONS))
    pruned = prune(model, importance, shape).eval()
    assert pruned.config.pruned_from["kept_layers"] == [0, 2]
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 1)
    counts = model_parameter_counts(pruned)
    with torch.device("meta"):
        expected = model_parameter_counts(LlamaForCausalLM(shape.apply(model.config)))
    assert counts == expected and counts["total"] < model_parameter_counts(model)["total"]
    with torch.no_grad():
        for batch in batches:
            before = model(**batch).logits
            after = pruned(**batch).logits
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def test_a_shape_larger_than_the_model_is_refused():
    model = tiny_model_with_dead_parts()
    importance = measure_importance(model, random_batches(1))
    with pytest.raises(ValueError, match="larger than the model"):
        prune(model, importance, MinitronShape(hidden_size=32, num_layers=4, kv_groups=1, intermediate_size=8))


@pytest.mark.teacher
def test_minitron_sizes_have_their_named_parameters_and_still_generate(smol_dir, tmp_path):
    matched = {"135M-minitron-90M": "135M-prune-18L", "135M-minitron-60M": "135M-prune-9L"}  # compared at equal size
    for name, target in [("135M-minitron-90M", 90e6), ("135M-minitron-60M", 60e6), ("135M-minitron-30M", 30e6)]:
        size = get_size(name)
        total = size.parameter_counts()["total"]
        assert abs(total - target) / target < 0.05, name
        if name in matched:
            assert abs(get_size(matched[name]).parameter_counts()["total"] - total) / total < 0.02, matched[name]
        size.build_config().save_pretrained(tmp_path / name)  # what every checkpoint does: transformers validates it
        assert f"hidden_size={size.build_config().hidden_size}" in size.shape()  # in the run's settings
    size = get_size("135M-minitron-30M")
    with pytest.raises(SizeError, match="make train"):
        size.build_model()
    tokenizer = AutoTokenizer.from_pretrained(smol_dir)
    rows = Dataset.from_list([
        {"messages": [{"role": "user", "content": f"Ana has {n} apples and buys {n + 3} more. How many?"},
                      {"role": "assistant", "content": f"{n} + {n + 3} = {2 * n + 3}. The answer is {2 * n + 3}."}]}
        for n in range(12)
    ])  # fmt: skip
    assert len(calibration_batches(tokenizer, ["a b", "c"] * 6, batch_size=5)) == 3
    model = load_model(size, ModelConfig(), tokenizer, seed=0, rows=rows).eval()  # what make train builds
    assert model_parameter_counts(model) == size.parameter_counts()
    assert model.config.pruned_from["method"] == "minitron" and len(model.config.pruned_from["kept_layers"]) == 16
    prompt = tokenizer("Question: Ana has 4 apples", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert output.shape[1] > prompt["input_ids"].shape[1]  # a real generate() of new tokens, not a crash
