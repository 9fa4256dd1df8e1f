"""The lm-eval tasks in eval/tasks: found by lm-eval, prompted word for word as students were trained, scored with
the builders' answer extraction (or by the gold answer's log-likelihood), and run end to end by the stock `lm_eval` CLI
and `simple_evaluate` on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean

import datasets
import pytest
from conftest import tiny_build_args
from lm_eval.tasks import TaskManager

from datasets_builders import push_data
from datasets_builders.tasks import TASKS, get_task, load_examples
from eval.measure import task_config as runner_task_config
from eval.run import EvalArguments
from eval.tasks.utils import (
    MC_TASK_NAMES,
    NLL_TASK_NAMES,
    TASK_NAMES,
    TASKS_DIR,
    doc_to_answer_sentence,
    doc_to_choice,
    doc_to_choice_index,
    doc_to_target,
    doc_to_text,
    one_row_per_example,
    process_nll_results,
    process_results,
)
from scalingdown.answers import format_final_answer
from scalingdown.compat import load_task_yaml
from scalingdown.prompts import STOP_STRINGS, student_prompt

REPO = Path(__file__).resolve().parents[1]
LETTER_AND_YESNO = {"aqua_rat", "arc_easy", "arc_challenge", "openbookqa", "pubmedqa"}


@pytest.fixture(scope="module")
def task_manager() -> TaskManager:
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def task_config(task_manager: TaskManager, name: str, dataset_path: Path) -> dict:
    """A registered task's YAML (includes and functions resolved) pointed at another dataset: how the runner
    overrides ``dataset_path`` through ``simple_evaluate``."""
    return load_task_yaml(task_manager.task_index[name].yaml_path) | {"dataset_path": str(dataset_path)}


def write_rationale_repo(folder: Path, task: str, shared_data: Path, n_train: int = 3, n_test: int = 4) -> Path:
    """A tiny rationale dataset repo in the push-data layout: two teachers per train example, test without rationale."""
    kind = get_task(task).answer_kind
    train, _ = load_examples(task, "train", data=shared_data / task, limit=n_train)
    test, _ = load_examples(task, "test", data=shared_data / task, limit=n_test)
    train_rows = [
        {
            **example,
            "teacher": teacher,
            "mode": "teacher_forced",
            # A blank line inside, as real teacher rationales have; few-shot blocks must survive it.
            "rationale": f"We compare the options.\n\nOnly one fits. {format_final_answer(example['answer'])}",
            "consistent": teacher == "teacher-b",
            "messages": [],
        }
        for example in train
        for teacher in ("teacher-a", "teacher-b")
    ]
    (folder / "data").mkdir(parents=True)
    for split, rows in {"train": train_rows, "test": push_data.held_out_rows(test, kind)}.items():
        datasets.Dataset.from_list(rows, features=push_data.RATIONALE_FEATURES).to_parquet(
            folder / "data" / f"{split}-00000-of-00001.parquet"
        )
    return folder


def test_every_task_and_its_mc_and_nll_variants_are_found_by_lm_eval(task_manager):
    assert set(TASK_NAMES) == set(NLL_TASK_NAMES) == set(TASKS)
    assert set(MC_TASK_NAMES) == LETTER_AND_YESNO
    every = set(TASK_NAMES.values()) | set(MC_TASK_NAMES.values()) | set(NLL_TASK_NAMES.values())
    assert every == set(task_manager.all_subtasks)
    assert task_manager.task_index["scalingdown"].tags == set(TASK_NAMES.values())
    assert task_manager.task_index["scalingdown_mc"].tags == set(MC_TASK_NAMES.values())
    assert task_manager.task_index["scalingdown_nll"].tags == set(NLL_TASK_NAMES.values())
    output_types = {"_mc": "multiple_choice", "_nll": "loglikelihood"}
    for task, name in [*TASK_NAMES.items(), *MC_TASK_NAMES.items(), *NLL_TASK_NAMES.items()]:
        config = load_task_yaml(task_manager.task_index[name].yaml_path)  # what the runner reads: self-contained
        assert config["dataset_path"] == f"hub/datasets/scalingdown/{task}-rationales"
        assert config["output_type"] == output_types.get(name[name.rindex("_") :], "generate_until")
        assert (config["test_split"], config["fewshot_split"]) == ("test", "train")
        assert callable(config["doc_to_text"]) and callable(config["process_docs"])


def test_tasks_are_found_from_any_working_directory(tmp_path, monkeypatch):
    """Discovery, the runner's config and its checks go through the package, not the folder a command runs in."""
    monkeypatch.chdir(tmp_path)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(TASK_NAMES.values()) | set(MC_TASK_NAMES.values()) <= set(manager.all_subtasks)
    config = runner_task_config(MC_TASK_NAMES["arc_easy"], "elsewhere/arc_easy-rationales")
    assert config["dataset_path"] == "elsewhere/arc_easy-rationales"
    assert config["doc_to_choice"]({"task": "pubmedqa", "choices": None}) == ["yes", "no", "maybe"]
    assert EvalArguments(task="arc_easy", variants="cot,mc").variant_list == ["cot", "mc"]
    with pytest.raises(ValueError, match="no multiple-choice variant"):
        EvalArguments(task="gsm8k", variants="mc")
    assert list(tmp_path.iterdir()) == []  # and leave nothing behind there


