"""Logit distillation across tokenizers: a teacher whose vocabulary is not the student's (Gemma-3's 262k ids
against SmolLM2's 49k), read from its stored top-k like any other (``make push-data LOGITS=16 LOGITS_TEACHERS=...``).

**Alignment** (as TRL's GOLD trainer does). Teacher and student tokenize the same assistant text differently, so
their positions are matched by text: both token sequences are cut wherever both have a token boundary, which gives
groups of one or more student tokens spelling exactly what one or more teacher tokens spell ("12" | " *" | " 4"
against "1" "2" | " *" | " " "4"). Each group is compared once, at its first token, where both models have read the
same text. A group of several tokens is **merged** by the chain rule: the probability that the group opens with
token ``v`` and then continues as written is ``p_first(v) * prod p(next written token)``, so each side's
distribution at the first token is scaled by the probability of the rest of its own tokens (the teacher's rest
comes from the stored log-prob of each written token, ``token_logprob``).

**Losses** on the merged distributions (``kd_cross_loss``):

* ``uld``, Universal Logit Distillation (Boizard et al., 2024, arXiv 2402.12030): the L1 distance between the two
  distributions sorted by probability, which needs no mapping between vocabularies. With stored top-k the sorted
  vectors are the top-k probabilities and the mass outside them (one more entry).
* ``hybrid``, as GOLD's hybrid loss: the teacher ids whose text is also one student token (most of a small
  vocabulary, digits and common words) are compared directly with a forward KL over those tokens plus a bucket for
  everything else (the same bucket as same-tokenizer KD, so with identical tokenizers it *is* that loss); the
  teacher ids without a student twin are compared by ULD against the student's best tokens outside the matched ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.kd_losses import divergence, log1mexp

CROSS_LOSSES = ("uld", "hybrid")


def char_ends(tokenizer, ids: list[int]) -> list[int]:
    """The end of each token in the text the ids spell (characters of the decoded prefix).

    Decoding prefixes, not offset mappings: byte-level and SentencePiece tokenizers report offsets differently
    (leading spaces trimmed or not), but both decode a prefix to exactly its text.
    """
    return [
        len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        for i in range(len(ids))
    ]


def token_chars(tokenizer, ids: list[int]) -> list[int]:
    """Characters each token adds to the text (what a logits config stores: small numbers, cheap to keep)."""
    ends = char_ends(tokenizer, ids)
    return [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]


@dataclass(frozen=True)
class Group:
    """Student tokens ``[s_start, s_end)`` spell what teacher tokens ``[t_start, t_end)`` spell."""

    s_start: int
    s_end: int
    t_start: int
    t_end: int


def align(student_ends: list[int], teacher_ends: list[int]) -> list[Group]:
    """Groups cut at every character offset where both tokenizations end a token.

    A token that ends nowhere the other side does (a decoding artefact) joins the next group, and whatever is left
    when one side runs out joins the last group, so every token of both sides is in exactly one group.
    """
    groups: list[Group] = []
    i = j = si = tj = 0
    while i < len(student_ends) and j < len(teacher_ends):
        if student_ends[i] == teacher_ends[j]:
            groups.append(Group(si, i + 1, tj, j + 1))
            i, j = i + 1, j + 1
            si, tj = i, j
        elif student_ends[i] < teacher_ends[j]:
            i += 1
        else:
            j += 1
    if si < len(student_ends) or tj < len(teacher_ends):
        if groups and (si == len(student_ends) or tj == len(teacher_ends)):
            last = groups.pop()
            si, tj = last.s_start, last.t_start
        if si < len(student_ends) and tj < len(teacher_ends):
            groups.append(Group(si, len(student_ends), tj, len(teacher_ends)))
    return groups


def vocabulary_map(teacher_tokenizer, student_tokenizer) -> torch.Tensor:
    """``[V_teacher]``: the student id whose text is the same as each teacher id's, or -1.

    Texts are single-token decodes; tokens that decode to a partial character (byte fallback) have no twin.
    """

    def texts(tokenizer) -> list[str]:
        return tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)

    student: dict[str, int] = {}
    for index, text in enumerate(texts(student_tokenizer)):
        if text and "\ufffd" not in text:
            student.setdefault(text, index)
    return torch.tensor([student.get(t, -1) if "\ufffd" not in t else -1 for t in texts(teacher_tokenizer)])


def uld_loss(
    student_logprobs: torch.Tensor,
    student_rest: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_rest: torch.Tensor,
) -> torch.Tensor:
    """ULD per group ``[G]``: L1 between the merged distributions sorted by probability, top-k plus the rest.

    ``student_logprobs [G, V]`` at each group's first token, ``teacher_logprobs [G, k]`` (best first),
    ``*_rest [G]`` the log-probability of the rest of each side's group.
    """
    k = min(teacher_logprobs.shape[-1], student_logprobs.shape[-1])
    teacher_top = teacher_logprobs.sort(-1, descending=True).values
    student_top = student_logprobs.topk(k, dim=-1).values
    if teacher_top.shape[-1] > k:  # more teacher ranks than student tokens: the student has zeros there
        pad = student_top.new_full((len(student_top), teacher_top.shape[-1] - k), -torch.inf)
        student_top = torch.cat([student_top, pad], -1)
    # the mass outside the compared ranks, on each side (about 1e-12 when both are whole vocabularies)
    teacher = torch.cat([teacher_top, log1mexp(teacher_top.logsumexp(-1, keepdim=True))], -1)
    student = torch.cat([student_top, log1mexp(student_top.logsumexp(-1, keepdim=True))], -1)
    return ((student + student_rest[:, None]).exp() - (teacher + teacher_rest[:, None]).exp()).abs().sum(-1)


def hybrid_loss(
    student_logprobs: torch.Tensor,
    student_rest: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_rest: torch.Tensor,
    twins: torch.Tensor,
) -> torch.Tensor:
    """GOLD-style hybrid per group ``[G]``: bucketed forward KL on the teacher ids with a student twin (``twins``
    from :func:`vocabulary_map`), plus ULD between the teacher's other ids and the student's other best ids."""
    mapped = twins[teacher_ids]  # [G, k], -1 where the teacher id has no twin
    matched = mapped >= 0
    neg_inf = torch.finfo(student_logprobs.dtype).min
    teacher_matched = torch.where(matched, teacher_logprobs + teacher_rest[:, None], neg_inf)
    student_matched = torch.where(
        matched, student_logprobs.gather(-1, mapped.clamp(min=0)) + student_rest[:, None], neg_inf
    )
    # the bucket: everything but the matched joint events, on each side
    teacher = torch.cat([teacher_matched, log1mexp(teacher_matched.logsumexp(-1, keepdim=True))], -1)
    student = torch.cat([student_matched, log1mexp(student_matched.logsumexp(-1, keepdim=True))], -1)
    kl = divergence(teacher, student, "fkl")
    unmatched = ~matched
    if not unmatched.any():
        return kl
    # ULD on the rest: the teacher's unmatched probabilities, sorted, against the student's best ids outside the
    # matched ones, rank by rank (as many ranks as the teacher has unmatched ids at that group)
    teacher_other = torch.where(unmatched, teacher_logprobs, -torch.inf).sort(-1, descending=True).values
    hits = torch.zeros_like(student_logprobs, dtype=torch.int32).scatter_add_(-1, mapped.clamp(min=0), matched.int())
    excluded = hits > 0
    k = teacher_ids.shape[-1]
    student_other = student_logprobs.masked_fill(excluded, -torch.inf).topk(k, dim=-1).values
    ranks = torch.arange(k, device=teacher_ids.device) < unmatched.sum(-1, keepdim=True)
    gap = (student_other + student_rest[:, None]).exp() - (teacher_other + teacher_rest[:, None]).exp()
    return kl + torch.where(ranks, gap.abs(), 0.0).sum(-1)


def cross_loss(
    name: str,
    student_logprobs: torch.Tensor,
    student_rest: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_rest: torch.Tensor,
    twins: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-group loss ``name`` (one of :data:`CROSS_LOSSES`)."""
    if name == "uld":
        return uld_loss(student_logprobs, student_rest, teacher_logprobs, teacher_rest)
    if name == "hybrid":
        if twins is None:
            raise ValueError("the hybrid loss needs the vocabulary map (vocabulary_map)")
        return hybrid_loss(student_logprobs, student_rest, teacher_ids, teacher_logprobs, teacher_rest, twins)
    raise ValueError(f"unknown cross-tokenizer loss {name!r}; use one of {CROSS_LOSSES}")
