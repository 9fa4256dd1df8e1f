"""The Space: leaderboard data, the scaling-down view, training curves and side-by-side answers, called directly and
through ``gradio_client`` on a launched app, and the pushed Space repo running from its own files."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import gradio as gr
import pytest
from conftest import SPACE_DIR, SPACE_TASK, board_row
from gradio_client import Client
from huggingface_hub import RepoCard

from scalingdown.hub import HubTarget, leaderboard_repo_name
from scalingdown.prompts import student_prompt

sys.path.insert(0, str(SPACE_DIR))
import app  # noqa: E402
import side_by_side  # noqa: E402
from leaderboard_view import model_link  # noqa: E402
from push_space import push_space  # noqa: E402
from scaling_plot import TOOLTIP, axis_ranges, scaling_points  # noqa: E402
from training_curve import loss_curve  # noqa: E402

QUESTION = "What is 3 + 4?"
SEVENS = "777777"  # the digit writer's answer in 6 new tokens: right when it is the gold answer


@pytest.fixture(scope="module")
def space(space_hub):
    return app.SpaceCallbacks(space_hub)


def by_model(answers: list[dict]) -> dict[str, dict]:
    return {a["model"]: a for a in answers}


# -- leaderboard ---------------------------------------------------------------------------------------


def test_leaderboard_filters_searches_sorts_and_links(space, space_hub):
    frame, note = space.leaderboard(SPACE_TASK)
    assert len(frame) == 6 and note.startswith("6 of 6 rows")

    students, note = space.leaderboard(SPACE_TASK, roles=["student"], variants=["cot"], sort_by="accuracy")
    assert list(students["model"]) == ["synthetic_gsm-sft-1M", "synthetic_gsm-label-3M"] and "2 of 6" in note
    assert students["accuracy (%)"].tolist() == [50.0, 10.0] and students["± stderr"].tolist() == [5.0, 5.0]
    assert students["params (M)"].tolist() == [7.28, 12.59] and students["tok/s"].tolist() == [40.0, 40.0]
    sft_repo = space_hub.local_path("model", "synthetic_gsm-sft-1M").resolve()
    assert students["model repo"][0] == f"`{sft_repo}`"
    assert str(space_hub.local_path("dataset", "synthetic_gsm-rationales").resolve()) in students["dataset repo"][0]

    assert list(space.leaderboard(SPACE_TASK, methods=["label"])[0]["model"]) == ["synthetic_gsm-label-3M"]
    assert set(space.leaderboard(SPACE_TASK, methods=["none"])[0]["role"]) == {"teacher"}
    assert list(space.leaderboard(SPACE_TASK, min_params_m=100, max_params_m=200)[0]["model"]) == ["tiny-llama"]
    (gone,) = space.leaderboard(SPACE_TASK, search="GONE")[0].to_dict("records")
    assert gone["status"] == "failed: unknown teacher" and gone["accuracy (%)"] is None
    ascending = space.leaderboard(SPACE_TASK, variants=["cot"], sort_by="parameters", descending=False)[0]
    assert list(ascending["model"])[0] == "synthetic_gsm-sft-1M" and list(ascending["model"])[-1] == "gone-teacher"
    assert space.leaderboard("no-such-task")[1].startswith("No leaderboard rows yet")


def test_links_point_at_the_hub_when_the_target_is_the_hub():
    hub = HubTarget(kind="hf", org="testorg")
    student = {"model": "synthetic_gsm-sft-1M", "role": "student", "model_repo": "testorg/synthetic_gsm-sft-1M"}
    assert (
        model_link(student, hub)
        == "[testorg/synthetic_gsm-sft-1M](https://huggingface.co/testorg/synthetic_gsm-sft-1M)"
    )
    teacher = {"model": "smollm2-135m-instruct", "role": "teacher", "model_repo": "/root/.cache/x"}
    assert "(https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct)" in model_link(teacher, hub)


def inside(points, x_range, y_range) -> bool:
    """Every point and error bar strictly inside the axes."""
    (x_low, x_high), (y_low, y_high) = x_range, y_range
    return bool(
        ((points["params"] > x_low) & (points["params"] < x_high)).all()
        and ((points["low"] > y_low) & (points["high"] < y_high)).all()
    )


def test_scaling_points_keep_failed_rows_flagged_and_inside_the_axes(space):
    rows = space.board.rows(SPACE_TASK)
    unparsed = board_row("never-answers-1M", "student", 0.0, method="sft", params_total=2_000_000, parsed_rate=0.0)
    points = scaling_points([*rows, unparsed], "cot").set_index("model")
    assert len(points) == 6 and set(TOOLTIP) - {"model"} <= set(points.columns)  # the mc row is another variant

    sft = points.loc["synthetic_gsm-sft-1M"]
    assert (sft["score"], sft["parameters"], sft["status"], sft["failed"]) == ("50.0% ± 5.0", "7.3M", "ok", False)
    assert (sft["low"], sft["value"], sft["high"]) == (45.0, 50.0, 55.0)
    assert points.loc["tiny-base", "marker"] == "teacher" and points.loc["tiny-base", "params"] == 270_000_000
    gone = points.loc["gone-teacher"]  # failed, with no parameter count: on the plot at 0%, marked
    assert gone["failed"] and gone["status"] == "failed: unknown teacher" and gone["score"] == "no score"
    assert (gone["marker"], gone["series"], gone["value"], gone["parameters"]) == ("failed", "failed", 0.0, "unknown")
    never = points.loc["never-answers-1M"]
    assert never["failed"] and never["status"] == "no parseable answer" and never["params"] == 2_000_000

    x_range, y_range = axis_ranges(points)
    assert inside(points, x_range, y_range)
    assert x_range[0] < 2_000_000 and x_range[1] > 270_000_000 and y_range[0] < 0 and y_range[1] > 55


def test_pruned_and_pretrained_here_students_are_curves_of_their_own():
    """Students cut from a pretrained model or pre-trained here start elsewhere than the scratch ladder: a point of
    theirs on the scratch curve would draw a scaling trend that no single recipe has."""
    rows = [
        board_row("t-sft-1M", "student", 0.1, method="sft", size="1M", init="scratch", params_total=10**6),
        board_row("t-sft-3M", "student", 0.2, method="sft", size="3M", init="scratch", params_total=3 * 10**6),
        board_row("t-sft-1M-pt", "student", 0.3, method="sft", size="1M-pt", params_total=10**6),
        board_row("t-kd-90M", "student", 0.4, method="kd", size="135M-minitron-90M", init="minitron", params_total=9e7),
        board_row("t-kd-18L", "student", 0.1, method="kd", size="135M-prune-18L", init="pruned", params_total=9e7),
    ]
    series = scaling_points(rows, "cot").set_index("model")["series"].to_dict()
    assert series == {
        "t-sft-1M": "students: sft",
        "t-sft-3M": "students: sft",
        "t-sft-1M-pt": "students: sft, pre-trained here",
        "t-kd-90M": "students: kd, Minitron",  # pruned by importance: not on the evenly pruned curve
        "t-kd-18L": "students: kd, pruned",
    }


def test_failed_rows_sit_past_the_worst_nll():
    rows = [
        board_row("a-1M", "student", 0.5, variant="nll", answer_nll=2.0, answer_nll_stderr=0.5, params_total=10**6),
        board_row("b-3M", "student", None, variant="nll", error="out of memory", params_total=3 * 10**6),
    ]
    points = scaling_points(rows, "nll").set_index("model")
    assert points.loc["a-1M", "score"] == "2.00 nats ± 0.50" and not points.loc["a-1M", "failed"]
    assert points.loc["b-3M", "failed"] and points.loc["b-3M", "value"] > points.loc["a-1M", "high"]
    assert points.loc["b-3M", "status"] == "failed: out of memory"
    assert inside(points, *axis_ranges(points))


def test_scaling_down_chart_is_log_x_with_tooltips_and_the_reports_answer(space, space_hub):
    plot, sentence = space.scaling_down(SPACE_TASK, "cot")
    assert plot.type == "altair"  # a Vega-Lite spec: gradio renders it with hover tooltips
    spec = json.loads(plot.plot)
    x_range, y_range = axis_ranges(scaling_points(space.board.rows(SPACE_TASK), "cot"))
    points_layer = spec["layer"][-1]["encoding"]
    assert points_layer["x"]["scale"] == {"type": "log", "domain": list(x_range), "nice": False}
    assert points_layer["y"]["scale"]["domain"] == list(y_range)
    assert [t["field"] for t in points_layer["tooltip"]] == TOOLTIP
    assert dict(zip(*points_layer["shape"]["scale"].values(), strict=True))["failed"] == "cross"
    colours = dict(zip(*points_layer["color"]["scale"].values(), strict=True))
    assert colours["failed"] not in {c for s, c in colours.items() if s != "failed"}
    plotted = {p["model"]: p for p in spec["data"]["values"]}
    assert len(plotted) == 5 and plotted["gone-teacher"]["failed"] is True
    series = {"teacher: tiny-llama", "teacher: tiny-base", "students: sft", "students: label", "failed"}
    assert {p["series"] for p in plotted.values()} == series

    assert "the smallest student that beats the best teacher is synthetic_gsm-sft-1M" in sentence
    card = (space_hub.local_path("dataset", leaderboard_repo_name(SPACE_TASK)) / "README.md").read_text()
    assert sentence in card  # the same sentence `make eval` wrote into the leaderboard card


# -- training curve ------------------------------------------------------------------------------------


def write_losses(folder, losses: dict[int, float], walltime: float, tag: str = "train/loss") -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for step, loss in losses.items():
            writer.add_scalar(tag, loss, step, walltime=walltime + step)
            writer.add_scalar("train/learning_rate", 1e-3, step, walltime=walltime + step)


def test_loss_curve_reads_every_event_file_under_runs_and_a_resume_overwrites(tmp_path):
    repo = tmp_path / "synthetic_gsm-sft-1M"
    assert loss_curve(repo) is None  # no runs/ at all
    write_losses(repo / "runs" / "eval-only", {1: 9.0}, 0, tag="eval/loss")
    assert loss_curve(repo) is None  # event files, but none logs the training loss

    write_losses(repo / "runs" / "Dec02_10-00-00_host", {1: 4.0, 2: 3.5, 3: 3.25, 4: 3.0}, walltime=1000)
    write_losses(repo / "runs" / "resumed" / "rank0", {4: 2.75, 5: 2.5}, walltime=2000)  # resumed at step 4
    curve = loss_curve(repo)
    assert curve.steps == [1, 2, 3, 4, 5] and curve.values == [4.0, 3.5, 3.25, 2.75, 2.5]
    assert len(curve.files) == 2 and all(f.name.startswith("events.out.tfevents.") for f in curve.files)


def test_the_training_curve_tab_shows_a_students_logs_or_says_there_are_none(space_hub, tmp_path):
    from eval.leaderboard import push_board

    target = HubTarget(kind="local", org="testorg", root=tmp_path / "hub")
    student = tmp_path / "synthetic_gsm-sft-1M"
    student.mkdir()
    (student / "README.md").write_text("# synthetic_gsm-sft-1M\n")
    write_losses(student / "runs" / "Dec02", {10: 2.0, 20: 1.5, 30: 1.25}, walltime=1000)
    target.push_folder(student, "model", student.name, "Train")
    rows = [
        board_row("tiny-llama", "teacher", 0.3, params_total=135_000_000),
        board_row(student.name, "student", 0.5, method="sft", params_total=10**6, model_repo=f"testorg/{student.name}"),
        board_row("synthetic_gsm-kd-3M", "student", 0.2, method="kd", params_total=3 * 10**6),
    ]
    push_board(target, SPACE_TASK, rows, [], {}, {})
    space = app.SpaceCallbacks(target)

    assert [name for _, name in space.students(SPACE_TASK)] == [student.name, "synthetic_gsm-kd-3M"]
    assert space.default_student(SPACE_TASK) == student.name
    losses, note = space.training_curve(SPACE_TASK, student.name)
    assert losses["step"].tolist() == [10, 20, 30] and losses["loss"].tolist() == [2.0, 1.5, 1.25]
    assert "3 steps" in note
    losses, note = space.training_curve(SPACE_TASK, "synthetic_gsm-kd-3M")  # its repo was never pushed
    assert losses.empty and "no training logs" in note
    losses, note = space.training_curve(SPACE_TASK, "tiny-llama")
    assert losses.empty and "not a student" in note
    assert "no training logs" in app.SpaceCallbacks(space_hub).training_curve(SPACE_TASK, "synthetic_gsm-sft-1M")[1]


def test_the_space_offers_every_variant_make_eval_scores():
    from eval.run import VARIANTS

    assert app.VARIANTS == list(VARIANTS)


def test_an_example_from_the_test_split_fills_the_question(space, space_hub):
    examples = space.examples(SPACE_TASK)
    assert len(examples) == 3 and examples[0][0].startswith(examples[0][1] + ": ")
    question, choices, gold = space.example(SPACE_TASK, examples[0][1])
    assert question and choices == "" and re.fullmatch(r"-?\d+", gold)


# -- side by side, called directly ---------------------------------------------------------------------


def test_side_by_side_streams_every_column_and_checks_the_final_answer(space):
    outputs = list(space.compare(SPACE_TASK, QUESTION, "", SEVENS, ["tiny-llama", "synthetic_gsm-sft-1M"], 6))
    first, last = outputs[0], outputs[-1]
    assert first[0].startswith("### tiny-llama") and first[1].startswith("### synthetic_gsm-sft-1M")
    assert first[8].startswith("⏳") and first[9].startswith("⏳")  # stats appear before any model answers
    answers = by_model(last[-1])
    digits, teacher = answers["synthetic_gsm-sft-1M"], answers["tiny-llama"]
    assert digits["text"] == SEVENS and digits["correct"] is True and digits["new_tokens"] == 6
    assert digits["latency_s"] > 0 and digits["tokens_per_s"] > 0 and last[9].startswith("✅ right: **777777**")
    assert teacher["status"] == "done" and teacher["correct"] is False and last[8].startswith(("❌", "❔"))
    assert last[2:4] == ["", ""] and last[6:8] == ["", ""]  # unused columns stay empty


def test_answers_stream_token_by_token(space):
    cache = space.models
    digits = space.contenders(SPACE_TASK)["synthetic_gsm-sft-1M"]
    snapshots = list(side_by_side.compare(cache, [digits], QUESTION, None, None, "numeric", 40, poll_s=0.002))
    partial = [s[0] for s in snapshots if 0 < s[0].new_tokens < 40]
    assert partial and all(a.text == "7" * a.new_tokens for a in partial)
    assert snapshots[-1][0].new_tokens == 40 and snapshots[-1][0].correct is None  # no gold: not checked


def test_base_teachers_get_the_plain_prompt_and_chat_models_their_template(space):
    available = space.contenders(SPACE_TASK)
    base, chat = space.models.get(available["tiny-base"]), space.models.get(available["tiny-llama"])
    plain = student_prompt(QUESTION, None, "numeric") + "\n"
    assert side_by_side.render_prompt(base, QUESTION, None, "numeric") == plain
    assert "<|im_start|>user" in side_by_side.render_prompt(chat, QUESTION, None, "numeric")


def test_a_model_that_fails_to_load_says_why_and_the_others_go_on(space):
    with pytest.warns(UserWarning, match="gone-teacher"):  # a toast in the browser
        last = list(space.compare(SPACE_TASK, QUESTION, "", SEVENS, ["gone-teacher", "synthetic_gsm-sft-1M"], 6))[-1]
    answers = by_model(last[-1])
    gone = answers["gone-teacher"]
    assert gone["status"] == "failed" and "teacher gone-teacher" in gone["error"] and "no-such-model" in gone["error"]
    assert last[8].startswith("⚠️ **failed**") and answers["synthetic_gsm-sft-1M"]["correct"] is True


def test_only_leaderboard_models_and_bounded_inputs_are_accepted(space, tiny_teacher_dir):
    def run(question=QUESTION, models=("synthetic_gsm-sft-1M",)):
        return list(space.compare(SPACE_TASK, question, "", "", list(models), 4))

    with pytest.raises(gr.Error, match="not on the synthetic_gsm leaderboard"):
        run(models=[str(tiny_teacher_dir)])  # a path is never a model name
    with pytest.raises(gr.Error, match="at most 4 models"):
        run(models=list(space.contenders(SPACE_TASK)))
    with pytest.raises(gr.Error, match="the limit is 2000"):
        run(question="x" * 2001)
    with pytest.raises(gr.Error, match="type a question"):
        run(question="  ")


def test_loaded_models_are_cached_and_the_least_recent_evicted(space_hub):
    cache = side_by_side.ModelCache(space_hub, max_models=1)
    available = side_by_side.contenders(app.BoardData(space_hub).rows(SPACE_TASK))
    first = cache.get(available["tiny-llama"])
    assert cache.get(available["tiny-llama"]) is first
    cache.get(available["synthetic_gsm-sft-1M"])
    assert cache.loaded() == ["synthetic_gsm-sft-1M"] and not cache.trust_remote_code


# -- through gradio_client, on a launched app ----------------------------------------------------------


def test_the_launched_apps_api_serves_the_board_the_answer_and_a_comparison(space_url):
    client = Client(space_url, verbose=False)
    board, note = client.predict(
        SPACE_TASK, ["student"], [], ["cot"], None, None, "", "accuracy", True, api_name="/leaderboard"
    )
    models = [row[board["headers"].index("model")] for row in board["data"]]
    assert models == ["synthetic_gsm-sft-1M", "synthetic_gsm-label-3M"] and "2 of 6 rows" in note

    plot, sentence = client.predict(SPACE_TASK, "cot", api_name="/scaling_down")
    assert "synthetic_gsm-sft-1M" in sentence and plot["type"] == "altair"
    assert {p["model"] for p in json.loads(plot["plot"])["data"]["values"]} >= {"gone-teacher", "tiny-llama"}

    losses, note = client.predict(SPACE_TASK, "synthetic_gsm-sft-1M", api_name="/training_curve")
    assert "no training logs" in note

    job = client.submit(
        SPACE_TASK, QUESTION, "", SEVENS, ["synthetic_gsm-sft-1M", "tiny-llama"], 6, api_name="/compare"
    )
    result = job.result()
    answers = by_model(result[-1])
    assert answers["synthetic_gsm-sft-1M"]["correct"] is True and answers["tiny-llama"]["status"] == "done"
    assert result[4] == SEVENS and len(job.outputs()) >= 2  # streamed: at least the empty columns, then answers

    with pytest.raises(Exception, match="not on the synthetic_gsm leaderboard"):
        client.predict(SPACE_TASK, QUESTION, "", "", ["/etc"], 4, api_name="/compare")


# -- the Space repo ------------------------------------------------------------------------------------


def test_the_hub_target_comes_from_the_environment_then_the_pushed_config(tmp_path, monkeypatch):
    for name in ("HUB_TARGET", "ORG", "HUB_DIR"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "space_config.json"
    config.write_text(json.dumps({"hub_target": "local", "org": "pushed", "hub_dir": str(tmp_path / "h")}))
    monkeypatch.setattr(app, "CONFIG_FILE", config)
    assert (app.space_target().org, app.space_target().root) == ("pushed", tmp_path / "h")
    monkeypatch.setenv("ORG", "fromenv")
    monkeypatch.setenv("HUB_DIR", str(tmp_path / "env-hub"))
    assert (app.space_target().org, app.space_target().root) == ("fromenv", tmp_path / "env-hub")


def imported_modules(folder) -> set[str]:
    """Top-level names every ``.py`` file under ``folder`` imports, module level or inside functions."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_push_space_writes_a_space_repo_that_runs_from_its_own_files(space_hub, tmp_path):
    target = HubTarget(kind="local", org="testorg", root=tmp_path / "hub")
    push_space(target)
    folder = target.local_path("space", "scalingdown")
    card = RepoCard.load(folder / "README.md").data
    assert (card.sdk, card.sdk_version, card.app_file) == ("gradio", gr.__version__, "app.py")
    recorded = json.loads((folder / "space_config.json").read_text())
    assert recorded == {"hub_target": "local", "org": "testorg", "hub_dir": str(target.root.resolve())}
    assert push_space(target) == target.revision("space", "scalingdown")  # identical content: no new commit

    # Every third-party import of the pushed files is in requirements.txt (gradio comes from sdk_version).
    own = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    third_party = imported_modules(folder) - own - set(sys.stdlib_module_names) - {"__future__", "gradio"}
    third_party -= {"trl"}  # only synthetic_gsm's own command line needs it, never the Space
    third_party -= {"lm_eval"}  # only eval's helpers in scalingdown/compat.py import it, inside themselves
    distributions = importlib.metadata.packages_distributions()
    required = {
        re.split(r"[<>=@;\[ ]", line)[0].strip().lower().replace("_", "-")
        for line in (folder / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }

    def provided(module: str) -> bool:
        return bool({d.lower().replace("_", "-") for d in distributions.get(module, [module])} & required)

    missing = {m for m in third_party if not provided(m)}
    assert not missing, f"imported by the Space but not in requirements.txt: {missing}"

    # The app imports, builds and reads the board with nothing but the pushed folder (no PYTHONPATH, and the
    # project's own packages, installed in the venv, must not be the ones used).
    script = """
import json, pathlib, sys
import app, datasets_builders.teachers
here = pathlib.Path.cwd().resolve()
project = {"scalingdown", "datasets_builders", "eval", "model_cards", "trainers", "app", "leaderboard_view",
           "side_by_side"}
outside = sorted(n for n, m in list(sys.modules.items()) if n.split(".")[0] in project
                 and not pathlib.Path(m.__file__).resolve().is_relative_to(here))
space = app.SpaceCallbacks(app.space_target())
app.build_app(space.target)
print(json.dumps({"outside": outside, "tasks": space.tasks(), "rows": len(space.leaderboard("synthetic_gsm")[0])}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HUB_DIR=str(space_hub.root), ORG="testorg", GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"outside": [], "tasks": [SPACE_TASK], "rows": 6}
