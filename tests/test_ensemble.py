"""`make train METHOD=ensemble`: students in rounds, one ensemble repo that `from_pretrained` loads with its own code,
generate() and stock lm-eval on it, resume, boosting, and the ensemble on the leaderboard and in the report."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_build_args, train_configs
from transformers import AutoModelForCausalLM, AutoTokenizer

from datasets_builders.logits import tokenizer_identity
from datasets_builders.push_data import main as push_data
from eval.models import parameter_counts
from eval.report import ensemble_comparison, scaling_down_answer
from trainers.boosting import boosting_weights
from trainers.ensemble import EnsembleArguments
from trainers.ensemble import main as train_ensemble
from trainers.ensemble_model import EnsembleForCausalLM, vocabulary_hash
from trainers.ensemble_repo import write_ensemble_files
from trainers.kd_losses import distillation_loss_from_logprobs

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and threads of two processes on a shared machine slow each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the model class, on members built from configs ---------------------------------------------------------


@pytest.fixture(scope="module")
def member_dirs(tmp_path_factory, tiny_teacher_dir) -> list[Path]:
    """Two tiny Llamas with different random weights and the shared SmolLM2 tokenizer."""
    from transformers import AutoConfig

    folders = []
    for seed in (1, 2):
        folder = tmp_path_factory.mktemp("members") / f"member-{seed}"
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_teacher_dir)).save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(folder)
        folders.append(folder)
    return folders


def ensemble_folder(folder: Path, members: list[Path], **options) -> Path:
    """An ensemble repo folder as the driver writes it, from ready member folders."""
    specs = []
    for index, member in enumerate(members, start=1):
        shutil.copytree(member, folder / f"round-{index}")
        specs.append({"name": f"round-{index}", "subfolder": f"round-{index}", "size": "tiny"})
    write_ensemble_files(folder, specs, AutoTokenizer.from_pretrained(members[0]), **options)
    return folder


@pytest.mark.parametrize("combine", ["logits", "logprobs"])
def test_logits_are_the_weighted_combination_of_the_members(member_dirs, tmp_path, combine):
    folder = ensemble_folder(tmp_path / "ensemble", member_dirs, combine=combine, weights=[1, 3])
    model = EnsembleForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["What is 2 + 3?", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch, labels=batch["input_ids"]).logits
        first, second = (AutoModelForCausalLM.from_pretrained(m)(**batch).logits for m in member_dirs)
    if combine == "logits":
        expected = 0.25 * first + 0.75 * second
    else:
        expected = (0.25 * first.softmax(-1) + 0.75 * second.softmax(-1)).log()
        assert torch.allclose(logits.exp().sum(-1), torch.ones(logits.shape[:2]), atol=1e-4)  # normalised
    assert torch.allclose(logits, expected, atol=1e-5)

    # save_pretrained writes the layout from_pretrained reads
    model.save_pretrained(tmp_path / "saved")
    with torch.no_grad():
        again = EnsembleForCausalLM.from_pretrained(tmp_path / "saved")(**batch).logits
    assert torch.allclose(again, logits)

    # generate: per-member KV caches give the same greedy tokens as recomputing every prefix
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    cached = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    uncached = model.generate(**prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape[1] > prompt["input_ids"].shape[1] and torch.equal(cached, uncached)


def test_the_vocabulary_hash_is_the_logits_builders(member_dirs):
    """The remote code repeats the hash (it must load without this project): the two must agree."""
    tokenizer = AutoTokenizer.from_pretrained(member_dirs[0])
    assert vocabulary_hash(tokenizer) == tokenizer_identity(tokenizer, "any")["tokenizer_hash"]


def test_a_member_with_another_tokenizer_is_refused_on_load(member_dirs, tmp_path):
    other = tmp_path / "other-vocab"
    tokenizer = AutoTokenizer.from_pretrained(member_dirs[1])
    tokenizer.add_tokens(["<|calculator|>"])
    model = AutoModelForCausalLM.from_pretrained(member_dirs[1])
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    folder = ensemble_folder(tmp_path / "ensemble", [member_dirs[0], other])
    with pytest.raises(ValueError, match=r"member 'round-2' .* speaks another tokenizer \(vocab 49153"):
        EnsembleForCausalLM.from_pretrained(folder)


def test_a_member_in_another_repo_is_pinned_to_its_commit(member_dirs, tmp_path):
    """Members may also be other repos at a commit (composing an ensemble from pushed students); for a local git
    folder, where from_pretrained ignores ``revision``, the pin is checked against the folder's HEAD."""
    other = tmp_path / "other-repo"
    shutil.copytree(member_dirs[1], other)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "student"]):
        subprocess.run([*git, *command], cwd=other, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=other, capture_output=True, text=True).stdout.strip()
    folder = ensemble_folder(tmp_path / "ensemble", member_dirs[:1])
    config = json.loads((folder / "config.json").read_text())
    config["members"].append({"name": "borrowed", "repo": str(other), "revision": head[:10]})
    (folder / "config.json").write_text(json.dumps(config))
    assert len(EnsembleForCausalLM.from_pretrained(folder).members) == 2
    config["members"][1]["revision"] = "0123456789"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pinned to commit 0123456789"):
        EnsembleForCausalLM.from_pretrained(folder)


