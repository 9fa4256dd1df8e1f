"""The KD objective through the LM head one chunk of positions at a time, so ``[N, V]`` logits never exist whole.

With a 49k (SmolLM2) or 150k+ (Qwen, Gemma) vocabulary, the student's logits at the labelled positions are a
large part of a distillation step's memory: the logits, their log-softmax, and in the backward pass their
gradients, each ``N x V x 4`` bytes. The teacher's top-k are small (``N x k``), so offline KD only needs the
student's full distribution one position at a time (bench/bench_kd.py measures the saving).

``ChunkedDistillation`` computes, chunk by chunk of ``chunk_tokens`` positions, the head's logits, the same
per-token KD and NLL terms as ``trainers.kd_losses`` (one log-softmax for both), their weighted sum, and, in the
same pass, that sum's gradients with respect to the hidden states and the head weight (the approach of Liger
Kernel's fused linear losses). Backward only scales the stored gradients, so the FLOPs are those of the
unchunked head (one matmul forward, two backward) and the peak is a few ``chunk_tokens x V`` tensors plus one
float32 ``[V, H]`` running sum of the head's gradient. The result is exact: a test checks loss and every
gradient against the unchunked computation.

``online_top_k`` does the same for an online teacher: its top-k per chunk, never its ``[N, V]`` logits at once
(except with k = vocabulary, where the loss needs them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

from trainers.cross_tokenizer import cross_loss
from trainers.kd_losses import at_least_fp32, distillation_loss_from_logprobs, teacher_top_k

DEFAULT_CHUNK_TOKENS = 128  # 128 x 49152 x 4 bytes = 25 MB per chunk tensor


@dataclass(frozen=True)
class KDObjective:
    """``alpha * KD + (1 - alpha) * NLL`` per labelled token, and how KD is computed (see ``trainers.kd_losses``)."""

    alpha: float = 0.5
    kd_loss: str = "fkl"
    temperature: float = 1.0
    kd_tail: str = "bucket"
    bild_k: int = 8
    kd_weight: float = 1.0  # this teacher's share of the KD term when other (cross-tokenizer) teachers teach too


@dataclass
class CrossTargets:
    """A teacher with another tokenizer, at its G text-aligned groups (``trainers.cross_tokenizer``): each group's
    first labelled position, its later positions and their group, and the teacher's top-k and rest log-prob."""

    first: torch.Tensor  # [G] index into the N labelled positions
    rest_index: torch.Tensor  # [R] the groups' later labelled positions
    rest_group: torch.Tensor  # [R] the group each belongs to
    teacher_ids: torch.Tensor  # [G, k]
    teacher_logprobs: torch.Tensor  # [G, k]
    teacher_rest: torch.Tensor  # [G]
    loss: str = "uld"
    weight: float = 1.0  # share of the KD term
    twins: torch.Tensor | None = None  # hybrid: teacher id -> student id or -1


@dataclass
class DistillationTargets:
    """What the student's forward needs for the KD objective at its N labelled positions (``distillation=``)."""

    teacher_ids: torch.Tensor  # [N, k]
    teacher_logprobs: torch.Tensor  # [N, k]
    objective: KDObjective
    token_weights: torch.Tensor | None = None  # [N], or None for uniform
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # 0: every labelled position in one chunk
    cross: list[CrossTargets] = field(default_factory=list)  # teachers with other tokenizers


@dataclass
class KDTerms(ModelOutput):
    """Sums over the labelled tokens: the weighted objective (differentiable) and the per-term metrics (not).

    A ``ModelOutput``, because the student's forward returns it (``distillation=``), with the labelled ``[B, L-1]``
    positions in ``label_mask``.
    """

    objective: torch.Tensor | None = None
    kd: torch.Tensor | None = None
    nll: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    cross: torch.Tensor | None = None  # the cross-tokenizer teachers' weighted loss (a metric)
    label_mask: torch.Tensor | None = None


def _chunk_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    token_weights: torch.Tensor | None,
    objective: KDObjective,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weighted objective sum, per-token kd, per-token nll, logprobs)`` of one chunk's float32 logits."""
    logprobs = logits.log_softmax(-1)
    if teacher_ids.shape[-1]:
        kd = distillation_loss_from_logprobs(
            logprobs,
            teacher_ids,
            teacher_logprobs,
            objective.kd_loss,
            objective.temperature,
            objective.kd_tail,
            objective.bild_k,
        )
    else:  # no teacher shares the student's tokenizer: only cross-tokenizer ones teach
        kd = logprobs.new_zeros(len(logprobs))
    nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    terms = objective.alpha * objective.kd_weight * kd + (1 - objective.alpha) * nll
    if token_weights is not None:
        terms = terms * token_weights
    return terms.sum(), kd, nll, logprobs


