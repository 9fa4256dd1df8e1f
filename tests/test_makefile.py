"""The Makefile runs recipes: the `# make ...` line at the top of every recipe, dry-run with `make -n`, gives the
stage's module a command line that its own TrlParser parses into the recipe's values; a variable set on the
make command line (or in the environment) overrides the recipe, one left unset does not reach the module."""

from __future__ import annotations

import enum
import itertools
import os
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import yaml
from trl import TrlParser

REPO = Path(__file__).resolve().parents[1]
MODULES = {
    "datasets_builders.push_data",
    "datasets_builders.corpus",
    "trainers.sft",
    "trainers.ensemble",
    "trainers.pretrain",
    "eval.run",
}
STAGES = ("push_data", "train", "eval", "pretrain", "corpus")
RECIPES = sorted(path for stage in STAGES for path in (REPO / "recipes" / stage).glob("*.yaml"))
# The option each variable sets, per module (a variable a header uses must be listed to be checked).
VARIABLE_FIELDS = {
    "TASK": "task",
    "SIZE": "size",
    "METHOD": "method",
    "LIMIT": "limit",
    "ROUNDS": "rounds",
    "EVAL_LIMIT": "limit",
    "VARIANTS": "variants",
    "DATA": "data",
}


class Parsed(Exception):
    """Raised by the patched parser to stop a module right after it parsed its command line."""

    def __init__(self, namespaces: tuple) -> None:
        self.namespaces = namespaces


def make_dry_run(target: str, variables: dict[str, str], tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """``make -n TARGET VAR=value...`` in a clean environment (no inherited MAKEFLAGS or stage variables), with a
    VENV whose install stamp is fresh, so only the stage's own command lines are printed."""
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    (venv / ".installed").touch()
    clean_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LC_ALL": "C", **(env or {})}
    assignments = [f"{name}={value}" for name, value in variables.items()]
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target, f"VENV={venv}", *assignments],
        cwd=REPO,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def module_commands(output: str) -> list[tuple[str, list[str]]]:
    """``(module, argv)`` of every ``python -m MODULE ...`` line of a dry run, for the stage modules."""
    commands = []
    for line in output.splitlines():
        words = shlex.split(line)
        if "-m" in words and words[words.index("-m") + 1] in MODULES:
            at = words.index("-m")
            commands.append((words[at + 1], words[at + 2 :]))
    return commands


def parse_with_module(module: str, argv: list[str]) -> dict:
    """Run ``python -m MODULE ARGV`` in-process up to its own TrlParser's result; every parsed field by name."""
    original = TrlParser.parse_args_and_config

    def parse_and_stop(parser, args=None, *rest, **kwargs):
        raise Parsed(original(parser, args, *rest, **kwargs))

    with (
        mock.patch.object(TrlParser, "parse_args_and_config", parse_and_stop),
        # a GPU recipe's bf16 is a value to check here, not this machine's capability
        mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True),
        mock.patch.object(sys, "argv", [module, *argv]),
        warnings.catch_warnings(),
        pytest.raises(Parsed) as parsed,
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    values = {}
    for namespace in reversed(parsed.value.namespaces):  # the stage's own arguments come first and win
        values.update(vars(namespace))
    return values


def plain(value):
    """A parsed value as YAML writes it (enums by value, ``report_to: none`` as TrainingArguments stores it)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list) and all(isinstance(v, enum.Enum) for v in value):
        return [v.value for v in value]
    return value


def header_command(recipe: Path) -> tuple[str, dict[str, str]]:
    """The make target and variables of a recipe's first line, ``# make TARGET VAR=value ...``."""
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# make "), f"{recipe.relative_to(REPO)}: line 1 is not a `# make ...` command"
    target, *words = shlex.split(first[len("# make ") :])
    assignments = itertools.takewhile(lambda word: "=" in word, words)  # a remark may follow the command
    return target, dict(assignment.split("=", 1) for assignment in assignments)


def recipe_keys(recipe: Path) -> dict:
    keys = yaml.safe_load(recipe.read_text())
    if keys.get("report_to") == "none":
        keys["report_to"] = []  # TrainingArguments stores "none" as no integrations
    return keys


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: str(path.relative_to(REPO / "recipes")))
def test_every_recipe_header_runs_that_recipe(recipe, tmp_path):
    target, variables = header_command(recipe)
    relative = str(recipe.relative_to(REPO))
    commands = [
        (m, argv)
        for m, argv in module_commands(make_dry_run(target, variables, tmp_path))
        if relative in argv and "--dry_run" not in argv  # make pretrain checks its options before the corpus
    ]
    assert len(commands) == 1, f"`make {target}` does not run {relative} once: {commands}"
    module, argv = commands[0]
    assert argv[argv.index("--config") + 1] == relative

    parsed = parse_with_module(module, argv)
    expected = recipe_keys(recipe)
    unknown = [name for name in variables if name not in VARIABLE_FIELDS and name not in ("CONFIG", "CORPUS", "LORA")]
    assert not unknown, f"add {unknown} to VARIABLE_FIELDS to check them"
    if variables.get("METHOD") == "ensemble":  # picks the ensemble's module instead of setting a method
        assert module == "trainers.ensemble"
        del variables["METHOD"]
    overrides = {VARIABLE_FIELDS[name]: value for name, value in variables.items() if name in VARIABLE_FIELDS}
    overrides = {field: value for field, value in overrides.items() if field in parsed}
    for key, value in expected.items():
        assert key in parsed, f"{relative}: `{key}` is no option of {module}"
        if key in overrides:
            continue
        assert plain(parsed[key]) == value, f"{relative}: {key} = {parsed[key]!r}, the recipe says {value!r}"
    for field, value in overrides.items():
        assert str(plain(parsed[field])) == value, f"{relative}: {field} = {parsed[field]!r}, make said {value!r}"


