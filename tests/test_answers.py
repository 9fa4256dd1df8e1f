"""Answer extraction and comparison on texts like the ones teachers, students and datasets really write."""

import pytest

from scalingdown.answers import (
    answers_match,
    extract_answer,
    extract_letter_answer,
    extract_numeric_answer,
    extract_yesno_answer,
    format_final_answer,
    normalize_number,
)

GSM8K_FIRST_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("1,234", "1234"),
        ("109,200,000", "109200000"),
        ("$3.50", "3.5"),
        ("-10", "-10"),
        ("-3.0", "-3"),
        ("-0.0", "0"),
        ("0.50", "0.5"),
        ("1,000.00", "1000"),
        ("12.", "12"),
        ("$ 5", "5"),
        (".5", "0.5"),
        ("twelve", None),
        ("", None),
        ("-", None),
        # Decimal parses these, but they are not answers (before the fix "inf" raised OverflowError).
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
    ],
)
def test_normalize_number(written, canonical):
    assert normalize_number(written) == canonical


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (GSM8K_FIRST_SOLUTION, "72"),
        ("She pays 1,000 + 234 = 1,234 dollars.\n#### 1,234", "1234"),
        ("The temperature drops 4 - 14 = -10 degrees.\n#### -10", "-10"),
        ("A coffee costs $3.50.", "3.5"),
        ("So she has 12 - 15 = -3 apples, which is impossible.", "-3"),
        ("The answer is $1,234.50.", "1234.5"),
        ("Final answer: **18**", "18"),
        ("so the total is \\boxed{24}", "24"),
        # An explicit "The answer is" wins over numbers said after it (a model rambling on after answering) ...
        ("The answer is 42. Then she buys 7 more for next week.", "42"),
        # ... and the GSM8K "####" marker wins over "The answer is".
        ("The answer is 5.\n#### 6", "6"),
        # Without a marker the last number counts.
        ("She had 5 apples and ate 2, so 3 are left.", "3"),
        ("I cannot tell.", None),
    ],
)
def test_extract_numeric_answer(text, answer):
    assert extract_numeric_answer(text) == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Speed is 540 miles per hour, so the answer is (C)", "C"),
        ("Answer: B", "B"),  # before the fix, marker.findall(text, re.MULTILINE) started searching at position 8
        ("(C)", "C"),
        ("D", "D"),
        ("Photosynthesis needs light.\nB", "B"),
        ("The answer is **D**.", "D"),
        ("Thus the answer is (c).", "C"),
        ("The answer is A. No wait, the answer is B.", "B"),
        # The lowercase article is not option A (before the fix IGNORECASE made it "A").
        ("The answer is a bacterial population in the bloodstream.", None),
    ],
)
def test_extract_letter_answer(text, answer):
    assert extract_letter_answer(text) == answer


def test_letter_outside_the_choices_is_not_an_answer():
    assert extract_letter_answer("The answer is E", num_choices=4) is None
    assert extract_letter_answer("The answer is E", num_choices=5) == "E"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Answer: yes", "yes"),
        ("The answer is No.", "no"),
        ("There is no clear evidence in the trial, but overall the answer is yes.", "yes"),
        ("The results are mixed. Maybe.", "maybe"),
        ("The study does not say.", None),
    ],
)
def test_extract_yesno_answer(text, answer):
    assert extract_yesno_answer(text) == answer


@pytest.mark.parametrize(
    ("predicted", "gold", "kind", "match"),
    [
        ("1,000", "1000", "numeric", True),
        ("1000.0", "1,000", "numeric", True),
        ("$3.50", "3.5", "numeric", True),
        ("3.5", "35", "numeric", False),
        ("-10", "10", "numeric", False),
        ("twelve", "12", "numeric", False),
        (None, "12", "numeric", False),
        ("c", "C", "letter", True),
        ("B", "C", "letter", False),
        ("Yes", "yes", "yesno", True),
        ("maybe", "no", "yesno", False),
    ],
)
def test_answers_match(predicted, gold, kind, match):
    assert answers_match(predicted, gold, kind) is match


@pytest.mark.parametrize(
    ("answer", "kind"), [("-12.5", "numeric"), ("1234", "numeric"), ("D", "letter"), ("maybe", "yesno")]
)
def test_the_closing_sentence_round_trips(answer, kind):
    assert extract_answer("Some working first, 3 + 4 = 7.\n" + format_final_answer(answer), kind) == answer


def test_unknown_answer_kind():
    with pytest.raises(ValueError, match="numeric"):
        extract_answer("The answer is 4.", "free_text")
