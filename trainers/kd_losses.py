"""Distillation losses on a teacher's top-k log-probs: forward/reverse KL, total variation, BiLD.

Every loss takes the student's logits over the full vocabulary and the teacher's top-k token ids and log-probs
(stored offline by ``make push-data LOGITS=k``, or computed online), at the same labelled positions, and returns
one value per position. Online and offline distillation call the same function, so they agree by construction;
with ``k`` equal to the vocabulary the KL losses are exactly the full-distribution ones.

The tail. The teacher's top-k log-probs are true log-probs over the whole vocabulary (stored before any
truncation), so the mass they leave out, ``1 - sum(exp(top-k))``, is known. Two ways to use it (``tail``):

* ``bucket`` (default): the distribution over ``k + 1`` outcomes, the k tokens and "anything else". The
  student's "anything else" is its own mass outside those k ids. This keeps both distributions normalised
  without inventing mass, is a lower bound of the full KL (grouping outcomes never increases a divergence),
  and tells the student how much it should spread outside the teacher's favourites.
* ``renormalize``: both distributions restricted to the k ids and renormalised (the common top-k KD recipe);
  the tail is dropped.

Temperature ``T`` divides the (bucket) log-probs before renormalising; KL losses are multiplied by ``T**2`` so
their gradients keep the NLL term's scale (Hinton et al., 2015). BiLD (Li et al., 2024, arXiv 2406.13555)
compares the pairwise differences of the top logits (differences of log-probs are the same numbers): the
teacher-led term over the teacher's top ``bild_k``, the student-led term over the student's top ``bild_k``,
KL between the softmaxes of the differences at temperature ``T`` (3 in the paper), summed. Offline, a
student-led id the teacher did not store gets the teacher's tail mass spread evenly over the unstored ids
(exact when k is the vocabulary).
"""

from __future__ import annotations

import math

import torch

KD_LOSSES = ("fkl", "rkl", "tvd", "bild")
TAILS = ("bucket", "renormalize")
MIN_TAIL = 1e-12  # a tail mass below this is rounding noise (e.g. k = vocabulary): clamped, never log(0)