def test_variables_set_override_the_recipe_and_unset_ones_are_not_passed(tmp_path):
    recipe = "recipes/push_data/arc_easy.yaml"
    (_, bare), *rest = module_commands(make_dry_run("push-data", {"CONFIG": recipe}, tmp_path))
    assert not rest and bare == ["--config", recipe]

    variables = {"CONFIG": recipe, "LIMIT": "8", "TEACHERS": "tiny", "EVAL_LIMIT": "3"}
    ((module, argv),) = module_commands(make_dry_run("push-data", variables, tmp_path))
    parsed = parse_with_module(module, argv)
    assert (parsed["task"], parsed["data"], parsed["limit"], parsed["teachers"]) == (
        "arc_easy",
        "../shared/data/arc_easy",
        8,
        "tiny",
    )
    assert parsed["test_limit"] == 100  # the recipe's, not a Makefile default

    # the environment counts as set too; TASK alone picks the task's recipe
    ((module, argv),) = module_commands(make_dry_run("push-data", {}, tmp_path, env={"TASK": "gsm8k"}))
    assert parse_with_module(module, argv)["data"] == "../shared/data/gsm8k"


def test_each_stage_reads_its_own_variables(tmp_path):
    # LIMIT is push-data's: eval's limit is EVAL_LIMIT, and LIMIT does not reach eval
    ((module, argv),) = module_commands(make_dry_run("eval", {"LIMIT": "5", "MODELS": "a-*,b"}, tmp_path))
    parsed = parse_with_module(module, argv)
    assert (module, parsed["limit"], parsed["models"]) == ("eval.run", 50, "a-*,b")
    ((_, argv),) = module_commands(make_dry_run("eval", {"EVAL_LIMIT": "7", "TASK": "arc_easy"}, tmp_path))
    parsed = parse_with_module("eval.run", argv)
    assert (parsed["limit"], parsed["task"], parsed["variants"]) == (7, "arc_easy", "cot")

    ((module, argv),) = module_commands(
        make_dry_run("train", {"METHOD": "kd", "ALPHA": "0.3", "TASK": "gsm8k"}, tmp_path)
    )
    parsed = parse_with_module(module, argv)
    assert (module, parsed["method"], parsed["alpha"], parsed["task"], parsed["kd_loss"]) == (
        "trainers.sft",
        "kd",
        0.3,
        "gsm8k",
        "fkl",
    )

    variables = {"METHOD": "ensemble", "ROUNDS": "4", "SIZE": "3M", "COMBINE": "logprobs"}
    ((module, argv),) = module_commands(make_dry_run("train", variables, tmp_path))
    parsed = parse_with_module(module, argv)
    assert (module, parsed["rounds"], parsed["size"], parsed["combine"]) == ("trainers.ensemble", 4, "3M", "logprobs")

    ((module, argv),) = module_commands(make_dry_run("train", {"LORA": "1", "SIZE": "135M"}, tmp_path))
    parsed = parse_with_module(module, argv)
    assert (parsed["use_peft"], parsed["lora_r"], parsed["size"]) == (True, 16, "135M")

    check, corpus, pretrain = module_commands(
        make_dry_run("pretrain", {"SIZE": "8M", "DATA": "x", "PRICE": "0.5"}, tmp_path)
    )
    assert check == (pretrain[0], [*pretrain[1], "--dry_run", "true"])  # every option checked before the corpus
    assert corpus[0] == "datasets_builders.corpus" and parse_with_module(*corpus)["task_data"] == "x"
    parsed = parse_with_module(*pretrain)
    assert (parsed["size"], parsed["price_per_device_hour"], parsed["learning_rate"]) == ("8M", 0.5, 1.0e-3)


def test_demo_is_the_demo_study_then_the_space(tmp_path):
    lines = make_dry_run("demo", {}, tmp_path).splitlines()
    study = shlex.split(lines[0])
    assert study[1:] == ["-m", "scalingdown.study", "--config", "recipes/study/demo.yaml"]
    assert "push_space.py" in lines[1]
    other = shlex.split(make_dry_run("demo", {"CONFIG": "recipes/study/synthetic_gsm.yaml"}, tmp_path).splitlines()[0])
    assert other[-1] == "recipes/study/synthetic_gsm.yaml"


def test_clean_removes_outputs_the_local_hub_and_the_cache_root(tmp_path):
    assert make_dry_run("clean", {}, tmp_path).split() == ["rm", "-rf", "outputs", "hub", ".cache"]
    cache = str(tmp_path / "cache")
    assert make_dry_run("clean", {}, tmp_path, env={"SCALINGDOWN_CACHE": cache}).split()[-1] == cache
