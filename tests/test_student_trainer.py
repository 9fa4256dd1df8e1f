"""The compact LM head computes exactly what TRL's fused head computes: loss, metrics and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from scalingdown.compat import FusedCausalLMOutput, student_forward_versions_differ
from scalingdown.prompts import chatml_training_template
from trainers import student_trainer
from trainers.student_trainer import StudentSFTTrainer, compact_head_supported


def tiny_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def tokenizer(smol_dir):
    tokenizer = AutoTokenizer.from_pretrained(smol_dir)
    tokenizer.chat_template = chatml_training_template("You are a student.")
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


def rows() -> Dataset:
    pairs = [("What is 2 + 3?", "2 + 3 = 5. The answer is 5."), ("Name a colour.", "Blue is one. The answer is blue.")]
    pairs += [("How many legs has a cat? Think step by step.", "A cat has four legs. The answer is 4.")]
    return Dataset.from_list(
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    )


def loss_metrics_and_grads(trainer_class, model, tokenizer, tmp_path, peft_config=None):
    args = SFTConfig(
        output_dir=str(tmp_path / trainer_class.__name__),
        assistant_only_loss=True,
        per_device_train_batch_size=3,
        report_to="none",
        bf16=False,
    )
    trainer = trainer_class(
        model=model, args=args, train_dataset=rows(), processing_class=tokenizer, peft_config=peft_config
    )
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(3)]))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items() if key != "num_tokens"}
    masked = int((batch["labels"][:, 1:] == -100).sum())
    return loss.detach(), metrics, grads, masked


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_compact_head_matches_trl_fused_head(tokenizer, tmp_path, lora, monkeypatch):
    calls = []
    compact_forward = student_trainer.compact_lm_head_forward
    monkeypatch.setattr(student_trainer, "compact_lm_head_forward", lambda *a: calls.append(1) or compact_forward(*a))
    model = tiny_model(len(tokenizer))
    assert compact_head_supported(model)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None
    reference = loss_metrics_and_grads(SFTTrainer, copy.deepcopy(model), tokenizer, tmp_path, peft_config)
    compact = loss_metrics_and_grads(StudentSFTTrainer, copy.deepcopy(model), tokenizer, tmp_path, peft_config)

    assert calls == [1]  # the compact head really ran (once, for the one batch)
    assert reference[3] > 0  # prompt tokens really are masked, so the compact head skips work
    assert torch.allclose(compact[0], reference[0], rtol=1e-5, atol=1e-6)
    assert compact[1].keys() == reference[1].keys() >= {"entropy", "mean_token_accuracy"}
    for key in reference[1]:
        assert compact[1][key] == pytest.approx(reference[1][key], rel=1e-4, abs=1e-6), key
    assert compact[2].keys() == reference[2].keys() and compact[2]
    for name in reference[2]:
        assert torch.allclose(compact[2][name], reference[2][name], rtol=1e-4, atol=1e-6), name


def test_scaled_logits_keep_trls_head():
    model = tiny_model(64)
    model.config.final_logit_softcapping = 30.0
    assert not compact_head_supported(model)


def test_compat_student_forward_hook_is_checked_against_the_installed_trl(tokenizer, tmp_path):
    """scalingdown.compat's student forward hook relies on TRL patching ``forward`` with ``fused_lm_head=``: a TRL
    or transformers upgrade fails here until the hook is re-checked and its pin moved."""
    assert student_forward_versions_differ() == {}, "re-check scalingdown/compat.py's student forward hook"
    model = tiny_model(len(tokenizer))
    class_forward = type(model).forward
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, max_length=64)
    rows = Dataset.from_list(
        [{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}]
    )
    # What the hook wraps: TRL's own patched forward (TRL no longer patching it would make the hook dead code).
    trl_trainer = SFTTrainer(model=copy.deepcopy(model), args=args, train_dataset=rows, processing_class=tokenizer)
    trl_forward = trl_trainer.model.forward.__func__
    assert trl_forward is not class_forward and "fused_lm_head" in trl_forward.__code__.co_varnames
    trainer = StudentSFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    patched = trainer.model.forward
    assert patched.__func__ is not class_forward and patched.__func__.__module__ == "scalingdown.compat"
    assert isinstance(patched(**trainer.data_collator([trainer.train_dataset[0]]), fused_lm_head=True),
                      FusedCausalLMOutput)  # fmt: skip