def at_least_fp32(values: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 (float64 stays float64): half-precision log-softmax loses the tail."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler, 2012)."""
    x = x.clamp(max=math.log1p(-MIN_TAIL))
    near = x > -math.log(2)
    # Each branch sees only the inputs it is accurate on: ``where`` multiplies the other branch's gradient by 0,
    # and 0 * inf is NaN (log1p(-exp(x)) is -inf once a top-k mass rounds to 1 in float32).
    near_zero = torch.log(-torch.expm1(torch.where(near, x, -1.0)))
    far = torch.log1p(-torch.exp(torch.where(near, -1.0, x)))
    return torch.where(near, near_zero, far)


def bucket_logprobs(
    student_logprobs: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor, tail: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probs over the k teacher ids (+ the tail bucket), shape ``[N, k(+1)]``."""
    student_top = student_logprobs.gather(-1, teacher_ids)
    if tail == "renormalize":
        return teacher_logprobs.log_softmax(-1), student_top.log_softmax(-1)
    if tail != "bucket":
        raise ValueError(f"unknown tail handling {tail!r}; use one of {TAILS}")
    if teacher_ids.shape[-1] == student_logprobs.shape[-1]:
        return teacher_logprobs, student_top  # k = vocabulary: no tail at all
    teacher_tail = log1mexp(teacher_logprobs.logsumexp(-1, keepdim=True))
    student_tail = log1mexp(student_top.logsumexp(-1, keepdim=True))
    return torch.cat([teacher_logprobs, teacher_tail], -1), torch.cat([student_top, student_tail], -1)


def divergence(teacher: torch.Tensor, student: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-row divergence between two log-prob tensors over the same outcomes."""
    if loss == "fkl":
        return (teacher.exp() * (teacher - student)).sum(-1)
    if loss == "rkl":
        return (student.exp() * (student - teacher)).sum(-1)
    if loss == "tvd":
        return 0.5 * (teacher.exp() - student.exp()).abs().sum(-1)
    raise ValueError(f"unknown distillation loss {loss!r}; use one of {KD_LOSSES}")


def pair_differences(values: torch.Tensor) -> torch.Tensor:
    """``values[i] - values[j]`` for every pair ``i < j`` of the last dimension."""
    i, j = torch.triu_indices(values.shape[-1], values.shape[-1], offset=1, device=values.device)
    return values[..., i] - values[..., j]


def logit_difference_kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL between the softmaxes of the teacher's and the student's pairwise logit differences."""
    t = (pair_differences(teacher) / temperature).log_softmax(-1)
    s = (pair_differences(student) / temperature).log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1)


def bild_loss(
    student_logprobs: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float,
    bild_k: int = 8,
) -> torch.Tensor:
    """BiLD per position: teacher-led plus student-led logit-difference KL over the top ``bild_k``."""
    k = teacher_ids.shape[-1]
    if k < bild_k:
        raise ValueError(f"BiLD over the top {bild_k} needs at least {bild_k} stored teacher log-probs, got {k}")
    order = teacher_logprobs.argsort(-1, descending=True)[..., :bild_k]
    teacher_led = logit_difference_kl(
        teacher_logprobs.gather(-1, order), student_logprobs.gather(-1, teacher_ids.gather(-1, order)), temperature
    )
    student_top, student_ids = student_logprobs.topk(bild_k, dim=-1)
    match = student_ids.unsqueeze(-1) == teacher_ids.unsqueeze(-2)  # [N, bild_k, k]
    stored = (match * teacher_logprobs.unsqueeze(-2)).sum(-1)
    unstored = student_logprobs.shape[-1] - k
    if unstored:
        spread = log1mexp(teacher_logprobs.logsumexp(-1, keepdim=True)) - math.log(unstored)
        teacher_at_student = torch.where(match.any(-1), stored, spread)
    else:
        teacher_at_student = stored
    student_led = logit_difference_kl(teacher_at_student, student_top, temperature)
    return teacher_led + student_led


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    loss: str = "fkl",
    temperature: float = 1.0,
    tail: str = "bucket",
    bild_k: int = 8,
) -> torch.Tensor:
    """Per-position distillation loss ``[N]`` from student logits ``[N, V]`` and the teacher's top-k ``[N, k]``."""
    student_logprobs = at_least_fp32(student_logits).log_softmax(-1)
    return distillation_loss_from_logprobs(
        student_logprobs, teacher_ids, teacher_logprobs, loss, temperature, tail, bild_k
    )


def distillation_loss_from_logprobs(
    student_logprobs: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    loss: str = "fkl",
    temperature: float = 1.0,
    tail: str = "bucket",
    bild_k: int = 8,
) -> torch.Tensor:
    """``distillation_loss`` for a caller that already has the student's log-softmax (and reuses it for the NLL)."""
    teacher_logprobs = at_least_fp32(teacher_logprobs).to(student_logprobs.dtype)
    teacher_ids = teacher_ids.long()
    if loss == "bild":
        return bild_loss(student_logprobs, teacher_ids, teacher_logprobs, temperature, bild_k)
    teacher, student = bucket_logprobs(student_logprobs, teacher_ids, teacher_logprobs, tail)
    if temperature != 1.0:
        teacher, student = (teacher / temperature).log_softmax(-1), (student / temperature).log_softmax(-1)
    value = divergence(teacher, student, loss)
    return value * temperature**2 if loss in ("fkl", "rkl") else value


def teacher_top_k(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What offline storage keeps of a teacher's logits ``[N, V]``: top-k ids and log-probs, best first.

    ``k <= 0`` or ``k >= V`` keeps the whole vocabulary (ids in order, no sort needed).
    """
    logprobs = at_least_fp32(teacher_logits).log_softmax(-1)
    vocab = logprobs.shape[-1]
    if k <= 0 or k >= vocab:
        ids = torch.arange(vocab, device=logprobs.device).expand_as(logprobs)
        return ids, logprobs
    values, ids = logprobs.topk(k, dim=-1)
    return ids, values


def storage_fidelity(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, exact: torch.Tensor, stored: torch.Tensor
) -> dict[str, float]:
    """How much storing the teacher's log-probs (``stored`` vs ``exact``) moves the forward-KL loss of a fixed
    student and its gradient: ``{"exact", "stored", "relative", "cosine"}``."""
    results = []
    for values in (exact, stored):
        logits = student_logits.detach().clone().requires_grad_(True)
        loss = distillation_loss(logits, teacher_ids, values, "fkl").mean()
        loss.backward()
        results.append((loss.item(), logits.grad.flatten().double()))
    (loss_exact, grad_exact), (loss_stored, grad_stored) = results
    return {
        "exact": loss_exact,
        "stored": loss_stored,
        "relative": abs(loss_stored - loss_exact) / loss_exact,
        "cosine": torch.nn.functional.cosine_similarity(grad_exact, grad_stored, dim=0).item(),
    }
