"""Shared-context log-likelihoods: the same numbers as scoring every (context, continuation) pair in full."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from eval.loglikelihood import accepts_logits_to_keep, continuation_loglikelihoods


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma3() -> Gemma3ForCausalLM:
    """Gemma-3's layout: a sliding-window layer whose window (4) is shorter than the contexts scored."""
    config = Gemma3TextConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )
    return Gemma3ForCausalLM(config).eval()


@torch.no_grad()
def full_pass(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """lm-eval's way: the whole sequence through the model, the continuation's tokens read off its logits."""
    logits = model(input_ids=torch.tensor([context + continuation[:-1]])).logits[0, len(context) - 1 :]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(continuation)
    return float(logprobs.gather(1, target.unsqueeze(1)).sum()), bool((logprobs.argmax(-1) == target).all())


@torch.no_grad()
def greedy(model, context: list[int], steps: int) -> list[int]:
    ids = list(context)
    for _ in range(steps):
        ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(context) :]


@pytest.mark.parametrize("build", [tiny_llama, tiny_gemma3])
def test_shared_context_scores_match_full_passes(build):
    torch.manual_seed(0)
    model = build()
    assert accepts_logits_to_keep(model)
    question = [3, 17, 9, 22, 41, 5, 8, 30, 12, 7]  # longer than Gemma's window
    other = [4, 4, 19]
    pairs = [
        (question, [11, 2, 6]),
        (other, [13]),
        (question, [25]),  # one token: only the context's last position scores it
        (question, greedy(model, question, 4)),  # the model's own continuation is greedy
        (question, [30, 31, 32, 33, 34, 35]),
        (other, greedy(model, other, 2)),
    ]
    got = continuation_loglikelihoods(model, pairs)
    want = [full_pass(model, c, k) for c, k in pairs]
    for (logprob, is_greedy), (want_logprob, want_greedy) in zip(got, want, strict=True):
        assert logprob == pytest.approx(want_logprob, abs=1e-4)
        assert is_greedy == want_greedy
    assert [g for _, g in got] == [False, False, False, True, False, True]
    assert all(logprob < 0 for logprob, _ in got)


def test_empty_continuation_is_refused():
    with pytest.raises(ValueError, match="at least one token"):
        continuation_loglikelihoods(tiny_llama(), [([1, 2], [])])


def test_lm_eval_requests_go_through_shared_context_scoring(tiny_teacher_dir, monkeypatch):
    """The eval's HFLM scores lm-eval's own log-likelihood requests this way, with HFLM's numbers."""
    from lm_eval.api.instance import Instance

    import eval.measure

    scored = []

    def counted(model, pairs):
        scored.append(len(pairs))
        return continuation_loglikelihoods(model, pairs)

    monkeypatch.setattr(eval.measure, "continuation_loglikelihoods", counted)
    lm = eval.measure.timed_lm_class()(pretrained=str(tiny_teacher_dir), device="cpu", dtype="float32", batch_size=4)
    context = "Question: Which is a metal?\nAnswer:"
    requests = [
        Instance("loglikelihood", doc={}, arguments=(context, f" {choice}"), idx=i)
        for i, choice in enumerate(["iron", "wood", "glass", "a piece of paper"])
    ]
    got = lm.loglikelihood(requests, disable_tqdm=True)
    assert scored == [4]
    lm.share_contexts = False  # HFLM's own scoring, every pair in full
    want = lm.loglikelihood(requests, disable_tqdm=True)
    assert scored == [4]
    assert [g for _, g in got] == [g for _, g in want]
    assert [logprob for logprob, _ in got] == pytest.approx([logprob for logprob, _ in want], abs=1e-4)
    assert [c["kind"] for c in lm.calls] == ["loglikelihood", "loglikelihood"]