def test_boosting_weights_are_larger_where_the_ensemble_disagrees_with_the_teacher():
    vocab, k = 10, 3
    teacher_ids = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    teacher_logprobs = torch.tensor([[0.8, 0.1, 0.05]]).log().expand(3, k)
    teacher_full = torch.full((vocab,), 0.05 / (vocab - k))
    teacher_full[:k] = torch.tensor([0.8, 0.1, 0.05])
    ensemble = torch.stack(
        [
            teacher_full,  # agrees with the teacher
            torch.roll(teacher_full, 1),  # puts the teacher's favourite second
            torch.full((vocab,), 1 / vocab),  # knows nothing
        ]
    ).log()
    divergence = distillation_loss_from_logprobs(ensemble, teacher_ids, teacher_logprobs, "fkl")
    weights = boosting_weights(divergence, 1.0)
    assert weights[0] < 0.01 < weights[2] < weights[1]  # the further from the teacher, the heavier
    assert weights.mean().item() == pytest.approx(1.0)
    half = boosting_weights(divergence, 0.5)
    assert half.mean().item() == pytest.approx(1.0) and half.min() >= 0.5
    assert torch.equal(boosting_weights(divergence, 0.0), torch.ones(3))
    assert torch.equal(boosting_weights(torch.zeros(4), 1.0), torch.ones(4))  # an ensemble that already matches


# -- the stage: two rounds on a tiny Hub with stored logits -------------------------------------------------


def configs(work: Path, teacher: Path, rounds: int) -> tuple:
    """The ensemble stage's arguments: conftest's short CPU run per round, two steps each, and one question of
    per-round accuracy; every round after the first boosted."""
    script, training, model, kd = train_configs(
        work,
        max_steps=2,
        max_length=256,
        gradient_checkpointing=False,  # TRL's default recomputes the forward: seconds per step on a shared CPU
    )
    ensemble = EnsembleArguments(
        rounds=rounds,
        boosting=1.0,
        eval_teacher=str(teacher),
        accuracy_limit=1,
        accuracy_max_gen_toks=4,
        eval_batch_size=4,
    )
    return script, ensemble, kd, training, model


def git_log(folder: Path) -> list[str]:
    done = subprocess.run(["git", "log", "--format=%s"], cwd=folder, capture_output=True, text=True)
    return done.stdout.splitlines()


def git_blob(folder: Path, path: str) -> str:
    return subprocess.run(["git", "rev-parse", f"HEAD:{path}"], cwd=folder, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_teacher_dir):
    """`make train METHOD=ensemble ROUNDS=1`, then `ROUNDS=2` (resume), then `ROUNDS=2` again, on one tiny Hub."""
    work = tmp_path_factory.mktemp("ensemble-hub")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HUB_TARGET", "local")
        env.setenv("HUB_DIR", str(work / "hub"))
        env.setenv("ORG", "testorg")
        env.delenv("HF_TOKEN", raising=False)
        push_data(tiny_build_args(work / "data", tiny_teacher_dir, limit=4, test_limit=3, logits=16, shard_size=4))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            location = Path(train_ensemble(*configs(work, tiny_teacher_dir, rounds=1)))
            after_one = {"log": git_log(location), "round-1": git_blob(location, "round-1/model.safetensors")}
            train_ensemble(*configs(work, tiny_teacher_dir, rounds=2))
            after_two = git_log(location)
            train_ensemble(*configs(work, tiny_teacher_dir, rounds=2))
        yield {"location": location, "after_one": after_one, "after_two": after_two, "printed": printed.getvalue()}


