"""The pre-training corpus: local files and streamed datasets read for real, filters that really drop what they
name, teacher-written documents that resume after an interrupt, and the dataset repo `make pretrain` trains on."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset

from datasets_builders import corpus, teacher_shards
from datasets_builders.corpus import CorpusArguments
from datasets_builders.corpus.arguments import Document
from datasets_builders.corpus.dedup import NearDuplicateIndex
from datasets_builders.corpus.eval_overlap import load_eval_questions
from datasets_builders.corpus.filters import filter_documents
from datasets_builders.corpus.sources import (
    file_documents,
    generate_documents,
    hub_documents,
    shard_dir,
    synthetic_documents,
    task_documents,
)
from datasets_builders.shards import ShardStore

WORDS = "river desert mountain cloud seed root leaf stone metal magnet light sound water wind fire ice sand".split()


def prose(seed: int, words: int = 150) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + ("." if i % 12 == 11 else "") for i in range(words))


def test_local_text_and_table_files_become_documents(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Rivers carry water.\nThey end in seas.\n\n  \nDeserts get little rain.\n")
    (notes / "b.md").write_text("# Magnets\n\nMagnets pull iron.")
    (notes / "image.png").write_bytes(b"\x89PNG")  # not text: skipped
    rows = [{"content": "def add(a, b):\n    return a + b", "lang": "python"}, {"content": "print(1)", "lang": "py"}]
    (tmp_path / "code.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    spec = f"{notes},{tmp_path}/*.jsonl"
    args = CorpusArguments(sources="files", files=spec, text_unit="paragraph", text_column="content")
    docs = list(file_documents(args))
    assert [d.text for d in docs] == [
        "Rivers carry water.\nThey end in seas.",
        "Deserts get little rain.",
        "# Magnets",
        "Magnets pull iron.",
        "def add(a, b):\n    return a + b",
        "print(1)",
    ]
    assert len({d.id for d in docs}) == len(docs) and {d.source for d in docs} == {"files"}

    whole = CorpusArguments(sources="files", files=spec, text_unit="file", text_column="content", max_documents=3)
    assert [d.text for d in file_documents(whole)] == [
        "Rivers carry water.\nThey end in seas.\n\n  \nDeserts get little rain.",
        "# Magnets\n\nMagnets pull iron.",
        "def add(a, b):\n    return a + b",
    ]  # one document per text file, and --max_documents stops the source
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['content', 'lang'\]\)"):
        list(file_documents(CorpusArguments(sources="files", files=str(tmp_path / "code.jsonl"))))
    with pytest.raises(FileNotFoundError, match="matches no readable file"):
        list(file_documents(CorpusArguments(sources="files", files=str(tmp_path / "missing-*.txt"))))


def test_a_dataset_is_streamed_with_its_text_column(tmp_path):
    folder = tmp_path / "code-dataset"
    (folder / "data").mkdir(parents=True)
    Dataset.from_dict({"content": [f"x = {i}" for i in range(50)], "path": ["a.py"] * 50}).to_parquet(
        folder / "data" / "train-00000-of-00001.parquet"
    )
    args = CorpusArguments(sources="hub", hub_dataset=str(folder), text_column="content", max_documents=3)
    docs = list(hub_documents(args))
    assert [d.text for d in docs] == ["x = 0", "x = 1", "x = 2"]
    assert docs[0].source == f"hub:{folder}"
    with pytest.raises(ValueError, match="needs --hub_dataset"):
        CorpusArguments(sources="hub")


def test_near_duplicates_are_found_above_the_threshold_only():
    index = NearDuplicateIndex(threshold=0.8)
    text = prose(1)
    words = text.split()
    edited = text.replace(words[70], "volcano", 1)  # one word of 150: Jaccard of 5-grams ~0.93
    rewritten = " ".join("volcano" if i % 10 == 5 else w for i, w in enumerate(words))  # every 10th: ~0.5
    assert index.add("first", text) is None
    assert index.add("edited", edited) == "first"
    assert index.add("rewritten", rewritten) is None  # similar, but under the threshold: kept and indexed
    assert index.add("other", prose(2)) is None
    assert index.add("edited-again", edited.replace(words[20], "glacier", 1)) == "first"  # the earliest match
    assert index.ids == ["first", "rewritten", "other"]


def test_filters_drop_refusals_duplicates_and_contaminated_documents(shared_data):
    gsm8k_question = json.loads((shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[0])["question"]
    args = CorpusArguments(sources="task", eval_tasks="gsm8k,synthetic_gsm", eval_data=str(shared_data))
    evaluation, not_checked = load_eval_questions(args)
    assert not not_checked and [e.task for e in evaluation] == ["gsm8k", "synthetic_gsm"]
    synthetic_test = next(e for e in evaluation if e.task == "synthetic_gsm")
    train_question = next(task_documents(CorpusArguments(sources="task", task_limit=1)))

    text = prose(1)
    docs = [
        Document("clean", "files", text),
        Document("refusal", "files", "I'm sorry, but as an AI language model I cannot help with that. " + prose(3)),
        Document("moralising", "files", prose(4) + " It is important to note that safety guidelines apply."),
        Document("exact", "files", "  " + text.upper().replace(" ", "   ")),  # same words, other case and spacing
        Document("near", "files", text.replace(text.split()[70], "volcano", 1)),
        Document("short", "files", "Too short."),
        Document("leak", "web", f"Homework help! {gsm8k_question} Show your work, please."),
        Document("templated-leak", "web", f"Try this one: {synthetic_test.questions[0][1]}"),
        train_question,  # shares template 13-grams with synthetic_gsm test questions, but is none of them
        Document("clean-2", "web", prose(2)),
    ]
    kept, report = filter_documents(docs, args, evaluation)

    assert [d.id for d in kept] == ["clean", train_question.id, "clean-2"]
    by_source = {row["source"]: row for row in report.rows()}
    assert by_source["files"]["dropped"] == {"too_short": 1, "refusal": 2, "exact_duplicate": 1, "near_duplicate": 1}
    assert by_source["web"] == {"source": "web", "read": 3, "kept": 1, "dropped": {"contaminated": 2}}
    overlap = {d["task"]: d for d in report.decontamination}
    assert overlap["gsm8k"]["documents"] == 1 and overlap["gsm8k"]["examples"] == [("leak", "gsm8k-test-00000")]
    assert overlap["synthetic_gsm"]["examples"] == [("templated-leak", synthetic_test.questions[0][0])]
    assert overlap["gsm8k"]["test_questions"] == 500 and "13-gram" in overlap["gsm8k"]["rule"]

    # Every filter is a switch: off, each keeps what it dropped.
    off = CorpusArguments(
        sources="task", min_chars=0, filter_refusals=False, dedup_exact=False, dedup_near=False, decontaminate=False
    )
    assert len(filter_documents(docs, off, evaluation)[0]) == len(docs)


def test_teachers_write_synthetic_documents_that_resume_after_an_interrupt(tmp_path, tiny_teacher_dir, monkeypatch):
    spec = str(tiny_teacher_dir)
    args = CorpusArguments(
        sources="synthetic", teachers=spec, documents_per_teacher=7, max_new_tokens=12, batch_size=7, shard_size=3,
        work_dir=str(tmp_path / "work"),
    )  # fmt: skip
    generate_documents(args, spec)
    store = ShardStore(shard_dir(args, spec))
    assert len(store.shard_paths()) == 3  # 3 + 3 + 1 documents
    docs = list(synthetic_documents(args, spec))
    assert len(docs) == 7 and all(d.text for d in docs) and docs[0].source == "synthetic:tiny-llama"
    topics = [row["topic"] for row in store.rows()]
    assert len(set(topics)) == 7  # the first requests cycle through the topics

    # An interrupt lost the last shard: the re-run writes exactly the missing document, nothing twice.
    store.shard_paths()[-1].unlink()
    asked = []
    real_load = teacher_shards.load_teacher

    def counting_teacher(spec, **kwargs):
        teacher = real_load(spec, **kwargs)
        generate = teacher.generate
        teacher.generate = lambda prompts, settings: asked.extend(prompts) or generate(prompts, settings)
        return teacher

    monkeypatch.setattr(teacher_shards, "load_teacher", counting_teacher)
    generate_documents(args, spec)
    assert len(asked) == 1
    assert sorted(r["id"] for r in store.rows()) == sorted(d.id.removeprefix("synthetic-tiny-llama-") for d in docs)
    monkeypatch.setattr(teacher_shards, "load_teacher", lambda spec: pytest.fail("a complete build loaded its teacher"))
    generate_documents(args, spec)


def test_the_corpus_repo_loads_and_its_card_reports_sources_filters_and_overlap(
    hub_dir, tmp_path, tiny_teacher_dir, shared_data
):
    args = CorpusArguments(
        sources="synthetic,task", teachers=str(tiny_teacher_dir), documents_per_teacher=4, max_new_tokens=24,
        batch_size=4, task_limit=30, min_chars=10, eval_tasks="synthetic_gsm,arc_easy", eval_data=str(shared_data),
        work_dir=str(tmp_path / "work"),
    )  # fmt: skip
    location = corpus.main(args)
    assert location == str(hub_dir / "datasets" / "testorg" / "pretrain-corpus")

    rows = load_dataset(location, split="train")
    assert rows.column_names == ["id", "source", "text"]
    sources = set(rows["source"])
    assert sources == {"synthetic:tiny-llama", "task:synthetic_gsm"}
    assert sum(s == "task:synthetic_gsm" for s in rows["source"]) == 30  # training questions: none overlap a test one
    assert rows[rows["source"].index("task:synthetic_gsm")]["text"].startswith("Question: ")

    card = (hub_dir / "datasets" / "testorg" / "pretrain-corpus" / "README.md").read_text()
    assert f"**{len(rows)} documents**" in card
    assert "| `task:synthetic_gsm` | 30 | 30 | - |" in card
    assert "| near_duplicate | yes (threshold 0.8) |" in card and "MinHash LSH (datasketch)" in card
    assert "| arc_easy | 500 |" in card and "| synthetic_gsm | 1000 |" in card  # both test splits were checked
    build = json.loads((hub_dir / "datasets" / "testorg" / "pretrain-corpus" / "scalingdown_build.json").read_text())
    assert [d["task"] for d in build["decontamination"]] == ["synthetic_gsm", "arc_easy"]


def test_the_module_runs_and_every_corpus_recipe_parses():
    from trl import TrlParser

    repo = Path(__file__).resolve().parents[1]
    help_text = subprocess.run(
        [sys.executable, "-m", "datasets_builders.corpus", "--help"], cwd=repo, capture_output=True, text=True
    ).stdout
    assert help_text.startswith("usage: python -m datasets_builders.corpus")
    for flag in ("--sources", "--teachers", "--documents_per_teacher", "--near_duplicate_threshold", "--config"):
        assert flag in help_text
    recipes = sorted((repo / "recipes" / "corpus").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        (args,) = TrlParser((CorpusArguments,)).parse_args_and_config(["--config", str(recipe)])
        assert args.source_list, recipe
