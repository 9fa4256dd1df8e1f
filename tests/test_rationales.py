"""Rationale prompts and filters on realistic teacher outputs."""

from __future__ import annotations

import pytest

from datasets_builders.rationales import (
    FilterSettings,
    WorkedExample,
    build_prompt,
    check_rationale,
    finish_rationale,
)
from datasets_builders.shards import ShardStore
from datasets_builders.teacher_base import GenerationSettings, cut_at_stop
from datasets_builders.teachers import TeacherError, resolve_model_source


def test_teacher_forced_prompt_shows_the_gold_answer_and_cot_does_not():
    forced = build_prompt("What is 2 + 3?", None, "5", "numeric", "teacher_forced")
    cot = build_prompt("What is 2 + 3?", None, "5", "numeric", "cot")
    assert forced.messages[-1]["content"] == "Question: What is 2 + 3?\nCorrect answer: 5"
    assert cot.messages[-1]["content"] == "Question: What is 2 + 3?"
    assert "as in '4 * 12 = 48'" in forced.messages[0]["content"] and "as in" in cot.messages[0]["content"]
    # Plain-text form for base teachers: one worked shot, then the question awaiting its explanation.
    assert forced.text.count("Question:") == 2 and forced.text.endswith("Correct answer: 5\nExplanation:")
    assert "Correct answer" not in cot.text
    # Chat form: the same built-in worked example as an earlier exchange.
    assert [m["role"] for m in forced.messages] == ["system", "user", "assistant", "user"]
    assert forced.messages[2]["content"].endswith("48 - 30 = 18 muffins are left. The answer is 18.")


def test_worked_examples_from_the_task_replace_the_built_in_one():
    shots = [WorkedExample(f"Ana has {n} pens and buys 2 more. How many?", None, str(n + 2), f"{n} + 2 = {n + 2}.")
             for n in (3, 4)]  # fmt: skip
    prompt = build_prompt("Bo has 5 pens and buys 2 more. How many?", None, "7", "numeric", "teacher_forced", shots)
    assert [m["content"] for m in prompt.messages[2::2]] == [
        "3 + 2 = 5. The answer is 5.",
        "4 + 2 = 6. The answer is 6.",
    ]
    assert "muffins" not in prompt.text and prompt.text.count("Explanation:") == 3
    assert prompt.text.startswith("Question: Ana has 3 pens and buys 2 more. How many?\nCorrect answer: 5\n")


def test_multiple_choice_prompt_lists_choices_with_letters():
    prompt = build_prompt("Which is a mammal?", ["shark", "whale", "trout"], "B", "letter", "teacher_forced")
    assert "A) shark\nB) whale\nC) trout" in prompt.messages[-1]["content"]


@pytest.mark.parametrize(
    ("text", "reason", "consistent"),
    [
        ("She has 3 + 4 = 7 apples. The answer is 7.", None, True),
        ("She has 3 + 5 = 8 apples. The answer is 8.", "inconsistent", False),
        ("I'm sorry, but I cannot help with that request. The answer is 7.", "refusal", True),
        ("As stated, the given answer is 7, so the answer is 7.", "refusal", True),
        ("7.", "too_short", True),
        ("Seven apples: " + "and more " * 300 + "The answer is 7.", "too_long", True),
    ],
)
def test_filters_name_the_first_failing_reason(text, reason, consistent):
    result = check_rationale(text, "7", "numeric", 0, FilterSettings())
    assert result.reason == reason
    assert result.consistent is consistent


def test_flag_mode_keeps_inconsistent_rationales_but_marks_them():
    result = check_rationale("It is 3 + 5 = 8. The answer is 8.", "7", "numeric", 0, FilterSettings(consistency="flag"))
    assert result.reason is None and result.consistent is False and result.predicted == "8"


def test_letter_consistency_uses_the_letter_not_the_text():
    ok = check_rationale(
        "Whales breathe air and nurse their young. The answer is B.", "B", "letter", 3, FilterSettings()
    )
    assert ok.reason is None


def test_finish_rationale_ends_with_one_canonical_answer():
    assert finish_rationale("3 + 4 = 7. The answer is 7. The answer is 7.", "7") == "3 + 4 = 7. The answer is 7."
    assert finish_rationale("3 + 4 = 7 apples in total", "7") == "3 + 4 = 7 apples in total The answer is 7."


def test_cut_at_stop_keeps_text_before_the_first_stop():
    assert cut_at_stop("Because 2+2=4.\nQuestion: next one", ["\nQuestion:"]) == "Because 2+2=4."


