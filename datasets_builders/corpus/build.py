"""The corpus stage: generate (or resume) the synthetic documents, read the other sources, filter, push the repo."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

from datasets import Features, Value

from datasets_builders.corpus.arguments import CorpusArguments
from datasets_builders.corpus.card import render_card
from datasets_builders.corpus.eval_overlap import load_eval_questions
from datasets_builders.corpus.filters import FilterReport, filter_documents
from datasets_builders.corpus.sources import generate_documents, read_sources
from datasets_builders.teachers import check_teacher_spec
from scalingdown.arguments import ArgumentError, parse_recipe
from scalingdown.dataset_repo import RepoConfig, write_data_files
from scalingdown.hub import HubTarget

CORPUS_FEATURES = Features({"id": Value("string"), "source": Value("string"), "text": Value("string")})


def print_summary(report: FilterReport, kept: int, where: str) -> None:
    header = f"{'source':<40}{'read':>8}{'kept':>8}  dropped"
    print("\n" + header + "\n" + "-" * len(header))
    for row in report.rows():
        dropped = ", ".join(f"{k}={v}" for k, v in row["dropped"].items()) or "-"
        print(f"{row['source']:<40}{row['read']:>8}{row['kept']:>8}  {dropped}")
    for task in report.decontamination:
        print(
            f"decontamination {task['task']}: {task['documents']} documents overlap its {task['test_questions']} "
            f"test questions"
            + (f" (e.g. {task['examples'][0][0]} ~ {task['examples'][0][1]})" if task["examples"] else "")
        )
    for task, why in report.not_checked.items():
        print(f"decontamination {task}: not checked ({why})")
    print(f"\n{kept} documents -> {where}")


def main(args: CorpusArguments) -> str | None:
    """Generate (or resume) the synthetic documents, read the other sources, filter, and push the corpus repo."""
    target = HubTarget.from_env(args.hub_target, args.org, args.hub_dir)
    target.check_writable()
    target.repo_id(args.corpus_repo)  # a name the Hub would refuse fails here, not after the build
    if args.task_data is not None and not Path(args.task_data).exists():
        raise ArgumentError(f"DATA={args.task_data} (--task_data): no such file or folder")
    if "synthetic" in args.source_list:
        for spec in args.teacher_specs:
            check_teacher_spec(spec)
    teachers = (
        [generate_documents(args, spec) for spec in args.teacher_specs] if "synthetic" in args.source_list else []
    )
    evaluation, missing = load_eval_questions(args) if args.decontaminate else ([], {})
    kept, report = filter_documents(read_sources(args), args, evaluation)
    report.not_checked = missing
    if not args.push:
        print_summary(report, len(kept), "(not pushed: --push false)")
        return None
    if not kept:
        print_summary(report, 0, "(not pushed: nothing left after the filters)")
        raise SystemExit("every document was filtered out (see the counts above); nothing to push")
    rows = [asdict(d) for d in kept]
    configs = [RepoConfig("default", "data", CORPUS_FEATURES, {"train": rows}, "one row per kept document")]
    with tempfile.TemporaryDirectory() as tmp:
        card_meta = write_data_files(Path(tmp), configs)
        render_card(args, target, args.corpus_repo, kept, report, teachers, card_meta).save(Path(tmp) / "README.md")
        build = {"arguments": asdict(args), "teachers": teachers, "sources": report.rows()}
        build |= {"decontamination": report.decontamination, "not_checked": report.not_checked}
        (Path(tmp) / "scalingdown_build.json").write_text(json.dumps(build, indent=2, default=str))
        commit = target.push_folder(
            tmp,
            "dataset",
            args.corpus_repo,
            f"Pre-training corpus: {len(kept)} documents from {args.sources}",
            delete_patterns=["data/*"],
        )
    location = target.location("dataset", args.corpus_repo)
    print_summary(report, len(kept), f"{location} @ {commit[:10]}")
    return location


def cli(argv: list[str] | None = None) -> str | None:
    from trl import TrlParser

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = TrlParser(
        (CorpusArguments,),
        prog="python -m datasets_builders.corpus",
        description="Build the pre-training corpus dataset repo.",
        epilog="--config RECIPE.yaml reads any of these options from a YAML recipe; flags given too win.",
    )
    (args,) = parse_recipe(parser, argv)
    return main(args)
