"""`make pretrain`: a scratch size trained on the corpus repo, interrupted and resumed, pushed as a model repo that
loads and generates, with its cost in the card; then used as a student initialisation (`SIZE=1M-pt`)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import board_row, tiny_build_args, tiny_corpus_args
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig

from datasets_builders.corpus import main as build_corpus
from datasets_builders.push_data import main as push_data
from eval.report import pretraining_comparison, scaling_down_answer
from trainers.cost import DevicePrice, device_price, dollar_cost, format_dollars, format_duration
from trainers.pretrain import PretrainArguments
from trainers.pretrain import cli as pretrain_cli
from trainers.sft import ScriptArguments, build_run
from trainers.sizes import SizeError, get_size
from trainers.stage import TrainingClock

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "pretrain" / "scratch.yaml"
STEPS_FIRST, STEPS_TOTAL, BATCH, BLOCK = 4, 10, 4, 64


def run_pretrain(out: Path, max_steps: int, push: bool) -> tuple[str, str]:
    """`python -m trainers.pretrain` with the CPU recipe on a tiny budget; (return value, printed text)."""
    argv = ["--config", str(RECIPE), "--size", "1M", "--output_dir", str(out), "--max_steps", str(max_steps)]
    argv += ["--save_steps", "2", "--logging_steps", "1", "--max_length", str(BLOCK), "--learning_rate", "3e-3"]
    argv += ["--per_device_train_batch_size", str(BATCH), "--warmup_steps", "0", "--disable_tqdm", "true"]
    argv += ["--price_per_device_hour", "1.5", "--device_kind", "test-device", "--push", str(push).lower()]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = pretrain_cli(argv)
    return result, printed.getvalue()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A local Hub with the corpus repo (300 synthetic_gsm training questions), and `pretrain-1M` trained on it for
    4 steps, 'interrupted' there (checkpoints kept, nothing pushed), then resumed to 10 steps and pushed."""
    root = tmp_path_factory.mktemp("pretrain")
    mp = pytest.MonkeyPatch()
    for key, value in {"HUB_TARGET": "local", "HUB_DIR": str(root / "hub"), "ORG": "testorg"}.items():
        mp.setenv(key, value)
    mp.delenv("HF_TOKEN", raising=False)
    try:
        build_corpus(tiny_corpus_args())
        out = root / "out"
        _, first_printed = run_pretrain(out, STEPS_FIRST, push=False)
        checkpoints_after_interrupt = sorted(p.name for p in out.glob("checkpoint-*"))
        first_clock = json.loads((out / f"checkpoint-{STEPS_FIRST}" / TrainingClock.FILE).read_text())
        location, printed = run_pretrain(out, STEPS_TOTAL, push=True)
    finally:
        mp.undo()
    return {
        "root": root,
        "hub": root / "hub",
        "out": out,
        "location": location,
        "printed": printed,
        "first_printed": first_printed,
        "checkpoints_after_interrupt": checkpoints_after_interrupt,
        "first_clock": first_clock,
    }


@pytest.fixture
def pretrained_env(pretrained, monkeypatch):
    monkeypatch.setenv("HUB_TARGET", "local")
    monkeypatch.setenv("HUB_DIR", str(pretrained["hub"]))
    monkeypatch.setenv("ORG", "testorg")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return pretrained


def test_pretraining_reduces_the_loss_and_resumes_from_its_last_checkpoint(pretrained):
    assert pretrained["checkpoints_after_interrupt"] == ["checkpoint-2", "checkpoint-4"]
    state = json.loads((pretrained["out"] / "trainer_state.json").read_text())
    losses = [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]
    assert [step for step, _ in losses] == list(range(1, STEPS_TOTAL + 1))  # each step once: no step re-trained
    assert losses[0][1] > 10  # ~ln(49152) at random init
    assert losses[-1][1] < losses[0][1] - 1
    assert state["num_input_tokens_seen"] == STEPS_TOTAL * BATCH * BLOCK  # packed blocks: no padding

    cost = json.loads((Path(pretrained["location"]) / "training_cost.json").read_text())
    assert cost["this_run"]["tokens"] == (STEPS_TOTAL - STEPS_FIRST) * BATCH * BLOCK  # the resumed run did 6 steps
    # The wall time of the interrupted run travels in the checkpoint and is part of the total.
    assert cost["total"]["seconds"] > pretrained["first_clock"]["seconds"] > 0
    assert cost["total"]["seconds"] == pytest.approx(
        pretrained["first_clock"]["seconds"] + cost["this_run"]["seconds"], rel=0.05
    )


