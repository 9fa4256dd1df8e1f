"""`make eval`: the scaling-down answer, leaderboard merging, and a real run over a tiny Hub (lm-eval in processes)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import push_student, tiny_build_args, train_configs
from datasets import load_dataset
from huggingface_hub import ModelCard

from datasets_builders.push_data import main as push_data
from eval.leaderboard import merge
from eval.measure import MeasureResult, mark_unparseable
from eval.models import parameter_counts, student_models, weights_key
from eval.plots import plot_scaling_down
from eval.report import card_verdict, scaling_down_answer
from eval.run import EvalArguments
from eval.run import main as run_eval
from scalingdown.errors import UserError
from scalingdown.hub import HubTarget
from trainers.sft import build_run
from trainers.sft import main as train


def row(model, role, accuracy, stderr=0.02, params=1_000_000, method="sft", variant="cot", status="ok"):
    return dict(
        model=model,
        role=role,
        task="synthetic_gsm",
        variant=variant,
        accuracy=accuracy,
        stderr=stderr,
        params_total=params,
        method=method,
        lora=False,
        status=status,
    )


# -- the answer -----------------------------------------------------------------------------------------


def test_answer_names_the_smallest_student_that_beats_the_best_teacher():
    rows = [
        row("teacher-big", "teacher", 0.40, params=270_000_000),
        row("teacher-small", "teacher", 0.30, params=135_000_000),
        row("student-60M", "student", 0.55, params=60_000_000),
        row("student-8M", "student", 0.43, stderr=0.05, params=8_000_000),
        row("student-1M", "student", 0.39, params=1_000_000),
        row("student-crashed", "student", None, params=500_000, status="failed"),
    ]
    answer = scaling_down_answer(rows, "synthetic_gsm")
    # student-8M is 3 points ahead, within two combined standard errors (sqrt(0.05^2 + 0.02^2)): not a win
    assert "is student-60M (60.0M params, 22% of the teacher's parameters)" in answer
    assert "teacher-big (270.0M params, the best on test: no validation scores)" in answer
    assert "+15.0 points, more than two combined standard errors (5.3)" in answer
    rows[3]["stderr"] = 0.001
    rows[0]["stderr"] = 0.001
    answer = scaling_down_answer(rows, "synthetic_gsm")
    assert "is student-8M (8.0M params, 3% of" in answer and "+3.0 points, more than two" in answer


def test_the_best_teacher_is_picked_on_validation_and_compared_on_test():
    test = [
        row("teacher-a", "teacher", 0.30, params=135_000_000),
        row("teacher-a-3shot", "teacher", 0.20, params=135_000_000),
        row("student-8M", "student", 0.27, stderr=0.01, params=8_000_000),
    ]
    validation = [{**r, "split": "validation"} for r in test]
    validation[0]["accuracy"], validation[1]["accuracy"] = 0.10, 0.25  # 3 shots win on validation
    answer = scaling_down_answer(test, "synthetic_gsm", "cot", validation)
    assert "teacher-a-3shot (135.0M params, best on validation of 2 teacher variants) at 20.0%" in answer
    assert "is student-8M" in answer and "+7.0 points" in answer
    # on test alone, the other variant would have been the one to beat
    assert "no student beats the best teacher" in scaling_down_answer(test, "synthetic_gsm")


def test_a_students_card_says_it_beats_the_best_teacher_only_when_it_clearly_does():
    rows = [
        row("teacher", "teacher", 0.20, params=135_000_000),
        {**row("student-3M", "student", 0.35, params=12_000_000), "n": 400},
        row("student-1M", "student", 0.23, params=7_000_000),  # ahead by 1.1 combined standard errors
    ]
    verdict = card_verdict("student-3M", rows)
    assert verdict.startswith("**This student beats the best teacher**, teacher (135.0M params")
    assert "35.0% ± 2.0 vs 20.0% ± 2.0 on 400 test questions, +15.0 points, more than two" in verdict
    assert card_verdict("student-1M", rows) is None
    assert card_verdict("teacher", rows) is None and card_verdict("missing", rows) is None


def test_answer_says_when_no_student_beats_a_teacher_yet():
    rows = [row("teacher", "teacher", 0.40, params=135_000_000), row("student-8M", "student", 0.10)]
    answer = scaling_down_answer(rows, "synthetic_gsm")
    assert answer.startswith("synthetic_gsm: no student beats the best teacher by more than two combined standard")
    assert "-30.0 points, within two combined standard errors" not in answer
    assert "-30.0 points, more than two combined standard errors (10.6)" in answer
    assert "no teacher was scored" in scaling_down_answer([rows[1]], "synthetic_gsm")
    assert "nothing is scored on test yet" in scaling_down_answer([], "synthetic_gsm", validation_rows=rows)


def test_plot_is_a_png(tmp_path):
    rows = [
        row("t", "teacher", 0.4, params=135_000_000),
        row("s1", "student", 0.1),
        row("s2", "student", 0.2, params=8e6),
    ]
    rows.append(row("l1", "student", 0.05, method="label"))
    path = plot_scaling_down(rows, "synthetic_gsm", tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    graded = [{**r, "variant": "nll", "accuracy": None, "answer_nll": 30 - 100 * r["accuracy"]} for r in rows]
    path = plot_scaling_down(graded, "synthetic_gsm", tmp_path / "nll.png", "nll")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_merge_replaces_rows_and_never_duplicates():
    old = [row("a", "student", 0.1), row("b", "student", 0.2), row("a", "student", 0.3, variant="mc")]
    merged = merge(old, [row("a", "student", 0.9)])
    assert len(merged) == 3
    assert {(r["model"], r["variant"]): r["accuracy"] for r in merged} == {
        ("a", "cot"): 0.9,
        ("b", "cot"): 0.2,
        ("a", "mc"): 0.3,
    }


def test_a_model_with_no_parseable_answer_is_a_failed_row():
    result = mark_unparseable(MeasureResult(parsed_rate=0.0, n=3, samples=[{"response": "   "}]))
    assert result.status == "failed" and "no parseable final answer in 3 responses" in result.error
    assert mark_unparseable(MeasureResult(parsed_rate=0.5, n=2)).status == "ok"


def test_a_scoring_process_that_dies_before_its_result_is_a_failed_row(tmp_path):
    """The forked scoring process cannot open its log (no such folder) and exits: the run gets a failed result that
    names the exit status, instead of ending."""
    from eval.measure import MeasureRequest
    from eval.run import run_measure

    request = MeasureRequest(
        model_path=str(tmp_path / "model"), lm_eval_task="scalingdown_synthetic_gsm", dataset_path="."
    )
    result = run_measure(request, tmp_path / "missing-log-folder")
    assert result.status == "failed" and result.error.startswith("scoring process exited 1")


# -- model facts ----------------------------------------------------------------------------------------


def test_parameter_counts_and_weights_key_come_from_the_files(tiny_teacher_dir, tmp_path):
    counts = parameter_counts(tiny_teacher_dir)
    embedding = 49152 * 32
    assert counts["total"] - counts["non_embedding"] == embedding and counts["non_embedding"] > 0
    copy = tmp_path / "copy"
    shutil.copytree(tiny_teacher_dir, copy)
    assert weights_key(copy) == weights_key(tiny_teacher_dir)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    assert weights_key(copy) != weights_key(tiny_teacher_dir)


# -- a real run -----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_hub(hub_dir, tmp_path, tiny_teacher_dir, digit_writer_dir):
    """A local Hub with a tiny synthetic_gsm dataset repo and two tiny students (one writes numbers)."""
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4, test_limit=3))
    target = HubTarget.from_env()
    push_student(target, digit_writer_dir, "synthetic_gsm-sft-1M", tmp_path)
    push_student(target, tiny_teacher_dir, "synthetic_gsm-label-1M", tmp_path, method="label")
    return target


def test_make_eval_scores_teachers_and_students_and_publishes(
    tiny_hub, tiny_teacher_dir, tmp_path, capsys, monkeypatch, test_cache
):
    # run from the folder holding the Hub, with the default relative HUB_DIR, as `make eval` is
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUB_DIR", "hub")
    args = dict(task="synthetic_gsm", limit=2, batch_size=2, latency_samples=1, max_gen_toks=8)
    bad_teacher = str(tmp_path / "no-such-model")
    with pytest.raises(UserError, match="unknown teacher"):  # refused before anything is scored
        EvalArguments(**args, teachers=f"{tiny_teacher_dir},{bad_teacher}")
    first = run_eval(EvalArguments(**args, teachers=str(tiny_teacher_dir)))

    rows = {r["model"]: r for r in first["rows"]}
    assert set(rows) == {"tiny-llama", "synthetic_gsm-sft-1M", "synthetic_gsm-label-1M"}
    for name in ("tiny-llama", "synthetic_gsm-sft-1M"):
        scored = rows[name]
        assert scored["n"] == 2 and scored["latency_s"] > 0 and scored["latency_s_batch1"] > 0
        assert scored["peak_rss_mb"] > 100 and scored["params_total"] >= parameter_counts(tiny_teacher_dir)["total"]
    digits = rows["synthetic_gsm-sft-1M"]
    assert digits["status"] == "ok" and digits["parsed_rate"] == 1.0 and digits["accuracy"] == 0.0
    assert digits["tokens_per_s"] > 0 and digits["tokens_per_s_batch1"] > 0 and digits["stderr"] is not None
    # The random tiny teacher writes no number at all: a failed row that says so, not a crash.
    assert rows["tiny-llama"]["status"] == "failed" and "no parseable final answer" in rows["tiny-llama"]["error"]
    assert rows["tiny-llama"]["role"] == "teacher" and rows["synthetic_gsm-label-1M"]["method"] == "label"

    board = load_dataset(first["board"], split="train")
    assert len(board) == 3
    samples = load_dataset(first["board"], "samples", split="train")
    assert set(samples["model"]) == {"tiny-llama", "synthetic_gsm-sft-1M", "synthetic_gsm-label-1M"}
    card = (tiny_hub.local_path("dataset", "synthetic_gsm-leaderboard") / "README.md").read_text()
    assert first["answers"]["cot"] in card and "scaling_down_cot.png" in card
    assert (tiny_hub.local_path("dataset", "synthetic_gsm-leaderboard") / "scaling_down_cot.png").is_file()

    assert (tmp_path / "outputs" / "eval" / "synthetic_gsm" / "report.md").is_file()
    # results are cached under SCALINGDOWN_CACHE, and only the ones that scored
    (cached,) = (test_cache / "eval" / "synthetic_gsm").iterdir()
    assert cached.name.startswith("synthetic_gsm-sft-1M-cot-")

    student_card = ModelCard.load(tiny_hub.local_path("model", "synthetic_gsm-sft-1M") / "README.md")
    assert "synthetic_gsm-sft-1M |" in student_card.text and "fills this section" not in student_card.text
    (result,) = student_card.data.eval_results
    assert result.metric_value == 0.0 and result.dataset_type == "testorg/synthetic_gsm-rationales"

    # One model again: its row is replaced, the others stay, nothing is duplicated, and the student whose
    # card was just updated (new commit, same weights) is not re-scored.
    capsys.readouterr()
    second = run_eval(EvalArguments(**args, teachers=str(tiny_teacher_dir), models="synthetic_gsm-sft-*"))
    out = capsys.readouterr().out
    assert "synthetic_gsm-sft-1M [cot]: cached" in out
    assert "tiny-llama [cot]: scoring" not in out and "label-1M [cot]: scoring" not in out
    assert len(load_dataset(second["board"], split="train")) == 3
    assert sorted(r["model"] for r in second["rows"]) == sorted(rows)


def test_a_dataset_without_test_split_is_refused_with_the_fix(hub_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "train-only"
    (folder / "data").mkdir(parents=True)
    load_dataset("parquet", data_files={"train": str(_any_train_parquet(tmp_path, tiny_teacher_dir))})[
        "train"
    ].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    args = EvalArguments(task="synthetic_gsm", dataset_name=str(folder), teachers=str(tiny_teacher_dir), limit=2)
    with pytest.raises(UserError, match=r"no test split.*make push-data.*--dataset_name"):
        run_eval(args)
    assert not HubTarget.from_env().exists("dataset", "synthetic_gsm-leaderboard")  # no board of failed rows


def _any_train_parquet(tmp_path, teacher):
    push_data(tiny_build_args(tmp_path / "work2", teacher, limit=2, test_limit=1))
    location = HubTarget.from_env().local_path("dataset", "synthetic_gsm-rationales")
    return next((location / "data").glob("train-*.parquet"))


def test_the_nll_variant_scores_the_gold_answer_lower_once_a_student_is_trained_on_it(
    hub_dir, tmp_path, tiny_teacher_dir, monkeypatch
):
    """`make eval VARIANTS=nll`: a label student (trained on 'The answer is X.') gives the gold answer of unseen test
    questions a lower NLL than its own initial weights do, and the row, board, card and answer say so."""
    monkeypatch.chdir(tmp_path)
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=12, test_limit=3))
    configs = train_configs(tmp_path, method="label", max_steps=12)
    untrained = tmp_path / "untrained-1M"  # the student's initial weights: same size, seed and tokenizer
    run = build_run(*configs[:3])
    run.trainer.model.save_pretrained(untrained)
    run.tokenizer.save_pretrained(untrained)
    train(*configs)

    args = dict(task="synthetic_gsm", variants="nll", limit=3, batch_size=3, latency_samples=1)
    result = run_eval(EvalArguments(**args, teachers=str(untrained)))
    rows = {r["model"]: r for r in result["rows"]}
    trained, initial = rows["synthetic_gsm-label-1M"], rows["untrained-1M"]
    for row in (trained, initial):
        assert (row["status"], row["metric"], row["variant"], row["n"]) == ("ok", "answer_nll", "nll", 3)
        assert row["accuracy"] is None and row["answer_nll_stderr"] is not None and row["latency_s"] > 0
    assert initial["answer_nll"] > 3 * 10  # several nats per token of 'The answer is N.' at random weights
    assert trained["answer_nll"] < initial["answer_nll"] / 2

    board = load_dataset(result["board"], split="train")
    assert sorted(board["answer_nll"]) == sorted([trained["answer_nll"], initial["answer_nll"]])
    samples = load_dataset(result["board"], "samples", split="train")
    assert all(r.startswith("-log p(gold answer) = ") for r in samples["response"])
    assert result["answers"]["nll"].startswith(
        "synthetic_gsm (log-likelihood of the gold answer, nats per answer, lower is better): the smallest student "
        "below the best teacher is synthetic_gsm-label-1M"
    )
    card = ModelCard.load(hub_dir / "models" / "testorg" / "synthetic_gsm-label-1M" / "README.md")
    (entry,) = card.data.eval_results
    assert entry.metric_type == "answer_nll" and entry.metric_value == round(trained["answer_nll"], 4)
    assert f"NLL {trained['answer_nll']:.2f}" in card.text


def test_ctranslate2_eval_backend_answers_exactly_as_transformers(tmp_path, hub_dir, tiny_teacher_dir):
    """Teachers can be scored through CTranslate2 (float32): the same responses and token counts as lm-eval's own
    transformers generation, on the same requests."""
    from eval.measure import MeasureRequest, measure

    location = push_data(tiny_build_args(tmp_path, tiny_teacher_dir))
    results = {
        backend: measure(
            MeasureRequest(
                model_path=str(tiny_teacher_dir),
                lm_eval_task="scalingdown_synthetic_gsm",
                dataset_path=location,
                limit=4,
                batch_size=4,
                latency_samples=0,
                max_gen_toks=12,
                backend=backend,
            )
        )
        for backend in ("transformers", "ctranslate2")
    }
    reference, fast = results["transformers"], results["ctranslate2"]
    assert [s["response"] for s in fast.samples] == [s["response"] for s in reference.samples]
    assert fast.n == 4 and fast.generated_tokens == reference.generated_tokens > 0


def test_a_new_train_split_keeps_zero_shot_scores_and_rescores_few_shot_ones(tmp_path):
    from eval.run import data_key

    (tmp_path / "data").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "data" / f"{split}-00000-of-00001.parquet").write_bytes(split.encode())
    zero, few = data_key(str(tmp_path), "validation", 0, "rev1"), data_key(str(tmp_path), "validation", 3, "rev1")
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"more rationales")
    assert data_key(str(tmp_path), "validation", 0, "rev2") == zero
    assert data_key(str(tmp_path), "validation", 3, "rev2") != few
    (tmp_path / "data" / "validation-00000-of-00001.parquet").write_bytes(b"other questions")
    assert data_key(str(tmp_path), "validation", 0, "rev3") != zero
    assert data_key(str(tmp_path / "remote"), "validation", 0, "rev3") == "rev3"  # no local files: the revision


def test_students_pruned_by_importance_and_by_layer_drop_are_told_apart(tmp_path):
    """The plot draws Minitron students and evenly pruned ones as two curves: the board must say which is which."""
    target = HubTarget(org="scalingdown", root=tmp_path / "hub")
    kinds = {"minitron": {"method": "minitron", "kept_layers": [0, 2]}, "prune": {"kept_layers": [0, 2]}, "1M": None}
    for size, pruned_from in kinds.items():
        folder = tmp_path / size
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"pruned_from": pruned_from} if pruned_from else {}))
        target.push_folder(folder, "model", f"synthetic_gsm-kd-{size}", message="a student")
    inits = {model.name: model.init for model in student_models("synthetic_gsm", target)}
    assert inits == {
        "synthetic_gsm-kd-minitron": "minitron",
        "synthetic_gsm-kd-prune": "pruned",
        "synthetic_gsm-kd-1M": None,
    }
