"""The TRL trainer every student method uses: ``SFTTrainer`` with an LM head that scores labelled positions only.

TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head``) never materialises the full logits: on CUDA/XPU a
Triton kernel scores only the positions that have a label, but elsewhere (CPU) it scores every position in
vocabulary tiles and recomputes each tile in the backward pass; with a large vocabulary that head dominates a small
student's step, and with assistant-only loss many of the positions it scores are masked prompt tokens.

On devices without that kernel, ``StudentSFTTrainer`` routes ``fused_lm_head=True`` calls to
``compact_lm_head_forward``: the backbone runs as usual, the head projects only the labelled positions, and
``cross_entropy`` gives their log-probabilities with no recompute. It returns TRL's ``FusedCausalLMOutput`` with the
same fields, so ``SFTTrainer.compute_loss``, its metrics and DDP/PEFT wrapping are untouched. The price is memory:
the logits of one micro-batch's labelled positions are materialised (tokens x vocab x 4 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput
from trl import SFTTrainer

from scalingdown.compat import FusedCausalLMOutput, patch_student_forward
from trainers.chunked_kd import DistillationTargets, KDTerms, chunked_kd_terms, cross_terms

KERNEL_DEVICES = ("cuda", "xpu")  # where TRL's Triton kernel already scores only the labelled positions


def compact_head_supported(model) -> bool:
    """Whether the compact head computes exactly what the model's own head does (no scaled or capped logits)."""
    config = model.config.get_text_config()
    scaled = any(
        getattr(config, name, None) not in (None, 1.0)
        for name in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier")
    )
    unscaled = not scaled and getattr(config, "logits_scaling", None) in (None, 1.0)
    return unscaled and model.get_output_embeddings() is not None


def compact_lm_head_forward(
    model, backbone_kwargs: dict, labels: torch.Tensor | None, shift_labels: torch.Tensor | None, num_items_in_batch
) -> FusedCausalLMOutput:
    """Backbone over every position, LM head and log-softmax over labelled positions only."""
    backbone_kwargs["use_cache"] = False
    hidden_states = model.base_model(**backbone_kwargs).last_hidden_state
    if shift_labels is None:
        hidden_states, labels = hidden_states[:, :-1], labels[:, 1:]
    else:
        labels = shift_labels
    mask = labels != -100
    targets = labels[mask]
    logits = model.get_output_embeddings()(hidden_states[mask]).float()
    log_probs = -F.cross_entropy(logits, targets, reduction="none")
    with torch.no_grad():
        log_z = logits.logsumexp(-1)
        entropy = log_z - (logits.softmax(-1) * logits).sum(-1)
        is_top1 = logits.argmax(-1) == targets

    def scatter(values: torch.Tensor) -> torch.Tensor:
        # masked_scatter keeps an all-masked micro-batch connected to the graph (a differentiable zero loss)
        return values.new_zeros(mask.shape).masked_scatter(mask, values)

    per_token = scatter(log_probs)
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(
        loss=-per_token.sum() / count,
        log_probs=per_token,
        entropy=scatter(entropy),
        is_top1=scatter(is_top1),
        label_mask=mask,
    )


@dataclass
class LabelledLogits(ModelOutput):
    """The logits ``[N, V]`` of the N labelled positions, their targets ``[N]`` and where they are ``[B, L-1]``."""

    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None


def labelled_hidden_states(
    model, backbone_kwargs: dict, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backbone's last hidden states at the N labelled positions ``[N, H]``, their targets ``[N]``, the mask."""
    backbone_kwargs["use_cache"] = False
    hidden_states = model.base_model(**backbone_kwargs).last_hidden_state[:, :-1]
    mask = labels[:, 1:] != -100
    return hidden_states[mask], labels[:, 1:][mask], mask


def labelled_logits_forward(model, backbone_kwargs: dict, labels: torch.Tensor) -> LabelledLogits:
    """Backbone over every position, LM head over the labelled ones only (the ensemble's boosting weights)."""
    hidden, targets, mask = labelled_hidden_states(model, backbone_kwargs, labels)
    return LabelledLogits(logits=model.get_output_embeddings()(hidden), targets=targets, label_mask=mask)


def distillation_forward(model, backbone_kwargs: dict, labels: torch.Tensor, targets: DistillationTargets) -> KDTerms:
    """Backbone over every position, then the KD objective through the LM head in chunks of labelled positions."""
    hidden, label_targets, mask = labelled_hidden_states(model, backbone_kwargs, labels)
    head = model.get_output_embeddings()
    terms = chunked_kd_terms(
        hidden,
        head,
        label_targets,
        targets.teacher_ids,
        targets.teacher_logprobs,
        targets.objective,
        targets.token_weights,
        targets.chunk_tokens,
    )
    if targets.cross:
        weighted = [c.weight * cross_terms(hidden, head, label_targets, c, targets.chunk_tokens) for c in targets.cross]
        cross = torch.stack(weighted).sum()
        terms["objective"] = terms.objective + targets.objective.alpha * cross
        terms["cross"] = cross.detach()
    terms["label_mask"] = mask  # ModelOutput: a key and an attribute
    return terms


def add_compact_lm_head(model) -> None:
    """Route the model's ``fused_lm_head=True`` calls (already patched by TRL) to ``compact_lm_head_forward``,
    and its ``distillation=DistillationTargets(...)`` calls (on every device) to ``distillation_forward``: a
    private hook, kept in ``scalingdown/compat.py`` with the versions it was checked against."""
    patch_student_forward(model, distillation_forward, compact_lm_head_forward, KERNEL_DEVICES)


class StudentSFTTrainer(SFTTrainer):
    """``SFTTrainer`` for students: same loss and metrics, LM head compacted to labelled positions off-GPU."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # TRL patched the (PEFT base) model's forward in __init__; wrap that same object.
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if compact_head_supported(model):
            add_compact_lm_head(model)
