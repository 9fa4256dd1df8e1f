"""The corpus repo's dataset card, rendered from ``model_cards/corpus_card.md``."""

from __future__ import annotations

import re
from dataclasses import asdict

from huggingface_hub import DatasetCard, DatasetCardData

from datasets_builders.corpus.arguments import CorpusArguments, Document
from datasets_builders.corpus.filters import BOILERPLATE_PATTERNS, REASONS, FilterReport
from datasets_builders.corpus.topics import STYLES, TOPICS, synthetic_requests
from model_cards import template_path
from scalingdown.hub import HubTarget

_WORD = re.compile(r"\w+")


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def render_card(
    args: CorpusArguments,
    target: HubTarget,
    repo: str,
    kept: list[Document],
    report: FilterReport,
    teachers: list[dict],
    card_meta: dict,
) -> DatasetCard:
    """The card: sources and their counts, how synthetic documents were asked for, filters, decontamination."""
    synthetic = "synthetic" in args.source_list
    example = synthetic_requests(1, args.seed)[0].prompt if synthetic else None
    card_data = DatasetCardData(
        pretty_name="ScalingDown pre-training corpus",
        license="other",
        language=["en"],
        task_categories=["text-generation"],
        tags=["scalingdown", "pretraining", "synthetic" if synthetic else "text"],
        size_categories=[size_category(len(kept))],
        **card_meta,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=template_path("corpus_card.md"),
        repo_location=target.location("dataset", repo),
        num_documents=len(kept),
        num_words=sum(len(_WORD.findall(d.text)) for d in kept),
        num_chars=sum(len(d.text) for d in kept),
        sources=report.rows(),
        args=args,
        teachers=teachers,
        topics=TOPICS,
        styles=list(STYLES),
        example_instruction=example.messages[0]["content"] if example else "",
        example_opening=example.text if example else "",
        generation_settings=", ".join(f"{k}={v}" for k, v in asdict(args.generation_settings()).items()),
        reasons=REASONS,
        near_duplicate_method=report.near_duplicate_method,
        refusal_patterns=BOILERPLATE_PATTERNS,
        decontamination=report.decontamination,
        not_checked=report.not_checked,
    )
