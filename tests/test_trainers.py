"""`make train`: named sizes, rationale SFT on a tiny dataset repo, a pushed model that loads in a fresh process."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_build_args, train_configs
from datasets import concatenate_datasets, load_dataset
from huggingface_hub import DatasetCard, DatasetCardData
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from datasets_builders.push_data import EXAMPLE_ROW_FEATURES, RATIONALE_FEATURES
from datasets_builders.push_data import main as push_data
from scalingdown.dataset_repo import RepoConfig, write_data_files
from scalingdown.hub import HubTarget
from trainers.sft import ScriptArguments, build_run, load_training_rows
from trainers.sft import main as train
from trainers.sizes import SIZES, SizeError, get_size, model_parameter_counts, prune_layers

REPO = Path(__file__).resolve().parents[1]


# -- sizes ----------------------------------------------------------------------------------------------


def test_scratch_sizes_land_near_their_names():
    for name in ["1M", "3M", "8M", "16M", "33M", "60M"]:
        counts = get_size(name).parameter_counts()
        target = float(name.removesuffix("M")) * 1e6
        assert 0.65 * target <= counts["non_embedding"] <= 1.35 * target, (name, counts)
        assert counts["total"] - counts["non_embedding"] == 49152 * get_size(name).architecture["hidden_size"]
    # The count from the config is what a built model really holds: the tied head once, every tensor counted.
    model = get_size("1M").build_model()
    assert model_parameter_counts(model) == get_size("1M").parameter_counts()
    assert get_size("1M").parameter_counts()["total"] == sum(p.numel() for p in set(model.parameters()))


def test_unknown_size_lists_the_valid_ones():
    with pytest.raises(SizeError, match="valid sizes: 1M, 3M") as error:
        get_size("2M")
    assert all(name in str(error.value) for name in SIZES)
    assert isinstance(error.value, ValueError)


def test_hub_only_sizes_count_what_their_publishers_report_without_downloading():
    """The figures of the Qwen2.5 model cards (total / non-embedding, in billions) and SmolLM2's names."""
    assert get_size("360M").base_model == "HuggingFaceTB/SmolLM2-360M-Instruct"
    published = {"qwen2.5-0.5b": (0.49, 0.36), "qwen2.5-1.5b": (1.54, 1.31)}
    for name, (total, non_embedding) in published.items():
        counts = get_size(name).parameter_counts()
        assert (round(counts["total"] / 1e9, 2), round(counts["non_embedding"] / 1e9, 2)) == (total, non_embedding)
    assert round(get_size("360M").parameter_counts()["total"] / 1e6) == 362
    assert round(get_size("1.7B").parameter_counts()["total"] / 1e9, 1) == 1.7
    assert get_size("135M-prune-8L").keep_layers == 8 and get_size("135M").init == "pretrained"


def test_pruning_keeps_evenly_spaced_layers_with_copied_weights(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "teacher")
    teacher = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")

    student = prune_layers(str(tmp_path / "teacher"), keep=3)
    assert student.config.num_hidden_layers == 3 and student.config.pruned_from["kept_layers"] == [0, 2, 5]
    for new, old in enumerate([0, 2, 5]):
        assert torch.equal(student.model.layers[new].mlp.up_proj.weight, teacher.model.layers[old].mlp.up_proj.weight)
        assert torch.equal(
            student.model.layers[new].self_attn.q_proj.weight, teacher.model.layers[old].self_attn.q_proj.weight
        )
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    student.save_pretrained(tmp_path / "student")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "student").config.num_hidden_layers == 3


# -- a tiny two-teacher dataset repo --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory, tiny_teacher_dir) -> Path:
    """A local Hub holding a synthetic_gsm rationale repo built by `make push-data` (tiny teacher, 10 examples),
    then given a second 'teacher' by relabelling the rows, so multi-teacher code paths run. Both teachers'
    rationales for the last 2 examples are removed, as the filters would, so only 8 examples have rationales
    while the `examples` config keeps all 10."""
    root = tmp_path_factory.mktemp("trainhub")
    work = tmp_path_factory.mktemp("work")
    mp = pytest.MonkeyPatch()
    mp.setenv("HUB_TARGET", "local")
    mp.setenv("HUB_DIR", str(root / "hub"))
    mp.setenv("ORG", "testorg")
    try:
        location = push_data(
            tiny_build_args(work, tiny_teacher_dir, limit=10, test_limit=3, batch_size=10, shard_size=10)
        )
        ds = load_dataset(location)
        examples = load_dataset(location, "examples")
        explained = ds["train"].select(range(8))
        relabelled = explained.map(lambda row: {"teacher": "other-teacher"})
        folder = work / "two-teachers"
        configs = [
            RepoConfig(
                "default",
                "data",
                RATIONALE_FEATURES,
                {"train": list(concatenate_datasets([explained, relabelled])), "test": list(ds["test"])},
            ),
            RepoConfig("examples", "examples", EXAMPLE_ROW_FEATURES, {k: list(v) for k, v in examples.items()}),
        ]
        card_data = DatasetCardData(**write_data_files(folder, configs))
        DatasetCard(f"---\n{card_data.to_yaml()}\n---\n").save(folder / "README.md")
        HubTarget.from_env().push_folder(
            folder, "dataset", "synthetic_gsm-rationales", "two teachers", delete_patterns=["data/*", "examples/*"]
        )
    finally:
        mp.undo()
    return root / "hub"