def test_default_teacher_stops_end_a_rationale_where_a_base_or_chat_teacher_moves_on():
    stop = GenerationSettings().stop
    base = "4 * 12 = 48 and 48 - 30 = 18. The answer is 18.\n\nQuestion: A farmer has 7 cows"
    chat = "4 * 12 = 48 and 48 - 30 = 18. The answer is 18.<|im_end|>\n<|im_start|>user"
    rambling = "4 * 12 = 48. The answer is 48.\n\n\n\nSolve the problem step by step"
    for text in (base, chat):
        assert cut_at_stop(text, stop) == "4 * 12 = 48 and 48 - 30 = 18. The answer is 18."
    assert cut_at_stop(rambling, stop) == "4 * 12 = 48. The answer is 48."
    assert cut_at_stop("Step 1.\nStep 2.\n\nSo the answer is 3.", stop) == "Step 1.\nStep 2.\n\nSo the answer is 3."


def test_shard_store_resumes_and_drops_half_written_shards(tmp_path):
    store = ShardStore(tmp_path / "s")
    store.write([{"id": "a", "x": 1}, {"id": "b", "x": 2}])
    (tmp_path / "s" / "shard-00001.tmp").write_bytes(b"partial")  # what a kill during a write leaves
    store = ShardStore(tmp_path / "s")
    assert store.done_keys() == {"a", "b"}
    assert not list((tmp_path / "s").glob("*.tmp"))
    store.write([{"id": "c", "x": 3}])
    assert [r["id"] for r in store.rows()] == ["a", "b", "c"]


def test_unknown_teacher_spec_lists_the_options(tmp_path):
    with pytest.raises(TeacherError, match="smollm2-135m-instruct"):
        resolve_model_source("no-such-teacher")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="config.json"):
        resolve_model_source(str(tmp_path / "empty"))


def test_repetition_and_arithmetic_filters_catch_what_tiny_teachers_do():
    loop = "The answer is 10.\n\nStep 1: The answer is 10.\n\nStep 2: The answer is 10.\n\nStep 3: The answer is 10."
    assert check_rationale(loop, "10", "numeric", 0, FilterSettings()).reason == "repetitive"
    wrong = "She buys 4 * 12 = 46 muffins, sells 28, so 46 - 28 = 18 are left. The answer is 18."
    assert check_rationale(wrong, "18", "numeric", 0, FilterSettings()).reason == "bad_arithmetic"
    assert check_rationale(wrong, "18", "numeric", 0, FilterSettings(check_arithmetic=False)).reason is None
    right = "She buys 4 * 12 = 48 muffins and 1,000 + 5 = 1,005 cents, then 7 / 2 = 3.5. The answer is 18."
    assert check_rationale(right, "18", "numeric", 0, FilterSettings(require_derivation=False)).reason is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Mateo has 7 apples and gets 18 more. The answer is 25.", "underived"),  # a bare answer
        ("Leila has 2 * 4 = 8 cookies left. The answer is 2.", "underived"),  # its last step is not its answer
        ("She gives away 3, so 5 - 3 = 2 are left. The answer is 2.", None),
        ("Half of 4 is 4 / 2 = 2. The answer is $2.", None),
    ],
)
def test_numeric_rationales_must_compute_their_answer_in_their_last_step(text, reason):
    assert check_rationale(text, "2" if "25" not in text else "25", "numeric", 0, FilterSettings()).reason == reason


def test_finish_rationale_drops_a_leading_answer_so_reasoning_comes_first():
    assert (
        finish_rationale("The answer is 6.\n\n11 - 9 = 2 and 2 + 4 = 6.", "6")
        == "11 - 9 = 2 and 2 + 4 = 6. The answer is 6."
    )


def test_decontamination_counts_ngram_overlap_and_exact_duplicates():
    from datasets_builders.decontamination import find_overlap

    train = [("t1", "How many apples does Tom have now?"), ("t2", "A completely different question about trains")]
    test = [("e1", "how many apples does  Tom have now"), ("e2", "What colour is the sky on a clear day?")]
    report = find_overlap(train, test, n=5)
    assert (report.train_rows_overlapping, report.eval_rows_overlapping, report.exact_duplicates) == (1, 1, 1)
    assert report.examples == [("t1", "e1")]


def test_decontamination_counts_every_eval_question_a_training_text_overlaps_in_text_order():
    from datasets_builders.decontamination import find_overlap

    # One training question shares a 5-gram with each of two test questions: both count, and the example pair is
    # the first overlap in the training text's word order (a set's order would change with the hash seed).
    train = [("t1", "Tom has five red apples and Mia has three green pears in a basket")]
    test = [("e1", "Why has Mia has three green pears in a box"), ("e2", "Tom has five red apples today")]
    report = find_overlap(train, test, n=5)
    assert (report.train_rows_overlapping, report.eval_rows_overlapping) == (1, 2)
    assert report.examples == [("t1", "e2")]