def test_rounds_resume_and_log_teacher_student_and_ensemble(trained):
    location, printed = trained["location"], trained["printed"]
    assert location.name == "synthetic_gsm-ensemble-1M"
    assert trained["after_one"]["log"] == ["Round 1: 1M student"]
    assert trained["after_two"] == ["Round 2: boosted 1M student", "Round 1: 1M student"]  # round 1 not retrained
    assert git_log(location) == trained["after_two"]  # ROUNDS=2 again: nothing to train, no commit
    assert git_blob(location, "round-1/model.safetensors") == trained["after_one"]["round-1"]
    assert "already has 2 rounds (ROUNDS=2): nothing to train" in printed
    assert "round 1/1 (1M)" in printed and "round 2/2 (1M, boosting 1.0)" in printed
    assert "resuming after round 1 of 2" in printed

    log = json.loads((location / "rounds.json").read_text())
    assert [entry["round"] for entry in log] == [1, 2] and [entry["boosting"] for entry in log] == [0.0, 1.0]
    for entry in log:
        for who in ("teacher", "student", "ensemble"):
            assert entry[f"{who}_ppl"] == pytest.approx(math.exp(entry[f"{who}_loss"]))
            assert entry[f"{who}_accuracy"] is not None
        assert entry["teacher"] == "tiny-llama" and entry["test_rows"] == 3 and entry["accuracy_n"] == 1
    assert log[0]["ensemble_loss"] == pytest.approx(log[0]["student_loss"])  # one member: the ensemble is it
    assert log[1]["ensemble_params_total"] == 2 * log[0]["params_total"]
    assert (location / "rounds.csv").read_text().splitlines()[0].startswith("round,size,seed,boosting")
    assert (location / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # boosting: round 2 weighted its tokens (the heaviest above the mean weight of 1); round 1 had nothing to boost
    history = json.loads((location.parents[3] / "out" / "round-2" / "trainer_state.json").read_text())["log_history"]
    assert all(h["boost_weight_max"] > 1 for h in history if "loss" in h)
    first = json.loads((location.parents[3] / "out" / "round-1" / "trainer_state.json").read_text())["log_history"]
    assert not any("boost_weight_max" in h for h in first)

    config = json.loads((location / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_ensemble.EnsembleForCausalLM"
    assert [m["subfolder"] for m in config["members"]] == ["round-1", "round-2"] and config["combine"] == "logits"
    card = (location / "README.md").read_text()
    for tag in ("method-ensemble", "size-2x1M", "rounds-2", "boosting"):
        assert f"- {tag}\n" in card
    assert "trust_remote_code=True" in card and "![rounds](rounds.png)" in card


def test_the_pushed_ensemble_carries_every_rounds_training_logs_and_loss_curve(trained):
    location = trained["location"]
    for round_index in (1, 2):  # round 1's logs came back from the repo pushed by the ROUNDS=1 run
        events = list((location / "runs" / f"round-{round_index}").rglob("events.out.tfevents.*"))
        assert events and all(event.stat().st_size > 0 for event in events)
    assert (location / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(loss_curve.png)" in (location / "README.md").read_text()
    # the curve's history: round 2's steps follow round 1's two
    from trainers.ensemble_repo import rounds_history

    members = json.loads((location / "config.json").read_text())["members"]
    steps = [entry["step"] for entry in rounds_history(location, members) if "loss" in entry]
    assert steps == [1, 2, 3, 4]
    settings = json.loads((location / "run_settings.json").read_text())
    assert settings["options"]["EnsembleArguments"]["boosting"] == 1.0
    assert "rounds" not in settings["options"]["EnsembleArguments"]  # ROUNDS=2 extends the ROUNDS=1 run
    cost = json.loads((location / "training_cost.json").read_text())
    assert [entry["round"] for entry in cost["rounds"]] == [1, 2] and cost["this_run"]["tokens"] > 0


def test_rounds_trained_with_other_settings_are_not_extended(trained, tiny_teacher_dir):
    """A third round with another kd alpha would mix two ensembles: refused before training, naming the change."""
    from trainers.stage import SettingsChanged

    location = trained["location"]
    script, ensemble, kd, training, model = configs(location.parents[3], tiny_teacher_dir, rounds=3)
    kd.alpha = 0.25
    with pytest.raises(SettingsChanged, match=r"2 rounds trained with other settings .*DistillationArguments\.alpha"):
        train_ensemble(script, ensemble, kd, training, model)
    assert git_log(location) == trained["after_two"]


def test_the_pushed_ensemble_loads_with_its_own_code_in_a_fresh_process(trained):
    script = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = {str(trained["location"])!r}
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)  # transformers reads config.json first
inputs = tokenizer.apply_chat_template({PROMPT!r}, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
members = [AutoModelForCausalLM.from_pretrained(path, subfolder=f"round-{{i}}") for i in (1, 2)]
with torch.no_grad():
    mean = sum(m(**inputs).logits for m in members) / 2
    assert torch.allclose(model(**inputs).logits, mean, atol=1e-5)
print(type(model).__module__.split(".")[0], out.shape[1] - inputs["input_ids"].shape[1])
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["transformers_modules", "4"]  # the repo's own code, and 4 new tokens


def test_stock_lm_eval_scores_the_ensemble_with_trust_remote_code(trained):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from eval.measure import task_config
    from eval.tasks.utils import TASKS_DIR

    location = trained["location"]
    dataset = location.parents[2] / "datasets" / "testorg" / "synthetic_gsm-rationales"
    output = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(location), "trust_remote_code": True, "device": "cpu", "batch_size": 1},
        tasks=[task_config("scalingdown_synthetic_gsm", str(dataset))],
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=2,
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": 4},
        log_samples=True,
    )
    samples = output["samples"]["scalingdown_synthetic_gsm"]
    assert len(samples) == 2
    # every answer lm-eval scored is the ensemble's own greedy continuation of the prompt lm-eval built
    model = EnsembleForCausalLM.from_pretrained(location)
    tokenizer = AutoTokenizer.from_pretrained(location)
    for sample in samples:
        context, generation = sample["arguments"][0]
        prompt = tokenizer(context, return_tensors="pt")["input_ids"]
        new = model.generate(prompt, max_new_tokens=4, do_sample=False)[0, prompt.shape[1] :]
        expected = tokenizer.decode(new, skip_special_tokens=True)
        for stop in generation["until"]:
            expected = expected.split(stop)[0]
        assert sample["resps"][0][0] == expected
    score = output["results"]["scalingdown_synthetic_gsm"]["exact_match,none"]
    assert score == pytest.approx(sum(s["exact_match"] for s in samples) / 2)


def test_make_eval_finds_the_ensemble_with_its_role_total_parameters_and_remote_code(trained, tiny_teacher_dir):
    """What `make eval` scores: the runner's discovery (scoring itself is eval.measure, which the rounds already ran
    on this repo with trust_remote_code, and stock lm-eval above)."""
    from eval.run import EvalArguments, discover
    from scalingdown.hub import HubTarget

    location = trained["location"]
    target = HubTarget(kind="local", org="testorg", root=location.parents[2])
    args = EvalArguments(task="synthetic_gsm", teachers=str(tiny_teacher_dir), models="synthetic_gsm-ensemble-*")
    (model,) = discover(args, target, str(target.local_path("dataset", "synthetic_gsm-rationales")))
    member = parameter_counts(location / "round-1")
    assert model.role == model.method == "ensemble" and model.size == "2x1M"
    assert model.chat and model.trust_remote_code  # the chat template at the root; auto_map: its own code
    assert model.params_total == 2 * member["total"] and model.params_non_embedding == 2 * member["non_embedding"]
    assert model.problem is None and model.weights_key


def test_the_space_runs_an_ensemble_only_with_its_own_code(trained, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space"))
    import side_by_side

    from scalingdown.hub import HubTarget

    def load(root: Path, name: str):
        cache = side_by_side.ModelCache(HubTarget(kind="local", org="testorg", root=root), trust_remote_code=False)
        return cache.get(side_by_side.Contender(name, "ensemble", name, True, 1, None))

    loaded = load(trained["location"].parents[2], "synthetic_gsm-ensemble-1M")
    assert type(loaded.model).__name__ == "EnsembleForCausalLM" and loaded.chat

    tampered = tmp_path / "hub"
    shutil.copytree(trained["location"], tampered / "models" / "testorg" / "synthetic_gsm-ensemble-2M")
    with open(tampered / "models" / "testorg" / "synthetic_gsm-ensemble-2M" / "modeling_ensemble.py", "a") as code:
        code.write("\nprint('not the project code')\n")
    with pytest.raises(side_by_side.ModelLoadError, match="remote code is off"):
        load(tampered, "synthetic_gsm-ensemble-2M")


# -- the report ---------------------------------------------------------------------------------------------


def board(model, role, accuracy, params, size=None, stderr=0.02, method="kd"):
    return dict(
        model=model,
        role=role,
        task="synthetic_gsm",
        variant="cot",
        accuracy=accuracy,
        stderr=stderr,
        params_total=params,
        size=size,
        method=method,
        lora=False,
        status="ok",
    )


def test_the_report_compares_the_ensemble_with_the_same_size_student_and_the_teacher():
    rows = [
        board("teacher", "teacher", 0.30, 134_515_008),
        board("synthetic_gsm-kd-1M", "student", 0.10, 7_275_904, "1M"),
        board("synthetic_gsm-kd-3M", "student", 0.20, 12_586_176, "3M"),
        board("synthetic_gsm-kd-8M", "student", 0.24, 20_470_016, "8M"),
        board("synthetic_gsm-ensemble-1M", "ensemble", 0.26, 14_551_808, "2x1M", method="ensemble"),
    ]
    (sentence,) = ensemble_comparison(rows)
    assert sentence in scaling_down_answer(rows, "synthetic_gsm")
    # 14.6M is closest to 12.6M (log scale); 6 points is beyond 2 x sqrt(2) x 2 points of noise, 4 is not
    assert comparisons(sentence) == [
        ("synthetic_gsm-kd-3M", 6.0, "more than two combined standard errors (2.1)"),
        ("teacher", -4.0, "within two combined standard errors (1.4)"),
    ]
    assert "Ensemble of 2 students" in sentence and "26.0%" in sentence

    noisy = [{**r, "stderr": 0.07} if r["role"] == "ensemble" else r for r in rows]
    (sentence,) = ensemble_comparison(noisy)
    assert [verdict for _, _, verdict in comparisons(sentence)] == [
        "within two combined standard errors (0.8), so not a clear win",  # +6 < 2 sqrt(7^2 + 2^2)
        "within two combined standard errors (0.5)",
    ]

    bigger = [{**r, "params_total": 19_000_000} if r["role"] == "ensemble" else r for r in rows]
    (sentence,) = ensemble_comparison(bigger)
    assert comparisons(sentence)[0][:2] == ("synthetic_gsm-kd-8M", 2.0)

    # a same-size student that never wrote a parseable answer is still the comparison, at its measured 0%
    rows[2].update(status="failed", accuracy=0.0, error="no parseable final answer in 50 responses")
    (sentence,) = ensemble_comparison(rows)
    assert comparisons(sentence)[0] == ("synthetic_gsm-kd-3M", 26.0, "more than two combined standard errors (9.2)")
    assert "no parseable answer" in sentence.split("; ")[1]
    assert ensemble_comparison([r for r in rows if r["role"] != "ensemble"]) == []


def comparisons(sentence: str) -> list[tuple[str, float, str]]:
    """``(model, margin in points, verdict)`` of each 'vs ...' part of an ensemble's report sentence."""
    found = []
    for part in sentence.rstrip(".").split("; ")[1:]:
        match = re.fullmatch(r"vs (?:the best teacher )?(\S+) \(.*\) at .*: ([+-]\d+\.\d) points, (.+)", part)
        assert match, part
        found.append((match[1], float(match[2]), match[3]))
    return found