def test_the_pushed_repo_loads_generates_and_holds_the_trained_weights(pretrained):
    location = pretrained["location"]
    assert location == str(pretrained["hub"] / "models" / "testorg" / "pretrain-1M")
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForCausalLM.from_pretrained(location)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.chat_template is None
    assert model.config.eos_token_id == tokenizer.eos_token_id == 0
    inputs = tokenizer("Question: Tom has 3 apples.", return_tensors="pt")
    with torch.no_grad():
        next_token = model(**inputs).logits[0, -1].argmax()
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output[0, inputs["input_ids"].shape[1]] == next_token  # greedy decoding of the loaded weights

    # A corpus document costs the pushed model clearly less than the same size at random init.
    document = load_dataset(str(pretrained["hub"] / "datasets" / "testorg" / "pretrain-corpus"), split="train")[0]
    ids = tokenizer(document["text"], return_tensors="pt", truncation=True, max_length=BLOCK)["input_ids"]
    with torch.no_grad():
        trained = model(input_ids=ids, labels=ids).loss.item()
        untrained = get_size("1M").build_model(seed=0)(input_ids=ids, labels=ids).loss.item()
    assert trained < untrained - 0.5, (trained, untrained)


def test_the_card_and_the_printout_carry_the_cost(pretrained):
    card = (Path(pretrained["location"]) / "README.md").read_text()
    cost = json.loads((Path(pretrained["location"]) / "training_cost.json").read_text())
    money, params = cost["dollars"], cost["params"]["total"]
    assert "- method-pretrain" in card and "- size-1M" in card and "testorg/pretrain-corpus" in card
    assert money["price_per_device_hour"] == 1.5 and money["devices"] == 1
    assert money["dollars"] == pytest.approx(1.5 * cost["total"]["seconds"] / 3600)
    assert money["chinchilla_tokens"] == 20 * params == 20 * 7_275_904
    # The card's bold dollar figures, read back, are the JSON's (to the three significant figures shown).
    shown = [float(v.replace(",", "")) for v in re.findall(r"\*\*\$([\d.,]+)\*\*", card)]
    figures = ("dollars", "dollars_per_million_params", "dollars_per_billion_tokens", "chinchilla_dollars")
    assert shown == pytest.approx([money[figure] for figure in figures], rel=0.01)
    assert f"**{money['chinchilla_tokens']:,} tokens**" in card
    assert "1 x test-device at $1.5/device-hour" in card and "resumed from `checkpoint-4`" in card
    assert f"Recipe: `{RECIPE}`" in card and "saw 0.0018% of" in card
    printed = pretrained["printed"]
    (per_million,) = re.findall(r"\$([\d.,]+) per million parameters", printed)
    assert float(per_million) == pytest.approx(money["dollars_per_million_params"], rel=0.01)
    assert "Chinchilla-optimal (20 tokens/param = 145,518,080 tokens" in printed
    assert "per million parameters" in pretrained["first_printed"]  # an unpushed run prints its cost too


def test_a_pretrained_size_resolves_to_its_repo_and_starts_a_student(pretrained_env, tmp_path, tiny_teacher_dir):
    size = get_size("1M-pt")
    assert (size.init, size.source, size.base_model) == (
        "pretrained",
        pretrained_env["location"],
        "testorg/pretrain-1M",
    )
    assert size.parameter_counts() == get_size("1M").parameter_counts()

    # `make train SIZE=1M-pt`: the student starts from the pre-trained weights, under its own repo name.
    push_data(tiny_build_args(tmp_path / "work", tiny_teacher_dir, limit=4, test_limit=2))
    script_args = ScriptArguments(task="synthetic_gsm", size="1M-pt", method="sft")
    training_args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, report_to="none", bf16=False)
    run = build_run(script_args, training_args, ModelConfig())
    assert run.repo == "synthetic_gsm-sft-1M-pt"
    pretrained_model = AutoModelForCausalLM.from_pretrained(pretrained_env["location"])
    student = run.trainer.model
    assert torch.equal(student.model.embed_tokens.weight, pretrained_model.model.embed_tokens.weight)
    assert torch.equal(
        student.model.layers[-1].mlp.up_proj.weight, pretrained_model.model.layers[-1].mlp.up_proj.weight
    )
    assert "<|im_start|>assistant" in run.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )


