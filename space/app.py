"""The ScalingDown Space: the leaderboard, the scaling-down plot and its answer, a student's training curve, and
models answering side by side.

    make space                                  # serves ./hub (HUB_TARGET=local) on http://127.0.0.1:7860
    HUB_TARGET=hf ORG=myorg python space/app.py # the same app against the real Hub repos

The Hub target comes from ``HUB_TARGET``, ``ORG``, ``HUB_DIR`` (and ``HF_TOKEN`` for private repos), falling back to
``space_config.json``, which ``make push-space`` writes so a pushed Space knows where its repos are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.components.plot import PlotData
from leaderboard_view import DATATYPES, NO_METHOD, SORT_KEYS, BoardData, filter_rows, sort_rows, table
from scaling_plot import scaling_points, scaling_spec
from side_by_side import (
    MAX_MODELS,
    MAX_NEW_TOKENS,
    MAX_QUESTION_CHARS,
    Answer,
    Contender,
    ModelCache,
    compare,
    contenders,
    default_picks,
)
from training_curve import LOSS_TAG, logs_folder, loss_curve

from eval.report import scaling_down_answer
from scalingdown.errors import run_cli
from scalingdown.hub import HubTarget

HERE = Path(__file__).resolve().parent
CONFIG_FILE = HERE / "space_config.json"
QUEUE_SIZE = int(os.environ.get("SPACE_QUEUE_SIZE", 16))  # visitors waiting beyond this are told to retry
CONCURRENT_COMPARISONS = int(os.environ.get("SPACE_CONCURRENCY", 1))  # comparisons generating at once
CONCURRENT_VIEWS = 4  # leaderboard and plot updates: cheap, and never wait behind a generation
ROLES = ["teacher", "student", "ensemble"]
VARIANTS = ["cot", "mc", "nll"]  # eval.run.VARIANTS (the Space does not vendor eval.run)
BASE_MODEL_NOTE = (
    "Greedy decoding, zero-shot. Students and chat teachers get the student prompt through their chat template; "
    "teachers without one (base models such as gemma3-270m) get the same prompt as plain text, zero-shot, while "
    "the leaderboard scores them with one worked example, so here they may do worse than on the board."
)


def space_target() -> HubTarget:
    """The Hub target from the environment, else what ``make push-space`` recorded, else ``./hub``."""
    recorded = json.loads(CONFIG_FILE.read_text()) if CONFIG_FILE.is_file() else {}
    return HubTarget.from_env(
        kind=os.environ.get("HUB_TARGET") or recorded.get("hub_target"),
        org=os.environ.get("ORG") or recorded.get("org"),
        root=os.environ.get("HUB_DIR") or recorded.get("hub_dir"),
    )


def answer_kind(task: str, choices: list[str] | None) -> str:
    """The task's answer kind; an unregistered task is read from whether the question has choices."""
    from datasets_builders.tasks import get_task

    try:
        return get_task(task).answer_kind
    except ValueError:
        return "letter" if choices else "numeric"


def _params(contender: Contender) -> str:
    return f"{contender.params_total / 1e6:.1f}M params" if contender.params_total else "unknown size"


def column_header(contender: Contender | None) -> str:
    if contender is None:
        return ""
    return f"### {contender.name}\n{contender.role} · {_params(contender)}"


def column_stats(answer: Answer) -> str:
    """The line under a column: progress, then latency, tokens and whether the final answer is right."""
    if answer.status in ("queued", "loading"):
        return "⏳ loading the model…"
    if answer.status == "failed":
        return f"⚠️ **failed**: {answer.error}"
    timing = f"{answer.latency_s or 0:.2f} s · {answer.new_tokens} tokens"
    if answer.tokens_per_s:
        timing += f" · {answer.tokens_per_s:.1f} tok/s"
    if answer.status == "generating":
        return f"⏳ generating… {timing}"
    if answer.predicted is None:
        verdict = "❔ no final answer"
    elif answer.correct is None:
        verdict = f"final answer **{answer.predicted}** (no gold answer to check)"
    else:
        verdict = f"{'✅ right' if answer.correct else '❌ wrong'}: **{answer.predicted}**"
    return f"{verdict} · {timing}"