class ChunkedDistillation(torch.autograd.Function):
    """Sums of the KD objective over N labelled positions from hidden states ``[N, H]`` and the head ``[V, H]``.

    Forward also computes the objective sum's gradients, chunk by chunk: autograd gives the gradient of the
    chunk's logits, and two matmuls turn it into the hidden states' rows and a running sum of the head's
    gradient (``addmm_`` in place, no per-chunk ``[V, H]`` copy). Backward only scales them.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, teacher_ids, teacher_logprobs, token_weights, objective, chunk):
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_grad = need_hidden or need_weight or need_bias
        acc = torch.promote_types(weight.dtype, torch.float32)  # sums and the head's gradient: float32 or better
        grad_hidden = torch.empty_like(hidden) if need_hidden else None  # each row written once
        grad_weight = torch.zeros_like(weight, dtype=acc) if need_weight else None  # summed over chunks
        grad_bias = torch.zeros_like(bias, dtype=acc) if need_bias else None
        sums = torch.zeros(5, dtype=acc, device=hidden.device)  # objective, kd, nll, correct, entropy
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            h = hidden[part]
            logits = at_least_fp32(F.linear(h, weight, bias)).requires_grad_(need_grad)
            weights = None if token_weights is None else token_weights[part]
            with torch.set_grad_enabled(need_grad):
                total, kd, nll, logprobs = _chunk_terms(
                    logits, targets[part], teacher_ids[part], teacher_logprobs[part], weights, objective
                )
            if need_grad:
                (grad_logits,) = torch.autograd.grad(total, logits)
                if need_hidden:
                    grad_hidden[part] = grad_logits.to(weight.dtype) @ weight
                if need_weight:
                    if acc == weight.dtype:
                        grad_weight.addmm_(grad_logits.T, h.to(acc))
                    else:  # half-precision head: the matmul in its dtype, the running sum in float32
                        grad_weight += grad_logits.to(weight.dtype).T @ h
                if need_bias:
                    grad_bias += grad_logits.sum(0)
                del grad_logits
            with torch.no_grad():
                correct = (logprobs.argmax(-1) == targets[part]).sum()
                entropy = -(logprobs.exp() * logprobs).sum()
                sums += torch.stack([total.detach(), kd.sum().detach(), nll.sum().detach(), correct, entropy]).to(acc)
        ctx.grads = [
            None if grad is None else (grad, like.dtype)
            for grad, like in ((grad_hidden, hidden), (grad_weight, weight), (grad_bias, bias))
        ]
        metrics = sums[1:].clone()
        ctx.mark_non_differentiable(metrics)
        return sums[0].clone(), metrics

    @staticmethod
    def backward(ctx, grad_objective, _grad_metrics):
        scaled = [None if g is None else g[0].mul_(grad_objective).to(g[1]) for g in ctx.grads]  # in place: used once
        ctx.grads = None
        return (*scaled, None, None, None, None, None, None)


def _chunk_size(chunk_tokens: int, positions: int) -> int:
    """Positions per chunk; 0 puts all of them in one."""
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be 0 (one chunk) or positive, got {chunk_tokens}")
    return chunk_tokens or max(1, positions)


def chunked_kd_terms(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    objective: KDObjective,
    token_weights: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> KDTerms:
    """The KD objective's sums over the N labelled positions (``hidden [N, H]``), through the linear ``head``,
    ``chunk_tokens`` positions at a time (0: all at once)."""
    chunk_tokens = _chunk_size(chunk_tokens, hidden.shape[0])
    bias = getattr(head, "bias", None)
    if token_weights is not None:
        token_weights = at_least_fp32(token_weights.detach())
    value, metrics = ChunkedDistillation.apply(
        hidden, head.weight, bias, targets, teacher_ids, teacher_logprobs, token_weights, objective, chunk_tokens
    )
    kd, nll, correct, entropy = metrics.unbind()
    return KDTerms(objective=value, kd=kd, nll=nll, correct=correct, entropy=entropy)


def cross_terms(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    cross: CrossTargets,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """Sum over the groups of one cross-tokenizer teacher's loss, from the labelled hidden states ``[N, H]``.

    The student's log-probs of its own later tokens in each group merge into the group's first position
    (``trainers.cross_tokenizer``); each chunk of groups is recomputed in the backward pass (checkpointed), so
    the peak holds one chunk's ``[groups, V]`` logits."""
    rest = at_least_fp32(head(hidden[cross.rest_index])).log_softmax(-1)
    rest = rest.gather(-1, targets[cross.rest_index].unsqueeze(-1)).squeeze(-1)
    student_rest = rest.new_zeros(len(cross.first)).index_add(0, cross.rest_group, rest)

    def chunk_loss(h, s_rest, ids, values, t_rest):
        logprobs = at_least_fp32(head(h)).log_softmax(-1)
        return cross_loss(cross.loss, logprobs, s_rest, ids, values, t_rest, cross.twins).sum()

    total = hidden.new_zeros((), dtype=torch.float32)
    size = _chunk_size(chunk_tokens, len(cross.first))
    for start in range(0, len(cross.first), size):
        part = slice(start, start + size)
        args = (
            hidden[cross.first[part]],
            student_rest[part],
            cross.teacher_ids[part],
            at_least_fp32(cross.teacher_logprobs[part]),
            at_least_fp32(cross.teacher_rest[part]),
        )
        total = total + checkpoint(chunk_loss, *args, use_reentrant=False)
    return total


@torch.no_grad()
def online_top_k(
    hidden: torch.Tensor, head: torch.nn.Module, k: int, chunk_tokens: int = DEFAULT_CHUNK_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's top-k ids and log-probs ``[N, k]`` at its labelled hidden states ``[N, H]``, chunk by chunk.

    ``k <= 0`` or ``k >= V`` keeps the whole vocabulary, as ``teacher_top_k`` does (the ids are then never stored).
    """
    vocab = head.weight.shape[0]
    chunks = hidden.split(_chunk_size(chunk_tokens, hidden.shape[0]))
    if k <= 0 or k >= vocab:
        logprobs = torch.cat([at_least_fp32(head(h)).log_softmax(-1) for h in chunks])
        return torch.arange(vocab, device=logprobs.device).expand_as(logprobs), logprobs
    parts = [teacher_top_k(head(h), k) for h in chunks]
    return torch.cat([ids for ids, _ in parts]), torch.cat([values for _, values in parts])