def test_log_likelihood_variants_run_at_a_batch_their_logits_fit():
    """mc and nll score whole [batch, tokens, vocab] logits: Gemma-3's 262k vocabulary runs a few contexts at a
    time (32 three-shot ARC contexts took 20 GB and were killed), SmolLM2's 49k most of the requested batch."""
    from eval.measure import loglikelihood_batch_size

    for variant in ("mc", "nll"):
        config = runner_task_config(f"scalingdown_arc_easy_{variant}", "elsewhere/arc_easy-rationales")
        assert config["output_type"] in ("loglikelihood", "multiple_choice")
    assert runner_task_config(TASK_NAMES["arc_easy"], "x")["output_type"] == "generate_until"
    assert loglikelihood_batch_size(32, 262_144) == 4
    assert loglikelihood_batch_size(32, 49_152) == 21
    assert loglikelihood_batch_size(8, 49_152) == 8 and loglikelihood_batch_size(32, None) == 32
    assert loglikelihood_batch_size(32, 4_000_000) == 1


def test_the_eval_stops_are_the_one_set_of_stop_strings():
    config = load_task_yaml(TASKS_DIR / f"{TASK_NAMES['gsm8k']}.yaml")
    assert tuple(config["generation_kwargs"]["until"]) == STOP_STRINGS


@pytest.mark.parametrize("task", sorted(TASKS))
def test_prompt_is_the_training_user_turn(task, shared_data):
    """doc_to_text is the user turn push-data writes into `messages`, for real rows of every task."""
    data = None if task == "synthetic_gsm" else shared_data / task
    examples, _ = load_examples(task, "test", data=data, limit=20)
    for row in push_data.held_out_rows(examples, get_task(task).answer_kind):
        assert doc_to_text(row) == row["messages"][0]["content"]
        assert doc_to_text(row) == student_prompt(row["question"], row["choices"], get_task(task).answer_kind)
        assert doc_to_target(row) == doc_to_answer_sentence(row) == format_final_answer(row["answer"])
        if task in LETTER_AND_YESNO:
            assert doc_to_choice(row)[doc_to_choice_index(row)] in (row["choices"] or [row["answer"]])


@pytest.mark.skipif(not (REPO / "hub" / "datasets" / "scalingdown").is_dir(), reason="no local rationale repos built")
def test_prompt_matches_the_local_rationale_repos():
    for folder in sorted((REPO / "hub" / "datasets" / "scalingdown").glob("*-rationales")):
        dataset = datasets.load_dataset(str(folder))
        for row in dataset["train"]:
            assert doc_to_text(row) == row["messages"][0]["content"]
            assert doc_to_target(row) == row["messages"][1]["content"]


