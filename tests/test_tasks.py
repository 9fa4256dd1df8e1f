"""Task loaders on the real benchmark slices in ../shared/data: every row of every file maps into the one schema."""

import json
from functools import cache
from pathlib import Path

import datasets
import pytest

from datasets_builders import tasks
from datasets_builders.tasks import TASKS, examples_from_records, get_task, load_examples
from scalingdown.answers import LETTERS, YESNO, normalize_number
from scalingdown.schema import EXAMPLE_FEATURES

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_TASKS = ["gsm8k", "aqua_rat", "arc_easy", "arc_challenge", "openbookqa", "pubmedqa"]
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"benchmark slices not found at {SHARED_DATA} (CI puts shared/ beside the clone)"
)


@cache
def _loaded(task: str, split: str):
    return load_examples(task, split, data=SHARED_DATA / task)


def _raw_rows(task: str, split: str) -> list[dict]:
    return [
        json.loads(line) for line in (SHARED_DATA / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def _by_id(dataset: datasets.Dataset) -> dict[str, dict]:
    return {row["id"]: row for row in dataset}


@needs_shared_data
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("task", REAL_TASKS)
def test_every_real_row_maps_into_the_schema(task, split):
    dataset, report = _loaded(task, split)
    num_lines = len((SHARED_DATA / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines())

    assert dataset.features == EXAMPLE_FEATURES
    assert (report.total, report.kept, report.dropped) == (num_lines, num_lines, {})
    assert len(dataset) == num_lines
    assert len(set(dataset["id"])) == num_lines
    assert set(dataset["task"]) == {task}
    assert all(question.strip() for question in dataset["question"])
    kind = get_task(task).answer_kind
    for row in dataset:
        if kind == "numeric":
            assert row["choices"] is None and normalize_number(row["answer"]) == row["answer"]
        elif kind == "letter":
            assert 3 <= len(row["choices"]) <= 5 and all(row["choices"])
            assert row["answer"] in LETTERS[: len(row["choices"])]
        else:
            assert row["choices"] is None and row["answer"] in YESNO


@needs_shared_data
def test_gsm8k_answer_follows_the_last_hashes_and_calculator_notes_are_dropped():
    dataset, _ = _loaded("gsm8k", "train")
    first = dataset[0]
    assert first["id"] == "gsm8k-train-00000"
    assert first["answer"] == "72"
    assert first["gold_rationale"] == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert not any("<<" in rationale or "####" in rationale for rationale in dataset["gold_rationale"])


@needs_shared_data
def test_gsm8k_thousands_separators_and_the_negative_answer_are_normalised():
    with_separator = []
    for split in ("train", "test"):
        dataset, _ = _loaded("gsm8k", split)
        for index, raw in enumerate(_raw_rows("gsm8k", split)):
            written = raw["answer"].rpartition("#### ")[2]
            if "," in written:
                with_separator.append(written)
                assert dataset[index]["answer"] == written.replace(",", "")
    assert len(with_separator) == 28  # as the data README says
    assert "109,200,000" in with_separator

    test, _ = _loaded("gsm8k", "test")
    negative = [row for row in test if row["answer"].startswith("-")]
    assert [(row["id"], row["answer"]) for row in negative] == [("gsm8k-test-00489", "-10")]


@needs_shared_data
def test_aqua_rat_options_lose_their_letter_prefix():
    dataset, _ = _loaded("aqua_rat", "train")
    first = dataset[0]
    assert first["answer"] == "A"
    assert first["choices"] == ["32400", "6000", "600", "60000", "10"]
    assert first["gold_rationale"].endswith("Correct answer - A")


@needs_shared_data
@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge"])
def test_arc_numeric_labels_map_to_letters(task):
    dataset, _ = _loaded(task, "train")
    rows = _by_id(dataset)
    numeric = [raw for raw in _raw_rows(task, "train") if raw["answerKey"].isdigit()]
    assert numeric and all(raw["id"].startswith("NYSEDREGENTS") for raw in numeric)
    for raw in numeric:
        assert rows[raw["id"]]["answer"] == LETTERS[int(raw["answerKey"]) - 1]
        assert rows[raw["id"]]["choices"] == [choice["text"] for choice in raw["question"]["choices"]]


@needs_shared_data
def test_arc_numeric_label_example():
    raw = next(raw for raw in _raw_rows("arc_easy", "train") if raw["id"] == "NYSEDREGENTS_2006_8_10")
    assert raw["answerKey"] == "3"
    assert _by_id(_loaded("arc_easy", "train")[0])["NYSEDREGENTS_2006_8_10"]["answer"] == "C"


@needs_shared_data
def test_arc_rows_with_three_and_five_choices():
    dataset, _ = _loaded("arc_easy", "train")
    sizes = {len(choices) for choices in dataset["choices"]}
    assert sizes == {3, 4, 5}
    assert "Mercury_7220990" in _by_id(dataset) and _by_id(dataset)["Mercury_7220990"]["answer"] == "B"
    first_rows = _raw_rows("arc_easy", "train")
    five = next(raw for raw in first_rows if len(raw["question"]["choices"]) == 5)
    assert _by_id(dataset)[five["id"]]["answer"] == LETTERS["ABCDE".index(five["answerKey"])]


@needs_shared_data
def test_openbookqa_uses_its_source_ids():
    dataset, _ = _loaded("openbookqa", "train")
    assert dataset[0]["id"] == "7-980"
    assert dataset[0]["answer"] == "D"
    assert dataset[0]["question"] == "The sun is responsible for"


@needs_shared_data
def test_pubmedqa_question_carries_its_context_and_the_pmid_is_the_id():
    dataset, _ = _loaded("pubmedqa", "train")
    first = dataset[0]
    raw = _raw_rows("pubmedqa", "train")[0]["10808977"]
    assert (first["id"], first["answer"]) == ("10808977", "yes")
    question, context = first["question"].split("\n\nContext:\n")
    assert question == "Can tailored interventions increase mammography use among HMO women?"
    assert context.splitlines()[0].startswith("Background: Telephone counseling and tailored print communications")
    assert context.splitlines()[4].startswith("Main outcome: Adherence to mammography screening")
    assert len(context.splitlines()) == len(raw["CONTEXTS"])
    assert first["gold_rationale"] == raw["LONG_ANSWER"]
    assert all(row_id.isdigit() for row_id in dataset["id"])


@needs_shared_data
def test_pubmedqa_original_single_object_file(tmp_path):
    # ori_pqal.json is one object keyed by PMID; rebuild that shape from the slice's lines.
    merged = {}
    for line in (SHARED_DATA / "pubmedqa" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        merged.update(json.loads(line))
    (tmp_path / "ori_pqal.json").write_text(json.dumps(merged))
    from_object, report = load_examples("pubmedqa", "test", data=tmp_path / "ori_pqal.json")
    from_lines, _ = _loaded("pubmedqa", "test")
    assert report.kept == 300
    assert from_object.to_list() == from_lines.to_list()


@needs_shared_data
def test_limit_takes_the_first_rows_and_ids_do_not_move():
    full, _ = _loaded("gsm8k", "test")
    first, report = load_examples("gsm8k", "test", data=SHARED_DATA / "gsm8k", limit=5)
    assert first.to_list() == full.select(range(5)).to_list()
    assert (report.total, report.kept) == (5, 5)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_bad_gsm8k_rows_are_counted_and_the_good_ones_survive(tmp_path):
    rows = [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4 = <<3+4=7>>7\n#### 7"},
        {"question": "No final line.", "answer": "He has 5 apples."},
        {"question": "Words, not a number.", "answer": "So twelve.\n#### twelve"},
        {"answer": "#### 4"},  # no question at all
        {"question": "A big one?", "answer": "1,000 + 234 = 1,234\n#### 1,234"},
    ]
    dataset, report = load_examples("gsm8k", "train", data=_write_jsonl(tmp_path / "train.jsonl", rows))
    assert report.total == 5 and report.kept == 2
    assert report.dropped == {"no_answer": 1, "unparsable_answer": 1, "malformed_row": 1}
    assert report.bad_ids == {
        "no_answer": ["gsm8k-train-00001"],
        "unparsable_answer": ["gsm8k-train-00002"],
        "malformed_row": ["gsm8k-train-00003"],
    }
    assert dataset["id"] == ["gsm8k-train-00000", "gsm8k-train-00004"]  # source positions, order kept
    assert dataset["answer"] == ["7", "1234"]
    assert "unparsable_answer" in report.summary()

    limited, limited_report = load_examples("gsm8k", "train", data=tmp_path / "train.jsonl", limit=2)
    assert limited["id"] == ["gsm8k-train-00000", "gsm8k-train-00004"]  # limit counts kept rows
    assert limited_report.total == 5


def _arc_row(row_id: str, answer_key: str | None, labels: str = "ABCD") -> dict:
    choices = [{"text": f"option {label}", "label": label} for label in labels]
    row = {"id": row_id, "question": {"stem": f"Question {row_id}?", "choices": choices}}
    if answer_key is not None:
        row["answerKey"] = answer_key
    return row


def test_bad_multiple_choice_rows_are_counted(tmp_path):
    rows = [
        _arc_row("q1", "B"),
        _arc_row("q2", "E"),  # label not among the choices
        _arc_row("q1", "C"),  # duplicate id
        _arc_row("q3", None),  # no answer key
        _arc_row("q4", "3", labels="1234"),
    ]
    dataset, report = load_examples("arc_challenge", "test", data=_write_jsonl(tmp_path / "test.jsonl", rows))
    assert report.dropped == {"answer_not_in_choices": 1, "duplicate_id": 1, "no_answer": 1}
    assert report.bad_ids == {"answer_not_in_choices": ["q2"], "duplicate_id": ["q1"], "no_answer": ["q3"]}
    assert (report.total, report.kept) == (5, 2)
    assert list(zip(dataset["id"], dataset["answer"], strict=True)) == [("q1", "B"), ("q4", "C")]


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'gsm9k'.*gsm8k.*synthetic_gsm"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="valid tasks"):
        load_examples("gsm9k", "train")
    assert set(REAL_TASKS) | {"synthetic_gsm"} == set(TASKS)


def test_hub_format_arc_row():
    row = {
        "id": "Mercury_7220990",
        "question": "Which factor will most likely cause a person to develop a fever?",
        "choices": {
            "text": ["a leg muscle relaxing", "a bacterial population in the bloodstream", "viral particles"],
            "label": ["1", "2", "3"],
        },
        "answerKey": "2",
    }
    dataset, report = examples_from_records([row], "arc_easy", "train", "hand-written Hub row")
    assert report.kept == 1
    assert dataset[0] == {
        "id": "Mercury_7220990",
        "task": "arc_easy",
        "question": "Which factor will most likely cause a person to develop a fever?",
        "choices": ["a leg muscle relaxing", "a bacterial population in the bloodstream", "viral particles"],
        "answer": "B",
        "gold_rationale": None,
    }


def test_hub_format_openbookqa_row():
    row = {
        "id": "7-980",
        "question_stem": "The sun is responsible for",
        "choices": {
            "text": ["puppies learning", "children growing", "flowers wilting", "plants sprouting"],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "D",
    }
    dataset, _ = examples_from_records([row], "openbookqa", "train", "hand-written Hub row")
    assert (dataset[0]["question"], dataset[0]["answer"], dataset[0]["choices"][3]) == (
        "The sun is responsible for",
        "D",
        "plants sprouting",
    )


def _hub_pubmedqa_row(pubid: int, decision: str = "yes") -> dict:
    return {
        "pubid": pubid,
        "question": "Can tailored interventions increase mammography use among HMO women?",
        "context": {
            "contexts": ["Telephone counseling is promising.", "Three-year randomized field trial."],
            "labels": ["BACKGROUND", "DESIGN"],
            "meshes": ["Female"],
        },
        "long_answer": "The effects were most pronounced after the first intervention.",
        "final_decision": decision,
    }


def test_hub_format_pubmedqa_row():
    dataset, _ = examples_from_records([_hub_pubmedqa_row(10808977)], "pubmedqa", "train", "hand-written Hub row")
    assert dataset[0] == {
        "id": "10808977",
        "task": "pubmedqa",
        "question": "Can tailored interventions increase mammography use among HMO women?\n\nContext:\n"
        "Background: Telephone counseling is promising.\nDesign: Three-year randomized field trial.",
        "choices": None,
        "answer": "yes",
        "gold_rationale": "The effects were most pronounced after the first intervention.",
    }


def test_hub_layout_parquet_folder(tmp_path):
    # A snapshot of the Hub repo: data/{split}-00000-of-00001.parquet in the Hub's own format.
    (tmp_path / "data").mkdir()
    rows = [_hub_pubmedqa_row(pubid, decision) for pubid, decision in [(1, "no"), (2, "maybe"), (3, "perhaps")]]
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    dataset, report = load_examples("pubmedqa", "test", data=tmp_path)
    assert list(zip(dataset["id"], dataset["answer"], strict=True)) == [("1", "no"), ("2", "maybe")]
    assert report.dropped == {"unparsable_answer": 1}


def test_aqua_dev_file_serves_the_validation_split(tmp_path):
    row = {
        "question": "2 + 2?",
        "options": ["A)3", "B)4", "C)5", "D)6", "E)7"],
        "rationale": "2 + 2 = 4",
        "correct": "B",
    }
    _write_jsonl(tmp_path / "dev.json", [row])
    dataset, _ = load_examples("aqua_rat", "validation", data=tmp_path)
    assert (dataset[0]["id"], dataset[0]["choices"][1], dataset[0]["answer"]) == ("aqua_rat-validation-00000", "4", "B")
    with pytest.raises(FileNotFoundError, match="dev.json"):
        load_examples("aqua_rat", "test", data=tmp_path)


def test_offline_hub_load_says_to_pass_local_data(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(tasks.datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="DATA=.*--data"):
        load_examples("gsm8k", "train")


def test_pubmedqa_hub_split_is_seeded_and_disjoint(monkeypatch):
    hub = datasets.Dataset.from_list([_hub_pubmedqa_row(pubid) for pubid in range(1000, 2000)])
    calls = []

    def fake_hub(path, name, split):
        calls.append((path, name, split))
        return hub

    monkeypatch.setattr(tasks.datasets, "load_dataset", fake_hub)
    train, _ = load_examples("pubmedqa", "train", seed=0)
    test, _ = load_examples("pubmedqa", "test", seed=0)
    assert calls[0] == ("qiaojin/PubMedQA", "pqa_labeled", "train")
    assert len(train) == len(test) == 500
    assert set(train["id"]).isdisjoint(test["id"]) and len(set(train["id"]) | set(test["id"])) == 1000
    assert train["id"] == sorted(train["id"])  # source order kept
    assert load_examples("pubmedqa", "test", seed=0)[0]["id"] == test["id"]
    assert load_examples("pubmedqa", "test", seed=1)[0]["id"] != test["id"]


def test_rows_in_our_schema_are_checked(tmp_path):
    good = {
        "id": "synthetic_gsm-train-00000",
        "task": "synthetic_gsm",
        "question": "1 + 2?",
        "choices": None,
        "answer": "3",
        "gold_rationale": "1 + 2 = 3",
    }
    rows = [
        good,
        {**good, "id": "x1", "answer": "3.0"},  # not canonical
        {**good, "id": "x2", "task": "gsm8k"},
        {**good, "id": "x3", "answer": ""},
    ]
    dataset, report = load_examples("synthetic_gsm", "train", data=_write_jsonl(tmp_path / "rows.jsonl", rows))
    assert dataset.to_list() == [good]
    assert report.dropped == {"unparsable_answer": 1, "wrong_task": 1, "no_answer": 1}


def test_synthetic_gsm_is_generated_offline():
    dataset, report = load_examples("synthetic_gsm", "test", limit=7)
    assert len(dataset) == 7 and report.source == "generated (seed=0)"
    assert dataset[0]["id"] == "synthetic_gsm-test-00000"
    assert dataset.to_list() == load_examples("synthetic_gsm", "test", limit=7)[0].to_list()
    assert dataset["question"] != load_examples("synthetic_gsm", "test", limit=7, seed=1)[0]["question"]
    full, _ = load_examples("synthetic_gsm", "test")
    assert len(full) == 1000 and full.select(range(7)).to_list() == dataset.to_list()