def test_a_missing_pretrained_repo_says_which_command_makes_it(hub_dir):
    with pytest.raises(SizeError, match=r"testorg/pretrain-8M.*run `make pretrain SIZE=8M` first"):
        get_size("8M-pt")
    with pytest.raises(SizeError, match="only scratch sizes"):
        get_size("135M-pt")
    with pytest.raises(SizeError, match="8M-pt"):  # the unknown-size message names the -pt sizes
        get_size("7M")
    with pytest.raises(ValueError, match="pre-training starts from a scratch size"):
        PretrainArguments(size="135M")


def test_cost_maths_on_known_numbers():
    price = DevicePrice("a100", 2.0, devices=4, source="test")
    money = dollar_cost(params_total=10_000_000, tokens=36_000_000, seconds=1800, price=price)
    assert money["dollars"] == pytest.approx(4.0)  # 4 devices x $2 x 0.5 h
    assert money["dollars_per_million_params"] == pytest.approx(0.4)
    assert money["dollars_per_billion_tokens"] == pytest.approx(4.0 / 36_000_000 * 1e9)  # $111.1
    assert money["chinchilla_tokens"] == 200_000_000
    assert money["chinchilla_fraction"] == pytest.approx(0.18)
    assert money["chinchilla_seconds"] == pytest.approx(10_000)  # at 20,000 tokens/s
    assert money["chinchilla_dollars"] == pytest.approx(8 * 10_000 / 3600)
    assert money["chinchilla_dollars_per_million_params"] == pytest.approx(8 * 10_000 / 3600 / 10)

    no_price = dollar_cost(10_000_000, 36_000_000, 1800, DevicePrice("mystery-gpu", None, 1, "none"))
    assert no_price["dollars"] is None and no_price["chinchilla_seconds"] == pytest.approx(10_000)
    assert device_price("h100", processes=8).per_hour == pytest.approx(80.0)  # the list price, one per process
    assert device_price("h100", per_device_hour=2.5, processes=2).per_hour == pytest.approx(5.0)
    assert (format_dollars(1234.5), format_dollars(12.345), format_dollars(0.012345)) == ("$1,234", "$12.35", "$0.0123")
    assert (format_duration(42), format_duration(5400), format_duration(3 * 86400)) == ("42 s", "1.5 h", "3.0 days")


def test_the_report_compares_pretrained_then_distilled_with_the_same_size_from_scratch():
    rows = [
        board_row("teacher", "teacher", 0.30, stderr=0.02, params_total=135_000_000),
        board_row("synthetic_gsm-sft-8M", "student", 0.20, stderr=0.02, method="sft", size="8M", params_total=2e7),
        board_row(
            "synthetic_gsm-sft-8M-pt", "student", 0.35, stderr=0.02, method="sft", size="8M-pt", params_total=2e7
        ),
        board_row("synthetic_gsm-label-3M-pt", "student", 0.10, stderr=0.02, method="label", size="3M-pt"),
    ]
    (sentence,) = pretraining_comparison(rows)
    assert sentence.startswith("Pre-trained here, then sft: synthetic_gsm-sft-8M-pt at 35.0% ± 2.0 beats ")
    assert (
        "synthetic_gsm-sft-8M (the same size from scratch on the task alone) at 20.0% ± 2.0: +15.0 points" in sentence
    )
    assert "more than two combined standard errors (5.3)" in sentence
    answer = scaling_down_answer(rows, "synthetic_gsm")
    # 35% vs the teacher's 30% is 1.8 combined standard errors: ahead, but not a win
    assert answer.startswith("synthetic_gsm: no student beats the best teacher by more than two") and answer.endswith(
        sentence
    )

    behind = [{**rows[2], "accuracy": 0.19}, rows[1]]
    assert "does not beat" in pretraining_comparison(behind)[0] and "-1.0 points" in pretraining_comparison(behind)[0]
    assert pretraining_comparison(rows[:2] + rows[3:]) == []  # no pre-trained row with a from-scratch twin