class SpaceCallbacks:
    """Every callback of the page as a plain method, so tests can call them without a browser."""

    def __init__(self, target: HubTarget, models: ModelCache | None = None):
        self.target = target
        self.board = BoardData(target)
        self.models = models or ModelCache(target)

    # -- the task ---------------------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        return self.board.tasks()

    def default_task(self) -> str | None:
        tasks = self.tasks()
        return "synthetic_gsm" if "synthetic_gsm" in tasks else (tasks[0] if tasks else None)

    # -- leaderboard ------------------------------------------------------------------------------------
    def leaderboard(
        self,
        task: str | None,
        roles: list[str] | None = None,
        methods: list[str] | None = None,
        variants: list[str] | None = None,
        min_params_m: float | None = None,
        max_params_m: float | None = None,
        search: str = "",
        sort_by: str = "board order",
        descending: bool = True,
    ):
        """The filtered, sorted board of one task, and a line saying how many rows are shown."""
        rows = self.board.rows(task) if task else []
        shown = sort_rows(
            filter_rows(rows, roles, methods, variants, min_params_m, max_params_m, search), sort_by, descending
        )
        if not rows:
            note = "No leaderboard rows yet: run `make eval` to score teachers and students."
        else:
            note = f"{len(shown)} of {len(rows)} rows · Hub target `{self.target.kind}`"
        return table(shown, self.target), note

    def methods(self, task: str | None = None) -> list[str]:
        """Training methods on one task's board (every task's when ``task`` is None), teachers as 'none'."""
        rows = [row for name in ([task] if task else self.tasks()) for row in self.board.rows(name)]
        return sorted({r.get("method") or NO_METHOD for r in rows} | {NO_METHOD})

    # -- scaling down -----------------------------------------------------------------------------------
    def scaling_down(self, task: str | None, variant: str = "cot"):
        """The interactive accuracy-vs-parameters chart (a Vega-Lite spec) and the eval report's answer."""
        if not task:
            return None, "No leaderboard yet: run `make eval`."
        variant = variant or "cot"
        rows = self.board.rows(task)
        spec = scaling_spec(scaling_points(rows, variant), task, variant)
        answer = scaling_down_answer(rows, task, variant, self.board.rows(task, "validation"))
        return PlotData(type="altair", plot=json.dumps(spec)), answer

    # -- training curve ---------------------------------------------------------------------------------
    def students(self, task: str | None) -> list[tuple[str, str]]:
        """The task's students and ensembles as dropdown choices: ``(label, name)``."""
        return [(c.label, c.name) for c in self.contenders(task).values() if c.role != "teacher"]

    def default_student(self, task: str | None) -> str | None:
        """The best student, as on the side-by-side page."""
        picks = default_picks({n: c for n, c in self.contenders(task).items() if c.role != "teacher"})
        return picks[0] if picks else None

    def training_curve(self, task: str | None, student: str | None) -> tuple[pd.DataFrame, str]:
        """A student's training loss per step from the event files in its model repo, and a line about it."""
        empty = pd.DataFrame({"step": [], "loss": []})
        available = self.contenders(task)
        if not student:
            return empty, "Pick a student from the leaderboard."
        if student not in available or available[student].role == "teacher":
            return empty, f"{student} is not a student on the {task} leaderboard."
        repo = available[student].model_repo
        try:
            folder = logs_folder(self.target, repo)
        except Exception as error:  # a missing repo or an offline Hub
            return empty, f"Could not read the logs of {self.target.repo_id(repo)}: {type(error).__name__}: {error}"
        curve = loss_curve(folder)
        if curve is None:
            return empty, (
                f"{self.target.repo_id(repo)} has no training logs: no TensorBoard event file under `runs/` "
                f"logs `{LOSS_TAG}`."
            )
        note = (
            f"{student}: {LOSS_TAG} at {len(curve.steps)} steps ({curve.steps[0]}–{curve.steps[-1]}), "
            f"last {curve.values[-1]:.4f}, from {len(curve.files)} event file(s) in {self.target.repo_id(repo)}."
        )
        return pd.DataFrame({"step": curve.steps, "loss": curve.values}), note

    # -- side by side -----------------------------------------------------------------------------------
    def contenders(self, task: str | None) -> dict[str, Contender]:
        return contenders(self.board.rows(task)) if task else {}

    def examples(self, task: str | None) -> list[tuple[str, str]]:
        """Test-split questions as dropdown choices: ``(label, id)``."""
        if not task:
            return []
        return [(f"{e['id']}: {e['question'][:90]}", e["id"]) for e in self.board.test_examples(task)]

    def example(self, task: str | None, example_id: str | None) -> tuple[str, str, str]:
        """``(question, choices one per line, gold answer)`` of one test example."""
        for row in self.board.test_examples(task) if task and example_id else []:
            if row["id"] == example_id:
                return row["question"], "\n".join(row["choices"] or []), row["answer"]
        return "", "", ""

    def compare(self, task: str, question: str, choices_text: str, gold: str, models: list[str], max_new_tokens):
        """Stream every picked model's answer: per column a header, the text and its stats, plus all as JSON."""
        available = self.contenders(task)
        if not available:
            raise gr.Error(f"no leaderboard for task {task!r}: only leaderboard models can be compared")
        picked_names = list(dict.fromkeys(models or []))
        unknown = [m for m in picked_names if m not in available]
        if unknown:
            raise gr.Error(f"not on the {task} leaderboard: {', '.join(unknown)}. Pick from: {', '.join(available)}")
        if not picked_names:
            raise gr.Error("pick at least one model")
        if len(picked_names) > MAX_MODELS:
            raise gr.Error(f"pick at most {MAX_MODELS} models ({len(picked_names)} picked)")
        question = (question or "").strip()
        if not question:
            raise gr.Error("type a question or pick an example from the test split")
        if len(question) > MAX_QUESTION_CHARS:
            raise gr.Error(f"the question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
        max_new_tokens = min(max(int(max_new_tokens or 1), 1), MAX_NEW_TOKENS)
        choices = [line.strip() for line in (choices_text or "").splitlines() if line.strip()] or None
        picked = [available[name] for name in picked_names]
        kind = answer_kind(task, choices)
        warned = set()
        for answers in compare(self.models, picked, question, choices, (gold or "").strip(), kind, max_new_tokens):
            for answer in answers:
                if answer.status == "failed" and answer.model not in warned:
                    warned.add(answer.model)
                    gr.Warning(f"{answer.model}: {answer.error}")
            yield self._columns(picked, answers)

    @staticmethod
    def _columns(picked: list[Contender], answers: list[Answer]) -> list:
        slots = list(zip(picked, answers, strict=True)) + [(None, None)] * (MAX_MODELS - len(picked))
        headers = [column_header(c) for c, _ in slots]
        texts = [a.text if a else "" for _, a in slots]
        stats = [column_stats(a) if a else "" for _, a in slots]
        return [*headers, *texts, *stats, [a.to_dict() for a in answers]]


def build_app(target: HubTarget | None = None, models: ModelCache | None = None) -> gr.Blocks:
    """The page: one task picker over three tabs. Queued, so concurrent visitors wait instead of exhausting memory."""
    space = SpaceCallbacks(target or space_target(), models)
    task0 = space.default_task()
    with gr.Blocks(title="ScalingDown") as demo:
        gr.Markdown(
            "# ScalingDown\n*How small can a student model be and still beat the teacher(s) it learned from?* "
            "Students are distilled from teacher rationales; every number below is from `make eval`."
        )
        # Choices are filled at build time too: API clients never run the page's load event, and gradio checks
        # inputs against the choices it knows. Values it does not know are allowed and answered by the callbacks.
        task = gr.Dropdown(space.tasks(), value=task0, label="task", elem_id="task", allow_custom_value=True)

        with gr.Tab("Leaderboard"):
            with gr.Row():
                roles = gr.CheckboxGroup(ROLES, label="role (none ticked = all)", elem_id="filter-role")
                methods = gr.CheckboxGroup(space.methods(), label="method (none ticked = all)", elem_id="filter-method")
                variants = gr.CheckboxGroup(VARIANTS, label="variant (none ticked = all)", elem_id="filter-variant")
            with gr.Row():
                min_params = gr.Number(label="min parameters (M; 0 = no bound)", value=0, minimum=0)
                max_params = gr.Number(label="max parameters (M; 0 = no bound)", value=0, minimum=0)
                search = gr.Textbox(label="search", placeholder="model, method, size…", elem_id="search")
                sort_by = gr.Dropdown(list(SORT_KEYS), value="board order", label="sort by")
                descending = gr.Checkbox(value=True, label="descending")
            count = gr.Markdown(elem_id="leaderboard-count")
            board = gr.Dataframe(
                datatype=DATATYPES, interactive=False, wrap=True, elem_id="leaderboard-table", label="leaderboard"
            )

        with gr.Tab("Scaling down"):
            variant = gr.Radio(
                VARIANTS,
                value="cot",
                label="variant (cot: chain of thought; mc: log-likelihood of the choices; nll: of the gold answer)",
            )
            answer = gr.Markdown(elem_id="scaling-answer")
            plot = gr.Plot(elem_id="scaling-plot", label="accuracy vs parameters (hover a point)")

        with gr.Tab("Training curve"):
            student = gr.Dropdown(
                space.students(task0),
                value=space.default_student(task0),
                label="student",
                elem_id="curve-student",
                allow_custom_value=True,
            )
            curve_note = gr.Markdown(elem_id="curve-note")
            curve = gr.LinePlot(
                x="step",
                y="loss",
                tooltip=["step", "loss"],
                x_title="step",
                y_title=f"training loss ({LOSS_TAG})",
                elem_id="loss-curve",
                label="training loss",
            )

        with gr.Tab("Side by side"):
            gr.Markdown(BASE_MODEL_NOTE)
            with gr.Row():
                example = gr.Dropdown(
                    space.examples(task0),
                    value=None,
                    label="test-split example",
                    elem_id="example",
                    scale=3,
                    allow_custom_value=True,
                )
                max_new_tokens = gr.Slider(
                    1, MAX_NEW_TOKENS, value=128, step=1, label="max new tokens", elem_id="max-new-tokens"
                )
            question = gr.Textbox(
                lines=4, max_length=MAX_QUESTION_CHARS, label="question (or type your own)", elem_id="question"
            )
            with gr.Row():
                choices = gr.Textbox(lines=2, label="choices, one per line (empty for open answers)")
                gold = gr.Textbox(label="gold answer (optional: checks correctness)", elem_id="gold")
            available0 = space.contenders(task0)
            picks = gr.Dropdown(
                [(c.label, c.name) for c in available0.values()],
                value=default_picks(available0),
                multiselect=True,
                max_choices=MAX_MODELS,
                allow_custom_value=True,
                label=f"models from the leaderboard (at most {MAX_MODELS})",
                elem_id="models",
            )
            run = gr.Button("Compare", variant="primary", elem_id="compare")
            columns, headers, texts, stats = [], [], [], []
            with gr.Row():
                for i in range(MAX_MODELS):
                    with gr.Column(visible=False, min_width=220) as column:
                        headers.append(gr.Markdown(elem_id=f"slot-{i}-header"))
                        texts.append(gr.Textbox(lines=10, max_lines=20, show_label=False, elem_id=f"slot-{i}-text"))
                        stats.append(gr.Markdown(elem_id=f"slot-{i}-stats"))
                    columns.append(column)
            with gr.Accordion("all answers as JSON", open=False):
                results = gr.JSON(elem_id="results")

        filters = [roles, methods, variants, min_params, max_params, search, sort_by, descending]

        def on_task(task_name):
            rows, note = space.leaderboard(task_name)
            figure, sentence = space.scaling_down(task_name, "cot")
            available = space.contenders(task_name)
            picked_student = space.default_student(task_name)
            losses, loss_note = space.training_curve(task_name, picked_student)
            return (
                [],
                gr.CheckboxGroup(choices=space.methods(task_name), value=[]),
                [],
                rows,
                note,
                "cot",
                figure,
                sentence,
                gr.Dropdown(choices=space.examples(task_name), value=None),
                gr.Dropdown(choices=[(c.label, c.name) for c in available.values()], value=default_picks(available)),
                gr.Dropdown(choices=space.students(task_name), value=picked_student),
                losses,
                loss_note,
            )

        def on_picks(task_name, names):
            available = space.contenders(task_name)
            chosen = [available[n] for n in (names or []) if n in available][:MAX_MODELS]
            chosen += [None] * (MAX_MODELS - len(chosen))
            return [gr.Column(visible=c is not None) for c in chosen] + [column_header(c) for c in chosen]

        task_outputs = [roles, methods, variants, board, count, variant, plot, answer, example, picks]
        task_outputs += [student, curve, curve_note]

        def on_load():  # boards written after launch appear on the next page load
            current = space.default_task()
            return gr.Dropdown(choices=space.tasks(), value=current), *on_task(current)

        demo.load(on_load, None, [task, *task_outputs], api_visibility="private")
        task.change(on_task, task, task_outputs, api_visibility="private")
        # The named (public) endpoint first: later events of the same function get suffixed API names.
        search.submit(space.leaderboard, [task, *filters], [board, count], api_name="leaderboard")
        for widget in filters:
            widget.change(space.leaderboard, [task, *filters], [board, count], api_visibility="private")
        variant.change(space.scaling_down, [task, variant], [plot, answer], api_name="scaling_down")
        student.input(space.training_curve, [task, student], [curve, curve_note], api_name="training_curve")
        example.change(space.example, [task, example], [question, choices, gold], api_name="example")
        picks.change(on_picks, [task, picks], columns + headers, api_visibility="private")
        run.click(
            space.compare,
            [task, question, choices, gold, picks, max_new_tokens],
            [*headers, *texts, *stats, results],
            api_name="compare",
            concurrency_limit=CONCURRENT_COMPARISONS,
            concurrency_id="generate",
        )
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENT_VIEWS)


if __name__ == "__main__":
    run_cli(lambda: build_app().launch())