@pytest.fixture
def hub_env(tiny_hub, monkeypatch) -> Path:
    monkeypatch.setenv("HUB_TARGET", "local")
    monkeypatch.setenv("HUB_DIR", str(tiny_hub))
    monkeypatch.setenv("ORG", "testorg")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tiny_hub


# -- data shaping -----------------------------------------------------------------------------------------


def test_multi_teacher_rows_name_their_teacher_in_a_system_turn(hub_env):
    location = str(hub_env / "datasets" / "testorg" / "synthetic_gsm-rationales")
    rows, teachers, tagged = load_training_rows(ScriptArguments(), location)
    assert teachers == ["other-teacher", "tiny-llama"] and tagged and len(rows) == 16
    roles = [m["role"] for m in rows[0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert {r["messages"][0]["content"] for r in rows} == {"Explain like tiny-llama.", "Explain like other-teacher."}

    only_one, teachers, tagged = load_training_rows(ScriptArguments(teachers="tiny-llama"), location)
    assert teachers == ["tiny-llama"] and not tagged and len(only_one) == 8
    with pytest.raises(ValueError, match="not in"):
        load_training_rows(ScriptArguments(teachers="nobody"), location)


def test_label_method_trains_on_every_example_with_only_the_final_answer_sentence(hub_env):
    location = str(hub_env / "datasets" / "testorg" / "synthetic_gsm-rationales")
    examples = load_dataset(location, "examples", split="train")
    rows, _, tagged = load_training_rows(ScriptArguments(method="label"), location)
    # All 10 examples once each, also the 2 whose rationales were filtered out; not one row per teacher.
    assert len(rows) == 10 and not tagged
    assert len(set(load_dataset(location, split="train")["id"])) == 8
    questions = {row["messages"][0]["content"]: row["answer"] for row in examples}
    assert {row["messages"][0]["content"] for row in rows} == set(questions)
    for row in rows:
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert assistant["content"] == f"The answer is {questions[user['content']]}."

    # Neither a teacher filter nor a row cap makes the baseline lose examples it should not.
    assert len(load_training_rows(ScriptArguments(method="label", teachers="tiny-llama"), location)[0]) == 10
    assert len(load_training_rows(ScriptArguments(method="label", max_train_rows=3), location)[0]) == 3


def test_gold_method_learns_the_datasets_own_solutions_and_suffix_names_the_repo(hub_env, tmp_path):
    location = str(hub_env / "datasets" / "testorg" / "synthetic_gsm-rationales")
    examples = {row["messages"][0]["content"]: row for row in load_dataset(location, "examples", split="train")}
    rows, teachers, tagged = load_training_rows(ScriptArguments(method="gold"), location)
    assert len(rows) == 10 and teachers == ["gold"] and not tagged
    for row in rows:
        user, assistant = row["messages"]
        gold = examples[user["content"]]
        assert assistant["content"] == f"{gold['gold_rationale'].strip()} The answer is {gold['answer']}."
    run = build_run(*train_configs(tmp_path, method="gold", suffix="ceiling"))
    assert run.repo == "synthetic_gsm-gold-1M-ceiling"
    with pytest.raises(ValueError, match="--suffix"):
        ScriptArguments(suffix="../x")


def test_label_method_on_a_repo_without_the_examples_config_falls_back_and_warns(hub_env, tmp_path, caplog):
    """Repos pushed before the `examples` config: one row per explained example, and a pointer to the fix."""
    location = hub_env / "datasets" / "testorg" / "synthetic_gsm-rationales"
    old = tmp_path / "old-repo"
    shutil.copytree(location / "data", old / "data")  # no card, no examples/: what older builds pushed
    with caplog.at_level(logging.WARNING, logger="trainers.sft"):
        rows, _, _ = load_training_rows(ScriptArguments(method="label"), str(old))
    assert len(rows) == 8
    assert "make push-data" in caplog.text and "'examples'" in caplog.text


def test_label_baseline_card_says_how_many_examples_it_learned(hub_env, tmp_path):
    location = train(*train_configs(tmp_path, method="label", max_steps=2))
    assert location.endswith("synthetic_gsm-label-1M")
    card = (Path(location) / "README.md").read_text()
    assert "config `examples`, split `train`: **10 examples**" in card, card
    assert "Teachers: none used" in card


def test_only_assistant_tokens_carry_labels(hub_env, tmp_path):
    run = build_run(*train_configs(tmp_path, max_length=192))  # no row truncated: every one must end in <|im_end|>
    batch = next(iter(run.trainer.get_train_dataloader()))
    tokenizer = run.tokenizer
    for input_ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        trained = tokenizer.decode(input_ids[labels != -100])
        text = tokenizer.decode(input_ids)  # right-padded with <|im_end|>, so the assistant turn still leads
        assert trained.endswith("<|im_end|>") and trained.count("<|im_end|>") == 1
        assert "<|im_start|>" not in trained and "Solve the problem" not in trained and "Explain like" not in trained
        assistant_part = text.split("<|im_start|>assistant\n")[1]
        assert assistant_part.startswith(trained)
    # With no system turn the saved template asks for the default teacher's style.
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith("<|im_start|>system\nExplain like other-teacher.<|im_end|>\n")


# -- training end to end ----------------------------------------------------------------------------------


def generate_in_a_fresh_process(location: str, question: str, max_new_tokens: int) -> str:
    """Greedy answer of a pushed model loaded with plain transformers in a new interpreter, as a user would."""
    script = (
        "import sys, json; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "path, question, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "model = AutoModelForCausalLM.from_pretrained(path); tok = AutoTokenizer.from_pretrained(path)\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': question}], add_generation_prompt=True,"
        " return_tensors='pt', return_dict=True)\n"
        "out = model.generate(**ids, max_new_tokens=n, do_sample=False)\n"
        "print('GENERATED', json.dumps(tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, location, question, str(max_new_tokens)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.split("GENERATED", 1)[1])


def logged_losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_training_lowers_the_loss_and_pushes_a_model_that_loads_in_a_fresh_process(hub_env, tmp_path, capsys):
    location = train(*train_configs(tmp_path))
    assert location == str(hub_env / "models" / "testorg" / "synthetic_gsm-sft-1M")
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "MFU" in printed

    losses = logged_losses(tmp_path / "out")
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0, losses

    files = {p.name for p in Path(location).iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
    } <= files
    card = (Path(location) / "README.md").read_text()
    for expected in [
        "datasets:",
        "testorg/synthetic_gsm-rationales",
        "license: apache-2.0",
        "tags:",
        "scalingdown",
        "## Results",
        "make eval",
        "tokens/s",
        "MFU",
        "non-embedding",
        "tiny-llama",
        "other-teacher",
        "Initialisation",
        "scratch",
        "learning_rate=0.003",
        "from transformers import pipeline",
    ]:
        assert expected in card, expected
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        cwd=hub_env / "datasets" / "testorg" / "synthetic_gsm-rationales",
    ).stdout.strip()
    assert revision in card
    assert "base_model" not in card.split("---")[1]  # from scratch: no base model

    assert len(generate_in_a_fresh_process(location, "What is 2 + 3?", max_new_tokens=8)) > 2


def test_lora_pushes_a_merged_model_and_keeps_the_adapter(hub_env, tmp_path):
    location = train(
        *train_configs(
            tmp_path, max_steps=2, use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"]
        )
    )
    assert location.endswith("synthetic_gsm-sft-1M-lora")
    assert (Path(location) / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(location)  # plain transformers, no peft
    assert not any("lora" in name for name in model.state_dict())
    assert "LoRA (r=4" in (Path(location) / "README.md").read_text()


def test_a_rerun_resumes_from_the_last_checkpoint(hub_env, tmp_path):
    first = train_configs(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, push=False)
    train(*first)
    assert (tmp_path / "out" / "checkpoint-2").is_dir()

    location = train(*train_configs(tmp_path, max_steps=4, save_strategy="steps", save_steps=2))
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # The first two steps' logs come from the checkpoint: this run trained only steps 3 and 4.
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    cost = json.loads((Path(location) / "training_cost.json").read_text())
    assert 0 < cost["this_run"]["tokens"] < cost["total"]["tokens"] == state["num_input_tokens_seen"]


@pytest.mark.teacher
def test_a_student_pruned_from_the_real_teacher_learns_the_answer_format(hub_env, tmp_path, smol_dir):
    """SmolLM2-135M-Instruct's real weights, 4 of 30 layers kept: a few label steps teach 'The answer is X.'"""
    location = train(
        *train_configs(
            tmp_path,
            size="135M-prune-4L",
            method="label",
            max_steps=6,
            per_device_train_batch_size=2,
            learning_rate=3e-4,  # high for a pretrained model, so 12 rows visibly fix what pruning broke
            max_length=256,
        )
    )
    assert location.endswith("synthetic_gsm-label-135M-prune-4L")
    losses = logged_losses(tmp_path / "out")
    assert len(losses) == 6 and losses[-1] < losses[0] / 2, losses

    config = json.loads((Path(location) / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and config["pruned_from"]["kept_layers"][-1] == 29
    card = (Path(location) / "README.md").read_text()
    assert "**pruned**" in card and "HuggingFaceTB/SmolLM2-135M-Instruct" in card
    question = load_dataset(str(hub_env / "datasets/testorg/synthetic_gsm-rationales"), "examples", split="test")
    answer = generate_in_a_fresh_process(location, question[0]["messages"][0]["content"], max_new_tokens=12)
    assert re.match(r"The answer is -?\d", answer), answer
