"""The corpus filters, in order: too short, refusal or boilerplate, exact duplicate, near duplicate, contaminated.

A dropped document is counted under the first filter it fails, per source, so the card's counts add up.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from datasets_builders.corpus.arguments import CorpusArguments, Document
from datasets_builders.corpus.dedup import NearDuplicateIndex, exact_key
from datasets_builders.corpus.eval_overlap import EvalQuestions, contaminated_documents
from datasets_builders.rationales import REFUSAL_PATTERNS

# Dolphin-style: instruction data that refuses, moralises or talks about being an AI teaches a base model the
# same habits. The refusal patterns are the rationale filter's; these add the moralising boilerplate.
MORALISING_PATTERNS = [
    r"\bit(?:'s| is) (?:important|crucial|essential) to (?:note|remember|consider) that\b",
    r"\b(?:ethical|safety) guidelines\b",
    r"\bI (?:do not|don't) have (?:personal )?(?:opinions|feelings|beliefs|emotions)\b",
    r"\b(?:it is|it's) not appropriate\b",
    r"\bagainst my programming\b",
    r"\bI cannot fulfill\b",
    r"\bOpenAI\b",
]
BOILERPLATE_PATTERNS = REFUSAL_PATTERNS + MORALISING_PATTERNS
_BOILERPLATE_RE = re.compile("|".join(BOILERPLATE_PATTERNS), re.IGNORECASE)

REASONS = {
    "too_short": "fewer characters than --min_chars",
    "refusal": "a refusal or moralising boilerplate (Dolphin-style patterns)",
    "exact_duplicate": "the same normalised words as an earlier document",
    "near_duplicate": "estimated Jaccard similarity of word 5-grams with an earlier document >= the threshold",
    "contaminated": "overlaps a test question of an eval task (see Decontamination)",
}


@dataclass
class FilterReport:
    """What each source gave and lost, and the overlap found with each eval task."""

    sources: dict[str, Counter] = field(default_factory=dict)  # source -> {"read": n, "kept": n, <reason>: n}
    decontamination: list[dict] = field(default_factory=list)
    not_checked: dict[str, str] = field(default_factory=dict)
    near_duplicate_method: str = ""

    def count(self, source: str, what: str) -> None:
        self.sources.setdefault(source, Counter())[what] += 1

    def rows(self) -> list[dict]:
        return [
            {
                "source": source,
                "read": counts["read"],
                "kept": counts["kept"],
                "dropped": {r: counts[r] for r in REASONS if counts[r]},
            }
            for source, counts in self.sources.items()
        ]


def filter_documents(
    documents: Iterable[Document], args: CorpusArguments, evaluation: list[EvalQuestions]
) -> tuple[list[Document], FilterReport]:
    """Apply the filters in order; the first one a document fails names its reason."""
    report = FilterReport()
    seen: set[str] = set()
    near = NearDuplicateIndex(args.near_duplicate_threshold, seed=args.seed) if args.dedup_near else None
    report.near_duplicate_method = near.describe() if near else ""
    survivors: list[Document] = []
    for doc in documents:
        report.count(doc.source, "read")
        text = doc.text.strip()
        if len(text) < args.min_chars:
            report.count(doc.source, "too_short")
            continue
        if args.filter_refusals and _BOILERPLATE_RE.search(text):
            report.count(doc.source, "refusal")
            continue
        if args.dedup_exact:
            key = exact_key(text)
            if key in seen:
                report.count(doc.source, "exact_duplicate")
                continue
            seen.add(key)
        if near is not None and near.add(doc.id, text) is not None:
            report.count(doc.source, "near_duplicate")
            continue
        survivors.append(Document(doc.id, doc.source, text))
    dropped: dict[str, str] = {}
    if args.decontaminate:
        for task in evaluation:
            pairs = contaminated_documents(survivors, task, args.ngram)
            for doc_id, question_id in pairs.items():
                dropped.setdefault(doc_id, question_id)
            report.decontamination.append(
                {
                    "task": task.task,
                    "source": task.source,
                    "test_questions": len(task.questions),
                    "rule": task.rule(args.ngram),
                    "documents": len(pairs),
                    "examples": list(pairs.items())[:3],
                }
            )
    kept = []
    for doc in survivors:
        if doc.id in dropped:
            report.count(doc.source, "contaminated")
        else:
            report.count(doc.source, "kept")
            kept.append(doc)
    return kept, report