@pytest.mark.parametrize(
    ("task", "choices", "answer", "right", "wrong", "unparsed"),
    [
        (
            "gsm8k",
            None,
            "1234",
            "12 * 100 = 1,200, plus 34.\n\nThe answer is 1,234.",
            "The answer is 1,243.",
            "No idea.",
        ),
        (
            "arc_easy",
            ["red", "blue", "green"],
            "B",
            "Blue is right. The answer is B.",
            "The answer is C.",
            "The answer is D.",
        ),
        ("pubmedqa", None, "maybe", "The data are mixed. The answer is maybe.", "The answer is no.", "Unclear."),
    ],
)
def test_process_results_scores_with_the_builders_extraction(task, choices, answer, right, wrong, unparsed):
    doc = {"task": task, "choices": choices, "answer": answer}
    assert process_results(doc, [right]) == {"exact_match": 1, "parsed": 1}
    assert process_results(doc, [wrong]) == {"exact_match": 0, "parsed": 1}
    assert process_results(doc, [unparsed]) == {"exact_match": 0, "parsed": 0}  # D is not among three choices


def test_process_nll_results_is_the_negative_log_likelihood_of_the_gold_sentence():
    assert process_nll_results({}, [(-12.5, False)]) == {"answer_nll": 12.5, "greedy": 0}
    assert process_nll_results({}, [(-0.25, True)]) == {"answer_nll": 0.25, "greedy": 1}


def test_one_row_per_example_prefers_a_consistent_rationale():
    rows = datasets.Dataset.from_dict(
        {"id": ["a", "a", "b", "c", "c"], "consistent": [False, True, False, True, True], "rationale": list("12345")}
    )
    assert one_row_per_example(rows)["rationale"] == ["2", "3", "4"]
    unique = rows.select([0, 2, 3])
    assert one_row_per_example(unique) is unique  # the test split: one row per example already


def test_stock_cli_runs_every_variant_on_an_overridden_dataset(tmp_path, tiny_teacher_dir, shared_data):
    """`lm_eval --include_path DIR` with DIR holding YAMLs that include ours and set `dataset_path`."""
    repo = write_rationale_repo(tmp_path / "arc_easy-rationales", "arc_easy", shared_data)
    include = tmp_path / "tasks"
    include.mkdir()
    names = (TASK_NAMES["arc_easy"], MC_TASK_NAMES["arc_easy"], NLL_TASK_NAMES["arc_easy"])
    for name in names:
        (include / f"{name}.yaml").write_text(f"include: {TASKS_DIR / name}.yaml\ndataset_path: {repo}\n")
    lm_eval = Path(sys.executable).with_name("lm_eval")
    command = [
        str(lm_eval),
        "--model", "hf",
        "--model_args", f"pretrained={tiny_teacher_dir}",
        "--device", "cpu",
        "--include_path", str(include),
        "--tasks", ",".join(names),
        "--limit", "3",
        "--gen_kwargs", "max_gen_toks=16",  # a random model never stops on its own; 16 tokens keep the test fast
        "--output_path", str(tmp_path / "results"),
        "--log_samples",
    ]  # fmt: skip
    # One thread: a tiny model gains nothing from more, and on a shared CPU spinning threads cost seconds.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    (results_file,) = (tmp_path / "results").glob("*/results_*.json")
    results = json.loads(results_file.read_text())["results"]
    generation, mc, nll = (results[name] for name in names)
    samples = {
        name: [json.loads(line) for line in next(results_file.parent.glob(f"samples_{name}_2*.jsonl")).open()]
        for name in names
    }
    # chain of thought: the student prompt, our stop strings, and our extraction scoring what the model wrote
    for sample in samples[names[0]]:
        doc, (response,) = sample["doc"], sample["filtered_resps"]
        prompt, settings = sample["arguments"]["gen_args_0"].values()
        assert prompt == doc_to_text(doc) and settings["until"] == list(STOP_STRINGS)
        assert {k: sample[k] for k in ("exact_match", "parsed")} == process_results(doc, [response])
    for metric in ("exact_match", "parsed"):
        assert generation[f"{metric},none"] == pytest.approx(mean(s[metric] for s in samples[names[0]]))
    # multiple choice: each of the row's choices scored, right when the gold one is the most likely
    for sample in samples[names[1]]:
        doc = sample["doc"]
        assert [arg["arg_1"] for arg in sample["arguments"].values()] == [f" {c}" for c in doc["choices"]]
        loglikelihoods = [float(ll) for ll, _ in sample["filtered_resps"]]
        best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        assert sample["acc"] == int(best == doc_to_choice_index(doc))
    assert mc["acc,none"] == pytest.approx(mean(s["acc"] for s in samples[names[1]]))
    # gold-sentence log-likelihood: a random model gives several nats to each of its tokens, never greedily
    nlls = [-float(ll) for s in samples[names[2]] for ll, _ in s["filtered_resps"]]
    assert [s["answer_nll"] for s in samples[names[2]]] == pytest.approx(nlls) and min(nlls) > 10
    assert nll["answer_nll,none"] == pytest.approx(mean(nlls)) and nll["answer_nll_stderr,none"] > 0
    assert nll["greedy,none"] == 0
    assert json.loads(results_file.read_text())["n-samples"][MC_TASK_NAMES["arc_easy"]]["effective"] == 3


