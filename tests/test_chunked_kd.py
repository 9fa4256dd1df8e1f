"""The chunked KD objective equals the unchunked one (value, metrics, every gradient) and never holds [N, V] logits."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainers.chunked_kd import KDObjective, chunked_kd_terms, online_top_k
from trainers.kd_losses import KD_LOSSES, distillation_loss_from_logprobs, teacher_top_k

N, H, V, K = 37, 16, 300, 8


def problem(bias: bool = False, dtype=torch.float64, seed: int = 0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(H, V, bias=bias).to(dtype)
    hidden = torch.randn(N, H, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, V, (N,))
    ids, logprobs = teacher_top_k(torch.randn(N, V, dtype=dtype) * 3, K)
    return head, hidden, targets, ids, logprobs


def reference(head, hidden, targets, ids, teacher, objective: KDObjective, weights=None):
    """The unchunked objective, written as KDTrainer computed it before chunking."""
    logprobs = head(hidden).log_softmax(-1)
    kd = distillation_loss_from_logprobs(
        logprobs, ids, teacher, objective.kd_loss, objective.temperature, objective.kd_tail, objective.bild_k
    )
    nll = -logprobs.gather(-1, targets[:, None]).squeeze(-1)
    terms = objective.alpha * kd + (1 - objective.alpha) * nll
    entropy = -(logprobs.exp() * logprobs).sum()
    correct = (logprobs.argmax(-1) == targets).sum()
    return (terms if weights is None else terms * weights).sum(), kd.sum(), nll.sum(), correct, entropy


def gradients(value: torch.Tensor, head, hidden) -> list[torch.Tensor]:
    hidden.grad = None
    head.zero_grad()
    (value * 1.7).backward()  # a scale downstream (the 1/count of the trainer) reaches every gradient
    grads = [hidden.grad, head.weight.grad] + ([head.bias.grad] if head.bias is not None else [])
    return [g.clone() for g in grads]


@pytest.mark.parametrize("loss", KD_LOSSES)
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_objective_and_gradients_equal_the_unchunked_ones(loss, bias):
    head, hidden, targets, ids, teacher = problem(bias)
    objective = KDObjective(alpha=0.3, kd_loss=loss, temperature=2.0 if loss != "bild" else 3.0)
    weights = torch.rand(N, dtype=torch.float64)
    expected = reference(head, hidden, targets, ids, teacher, objective, weights)
    expected_grads = gradients(expected[0], head, hidden)
    for chunk in (1, 7, N, 1000, 0):  # 0: one chunk
        terms = chunked_kd_terms(hidden, head, targets, ids, teacher, objective, weights, chunk_tokens=chunk)
        got = (terms.objective, terms.kd, terms.nll, terms.correct, terms.entropy)
        for name, a, b in zip(("objective", "kd", "nll", "correct", "entropy"), got, expected, strict=True):
            assert a.item() == pytest.approx(b.item(), rel=1e-12, abs=1e-12), (name, chunk)
        for a, b in zip(gradients(terms.objective, head, hidden), expected_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_frozen_head_gets_no_gradient_and_the_hidden_states_still_do():
    head, hidden, targets, ids, teacher = problem()
    head.requires_grad_(False)  # PEFT: the LM head stays frozen
    terms = chunked_kd_terms(hidden, head, targets, ids, teacher, KDObjective(), chunk_tokens=5)
    terms.objective.backward()
    assert head.weight.grad is None and hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_no_labelled_position_gives_a_differentiable_zero():
    head, hidden, targets, ids, teacher = problem()
    terms = chunked_kd_terms(hidden[:0], head, targets[:0], ids[:0], teacher[:0], KDObjective(), chunk_tokens=4)
    terms.objective.backward()
    assert terms.objective.item() == 0.0 and head.weight.grad.abs().sum() == 0


def test_without_grad_the_values_are_the_same():
    head, hidden, targets, ids, teacher = problem()
    objective = KDObjective(alpha=0.5)
    with torch.no_grad():
        terms = chunked_kd_terms(hidden, head, targets, ids, teacher, objective, chunk_tokens=6)
        expected = reference(head, hidden, targets, ids, teacher, objective)
    assert terms.objective.item() == pytest.approx(expected[0].item(), rel=1e-12)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_no_operation_creates_more_than_one_chunk_of_logits():
    head, hidden, targets, ids, teacher = problem(dtype=torch.float32)
    with LargestTensor() as whole:
        chunked_kd_terms(hidden, head, targets, ids, teacher, KDObjective(), chunk_tokens=N).objective.backward()
    with LargestTensor() as chunked:
        chunked_kd_terms(hidden, head, targets, ids, teacher, KDObjective(), chunk_tokens=4).objective.backward()
    assert whole.numel == N * V  # the unchunked computation holds [N, V] logits
    assert chunked.numel <= max(4 * V, V * H)  # chunked: one chunk's logits, or the head's [V, H] gradient


@pytest.mark.parametrize("k", [0, 5, V])
def test_online_top_k_by_chunks_equals_the_whole_batch(k):
    head, hidden, *_ = problem(dtype=torch.float32)
    with torch.no_grad():
        expected_ids, expected = teacher_top_k(head(hidden), k)
        ids, logprobs = online_top_k(hidden, head, k, chunk_tokens=6)
    torch.testing.assert_close(logprobs, expected)
    assert torch.equal(ids, expected_ids)