def figures(text: str) -> list[float]:
    """The decimal numbers of a report sentence, in order (the wording may change, these may not)."""
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", text)]


def test_the_report_compares_a_pretrained_student_with_no_parseable_answer_and_by_the_gold_answer_nll():
    """The default data's case: the pre-trained 1M writes no parseable answer (a failed row, a measured 0%), the
    from-scratch 1M writes wrong ones (0%); accuracy ties, and the nll variant's graded score still ranks them."""
    same = dict(method="sft", params_total=7_275_904)
    scratch = board_row("synthetic_gsm-sft-1M", "student", 0.0, stderr=0.0, size="1M", **same)
    pre = board_row("synthetic_gsm-sft-1M-pt", "student", 0.0, stderr=0.0, size="1M-pt", **same)
    pre.update(status="failed", parsed_rate=0.0, error="no parseable final answer in 50 responses (e.g. '\\n\\n\\n')")
    (sentence,) = pretraining_comparison([scratch, pre])
    # The verdict and the numbers, not the wording: both 0.0% ± 0.0, a +0.0-point tie, the failed row said so.
    assert figures(sentence) == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # the last: the margin in combined standard errors
    assert "(no parseable answer) ties with synthetic_gsm-sft-1M " in sentence
    assert "within two combined standard errors" in sentence
    assert "(62% parseable)" in pretraining_comparison([{**scratch, "parsed_rate": 0.62}, pre])[0]

    def graded(row: dict, nll: float, stderr: float) -> dict:
        return {**row, "variant": "nll", "accuracy": None, "stderr": None, "parsed_rate": None, "status": "ok",
                "error": None, "metric": "answer_nll", "answer_nll": nll, "answer_nll_stderr": stderr}  # fmt: skip

    teacher = board_row("teacher", "teacher", 0.02, stderr=0.02, params_total=134_515_008)
    rows = [teacher, scratch, pre, graded(teacher, 9.5, 0.3), graded(scratch, 31.3, 0.6), graded(pre, 24.1, 0.5)]
    (sentence,) = pretraining_comparison(rows)
    accuracy_part, nll_part = sentence.split("; ")
    assert "ties with" in accuracy_part and "within two combined standard errors" in accuracy_part
    # NLL: 24.10 ± 0.50 (pre-trained) vs 31.30 ± 0.60 (scratch); the pre-trained one lower by 7.20 = 9.2 SE.
    assert figures(nll_part) == [24.10, 0.50, 31.30, 0.60, 7.20, 9.2]
    assert "the pre-trained student's is lower" in nll_part and "more than two combined standard errors" in nll_part
    assert scaling_down_answer(rows, "synthetic_gsm").endswith(sentence)

    # The nll variant's own answer: against the teacher by NLL (no student beats it), and the pair by NLL alone.
    answer = scaling_down_answer(rows, "synthetic_gsm", "nll")
    verdict, pair = answer.split("Pre-trained here, then sft: ")
    assert "no student gives the gold answer a lower NLL than the best teacher" in verdict
    assert "Best teacher: teacher " in verdict and "best student: synthetic_gsm-sft-1M-pt " in verdict
    assert [9.50, 0.30, 24.10, 0.50, 14.60] == [x for x in figures(verdict) if x not in (134.5, 7.3)]
    assert pair.startswith("synthetic_gsm-sft-1M-pt vs synthetic_gsm-sft-1M ") and pair.endswith(nll_part)
    # A pre-trained student whose cot scoring crashed (no accuracy at all) is still compared by NLL.
    crashed = {**pre, "accuracy": None, "error": "scoring process exited 1"}
    (sentence,) = pretraining_comparison([scratch, crashed, *rows[3:]])
    assert sentence.startswith("Pre-trained here, then sft: synthetic_gsm-sft-1M-pt vs synthetic_gsm-sft-1M")
    worse = [graded(scratch, 20.0, 0.5), graded(pre, 24.1, 0.5)]
    assert "the from-scratch student's is lower by 4.10 nats" in pretraining_comparison([scratch, pre, *worse])[0]