def test_simple_evaluate_with_chat_template_shows_the_student_prompt(
    tmp_path, tiny_teacher_dir, shared_data, task_manager
):
    """The runner's path: a config dict with `dataset_path` overridden, chat template, one shot, samples logged."""
    from lm_eval import simple_evaluate

    repo = write_rationale_repo(tmp_path / "arc_easy-rationales", "arc_easy", shared_data)
    name = TASK_NAMES["arc_easy"]
    output = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_teacher_dir), "device": "cpu"},
        tasks=[task_config(task_manager, name, repo)],
        task_manager=task_manager,
        num_fewshot=1,
        limit=2,
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": 8},
        log_samples=True,
    )
    train = one_row_per_example(datasets.load_dataset(str(repo), split="train"))
    for sample in output["samples"][name]:
        prompt = sample["arguments"][0][0]
        shot = f"<|im_start|>user\n{doc_to_text(train[0])}<|im_end|>\n<|im_start|>assistant\n{train[0]['rationale']}"
        assert prompt.startswith("<|im_start|>system\n") and shot in prompt
        assert train[0]["teacher"] == "teacher-b"  # the consistent one of its two rows
        assert prompt.endswith(f"<|im_start|>user\n{doc_to_text(sample['doc'])}<|im_end|>\n<|im_start|>assistant\n")
    assert set(output["results"][name]) >= {"exact_match,none", "parsed,none"}


def test_nll_variant_scores_the_gold_sentence_where_the_student_writes_it(tmp_path, tiny_teacher_dir, task_manager):
    """Under the chat template the scored continuation is the gold sentence right after the student prompt's
    assistant header, where a label student was trained to write it; without one (the runner's config for base
    models), on the line after the prompt, as the one-shot example shows it."""
    from lm_eval import simple_evaluate

    hub = dict(hub_target="local", hub_dir=str(tmp_path / "hub"), org="testorg")
    push_data.main(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=2, test_limit=2, **hub))
    repo = tmp_path / "hub" / "datasets" / "testorg" / "synthetic_gsm-rationales"
    name = NLL_TASK_NAMES["synthetic_gsm"]
    shot = one_row_per_example(datasets.load_dataset(str(repo), split="train"))[0]
    for chat in (True, False):
        output = simple_evaluate(
            model="hf",
            model_args={"pretrained": str(tiny_teacher_dir), "device": "cpu"},
            tasks=[runner_task_config(name, str(repo), chat=chat)],
            task_manager=task_manager,
            limit=2,
            num_fewshot=0 if chat else 1,
            apply_chat_template=chat,
            log_samples=True,
        )
        for sample in output["samples"][name]:
            ((context, continuation),) = sample["arguments"]
            sentence = f"The answer is {sample['doc']['answer']}."
            if chat:
                assistant = f"<|im_start|>user\n{doc_to_text(sample['doc'])}<|im_end|>\n<|im_start|>assistant\n"
                assert context.endswith(assistant) and continuation == sentence
            else:
                assert (
                    context == f"{doc_to_text(shot)}\nThe answer is {shot['answer']}.\n\n\n{doc_to_text(sample['doc'])}"
                )
                assert continuation == f"\n{sentence}"
            (((loglikelihood, _),),) = sample["resps"]
            assert sample["answer_nll"] == pytest.approx(-loglikelihood) and sample["answer_nll"] > 0
        nll = [s["answer_nll"] for s in output["samples"][name]]
        assert output["results"][name]["answer_nll,none"] == pytest.approx(sum(nll) / len(nll))
