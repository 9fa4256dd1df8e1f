"""Boosting for ensemble rounds: weight each token by how far the ensemble so far is from the teacher there.

Round ``r`` of ``make train METHOD=ensemble BOOSTING=1`` trains its student with ``BoostedKDTrainer``: the KD
trainer's loss (alpha·KD + (1-alpha)·NLL per labelled token), each token weighted by ``boosting_weights`` of the
forward KL between the teacher's top-k and the current ensemble (rounds ``< r``, combined exactly as the ensemble
model combines them) at that token. The new student thus spends its capacity where the ensemble is weakest, in
the spirit of gradient boosting, while the weights keep mean 1 so the loss keeps its scale and learning rate.
"""

from __future__ import annotations

import torch

from trainers.ensemble_model import EnsembleForCausalLM
from trainers.ensemble_model.modeling_ensemble import add_member
from trainers.kd import KDTrainer
from trainers.kd_losses import distillation_loss_from_logprobs
from trainers.student_trainer import labelled_logits_forward


def boosting_weights(divergence: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Per-token weights with mean 1: ``(1 - strength) + strength * d / mean(d)`` for divergences ``d >= 0``.

    ``strength`` 0 is plain KD, 1 makes the weights proportional to the divergence; between, a mixture with uniform
    weights keeps every token in the loss. All-zero divergences (an ensemble that already matches) give ones.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"boosting strength must be in [0, 1], got {strength}")
    divergence = divergence.detach().float().clamp(min=0)
    mean = divergence.mean() if divergence.numel() else divergence.new_zeros(())
    if not mean > 0:
        return torch.ones_like(divergence)
    return (1.0 - strength) + strength * divergence / mean


@torch.no_grad()
def ensemble_logprobs(ensemble: EnsembleForCausalLM, inputs: dict) -> torch.Tensor:
    """The ensemble's log-probs ``[N, V]`` at the N labelled positions of a batch (members' LM heads there only)."""
    combined = None
    for member, weight in zip(ensemble.members, ensemble.config.normalised_weights(), strict=True):
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask")}
        logits = labelled_logits_forward(member, kwargs, inputs["labels"]).logits
        combined = add_member(combined, logits, weight, ensemble.config.combine)
    return combined.log_softmax(-1)


class BoostedKDTrainer(KDTrainer):
    """``KDTrainer`` whose tokens are weighted by the current ensemble's forward KL from the teacher there."""

    def __init__(self, *args, ensemble: EnsembleForCausalLM | None = None, boosting: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.ensemble = ensemble
        self.boosting = boosting
        if ensemble is not None:
            ensemble.to(self.accelerator.device).eval().requires_grad_(False)

    def token_weights(self, inputs: dict, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor):
        if self.ensemble is None or self.boosting == 0:
            return None
        logprobs = ensemble_logprobs(self.ensemble, inputs)
        divergence = distillation_loss_from_logprobs(
            logprobs, teacher_ids, teacher_logprobs, "fkl", 1.0, self.kd_args.kd_tail
        )
        weights = boosting_weights(divergence, self.boosting)
        mode = "train" if self.model.training else "eval"
        if weights.numel():
            self._metrics[mode]["boost_weight_max"].append(weights.max().item())
        return weights
