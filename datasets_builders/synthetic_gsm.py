"""Synthetic GSM: seeded multi-step arithmetic word problems with gold solutions, the offline default task.

    python -m datasets_builders.synthetic_gsm --split train --num_examples 2000 --output_file synthetic_gsm/train.jsonl

Each problem follows one running quantity (apples, dollars, bus passengers, ...) through a chain of steps, every
step using the previous result, so the answer needs all of them. The solution has one GSM8K-style line per step
("She buys 3 * 4 = 12 apples.") and its last number is the answer; like GSM8K gold rationales it holds the working
only, the closing "The answer is N." is added by whoever formats targets. Every number is a whole number between 2
and ``max_total`` (so never "1 apples"): division is exact and percentages are taken only where they give whole numbers.
Splits never share a question: each split draws from its own seeded stream and keeps only questions whose hash
falls in that split's buckets.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from scalingdown.schema import Example

TASK = "synthetic_gsm"
OPERATIONS = ("add", "sub", "mul", "div", "pct")
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 20000, "validation": 1000, "test": 1000}
# Ten buckets of sha256(question); disjoint per split, so the same question can never be in two splits.
_SPLIT_BUCKETS: dict[str, frozenset[int]] = {
    "test": frozenset({0}),
    "validation": frozenset({1}),
    "train": frozenset(range(2, 10)),
}


@dataclass
class SyntheticGSMConfig:
    """Difficulty knobs of the generator; the defaults give short GSM8K-like problems."""

    min_steps: int = field(default=2, metadata={"help": "Fewest arithmetic steps in a solution."})
    max_steps: int = field(default=4, metadata={"help": "Most arithmetic steps in a solution."})
    min_value: int = field(default=2, metadata={"help": "Smallest number stated in a problem."})
    max_value: int = field(default=20, metadata={"help": "Largest number stated in a problem (multipliers stay 2-5)."})
    max_total: int = field(default=1000, metadata={"help": "Upper bound on every intermediate result."})
    num_distractors: int = field(default=0, metadata={"help": "Irrelevant sentences with numbers per problem."})
    operations: str = field(
        default=",".join(OPERATIONS),
        metadata={"help": f"Comma-separated step kinds a problem may use, of {','.join(OPERATIONS)}."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the generator; each split derives its own stream."})

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps} and {self.max_steps}")
        if not 2 <= self.min_value < self.max_value:
            raise ValueError(f"need 2 <= min_value < max_value, got {self.min_value} and {self.max_value}")
        if self.max_total < 2 * self.max_value:
            raise ValueError(f"max_total ({self.max_total}) must be at least 2 * max_value ({2 * self.max_value})")
        if not 0 <= self.num_distractors <= len(_DISTRACTORS):
            raise ValueError(f"num_distractors must be between 0 and {len(_DISTRACTORS)}")
        unknown = set(self.allowed_operations) - set(OPERATIONS)
        if unknown or not self.allowed_operations:
            raise ValueError(f"operations must name some of {OPERATIONS}, got {self.operations!r}")

    @property
    def allowed_operations(self) -> tuple[str, ...]:
        return tuple(op.strip() for op in self.operations.split(",") if op.strip())


# A phrasing is (story sentence, solution lines). Placeholders: {name}; pronouns written in the male form
# {He}/{he}/{him}/{his}/{His} and swapped for female names; {a} start, {x} value before the step, {b} operand,
# {y} value after, {p} percent, {s} the percentage's part.
_Phrase = tuple[str, str]


@dataclass(frozen=True)
class _Scenario:
    unit: str
    question: str
    start: _Phrase
    start_product: _Phrase
    steps: dict[str, tuple[_Phrase, ...]]


_SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(  # shopping
        unit="apples",
        question="How many apples does {name} have now?",
        start=("{name} has {a} apples.", ""),
        start_product=(
            "{name} buys {a} bags of apples with {b} apples in each bag.",
            "{name} buys {a} * {b} = {y} apples.",
        ),
        steps={
            "add": (
                ("At the market {he} buys {b} more apples.", "{He} then has {x} + {b} = {y} apples."),
                ("{His} friend gives {him} {b} apples.", "{He} then has {x} + {b} = {y} apples."),
            ),
            "sub": (
                ("{He} uses {b} apples to bake a pie.", "{He} has {x} - {b} = {y} apples left."),
                ("{He} gives {b} apples to {his} neighbour.", "{He} has {x} - {b} = {y} apples left."),
            ),
            "mul": (
                (
                    "{He} goes back to the market and buys more, until {he} has {b} times as many apples as before.",
                    "{He} now has {x} * {b} = {y} apples.",
                ),
            ),
            "div": (
                (
                    "{He} packs the apples equally into {b} boxes and keeps only one box.",
                    "One box holds {x} / {b} = {y} apples.",
                ),
            ),
            "pct": (
                (
                    "{He} sells {p}% of {his} apples at a farm stand.",
                    "{He} sells {x} * {p} / 100 = {s} apples.\n{He} has {x} - {s} = {y} apples left.",
                ),
            ),
        },
    ),
    _Scenario(  # baking
        unit="cookies",
        question="How many cookies does {name} have now?",
        start=("{name} bakes {a} cookies for a school fair.", ""),
        start_product=(
            "{name} bakes {a} trays of cookies with {b} cookies on each tray.",
            "{name} bakes {a} * {b} = {y} cookies.",
        ),
        steps={
            "add": (
                ("{He} bakes another batch of {b} cookies.", "{He} then has {x} + {b} = {y} cookies."),
                ("{His} grandmother drops off {b} more cookies.", "{He} then has {x} + {b} = {y} cookies."),
            ),
            "sub": (
                ("{He} eats {b} of the cookies while they cool.", "{He} has {x} - {b} = {y} cookies left."),
                ("{b} cookies break and are thrown away.", "{He} has {x} - {b} = {y} cookies left."),
            ),
            "mul": (
                (
                    "The cookies are a hit, so {he} keeps baking until {he} has {b} times as many.",
                    "{He} now has {x} * {b} = {y} cookies.",
                ),
            ),
            "div": (
                (
                    "{He} divides the cookies equally into {b} tins, gives away all but one tin and keeps that one.",
                    "One tin holds {x} / {b} = {y} cookies.",
                ),
            ),
            "pct": (
                (
                    "{He} gives {p}% of the cookies to {his} teachers.",
                    "{He} gives away {x} * {p} / 100 = {s} cookies.\n{He} has {x} - {s} = {y} cookies left.",
                ),
            ),
        },
    ),
    _Scenario(  # savings
        unit="dollars",
        question="How many dollars does {name} have now?",
        start=("{name} has ${a} in {his} piggy bank.", ""),
        start_product=("{name} saves ${b} a week for {a} weeks.", "{He} saves {a} * {b} = {y} dollars."),
        steps={
            "add": (
                ("{He} earns ${b} walking {his} neighbour's dog.", "{He} then has {x} + {b} = {y} dollars."),
                ("{His} aunt gives {him} ${b} for {his} birthday.", "{He} then has {x} + {b} = {y} dollars."),
            ),
            "sub": (
                ("{He} spends ${b} on a new book.", "{He} has {x} - {b} = {y} dollars left."),
                ("{He} buys a board game for ${b}.", "{He} has {x} - {b} = {y} dollars left."),
            ),
            "mul": (
                (
                    "By the end of the year {his} savings have grown to {b} times as much.",
                    "{He} now has {x} * {b} = {y} dollars.",
                ),
            ),
            "div": (
                (
                    "{He} splits the money into {b} equal parts and keeps one part, giving the rest to charity.",
                    "One part is {x} / {b} = {y} dollars.",
                ),
            ),
            "pct": (
                (
                    "{He} spends {p}% of {his} money on a concert ticket.",
                    "The ticket costs {x} * {p} / 100 = {s} dollars.\n{He} has {x} - {s} = {y} dollars left.",
                ),
            ),
        },
    ),
    _Scenario(  # travel
        unit="passengers",
        question="How many passengers are on {name}'s bus now?",
        start=("{name} drives a bus that leaves the station with {a} passengers.", ""),
        start_product=(
            "{name} drives a bus that leaves the station with {a} rows of seats filled, {b} passengers in each row.",
            "There are {a} * {b} = {y} passengers.",
        ),
        steps={
            "add": (
                ("At the next stop, {b} passengers get on.", "Then there are {x} + {b} = {y} passengers."),
                ("At the train station, {b} more people get on.", "Then there are {x} + {b} = {y} passengers."),
            ),
            "sub": (
                ("At the next stop, {b} passengers get off.", "Then there are {x} - {b} = {y} passengers."),
                ("Near the park, {b} people get off.", "Then there are {x} - {b} = {y} passengers."),
            ),
            "div": (
                (
                    "At the terminal the passengers split equally into {b} groups and only one group stays on "
                    "{name}'s bus.",
                    "One group is {x} / {b} = {y} passengers.",
                ),
            ),
            "pct": (
                (
                    "At the market stop, {p}% of the passengers get off.",
                    "{x} * {p} / 100 = {s} passengers get off.\nThen there are {x} - {s} = {y} passengers.",
                ),
            ),
        },
    ),
    _Scenario(  # classroom
        unit="stickers",
        question="How many stickers does {name} have now?",
        start=("{name}, a teacher, has {a} stickers for {his} class.", ""),
        start_product=(
            "{name}, a teacher, buys {a} sheets of stickers with {b} stickers on each sheet.",
            "{He} buys {a} * {b} = {y} stickers.",
        ),
        steps={
            "add": (
                ("A colleague gives {him} {b} more stickers.", "{He} then has {x} + {b} = {y} stickers."),
                ("{He} finds {b} stickers in {his} desk drawer.", "{He} then has {x} + {b} = {y} stickers."),
            ),
            "sub": (
                (
                    "{He} hands out {b} stickers to students who finished their homework.",
                    "{He} has {x} - {b} = {y} stickers left.",
                ),
            ),
            "mul": (
                (
                    "{He} orders more until {he} has {b} times as many stickers.",
                    "{He} now has {x} * {b} = {y} stickers.",
                ),
            ),
            "div": (
                (
                    "{He} splits the stickers equally among {b} classrooms and keeps one share for {his} own room.",
                    "One share is {x} / {b} = {y} stickers.",
                ),
            ),
            "pct": (
                (
                    "{He} gives {p}% of the stickers to the art club.",
                    "{He} gives away {x} * {p} / 100 = {s} stickers.\n{He} has {x} - {s} = {y} stickers left.",
                ),
            ),
        },
    ),
    _Scenario(  # farm
        unit="eggs",
        question="How many eggs does {name} have now?",
        start=("{name}'s hens lay {a} eggs this week.", ""),
        start_product=("{name} has {a} hens and each lays {b} eggs this week.", "The hens lay {a} * {b} = {y} eggs."),
        steps={
            "add": (("{He} buys {b} more eggs from a neighbour.", "{He} then has {x} + {b} = {y} eggs."),),
            "sub": (
                ("{He} uses {b} eggs to make omelettes.", "{He} has {x} - {b} = {y} eggs left."),
                ("{b} eggs crack and have to be thrown away.", "{He} has {x} - {b} = {y} eggs left."),
            ),
            "div": (
                (
                    "{He} packs the eggs equally into {b} cartons, sells all but one carton and keeps that one.",
                    "One carton holds {x} / {b} = {y} eggs.",
                ),
            ),
            "pct": (
                (
                    "{He} sells {p}% of the eggs at the market.",
                    "{He} sells {x} * {p} / 100 = {s} eggs.\n{He} has {x} - {s} = {y} eggs left.",
                ),
            ),
        },
    ),
)

# Irrelevant facts: (sentence, smallest number, largest number).
_DISTRACTORS: tuple[tuple[str, int, int], ...] = (
    ("{name} is {n} years old.", 8, 70),
    ("{His} best friend lives {n} kilometres away.", 2, 40),
    ("The corner shop is open {n} hours a day.", 6, 14),
    ("It is {n} degrees outside.", 5, 35),
    ("{name} has read {n} books this year.", 2, 30),
    ("The nearest park is {n} minutes away by bike.", 3, 25),
    ("{His} cousin collects marbles and has {n} of them.", 10, 90),
)
_NAMES: tuple[tuple[str, bool], ...] = (  # (name, is_female)
    ("Mia", True), ("Liam", False), ("Sofia", True), ("Noah", False), ("Amara", True), ("Mateo", False),
    ("Priya", True), ("Kenji", False), ("Elena", True), ("Omar", False), ("Grace", True), ("Lucas", False),
    ("Zara", True), ("Tomas", False), ("Hana", True), ("Diego", False), ("Leila", True), ("Felix", False),
)  # fmt: skip
_PRONOUNS = {
    False: {"He": "He", "he": "he", "him": "him", "his": "his", "His": "His"},
    True: {"He": "She", "he": "she", "him": "her", "his": "her", "His": "Her"},
}
_PERCENTS = (10, 20, 25, 50, 75)
_MULTIPLIERS = (2, 3, 4, 5)


def _step_numbers(op: str, x: int, rng: random.Random, config: SyntheticGSMConfig) -> dict[str, int] | None:
    """Operand and result of one step on ``x``, or None when ``op`` cannot keep the result whole and in range."""
    if op == "add":
        b = rng.randint(config.min_value, config.max_value)
        return {"b": b, "y": x + b} if x + b <= config.max_total else None
    if op == "sub":
        if x - 2 < config.min_value:
            return None
        b = rng.randint(config.min_value, min(config.max_value, x - 2))
        return {"b": b, "y": x - b}
    if op == "mul":
        factors = [b for b in _MULTIPLIERS if x * b <= config.max_total]
        if not factors:
            return None
        b = rng.choice(factors)
        return {"b": b, "y": x * b}
    if op == "div":
        divisors = [b for b in range(2, 11) if x % b == 0 and x // b >= 2]
        if not divisors:
            return None
        b = rng.choice(divisors)
        return {"b": b, "y": x // b}
    if op == "pct":
        percents = [p for p in _PERCENTS if x * p % 100 == 0]
        if not percents:
            return None
        p = rng.choice(percents)
        part = x * p // 100
        return {"p": p, "s": part, "y": x - part} if 2 <= part <= x - 2 else None
    raise ValueError(f"unknown step {op!r}")


def _make_problem(rng: random.Random, config: SyntheticGSMConfig) -> tuple[str, list[str], int] | None:
    """One problem as (question, solution lines, answer); None when the drawn chain got stuck (caller redraws)."""
    scenario = rng.choice(_SCENARIOS)
    name, is_female = rng.choice(_NAMES)
    words = {"name": name, **_PRONOUNS[is_female]}
    num_steps = rng.randint(config.min_steps, config.max_steps)

    story: list[str] = []
    solution: list[str] = []
    allowed = config.allowed_operations
    if "mul" in allowed and rng.random() < 0.5:  # the start itself is a multiplication step
        a, b = rng.randint(config.min_value, config.max_value), rng.randint(2, min(10, config.max_value))
        if a * b > config.max_total:
            return None
        x = a * b
        sentence, lines = scenario.start_product
        story.append(sentence.format(a=a, b=b, **words))
        solution.extend(lines.format(a=a, b=b, y=x, **words).split("\n"))
        num_steps -= 1
    else:
        x = rng.randint(config.min_value, config.max_value)
        story.append(scenario.start[0].format(a=x, **words))

    previous_op, used = None, set()
    for _ in range(num_steps):
        kinds = [op for op in scenario.steps if op in allowed]
        options = [op for op in kinds if op != previous_op] or kinds
        rng.shuffle(options)
        for op in options:
            numbers = _step_numbers(op, x, rng, config)
            if numbers is not None:
                break
        else:
            return None
        # Prefer phrasings not yet used, so a problem does not say the same sentence twice.
        sentence, lines = rng.choice([p for p in scenario.steps[op] if p not in used] or scenario.steps[op])
        used.add((sentence, lines))
        story.append(sentence.format(x=x, **numbers, **words))
        solution.extend(lines.format(x=x, **numbers, **words).split("\n"))
        x, previous_op = numbers["y"], op

    if not solution:  # a one-step problem that drew a plain start has nothing to compute
        return None
    for template, low, high in rng.sample(_DISTRACTORS, config.num_distractors):
        story.insert(rng.randint(1, len(story)), template.format(n=rng.randint(low, high), **words))
    question = " ".join(story) + " " + scenario.question.format(**words)
    return question, solution, x


def _bucket(question: str) -> int:
    return int(hashlib.sha256(question.encode("utf-8")).hexdigest(), 16) % 10


def generate_examples(n: int, split: str = "train", config: SyntheticGSMConfig | None = None) -> list[Example]:
    """``n`` distinct problems of ``split``, deterministic given ``config.seed``; the first k of n are those of k."""
    if split not in _SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r} for {TASK}; expected one of {sorted(_SPLIT_BUCKETS)}")
    config = config or SyntheticGSMConfig()
    rng = random.Random(f"{TASK}-{config.seed}-{split}")
    examples: list[Example] = []
    seen: set[str] = set()
    misses = 0  # draws since the last new problem: a long run means the knobs' space is used up
    while len(examples) < n:
        if misses > 5000:
            raise ValueError(f"could only make {len(examples)} distinct {split} problems of {n}; widen {config}")
        misses += 1
        problem = _make_problem(rng, config)
        if problem is None:
            continue
        question, solution, answer = problem
        if question in seen or _bucket(question) not in _SPLIT_BUCKETS[split]:
            continue
        misses = 0
        seen.add(question)
        examples.append(
            Example(
                id=f"{TASK}-{split}-{len(examples):05d}",
                task=TASK,
                question=question,
                answer=str(answer),
                gold_rationale="\n".join(solution),
            )
        )
    return examples


@dataclass
class GenerateArguments:
    """Where the generated rows go (JSON Lines in the example schema, readable by ``load_examples(data=...)``)."""

    split: str = field(default="train", metadata={"help": "train, validation or test."})
    num_examples: int | None = field(default=None, metadata={"help": "Rows to write; default per split."})
    output_file: str = field(default="synthetic_gsm/train.jsonl", metadata={"help": "JSON Lines file to write."})


def main(args: GenerateArguments, config: SyntheticGSMConfig) -> None:
    from pathlib import Path

    from datasets import Dataset

    from scalingdown.schema import EXAMPLE_FEATURES

    n = args.num_examples if args.num_examples is not None else DEFAULT_SPLIT_SIZES[args.split]
    rows = [example.to_row() for example in generate_examples(n, args.split, config)]
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in rows] for name in EXAMPLE_FEATURES}
    Dataset.from_dict(columns, features=EXAMPLE_FEATURES).to_json(args.output_file)
    print(f"wrote {len(rows)} {args.split} rows to {args.output_file}")


if __name__ == "__main__":
    from trl import TrlParser

    main(*TrlParser((GenerateArguments, SyntheticGSMConfig)).parse_args_and_config())
