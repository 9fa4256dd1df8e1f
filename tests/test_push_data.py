"""`make push-data` end to end: tasks -> teachers -> a dataset repo that `load_dataset` reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import tiny_build_args
from datasets import get_dataset_config_names, load_dataset
from huggingface_hub import DatasetCard

from datasets_builders.push_data import PushDataArguments, main, shard_dir
from datasets_builders.shards import ShardStore
from scalingdown.arguments import ArgumentError
from scalingdown.hub import HubTarget
from scalingdown.schema import EXAMPLE_FEATURES

REPO = Path(__file__).resolve().parents[1]


def _args(tmp_path, teacher, **overrides) -> PushDataArguments:
    return tiny_build_args(tmp_path / "work", teacher, **{"validation_limit": 4, **overrides})


def test_build_pushes_a_dataset_repo_that_load_dataset_reads(tmp_path, hub_dir, tiny_teacher_dir):
    location = main(_args(tmp_path, tiny_teacher_dir))
    assert location == str(hub_dir / "datasets" / "testorg" / "synthetic_gsm-rationales")

    ds = load_dataset(location)
    assert set(ds) == {"train", "validation", "test"}
    assert len(ds["train"]) == 12 and len(ds["validation"]) == 4 and len(ds["test"]) == 5
    assert ds["validation"][0]["rationale"] is None and len(ds["validation"][0]["messages"]) == 1
    assert not set(ds["validation"]["question"]) & (set(ds["train"]["question"]) | set(ds["test"]["question"]))
    row = ds["train"][0]
    assert row["teacher"] == "tiny-llama" and row["mode"] == "teacher_forced"
    assert row["messages"][0]["role"] == "user" and row["messages"][1]["role"] == "assistant"
    assert row["messages"][1]["content"].endswith(f"The answer is {row['answer']}.")
    assert ds["test"][0]["rationale"] is None and len(ds["test"][0]["messages"]) == 1
    assert not set(ds["train"]["question"]) & set(ds["test"]["question"])

    card = (Path(location) / "README.md").read_text()
    assert "tiny-llama" in card and "configs:" in card and "Decontamination" in card
    assert re.search(r"\| tiny-llama \| 12 \| 12 \|", card), card
    assert re.search(r"\| `examples` \| `examples/` \| train 12, validation 4, test 5 \|", card), card

    # A second config holds every example with the answer-only turn the `label` baseline trains on.
    assert get_dataset_config_names(location) == ["default", "examples"]
    examples = load_dataset(location, "examples")
    assert len(examples["train"]) == 12 and len(examples["validation"]) == 4 and len(examples["test"]) == 5
    assert set(examples["train"].column_names) == {*EXAMPLE_FEATURES, "messages"}
    for row in examples["train"]:
        assert row["messages"][1] == {"role": "assistant", "content": f"The answer is {row['answer']}."}
    assert examples["train"][0]["messages"][0] == row_by_id(ds["train"], examples["train"][0]["id"])["messages"][0]
    assert [len(m) for m in examples["test"]["messages"]] == [1] * 5

    # The same build again resumes from its shards, regenerates nothing and makes no new commit.
    target = HubTarget.from_env()
    before = target.revision("dataset", "synthetic_gsm-rationales")
    shards = sorted(shard_dir(_args(tmp_path, tiny_teacher_dir), str(tiny_teacher_dir)).glob("shard-*"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    main(_args(tmp_path, tiny_teacher_dir))
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    assert target.revision("dataset", "synthetic_gsm-rationales") == before

    # A tighter length filter (re-assembled from the same shards) drops rationales, never examples.
    lengths = sorted(len(row["text"]) for row in ShardStore(shards[0].parent).rows())
    main(_args(tmp_path, tiny_teacher_dir, max_chars=lengths[5]))
    rationale_ids = set(load_dataset(location, split="train")["id"])
    example_ids = load_dataset(location, "examples", split="train")["id"]
    assert 0 < len(rationale_ids) < 12 and len(example_ids) == 12 and rationale_ids < set(example_ids)
    card = (Path(location) / "README.md").read_text()
    assert f"train {len(rationale_ids)}, validation 4, test 5" in card and "train 12, validation 4, test 5" in card


def row_by_id(rows, example_id: str) -> dict:
    return next(row for row in rows if row["id"] == example_id)


def test_drop_mode_filters_inconsistent_rationales_and_says_so(tmp_path, hub_dir, tiny_teacher_dir, capsys):
    with pytest.raises(SystemExit, match="filtered out"):
        main(_args(tmp_path, tiny_teacher_dir, consistency="drop"))
    summary = capsys.readouterr().out
    assert re.search(r"tiny-llama\s+12\s+0\s+0", summary), summary  # the counts the message points to
    assert not (hub_dir / "datasets" / "testorg" / "synthetic_gsm-rationales").exists()


def test_gsm8k_from_the_original_files(tmp_path, hub_dir, tiny_teacher_dir, shared_data):
    location = main(_args(tmp_path, tiny_teacher_dir, task="gsm8k", data=str(shared_data / "gsm8k"), limit=6))
    ds = load_dataset(location)
    assert ds["train"]["answer"][0] == "72"
    assert len(ds["train"]) == 6 and len(ds["test"]) == 5
    # the shared copy has no validation file: validation is the train file's rows 7-10, right after the training six
    source = [json.loads(line)["question"] for line in (shared_data / "gsm8k" / "train.jsonl").open()]
    assert ds["validation"]["question"] == source[6:10] and ds["train"]["question"] == source[:6]
    assert "train rows 7-10 of" in (Path(location) / "README.md").read_text()


def test_a_validation_split_that_does_not_fit_beside_train_is_refused(tmp_path, hub_dir, tiny_teacher_dir):
    data = tmp_path / "gsm8k"
    data.mkdir()
    rows = [{"question": f"What is {n} + 1?", "answer": f"{n} + 1 = {n + 1}\n#### {n + 1}"} for n in range(12)]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ArgumentError, match="only 3 are free"):
        main(_args(tmp_path, tiny_teacher_dir, task="gsm8k", data=str(data), limit=6, test_limit=5, shots=3))


def test_interrupted_build_resumes_without_duplicates_or_gaps(tmp_path, hub_dir, tiny_teacher_dir):
    """Kill a real build mid-way (SIGKILL, no cleanup), run it again, and count the rows."""
    flags = [
        "--task", "synthetic_gsm", "--teachers", str(tiny_teacher_dir), "--limit", "48", "--test_limit", "4",
        "--validation_limit", "4", "--num_samples", "2", "--max_new_tokens", "48", "--batch_size", "4",
        "--shard_size", "4", "--consistency", "flag", "--require_derivation", "false",
        "--work_dir", str(tmp_path / "work"),
    ]  # fmt: skip
    # min_chars=0: a random teacher's text is sometimes empty; duplicates are what sampling may still drop.
    args = _args(tmp_path, tiny_teacher_dir, limit=48, num_samples=2, test_limit=4, max_new_tokens=48, min_chars=0)
    shards = shard_dir(args, str(tiny_teacher_dir))
    proc = subprocess.Popen([sys.executable, "-m", "datasets_builders.push_data", *flags], cwd=REPO, env=os.environ)
    deadline = time.monotonic() + 240
    while len(list(shards.glob("shard-*.parquet"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    written = sorted(shards.glob("shard-*.parquet"))
    assert 2 <= len(written) < 96 // 4, "the build must be interrupted part-way for this test to mean anything"
    kept = {p: p.read_bytes() for p in written}

    location = main(args)
    assert all(p.read_bytes() == data for p, data in kept.items()), "finished shards were regenerated"
    shard_rows = list(ShardStore(shards).rows())
    samples = [(row["example_id"], row["sample"]) for row in shard_rows]
    assert len(samples) == len(set(samples)) == 96
    assert set(samples) == {(f"synthetic_gsm-train-{i:05d}", k) for i in range(48) for k in range(2)}
    counts = json.loads((Path(location) / "scalingdown_build.json").read_text())["counts"][0]
    assert counts["sampled"] == 96 == counts["kept"] + sum(counts["dropped"].values())
    assert len(load_dataset(location, split="train")) == counts["kept"]


def test_every_makefile_option_is_a_documented_flag():
    help_text = subprocess.run(
        [sys.executable, "-m", "datasets_builders.push_data", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    makefile = (REPO / "Makefile").read_text()
    block = makefile.split("PUSH_DATA_FLAGS =", 1)[1].split("\n\n", 1)[0]
    flags = set(re.findall(r"--(\w+)", block))
    assert {"task", "teachers", "data", "limit", "config"} <= flags
    for flag in flags:
        assert f"--{flag}" in help_text, f"--{flag} is passed by the Makefile but missing from --help"


@pytest.mark.teacher
def test_real_smollm2_teacher_writes_consistent_rationales(tmp_path, hub_dir, smol_dir):
    """The packaged SmolLM2-135M-Instruct, shown three solved examples of the task, explains gold answers of one-step
    problems well enough to pass every filter, the derivation check included (about 29% at the study's scale)."""
    args = _args(tmp_path, "smollm2-135m-instruct", limit=16, max_new_tokens=96, batch_size=16, consistency="drop")
    args = replace(args, require_derivation=True, min_steps=1, max_steps=1, max_value=20, num_distractors=0)
    location = main(args)
    train = load_dataset(location, split="train")
    assert len(train) >= 2, "SmolLM2 should explain at least 2 of 16 one-step problems with checked arithmetic"
    for row in train:
        assert row["consistent"] and row["teacher"] == "smollm2-135m-instruct"
        assert row["rationale"].endswith(f"The answer is {row['answer']}.")
    card = (Path(location) / "README.md").read_text()
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in card


def test_ctranslate2_backend_writes_what_transformers_writes(tiny_teacher_dir):
    """Same prompts, greedy, float32: CTranslate2 (push-data's backend) writes the transformers backend's texts and
    stops at the same stop strings; int8 weights still write text."""
    from datasets_builders.rationales import build_prompt
    from datasets_builders.tasks import load_examples
    from datasets_builders.teacher_base import GenerationSettings, shared_prefix
    from datasets_builders.teachers import load_teacher

    examples, _ = load_examples("synthetic_gsm", "train", limit=6)
    prompts = [build_prompt(r["question"], None, r["answer"], "numeric", "teacher_forced") for r in examples]
    settings = GenerationSettings(max_new_tokens=24, batch_size=4, stop=["\n\n\n", " the"])
    reference = load_teacher(str(tiny_teacher_dir)).generate(prompts, settings)
    fast = load_teacher(str(tiny_teacher_dir), backend="ctranslate2")
    assert fast.describe()["backend"].startswith("ctranslate2")
    assert len(shared_prefix(fast.encode(prompts))) > 16  # the shared worked example runs once, as a static prompt
    generations = fast.generate(prompts, replace(settings, backend="ctranslate2"))
    assert [g.text for g in generations] == [g.text for g in reference]
    assert all(" the" not in g.text for g in generations)
    assert [g.num_tokens for g in generations] == [g.num_tokens for g in reference]
    int8 = fast.generate(prompts, replace(settings, backend="ctranslate2", int8=True))
    assert len(int8) == len(prompts) and all(0 < g.num_tokens <= 24 for g in int8)


def test_the_worked_examples_run_once_and_change_no_greedy_text(tiny_teacher_dir):
    """transformers: the worked examples' KV cache, held once for all rows or copied to each, gives the texts of
    prefilling whole prompts."""
    from datasets_builders.rationales import WorkedExample, build_prompt
    from datasets_builders.tasks import load_examples
    from datasets_builders.teacher_base import GenerationSettings, shared_prefix
    from datasets_builders.teachers import load_teacher

    examples = list(load_examples("synthetic_gsm", "train", limit=9)[0])
    shots = [WorkedExample(r["question"], None, r["answer"], r["gold_rationale"]) for r in examples[6:]]
    prompts = [build_prompt(r["question"], None, r["answer"], "numeric", "teacher_forced", shots) for r in examples[:6]]
    teacher = load_teacher(str(tiny_teacher_dir))
    assert len(shared_prefix(teacher.encode(prompts))) > 100  # three worked examples as chat turns
    settings = GenerationSettings(max_new_tokens=24, batch_size=4, stop=["\n\n\n"])
    whole = teacher.generate(prompts, replace(settings, share_head=False))
    for head_kv in ("shared", "copied"):
        cached = teacher.generate(prompts, replace(settings, head_kv=head_kv))
        assert [g.text for g in cached] == [g.text for g in whole] and any(g.text for g in whole)
        assert [g.num_tokens for g in cached] == [g.num_tokens for g in whole]


def test_continuous_batching_writes_the_batched_texts_and_stops_where_they_stop(tiny_teacher_dir):
    """transformers' continuous batching (--continuous_batching) writes greedy texts identical to one generate() per
    batch, cut at the same stop strings after the same number of tokens; sampled rows differ from greedy ones."""
    from datasets_builders.rationales import WorkedExample, build_prompt
    from datasets_builders.tasks import load_examples
    from datasets_builders.teacher_base import GenerationSettings
    from datasets_builders.teachers import load_teacher

    examples = list(load_examples("synthetic_gsm", "train", limit=9)[0])
    shots = [WorkedExample(r["question"], None, r["answer"], r["gold_rationale"]) for r in examples[6:]]
    prompts = [build_prompt(r["question"], None, r["answer"], "numeric", "teacher_forced", shots) for r in examples[:6]]
    teacher = load_teacher(str(tiny_teacher_dir))
    unstopped = teacher.generate(prompts, GenerationSettings(max_new_tokens=24, batch_size=4, stop=[]))
    middle = unstopped[0].text[len(unstopped[0].text) // 2 :][:6]  # a random model's text: stop mid-row
    settings = GenerationSettings(max_new_tokens=24, batch_size=4, stop=["\n\n\n", middle])
    batched = teacher.generate(prompts, settings)
    continuous = teacher.generate(prompts, replace(settings, continuous_batching=True, batch_tokens=64))
    assert [g.text for g in continuous] == [g.text for g in batched] and any(g.text for g in batched)
    assert 0 < batched[0].num_tokens < 24 and middle not in batched[0].text  # stopped, cut at the stop string
    # generate() pads a row stopped by a stop string, and decode() counts that pad as its end token
    assert [g.num_tokens for g in continuous] == [g.num_tokens - (i == 0) for i, g in enumerate(batched)]
    sampled = teacher.generate(prompts, replace(settings, continuous_batching=True, do_sample=True, temperature=1.5))
    assert len(sampled) == len(prompts) and [g.text for g in sampled] != [g.text for g in batched]


def test_worker_processes_write_the_single_process_texts_in_order(tiny_teacher_dir):
    """--workers 2: the prompts are dealt to two spawned processes (one thread each) and come back in order, with
    the texts one process writes; a call no bigger than one batch stays in this process."""
    from datasets_builders.rationales import WorkedExample, build_prompt
    from datasets_builders.tasks import load_examples
    from datasets_builders.teacher_base import GenerationSettings
    from datasets_builders.teachers import load_teacher

    examples = list(load_examples("synthetic_gsm", "train", limit=10)[0])
    shots = [WorkedExample(r["question"], None, r["answer"], r["gold_rationale"]) for r in examples[7:]]
    prompts = [build_prompt(r["question"], None, r["answer"], "numeric", "teacher_forced", shots) for r in examples[:7]]
    teacher = load_teacher(str(tiny_teacher_dir))
    settings = GenerationSettings(max_new_tokens=16, batch_size=2, stop=["\n\n\n"])
    alone = teacher.generate(prompts, settings)
    assert teacher._pool is None
    split = teacher.generate(prompts, replace(settings, workers=2))
    assert teacher._pool is not None and teacher._pool.workers == 2
    assert [(g.text, g.num_tokens) for g in split] == [(g.text, g.num_tokens) for g in alone]
    assert len({g.text for g in alone}) > 1  # distinct rows: an out-of-order answer would show
    teacher.close_pool()
    assert [g.text for g in teacher.generate(prompts[:2], replace(settings, workers=2))] == [g.text for g in alone[:2]]
    assert teacher._pool is None


def test_transformers_int8_quantises_a_copy_and_repeats_its_texts(tiny_teacher_dir):
    """--int8 with transformers: the linear layers of a copy hold int8 weights (the float32 model is untouched),
    the copy's output stays close to float32's, and a repeated build writes the same texts. (Activations are
    quantised per call, so a row's text can depend on the rows batched with it: the bench counts the agreement.)"""
    import torch

    from datasets_builders.rationales import build_prompt
    from datasets_builders.tasks import load_examples
    from datasets_builders.teacher_base import GenerationSettings
    from datasets_builders.teachers import load_teacher

    examples, _ = load_examples("synthetic_gsm", "train", limit=6)
    prompts = [build_prompt(r["question"], None, r["answer"], "numeric", "teacher_forced") for r in examples]
    teacher = load_teacher(str(tiny_teacher_dir))
    settings = GenerationSettings(max_new_tokens=24, batch_size=4, stop=["\n\n\n"], int8=True)
    cached = teacher.generate(prompts, settings)
    again = load_teacher(str(tiny_teacher_dir)).generate(prompts, settings)
    assert [g.text for g in cached] == [g.text for g in again] and all(0 < g.num_tokens <= 24 for g in cached)
    quantised = teacher.int8_model()
    linear = quantised.model.layers[0].mlp.down_proj
    assert linear.weight().dtype == torch.qint8 and type(teacher.model.model.layers[0].mlp.down_proj) is torch.nn.Linear
    ids = torch.tensor([teacher.encode(prompts[:1])[0]])
    with torch.no_grad():
        exact, approx = teacher.model(input_ids=ids).logits, quantised(input_ids=ids).logits
    assert torch.nn.functional.cosine_similarity(exact.flatten(), approx.flatten(), dim=0) > 0.99


@pytest.mark.teacher
@pytest.mark.parametrize("backend", ["transformers", "ctranslate2"])
def test_real_gemma3_base_teacher_answers_the_one_shot_plain_prompt(backend):
    """Gemma-3-270M is a base model: it gets the plain-text one-shot prompt and stops before a new question."""
    from datasets_builders.rationales import build_prompt
    from datasets_builders.teacher_base import GenerationSettings
    from datasets_builders.teachers import load_teacher

    teacher = load_teacher("gemma3-270m", backend=backend)
    assert teacher.uses_chat is False
    assert teacher.describe()["source"].startswith("google/gemma-3-270m")
    prompts = [
        build_prompt(
            "Ann has 3 boxes of 4 pens. How many pens does she have?", None, "12", "numeric", "teacher_forced"
        ),
        build_prompt("Which is a planet?", ["the Moon", "Mars", "the Sun"], "B", "letter", "teacher_forced"),
    ]
    out = teacher.generate(prompts, GenerationSettings(max_new_tokens=40, batch_size=2, backend=backend))
    assert len(out) == 2
    for generation in out:
        assert generation.text and "Question:" not in generation.text
        assert 0 < generation.num_tokens <= 40


def test_every_task_has_a_recipe_that_parses():
    from trl import TrlParser

    from datasets_builders.tasks import TASKS

    for task in TASKS:
        recipe = REPO / "recipes" / "push_data" / f"{task}.yaml"
        (args,) = TrlParser((PushDataArguments,)).parse_args_and_config(["--config", str(recipe)])
        assert args.task == task and args.mode == "teacher_forced"


def _counts(location) -> dict:
    return json.loads((Path(location) / "scalingdown_build.json").read_text())["counts"][0]


def _card_row(location) -> list[str]:
    card = (Path(location) / "README.md").read_text()
    line = next(line for line in card.splitlines() if re.match(r"\| tiny-llama \| \d+ \| \d+ \|", line))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_samples_are_filtered_deduplicated_capped_and_counted(tmp_path, hub_dir, tiny_teacher_dir):
    # Greedy, one question's 3 samples per batch: one text three times, so dedup leaves one per covered question.
    greedy = main(_args(tmp_path, tiny_teacher_dir, num_samples=3, temperature=0.0, batch_size=3, shard_size=3))
    counts = _counts(greedy)
    assert counts["sampled"] == 36 == counts["kept"] + sum(counts["dropped"].values())
    assert counts["kept"] == counts["covered"] and counts["dropped"]["duplicate"] == 2 * counts["covered"]
    train = load_dataset(greedy, split="train")
    assert len(train) == counts["kept"] and len(set(train["id"])) == len(train)

    # Sampled at a high temperature: distinct rationales per question, at most --keep of them kept.
    sampled = main(_args(tmp_path, tiny_teacher_dir, num_samples=4, temperature=1.5, keep=2, min_chars=0))
    counts = _counts(sampled)
    assert counts["sampled"] == 48 == counts["kept"] + sum(counts["dropped"].values())
    assert counts["dropped"].get("over_keep", 0) > 0
    train = load_dataset(sampled, split="train")
    per_question = {i: train["id"].count(i) for i in set(train["id"])}
    assert max(per_question.values()) == 2 and len(per_question) == counts["covered"] == 12
    for question in per_question:
        texts = [r["rationale"] for r in train if r["id"] == question]
        assert len(set(texts)) == len(texts)
    # The card's table: sampled, kept, keep rate, coverage, ..., and every drop reason adds up to sampled.
    cells = _card_row(sampled)
    assert cells[:4] == ["48", str(counts["kept"]), str(counts["keep_rate"]), "12/12"]
    assert int(cells[0]) == int(cells[1]) + sum(int(c) for c in cells[5:-1])


def test_difficulty_knobs_shape_every_split_and_are_recorded(tmp_path, hub_dir, tiny_teacher_dir):
    location = main(_args(tmp_path, tiny_teacher_dir, min_steps=1, max_steps=1, max_value=9, operations="add,sub"))
    examples = load_dataset(location, "examples")
    for split in ("train", "validation", "test"):
        for row in examples[split]:
            assert len(row["gold_rationale"].splitlines()) == 1 and "*" not in row["gold_rationale"]
            assert max(int(n) for n in re.findall(r"\d+", row["question"])) <= 9
    card = DatasetCard.load(Path(location) / "README.md")
    assert card.data.synthetic_gsm["max_steps"] == 1 and card.data.synthetic_gsm["operations"] == "add,sub"
    with pytest.raises(ValueError, match="only apply to --task synthetic_gsm"):
        _args(tmp_path, tiny_teacher_dir, task="gsm8k", max_steps=1)


def test_easy_recipe_sets_one_step_problems():
    from trl import TrlParser

    recipe = REPO / "recipes" / "push_data" / "synthetic_gsm-easy.yaml"
    assert recipe.read_text().splitlines()[0] == f"# make push-data CONFIG={recipe.relative_to(REPO)}"
    (args,) = TrlParser((PushDataArguments,)).parse_args_and_config(["--config", str(recipe)])
    config = args.synthetic_config()
    assert (config.min_steps, config.max_steps, config.max_value) == (1, 1, 20)
