"""Log-likelihoods of continuations, each distinct context run through the model once.

lm-eval's HFLM runs every (context, continuation) pair in full, so a multiple-choice question's few-shot context is
prefilled once per choice and its logits are computed over the whole vocabulary at every context position (for
Gemma-3's 262k-token vocabulary that head costs as much as the rest of the model). Here a context is prefilled once,
keeping only its last position's logits, and its continuations run as one batch on a copy of its KV cache: the same
numbers as HFLM's (tests/test_loglikelihood.py), a fraction of the work.
"""

from __future__ import annotations

import inspect

import torch

from scalingdown.compat import kv_cache_argument


@torch.no_grad()
def continuation_loglikelihoods(model, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """For each (context ids, continuation ids): the summed log-probability of the continuation given the context,
    and whether greedy decoding would have produced it, in the order given (lm-eval's ``loglikelihood`` result)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (context, continuation) in enumerate(pairs):
        if not context or not continuation:
            raise ValueError("every context and continuation needs at least one token")
        groups.setdefault(tuple(context), []).append(index)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    device = model.device
    for context, indices in groups.items():
        prefill = model(input_ids=torch.tensor([context], device=device), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(prefill.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
        continuations = [pairs[i][1] for i in indices]
        width = max(len(c) for c in continuations) - 1
        rest = None
        if width:
            # the continuations but their last token, right-padded: a causal model's real positions never see padding
            rows = torch.tensor([c[:-1] + [c[0]] * (width - len(c) + 1) for c in continuations], device=device)
            cache = getattr(prefill, kv_cache_argument())
            if len(continuations) > 1:
                cache.batch_repeat_interleave(len(continuations))
            out = model(input_ids=rows, use_cache=True, **{kv_cache_argument(): cache})
            rest = torch.log_softmax(out.logits.float(), dim=-1)
        for row, (index, continuation) in enumerate(zip(indices, continuations, strict=True)):
            logprobs = first.unsqueeze(0)
            if len(continuation) > 1:
                logprobs = torch.cat([logprobs, rest[row, : len(continuation) - 1]])
            target = torch.tensor(continuation, device=device)
            total = float(logprobs.gather(1, target.unsqueeze(1)).sum())
            results[index] = (total, bool((logprobs.argmax(dim=-1) == target).all()))
    return results


def accepts_logits_to_keep(model) -> bool:
    """Whether ``model``'s forward can skip the vocabulary head over the context (transformers' causal LMs can)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters
