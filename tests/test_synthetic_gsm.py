"""The synthetic GSM generator: deterministic, split-disjoint, tunable, and its gold solutions add up."""

import re
from fractions import Fraction

import pytest

from datasets_builders.synthetic_gsm import GenerateArguments, SyntheticGSMConfig, generate_examples, main
from datasets_builders.tasks import load_examples
from scalingdown.answers import extract_numeric_answer, normalize_number

EQUATION = re.compile(r"(\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*(\d+)")
NUMBER = re.compile(r"\d+")


def _evaluate(expression: str) -> Fraction:
    """Value of ``a op b op c`` with * and / before + and -, exactly."""
    tokens = re.findall(r"\d+|[-+*/]", expression)
    terms, signs, term = [], ["+"], Fraction(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2], strict=True):
        if op == "*":
            term *= int(number)
        elif op == "/":
            term /= int(number)
        else:
            terms.append(term)
            signs.append(op)
            term = Fraction(number)
    terms.append(term)
    return sum((t if s == "+" else -t for s, t in zip(signs, terms, strict=True)), Fraction(0))


def _equations(rationale: str) -> list[tuple[str, int]]:
    found = []
    for line in rationale.splitlines():
        matches = EQUATION.findall(line)
        assert len(matches) == 1, f"one equation per solution line: {line!r}"
        found.append((matches[0][0], int(matches[0][1])))
    return found


@pytest.fixture(scope="module")
def train():
    return generate_examples(500, "train")


def test_same_seed_same_rows_and_prefixes_are_stable(train):
    assert generate_examples(500, "train") == train
    assert generate_examples(20, "train") == train[:20]
    other_seed = generate_examples(20, "train", SyntheticGSMConfig(seed=1))
    assert [e.question for e in other_seed] != [e.question for e in train[:20]]


def test_rows_are_schema_examples(train):
    assert [e.id for e in train[:2]] == ["synthetic_gsm-train-00000", "synthetic_gsm-train-00001"]
    assert {e.task for e in train} == {"synthetic_gsm"}
    assert all(e.choices is None and normalize_number(e.answer) == e.answer for e in train)
    assert all(e.question.endswith("?") for e in train)
    assert len({e.question for e in train}) == len(train)


def test_splits_never_share_a_question():
    questions = {
        split: {e.question for e in generate_examples(n, split)}
        for split, n in [("train", 2000), ("validation", 300), ("test", 300)]
    }
    assert [len(q) for q in questions.values()] == [2000, 300, 300]
    assert questions["train"].isdisjoint(questions["test"])
    assert questions["train"].isdisjoint(questions["validation"])
    assert questions["validation"].isdisjoint(questions["test"])


def test_the_last_number_of_each_solution_is_the_answer(train):
    for example in train:
        assert extract_numeric_answer(example.gold_rationale) == example.answer
        assert _equations(example.gold_rationale)[-1][1] == int(example.answer)


def test_every_step_is_correct_whole_and_builds_on_the_previous_one(train):
    config = SyntheticGSMConfig()
    for example in train:
        previous = None
        for expression, result in _equations(example.gold_rationale):
            assert _evaluate(expression) == result, f"{expression} = {result} in {example.id}"
            assert 2 <= result <= config.max_total
            operands = [int(n) for n in NUMBER.findall(expression)]
            assert previous is None or previous in operands, f"{expression} does not use {previous} ({example.id})"
            previous = result


def _mean_steps(config: SyntheticGSMConfig) -> float:
    examples = generate_examples(200, "train", config)
    return sum(len(_equations(e.gold_rationale)) for e in examples) / len(examples)


def test_more_steps_make_longer_solutions():
    short = _mean_steps(SyntheticGSMConfig(min_steps=1, max_steps=2))
    long = _mean_steps(SyntheticGSMConfig(min_steps=5, max_steps=6))
    assert 1 <= short <= 4 and long >= 5  # a percentage step takes two lines
    assert long > short + 2
    exactly_three = generate_examples(100, "train", SyntheticGSMConfig(min_steps=3, max_steps=3))
    assert all(3 <= len(_equations(e.gold_rationale)) <= 6 for e in exactly_three)


def _stated_numbers(question: str) -> list[int]:
    return [int(n) for n in re.findall(r"(\d+)(?!\d|%)", question)]


def test_number_range_knob():
    default = generate_examples(200, "train")
    assert max(n for e in default for n in _stated_numbers(e.question)) <= 20
    wide = generate_examples(200, "train", SyntheticGSMConfig(max_value=500, max_total=100_000))
    assert max(n for e in wide for n in _stated_numbers(e.question)) > 100


def test_distractors_add_numbers_the_solution_never_uses():
    def irrelevant(config: SyntheticGSMConfig) -> list[int]:
        counts = []
        for example in generate_examples(100, "train", config):
            used = set(NUMBER.findall(example.gold_rationale))
            counts.append(sum(n not in used for n in re.findall(r"\d+", example.question)))
        return counts

    assert set(irrelevant(SyntheticGSMConfig(num_distractors=0))) == {0}
    with_two = irrelevant(SyntheticGSMConfig(num_distractors=2))
    assert max(with_two) <= 2 and sum(with_two) / len(with_two) >= 1.5


def test_operations_knob_restricts_the_step_kinds():
    only_add = generate_examples(100, "train", SyntheticGSMConfig(operations="add"))
    for example in only_add:
        assert all(" + " in line for line in example.gold_rationale.splitlines()), example.gold_rationale
    assert any(" * " in e.gold_rationale for e in generate_examples(100, "train"))
    with pytest.raises(ValueError, match="operations"):
        SyntheticGSMConfig(operations="add,pow")


def test_one_step_easy_problems_are_plentiful_and_distinct():
    easy = SyntheticGSMConfig(min_steps=1, max_steps=1, max_value=20)
    rows = generate_examples(500, "train", easy)
    assert len({e.question for e in rows}) == 500
    lines = [len(e.gold_rationale.splitlines()) for e in rows]
    assert max(lines) <= 2 and lines.count(1) > len(lines) / 2  # a percentage step takes two lines


def test_bad_knobs_and_splits_are_refused():
    with pytest.raises(ValueError, match="min_steps"):
        SyntheticGSMConfig(min_steps=4, max_steps=2)
    with pytest.raises(ValueError, match="min_value"):
        SyntheticGSMConfig(min_value=1)
    with pytest.raises(ValueError, match="unknown split"):
        generate_examples(3, "dev")


def test_generated_file_loads_back_through_the_task_loader(tmp_path):
    output = tmp_path / "synthetic_gsm" / "test.jsonl"
    main(GenerateArguments(split="test", num_examples=5, output_file=str(output)), SyntheticGSMConfig())
    from_file, report = load_examples("synthetic_gsm", "test", data=output.parent)
    generated, _ = load_examples("synthetic_gsm", "test", limit=5)
    assert report.kept == 5 and report.dropped == {}
    assert from_file.to_list() == generated.to_list()
