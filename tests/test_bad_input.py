"""Bad input is refused early and clearly, and leaves every repo as it was.

One small local Hub (a dataset repo, two students, a leaderboard: ``space_hub`` of conftest) is copied once for this
module; each bad input below runs a stage's real ``cli`` through ``run_cli`` (a few through ``make``) and must exit 2
with one ``error:`` line naming the problem, no traceback, and every repo's HEAD, files and row counts unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scalingdown.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
ERROR_LINE = re.compile(r"^(\S+: )?error: ")  # ours (`error: ...`) or argparse's (`prog: error: ...`)
TRAIN = ["--config", str(REPO / "recipes/train/sft.yaml")]
PRETRAIN = ["--config", str(REPO / "recipes/pretrain/scratch.yaml")]


@pytest.fixture(scope="module")
def world(tmp_path_factory, space_hub):
    """A copy of the built Hub, bad task files, and a dataset folder without a test split."""
    root = tmp_path_factory.mktemp("bad-input")
    hub = root / "hub"
    shutil.copytree(space_hub.root, hub, symlinks=True)
    files = root / "files"
    for name, lines in {
        "corrupt": ['{"question": "1+1?", "answer": "#### 2"', '{"question": '],  # truncated JSON
        "lists": ["[1, 2, 3]", '"just text"'],
        "empty": [],
    }.items():
        (files / name).mkdir(parents=True)
        for split in ("train", "test"):
            (files / name / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    (root / "a-file").write_text("not a folder")
    train_only = root / "train-only" / "data"
    train_only.mkdir(parents=True)
    dataset = hub / "datasets" / "testorg" / "synthetic_gsm-rationales"
    for parquet in (dataset / "data").glob("train-*.parquet"):
        shutil.copy(parquet, train_only / parquet.name)
    return root


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def snapshot(root: Path) -> dict:
    """Per repo: HEAD, a clean work tree, every file's digest and every parquet file's row count; plus what lies
    beside the Hub folder (``ORG=../../escaped`` would land there)."""
    state: dict = {"beside": sorted(p.name for p in root.iterdir())}
    for git_dir in sorted((root / "hub").glob("*/*/*/.git")):
        repo = git_dir.parent
        files = {
            p.relative_to(repo).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(repo.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(repo).parts
        }
        rows = {rel: pq.ParquetFile(repo / rel).metadata.num_rows for rel in files if rel.endswith(".parquet")}
        head = git(repo, "rev-parse", "HEAD").strip()
        state[repo.relative_to(root).as_posix()] = (head, git(repo, "status", "--porcelain"), files, rows)
    return state


def push_data_cli(argv):
    from datasets_builders.push_data import cli

    return cli(argv)


def train_cli(argv):
    from trainers.sft import cli

    return cli(argv)


def ensemble_cli(argv):
    from trainers.ensemble import cli

    return cli(argv)


def pretrain_cli(argv):
    from trainers.pretrain import cli

    return cli(argv)


def corpus_cli(argv):
    from datasets_builders.corpus.build import cli

    return cli(argv)


def eval_cli(argv):
    from eval.run import cli

    return cli(argv)


def space_cli(argv):
    sys.path.insert(0, str(REPO / "space"))
    from app import space_target

    return space_target()


def push_space_cli(argv):
    sys.path.insert(0, str(REPO / "space"))
    from push_space import main

    return main(argv)


STAGES = {
    "push-data": push_data_cli,
    "train": train_cli,
    "ensemble": ensemble_cli,
    "pretrain": pretrain_cli,
    "corpus": corpus_cli,
    "eval": eval_cli,
    "space": space_cli,
    "push-space": push_space_cli,
}

# (stage, argv, environment, what the error line must say). "{root}" is the module's folder.
CASES = [
    # push-data: numbers, names, choices, paths
    ("push-data", ["--limit", "-5"], {}, r"LIMIT=-5 \(--limit\): must be a positive number of training"),
    ("push-data", ["--test_limit", "-5"], {}, r"TEST_LIMIT=-5"),
    ("push-data", ["--test_limit", "100000"], {}, r"TEST_LIMIT=100000.*only 1000 usable"),
    ("push-data", ["--consistency", "nonsense"], {}, r"CONSISTENCY='nonsense'.*drop, flag"),
    ("push-data", ["--mode", "nonsense"], {}, r"MODE='nonsense'.*teacher_forced"),
    ("push-data", ["--batch_size", "0"], {}, r"BATCH_SIZE=0"),
    ("push-data", ["--max_new_tokens", "0"], {}, r"MAX_NEW_TOKENS=0"),
    ("push-data", ["--shard_size", "-1"], {}, r"--shard_size -1"),
    ("push-data", ["--logits", "-1"], {}, r"LOGITS=-1"),
    ("push-data", ["--max_chars", "5", "--min_chars", "10"], {}, r"--max_chars 5"),
    ("push-data", ["--task", "gsm9k"], {}, r"unknown task 'gsm9k'.*gsm8k"),
    ("push-data", ["--teachers", "nonsense"], {}, r"unknown teacher 'nonsense'"),
    ("push-data", ["--teachers", " , "], {}, r"TEACHERS.*empty"),
    ("push-data", ["--limit", "abc"], {}, r"--limit: invalid int value"),
    ("push-data", ["--data", "{root}/nowhere"], {}, r"DATA=.*nowhere.*no such file"),
    ("push-data", ["--task", "gsm8k", "--data", "{root}/files/corrupt"], {}, r"train\.jsonl.*invalid_json.*:1"),
    ("push-data", ["--task", "gsm8k", "--data", "{root}/files/lists"], {}, r"not_an_object.*train\.jsonl:1"),
    ("push-data", ["--task", "gsm8k", "--data", "{root}/files/empty"], {}, r"no usable gsm8k train example"),
    ("push-data", ["--config", "{root}/missing.yaml"], {}, r"CONFIG=.*missing\.yaml.*no such recipe"),
    # the Hub target, through push-data (the stage that writes first)
    ("push-data", [], {"ORG": "../../escaped"}, r"ORG='\.\./\.\./escaped'.*not a valid Hub name"),
    ("push-data", [], {"ORG": "acme/team"}, r"ORG='acme/team'.*not a valid Hub name"),
    ("push-data", [], {"ORG": "my org"}, r"ORG='my org'.*not a valid Hub name"),
    ("push-data", [], {"HUB_DIR": "{root}/a-file/hub"}, r"HUB_DIR=.*not a folder"),
    ("push-data", [], {"HUB_TARGET": "bogus"}, r"unknown Hub target 'bogus'"),
    # train
    ("train", [*TRAIN, "--method", "nonsense"], {}, r"METHOD='nonsense'.*kd, label, sft"),
    ("train", [*TRAIN, "--size", "bogus"], {}, r"unknown student size 'bogus'.*1M"),
    ("train", [*TRAIN, "--size", "8M-pt"], {}, r"make pretrain SIZE=8M"),
    ("train", [*TRAIN, "--task", "gsm8k"], {}, r"testorg/gsm8k-rationales.*make push-data TASK=gsm8k"),
    ("train", [*TRAIN, "--per_device_train_batch_size", "0"], {}, r"--per_device_train_batch_size 0"),
    ("train", [*TRAIN, "--max_train_rows", "-1"], {}, r"--max_train_rows -1"),
    ("train", [*TRAIN, "--learning_rate", "-1"], {}, r"--learning_rate -1"),
    ("train", [*TRAIN, "--lr_scheduler_type", "nonsense"], {}, r"nonsense"),
    ("train", [*TRAIN, "--dataset_name", "{root}/no/such/folder"], {}, r"--dataset_name .*no such folder"),
    ("train", [*TRAIN], {"HUB_DIR": "{root}/a-file"}, r"HUB_DIR=.*not a folder"),
    ("ensemble", ["--config", str(REPO / "recipes/train/ensemble.yaml"), "--task", "gsm8k"], {}, r"make push-data"),
    # pretrain and its corpus
    ("pretrain", [*PRETRAIN, "--size", "bogus"], {}, r"unknown student size 'bogus'"),
    ("pretrain", [*PRETRAIN, "--size", "135M"], {}, r"scratch size"),
    ("pretrain", [*PRETRAIN, "--price_per_device_hour", "-1"], {}, r"PRICE=-1"),
    ("pretrain", [*PRETRAIN, "--device_kind", "tpu9"], {}, r"DEVICE_KIND=tpu9"),
    ("pretrain", [*PRETRAIN, "--max_documents", "-2"], {}, r"--max_documents -2"),
    ("pretrain", [*PRETRAIN], {}, r"testorg/pretrain-corpus.*make pretrain"),
    ("corpus", ["--task_limit", "-3"], {}, r"--task_limit -3"),
    ("corpus", ["--sources", "nonsense"], {}, r"--sources 'nonsense'"),
    ("corpus", ["--eval_tasks", "gsm9k"], {}, r"unknown task 'gsm9k'"),
    ("corpus", ["--task_data", "{root}/nowhere"], {}, r"DATA=.*nowhere"),
    ("corpus", ["--corpus_repo", "../outside"], {}, r"not a valid Hub name"),
    ("corpus", ["--near_duplicate_threshold", "1.5"], {}, r"--near_duplicate_threshold 1\.5"),
    # eval
    ("eval", ["--limit", "-1"], {}, r"EVAL_LIMIT=-1"),
    ("eval", ["--batch_size", "0"], {}, r"EVAL_BATCH_SIZE=0"),
    ("eval", ["--variants", "nonsense"], {}, r"VARIANTS=nonsense"),
    ("eval", ["--max_gen_toks", "0"], {}, r"--max_gen_toks 0"),
    ("eval", ["--teachers", "nonsense"], {}, r"unknown teacher 'nonsense'"),
    ("eval", ["--task", "gsm8k"], {}, r"make push-data TASK=gsm8k"),
    ("eval", ["--models", "nothing-*"], {}, r"MODELS=nothing-\* matches nothing.*synthetic_gsm-sft-1M"),
    ("eval", ["--dataset_name", "{root}/train-only"], {}, r"no test split.*make push-data.*--dataset_name"),
    # the Space and its repo
    ("space", [], {"ORG": "my org"}, r"ORG='my org'.*not a valid Hub name"),
    ("push-space", [], {"HUB_DIR": "{root}/a-file"}, r"HUB_DIR=.*not a folder"),
]


@pytest.fixture
def in_world(world, monkeypatch, tmp_path):
    """The copied Hub selected through the environment, a scratch working directory, and the state to compare."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUB_TARGET", "local")
    monkeypatch.setenv("HUB_DIR", str(world / "hub"))
    monkeypatch.setenv("ORG", "testorg")
    monkeypatch.delenv("SCALINGDOWN_DEBUG", raising=False)
    before = snapshot(world)
    yield world
    assert snapshot(world) == before


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if ERROR_LINE.match(line)]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(("stage", "argv", "env", "says"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(stage, argv, env, says, in_world, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(root=in_world))
    argv = [word.format(root=in_world) for word in argv]
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda: STAGES[stage](argv))
    assert exited.value.code == 2
    assert re.search(says, error_line(capsys.readouterr().err))


def test_there_are_forty_cases_across_every_stage():
    assert len(CASES) >= 40
    assert {stage for stage, *_ in CASES} == set(STAGES)


# -- the Space: its limits refuse a request without touching a repo -----------------------------------------


@pytest.mark.parametrize(
    ("question", "models", "says"),
    [
        ("What is 3+4?", ["/etc"], "not on the synthetic_gsm leaderboard"),
        (
            "What is 3+4?",
            ["synthetic_gsm-sft-1M", "synthetic_gsm-label-3M", "tiny-llama", "tiny-base", "gone-teacher"],
            "at most 4 models",
        ),
        ("x" * 2001, ["synthetic_gsm-sft-1M"], "the limit is 2000"),
        ("   ", ["synthetic_gsm-sft-1M"], "type a question"),
        ("What is 3+4?", [], "pick at least one model"),
    ],
)
def test_the_space_refuses_bad_requests(question, models, says, in_world):
    import gradio as gr

    sys.path.insert(0, str(REPO / "space"))
    from app import SpaceCallbacks

    from scalingdown.hub import HubTarget

    space = SpaceCallbacks(HubTarget(kind="local", org="testorg", root=in_world / "hub"))
    with pytest.raises(gr.Error, match=says):
        list(space.compare("synthetic_gsm", question, "", "", models, 4))


# -- the real entry points: make and python -m ------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["make", "train", "METHOD=nonsense"], r"METHOD=nonsense.*kd.*sft"),
        (["make", "pretrain", "SIZE=bogus"], r"unknown student size 'bogus'"),  # before the corpus is built
        (["make", "push-data", "LIMIT=2", "ORG=../../escaped"], r"not a valid Hub name"),
    ],
    ids=["train-METHOD", "pretrain-SIZE", "push-data-ORG"],
)
def test_make_refuses_bad_input_in_one_line(command, says, in_world, tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # make never installs here
    env = {**os.environ, "HUB_DIR": str(in_world / "hub"), "PYTHONPATH": str(REPO)}
    env.pop("MAKEFLAGS", None)
    done = subprocess.run(
        [*command, f"VENV={venv}", f"PY={sys.executable}", "--no-print-directory"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert re.search(says, error_line(done.stderr))


# -- task files: bad lines are counted with their line numbers, the good ones kept -------------------------


def test_bad_jsonl_lines_are_counted_per_reason_with_line_numbers(shared_data, tmp_path):
    from datasets_builders.tasks import load_examples

    good = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:3]
    lines = [good[0], "[1, 2, 3]", good[1][: len(good[1]) // 2], "", good[2], '{"question": "no answer"}']
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")

    examples, report = load_examples("gsm8k", "train", data=tmp_path)

    assert len(examples) == 2 and report.kept == 2 and report.total == 5  # the blank line is no row
    assert report.dropped == {"not_an_object": 1, "invalid_json": 1, "no_answer": 1}
    assert report.bad_ids["not_an_object"] == ["train.jsonl:2"]
    assert report.bad_ids["invalid_json"] == ["train.jsonl:3"]
    assert examples[1]["id"] == "gsm8k-train-00003"  # ids keep the row's position, bad lines included


# -- eval commits only what it wrote ----------------------------------------------------------------------


def test_eval_card_update_never_commits_a_truncated_weights_file(world, tmp_path):
    from eval.leaderboard import load_board, update_model_card
    from scalingdown.hub import HubTarget

    target = HubTarget(kind="local", org="testorg", root=tmp_path / "hub")
    shutil.copytree(world / "hub", target.root, symlinks=True)
    repo = target.local_path("model", "synthetic_gsm-sft-1M")
    weights = repo / "model.safetensors"
    original = git(repo, "rev-parse", "HEAD:model.safetensors").strip()
    with open(weights, "r+b") as file:  # `truncate -s 1000` of a download gone wrong
        file.truncate(1000)

    rows, _ = load_board(target, "synthetic_gsm")
    mine = [row for row in rows if row["model"] == "synthetic_gsm-sft-1M"]
    commit = update_model_card(target, "synthetic_gsm-sft-1M", mine, "testorg/synthetic_gsm-leaderboard", "url")

    assert commit and commit != original
    assert "## Results" in git(repo, "show", f"{commit}:README.md")
    assert git(repo, "rev-parse", f"{commit}:model.safetensors").strip() == original
    assert git(repo, "diff", "--name-only", f"{commit}~1", commit).split() == ["README.md"]
    assert weights.stat().st_size == 1000  # left as found, and not staged
