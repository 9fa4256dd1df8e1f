"""Ensembles of small students (``make train METHOD=ensemble``): students distilled in rounds, logits averaged.

    make push-data LOGITS=16                                   # the teacher's stored top-k logits, once
    make train METHOD=ensemble ROUNDS=3 SIZE=1M                # three 1M students -> synthetic_gsm-ensemble-1M
    make train METHOD=ensemble ROUNDS=3 ROUND_SIZES=1M,1M,3M BOOSTING=1
    python -m trainers.ensemble --config recipes/train/synthetic_gsm/ensemble.yaml --rounds 3 --size 1M

Round ``r`` distils one new student with the ``kd`` method's hybrid loss (alpha·KL(teacher ‖ student) +
(1-alpha)·NLL, from stored top-k logits or an online teacher; ``trainers.sft.build_run`` builds it, seed
``seed + r - 1`` so same-size rounds differ). With ``--boosting s`` each token is weighted by how far the ensemble
of rounds ``< r`` is from the teacher there (``trainers.boosting``). The student is saved as subfolder
``round-<r>/`` of ONE ensemble model repo, ``{task}-ensemble-{SIZE}`` (``{task}-ensemble-1M_1M_3M`` with
``--round_sizes``): the repo is self-contained and every round is one commit of it, so a member can never change or
disappear under the ensemble, and ``ROUNDS`` larger than before resumes from the rounds already pushed.

The repo is a transformers model: ``config.json`` (``model_type: scalingdown_ensemble``, ``auto_map``, members,
weights, combine mode), the remote code from ``trainers/ensemble_model/``, the shared tokenizer, and one model
folder per round; ``AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)`` loads it and ``generate()``
and stock lm-eval work. After each round the test split's loss and perplexity (gold rationale + answer tokens) and
the task accuracy (lm-eval, ``--accuracy_limit`` questions) of the teacher, the new student and the ensemble go to
``rounds.json``/``rounds.csv``/``rounds.png`` in the repo, its card, and one progress line.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from datasets import load_dataset
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig, SFTConfig, TrlParser

from datasets_builders.logits import tokenize_conversation, tokenizer_identity
from datasets_builders.rationales import finish_rationale
from model_cards import template_path
from scalingdown.hub import HubTarget, dataset_repo_name, folder_revision, model_repo_name
from trainers.boosting import BoostedKDTrainer
from trainers.cost import training_cost
from trainers.ensemble_model import AUTO_MAP, CODE_DIR, COMBINE_MODES, REMOTE_CODE_FILES, EnsembleConfig
from trainers.ensemble_model import EnsembleForCausalLM as Ensemble
from trainers.kd import DistillationArguments
from trainers.sft import ScriptArguments, build_run, code_revision, run_training, save_for_push
from trainers.sizes import format_params, get_size

logger = logging.getLogger("trainers.ensemble")

METHOD = "ensemble"
MEMBER_METHOD = "kd"  # what each round's student is trained with
LOG_JSON, LOG_CSV, LOG_PLOT = "rounds.json", "rounds.csv", "rounds.png"
LOG_COLUMNS = [
    "round",
    "size",
    "seed",
    "boosting",
    "params_total",
    "ensemble_params_total",
    "train_rows",
    "train_tokens",
    "train_seconds",
    "tokens_per_second",
    "final_train_loss",
    "teacher",
    "teacher_loss",
    "teacher_ppl",
    "student_loss",
    "student_ppl",
    "ensemble_loss",
    "ensemble_ppl",
    "test_rows",
    "teacher_accuracy",
    "student_accuracy",
    "ensemble_accuracy",
    "accuracy_n",
]


@dataclass
class EnsembleArguments:
    """The ensemble's options; each round's student also takes ``ScriptArguments``/``DistillationArguments``."""

    rounds: int = field(default=2, metadata={"help": "Members in the ensemble; more than already pushed adds rounds."})
    round_sizes: str | None = field(
        default=None,
        metadata={"help": "Comma-separated size per round (the last repeats); default: --size for every round."},
    )
    boosting: float = field(
        default=0.0,
        metadata={
            "help": "0 = off; s in (0, 1]: token weights (1 - s) + s * d / mean(d), d = KL(teacher || ensemble so far)."
        },
    )
    combine: str = field(
        default="logits",
        metadata={"help": f"One of {COMBINE_MODES}: mean of logits, or log of the mean of probabilities."},
    )
    weights: str | None = field(
        default=None, metadata={"help": "Comma-separated member weights, one per round (default: uniform)."}
    )
    ensemble_name: str | None = field(
        default=None, metadata={"help": "Model repo name (default: {task}-ensemble-{size or round sizes})."}
    )
    eval_teacher: str | None = field(
        default=None,
        metadata={"help": "Teacher scored beside each round (default: --kd_teacher, else the logits' teacher)."},
    )
    loss_limit: int = field(default=0, metadata={"help": "Test rows for the loss/perplexity; 0 = the whole split."})
    accuracy_limit: int = field(
        default=20, metadata={"help": "Test questions for the per-round task accuracy (lm-eval); 0 = skip it."}
    )
    accuracy_max_gen_toks: int | None = field(
        default=None, metadata={"help": "Max new tokens per answer in the per-round accuracy (default: the task's)."}
    )
    eval_batch_size: int = field(default=8, metadata={"help": "Batch size of the per-round loss and accuracy."})

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {self.rounds}")
        if not 0.0 <= self.boosting <= 1.0:
            raise ValueError(f"--boosting must be in [0, 1], got {self.boosting}")
        if self.combine not in COMBINE_MODES:
            raise ValueError(f"--combine must be one of {COMBINE_MODES}, got {self.combine!r}")
        for name in self.size_list:
            get_size(name)
        if self.weight_list is not None and len(self.weight_list) < self.rounds:
            raise ValueError(f"--weights gives {len(self.weight_list)} weights for {self.rounds} rounds")

    @property
    def size_list(self) -> list[str]:
        return [s.strip() for s in (self.round_sizes or "").split(",") if s.strip()]

    @property
    def weight_list(self) -> list[float] | None:
        return [float(w) for w in self.weights.split(",") if w.strip()] if self.weights else None

    def sizes(self, default: str) -> list[str]:
        """The size of every round, 1..rounds."""
        given = self.size_list or [default]
        return [given[min(i, len(given) - 1)] for i in range(self.rounds)]

    def repo_name(self, task: str, default_size: str) -> str:
        return self.ensemble_name or model_repo_name(task, METHOD, "_".join(self.size_list) or default_size)


def composition(sizes: list[str]) -> str:
    """The ensemble's size label from its members' sizes, in round order: ``2x1M+3M``."""
    counts: dict[str, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return "+".join(f"{n}x{size}" for size, n in counts.items())


# -- evaluation after each round ----------------------------------------------------------------------------


def reference_sequences(location: str, tokenizer, limit: int = 0) -> list[dict]:
    """The test split as training sequences: the student prompt, then the gold rationale closed by the answer
    sentence (the answer sentence alone where the task has no gold rationale), tokenized as KD rows are."""
    rows = load_dataset(location, split="test")
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    sequences = []
    for row in rows:
        response = finish_rationale(row["gold_rationale"] or "", row["answer"])
        messages = [row["messages"][0], {"role": "assistant", "content": response}]
        sequences.append(tokenize_conversation(tokenizer, messages))
    return sequences


@torch.no_grad()
def test_loss(model, sequences: list[dict], pad_id: int, batch_size: int = 8) -> dict:
    """Mean NLL per reference token and its perplexity, over the assistant spans of ``sequences``."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for first in range(0, len(sequences), batch_size):
        batch = sequences[first : first + batch_size]
        longest = max(len(s["input_ids"]) for s in batch)
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, s in enumerate(batch):
            ids[row, : len(s["input_ids"])] = torch.tensor(s["input_ids"])
            mask[row, : len(s["input_ids"])] = 1
            labels[row, s["span_start"] : s["span_end"]] = ids[row, s["span_start"] : s["span_end"]]
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        targets = labels[:, 1:].to(device)
        total += F.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
        ).item()
        count += int((targets != -100).sum())
    loss = total / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}


def task_accuracy(path: str, task: str, location: str, args: EnsembleArguments, **request) -> dict:
    """lm-eval accuracy on ``args.accuracy_limit`` test questions, in this process (``eval.measure``)."""
    from eval.measure import MeasureRequest, measure
    from eval.run import VARIANTS

    request = MeasureRequest(
        model_path=path,
        lm_eval_task=VARIANTS["cot"].format(task=task),
        dataset_path=location,
        limit=args.accuracy_limit,
        batch_size=args.eval_batch_size,
        latency_samples=0,
        max_gen_toks=args.accuracy_max_gen_toks,
        **request,
    )
    try:
        result = measure(request)
    except Exception as error:  # a round's log records the failure; the run goes on
        logger.warning("accuracy of %s failed: %s", path, error)
        return {"accuracy": None, "n": 0, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"accuracy": result.accuracy, "n": result.n, "parsed_rate": result.parsed_rate}


@dataclass
class TeacherScore:
    """The teacher beside each round: its name, and its test loss and accuracy (scored once per run)."""

    name: str | None = None
    loss: float | None = None
    ppl: float | None = None
    accuracy: float | None = None
    note: str = ""


def score_teacher(spec: str | None, student_hash: str, sequences, pad_id, task, location, args) -> TeacherScore:
    """Test loss (only when the teacher shares the student's tokenizer, so losses count the same tokens) and task
    accuracy (prompted as ``make eval`` prompts it) of the teacher; what could not be measured is said in ``note``."""
    from eval.models import teacher_models

    if not spec:
        return TeacherScore(note="no teacher to score (pass --eval_teacher)")
    (teacher,) = teacher_models([spec])
    if teacher.problem:
        return TeacherScore(name=teacher.name, note=f"teacher {spec} not scored: {teacher.problem}")
    score = TeacherScore(name=teacher.name)
    tokenizer = AutoTokenizer.from_pretrained(teacher.path)
    if tokenizer_identity(tokenizer, teacher.name)["tokenizer_hash"] == student_hash:
        model = AutoModelForCausalLM.from_pretrained(teacher.path, dtype=torch.float32)
        figures = test_loss(model, sequences, pad_id, args.eval_batch_size)
        score.loss, score.ppl = figures["loss"], figures["ppl"]
        del model
    else:
        score.note = f"{teacher.name} has another tokenizer, so its test loss counts other tokens: not compared"
    if args.accuracy_limit:
        chat = {"chat": teacher.chat, "num_fewshot": teacher.num_fewshot}
        score.accuracy = task_accuracy(teacher.path, task, location, args, **chat)["accuracy"]
    return score


# -- the repo ---------------------------------------------------------------------------------------------


def write_ensemble_files(folder: Path, members: list[dict], args: EnsembleArguments, tokenizer) -> EnsembleConfig:
    """config.json (with ``auto_map``), the remote code, the shared tokenizer and generation config, for the
    member folders already in ``folder``."""
    member_configs = [json.loads((folder / m["subfolder"] / "config.json").read_text()) for m in members]
    weights = args.weight_list[: len(members)] if args.weight_list else None
    config = EnsembleConfig(
        members=members,
        weights=weights,
        combine=args.combine,
        tokenizer_hash=tokenizer_identity(tokenizer, "ensemble")["tokenizer_hash"],
        vocab_size=member_configs[0].get("vocab_size"),
        max_position_embeddings=min(c.get("max_position_embeddings") or 2048 for c in member_configs),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.auto_map = dict(AUTO_MAP)
    config.architectures = ["EnsembleForCausalLM"]
    config.save_pretrained(folder)
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(CODE_DIR / name, folder / name)
    tokenizer.save_pretrained(folder)
    shutil.copyfile(folder / members[0]["subfolder"] / "generation_config.json", folder / "generation_config.json")
    return config


def write_log(folder: Path, log: list[dict]) -> None:
    """The per-round log as JSON and CSV, and its plot."""
    (folder / LOG_JSON).write_text(json.dumps(log, indent=1) + "\n")
    with open(folder / LOG_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(log)
    rounds_figure(log).savefig(folder / LOG_PLOT)


def rounds_figure(log: list[dict]):
    """Test loss and task accuracy per round: the new student, the ensemble so far, and the teacher."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=110)
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    rounds = [entry["round"] for entry in log]
    for ax, key, label in ((loss_ax, "loss", "test loss (nats/token)"), (accuracy_ax, "accuracy", "accuracy (%)")):
        scale = 100 if key == "accuracy" else 1
        for who, style in (("student", "o"), ("ensemble", "s-")):
            values = [entry.get(f"{who}_{key}") for entry in log]
            points = [(r, scale * v) for r, v in zip(rounds, values, strict=True) if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, label="new student" if who == "student" else who)
        teacher = next((entry.get(f"teacher_{key}") for entry in log if entry.get(f"teacher_{key}") is not None), None)
        if teacher is not None:
            ax.axhline(scale * teacher, linestyle="--", color="grey", label=f"teacher {log[0].get('teacher') or ''}")
        if key == "accuracy":
            ax.set_ylim(0, max([5.0, *ax.get_ylim()[1:]]))
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.set_xticks(rounds)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Ensemble rounds: each round adds one student")
    fig.tight_layout()
    return fig


def render_card(folder: Path, context: dict) -> None:
    card_data = ModelCardData(
        datasets=[context["dataset_repo"]],
        tags=[
            "scalingdown",
            "distillation",
            "ensemble",
            context["task"],
            f"method-{METHOD}",
            f"size-{context['size']}",
            f"rounds-{len(context['members'])}",
        ]
        + (["boosting"] if any(m.get("boosting") for m in context["members"]) else [])
        + [f"kd-{context['kd']['kd_loss']}", f"kd-{context['kd']['kd_source']}"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=context["model_name"],
    )
    card = ModelCard.from_template(card_data, template_path=template_path("ensemble_card.md"), **context)
    card.save(folder / "README.md")


def fmt(value, spec: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
    return "–" if value is None else f"{format(scale * value, spec)}{suffix}"


def progress_line(entry: dict, rounds: int) -> str:
    def pair(who: str) -> str:
        return f"{who} {fmt(entry.get(f'{who}_loss'))} ({fmt(entry.get(f'{who}_ppl'), '.1f')})"

    boosting = f", boosting {entry['boosting']}" if entry["boosting"] else ""
    line = (
        f"round {entry['round']}/{rounds} ({entry['size']}{boosting}): {entry['train_tokens']:,} tokens in "
        f"{entry['train_seconds']:.1f} s | test loss (ppl) on {entry['test_rows']} rows: "
        f"{pair('student')}, {pair('ensemble')}, {pair('teacher')}"
    )
    if entry.get("accuracy_n"):
        accuracies = ", ".join(
            f"{who} {fmt(entry.get(f'{who}_accuracy'), '.1f', 100, '%')}" for who in ("student", "ensemble", "teacher")
        )
        line += f" | accuracy on {entry['accuracy_n']}: {accuracies}"
    return line


# -- the stage --------------------------------------------------------------------------------------------


@dataclass
class EnsembleState:
    """What the ensemble repo already holds: its members (one per pushed round), the per-round log, the combine."""

    members: list[dict]
    log: list[dict]
    combine: str | None = None


def resume_state(target: HubTarget, repo: str, staging: Path) -> EnsembleState:
    """Fill ``staging`` with the ensemble repo as pushed (empty when there is none) and read its rounds."""
    if staging.exists():
        shutil.rmtree(staging)
    if not target.exists("model", repo):
        staging.mkdir(parents=True)
        return EnsembleState([], [])
    shutil.copytree(target.local_folder("model", repo), staging, ignore=shutil.ignore_patterns(".git"))
    config = json.loads((staging / "config.json").read_text())
    log = json.loads((staging / LOG_JSON).read_text()) if (staging / LOG_JSON).is_file() else []
    return EnsembleState(list(config.get("members") or []), log, config.get("combine"))


def check_resume(state: EnsembleState, sizes: list[str], args: EnsembleArguments, location: str) -> None:
    """Refuse to extend a pushed ensemble with settings that contradict its rounds (sizes, combine mode)."""
    pushed = [m.get("size") for m in state.members]
    if pushed != sizes[: len(pushed)]:
        raise ValueError(
            f"{location} has rounds of sizes {pushed}, but this run plans {sizes[: len(pushed)]} for them: keep "
            "SIZE/ROUND_SIZES as they were, or pass --ensemble_name for a new ensemble"
        )
    if state.combine and state.combine != args.combine:
        raise ValueError(
            f"{location} combines its members with combine={state.combine!r}; pass --combine {state.combine} "
            "to add rounds, or --ensemble_name for a new ensemble"
        )


def member_runs(script_args, training_args, base: Path, round_index: int, size: str):
    """``(ScriptArguments, SFTConfig)`` of one round's student: the kd method, its size, its own output folder and
    seed (same-size rounds would otherwise start from the same weights)."""
    script = dataclasses.replace(script_args, method=MEMBER_METHOD, size=size, push=False)
    training = copy.deepcopy(training_args)
    training.output_dir = str(base / f"round-{round_index}")
    training.seed = training_args.seed + round_index - 1
    return script, training


def train_member(script_args, ens_args, training_args, model_args, kd_args, state, base, staging, round_index, size):
    """Distil round ``round_index``'s student (boosted against the ensemble in ``staging``) and save it as the
    ``round-<r>`` folder; return ``(the TrainingRun, its member entry, TrainOutput, seconds, tokens)``."""
    from eval.models import parameter_counts

    script, training = member_runs(script_args, training_args, base, round_index, size)
    set_seed(training.seed)
    boosted = ens_args.boosting if state.members else 0.0  # round 1 has no ensemble to boost against
    previous = Ensemble.from_pretrained(str(staging)) if boosted else None
    factory = functools.partial(BoostedKDTrainer, ensemble=previous, boosting=boosted)
    run = build_run(script, training, model_args, kd_args, kd_trainer=factory)
    result, seconds, tokens = run_training(run, training)
    folder = staging / f"round-{round_index}"
    save_for_push(run.trainer, run.tokenizer, folder, bool(model_args.use_peft))
    counts = parameter_counts(folder)
    member = {
        "name": f"round-{round_index}",
        "subfolder": f"round-{round_index}",
        "size": size,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "seed": training.seed,
        "boosting": boosted,
    }
    return run, member, result, seconds, tokens


@dataclass
class RoundScorer:
    """Scores each round on the test split: the teacher once per run, then the new student and the ensemble."""

    task: str
    location: str
    args: EnsembleArguments
    teacher_spec: str | None
    sequences: list[dict] | None = None
    teacher: TeacherScore | None = None

    def score(self, run, member_folder: Path, staging: Path, log: list[dict]) -> dict:
        args, pad_id = self.args, run.tokenizer.pad_token_id
        if self.sequences is None:
            self.sequences = reference_sequences(self.location, run.tokenizer, args.loss_limit)
        if self.teacher is None:
            spec = self.teacher_spec or (run.kd_info or {}).get("logits_teacher")
            student_hash = tokenizer_identity(run.tokenizer, "student")["tokenizer_hash"]
            self.teacher = reuse_teacher(log, spec, len(self.sequences), args) or score_teacher(
                spec, student_hash, self.sequences, pad_id, self.task, self.location, args
            )
            if self.teacher.note:
                logger.warning(self.teacher.note)
        alone = test_loss(
            AutoModelForCausalLM.from_pretrained(member_folder), self.sequences, pad_id, args.eval_batch_size
        )
        together = test_loss(Ensemble.from_pretrained(str(staging)), self.sequences, pad_id, args.eval_batch_size)
        scores = {
            "teacher": self.teacher.name,
            "teacher_loss": self.teacher.loss,
            "teacher_ppl": self.teacher.ppl,
            "teacher_note": self.teacher.note,
            "student_loss": alone["loss"],
            "student_ppl": alone["ppl"],
            "ensemble_loss": together["loss"],
            "ensemble_ppl": together["ppl"],
            "test_rows": len(self.sequences),
            "test_tokens": alone["tokens"],
            "teacher_accuracy": self.teacher.accuracy,
            "student_accuracy": None,
            "ensemble_accuracy": None,
            "accuracy_n": 0,
        }
        if args.accuracy_limit:
            student = task_accuracy(str(member_folder), self.task, self.location, args)
            ensemble = task_accuracy(str(staging), self.task, self.location, args, trust_remote_code=True)
            scores.update(
                student_accuracy=student["accuracy"], ensemble_accuracy=ensemble["accuracy"], accuracy_n=ensemble["n"]
            )
        return scores


def main(
    script_args: ScriptArguments,
    ens_args: EnsembleArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    kd_args: DistillationArguments | None = None,
) -> str:
    """Train the rounds the ensemble repo does not have yet, pushing it after each; return its location."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    if training_args.world_size > 1:
        raise ValueError("the ensemble stage trains its (small) members in one process: run it without accelerate")
    kd_args = kd_args or DistillationArguments()
    target = HubTarget.from_env()
    task, sizes = script_args.task, ens_args.sizes(script_args.size)
    repo = ens_args.repo_name(task, script_args.size)
    location_out = target.location("model", repo)
    unset = training_args.output_dir in (None, "trainer_output")
    base = Path("outputs") / "train" / repo if unset else Path(training_args.output_dir)
    staging = base / "push"
    state = resume_state(target, repo, staging)
    if len(state.members) >= ens_args.rounds:
        print(f"{location_out} already has {len(state.members)} rounds (ROUNDS={ens_args.rounds}): nothing to train")
        return location_out
    check_resume(state, sizes, ens_args, location_out)
    if state.members:
        print(f"{location_out}: resuming after round {len(state.members)} of {ens_args.rounds}")
    data_repo = dataset_repo_name(task)
    data_location = script_args.dataset_name or target.location("dataset", data_repo)
    data_revision = (
        folder_revision(data_location) if script_args.dataset_name else target.revision("dataset", data_repo)
    )
    scorer = RoundScorer(task, data_location, ens_args, ens_args.eval_teacher or kd_args.kd_teacher)

    for round_index in range(len(state.members) + 1, ens_args.rounds + 1):
        size = sizes[round_index - 1]
        run, member, result, seconds, tokens = train_member(
            script_args, ens_args, training_args, model_args, kd_args, state, base, staging, round_index, size
        )
        state.members.append(member)
        config = write_ensemble_files(staging, state.members, ens_args, run.tokenizer)
        entry = {
            "round": round_index,
            "size": size,
            "seed": member["seed"],
            "boosting": member["boosting"],
            "params_total": member["params_total"],
            "ensemble_params_total": sum(m.get("params_total") or 0 for m in state.members),
            "train_rows": len(run.rows),
            "train_tokens": tokens,
            "train_seconds": round(seconds, 2),
            "tokens_per_second": training_cost(member["params_total"], tokens, seconds)["tokens_per_second"],
            "final_train_loss": result.training_loss,
            **scorer.score(run, staging / member["subfolder"], staging, state.log),
        }
        state.log = [e for e in state.log if e["round"] < round_index] + [entry]
        write_log(staging, state.log)
        context = card_context(script_args, ens_args, training_args, target, repo, state, config, run, data_revision)
        render_card(staging, context)
        verb = "boosted " if member["boosting"] else ""
        commit = target.push_folder(staging, "model", repo, f"Round {round_index}: {verb}{size} student")
        print(f"{progress_line(entry, ens_args.rounds)} | pushed {location_out} @ {commit[:10]}", flush=True)
    return location_out


def reuse_teacher(log: list[dict], spec: str | None, test_rows: int, args: EnsembleArguments) -> TeacherScore | None:
    """The teacher's scores from the pushed log when they were taken on the same test rows (a resumed run)."""
    if not log or not spec:
        return None
    last = log[-1]
    same = last.get("test_rows") == test_rows and (last.get("teacher_accuracy") is not None or not args.accuracy_limit)
    if not same or last.get("teacher") is None:
        return None
    return TeacherScore(
        name=last["teacher"],
        loss=last.get("teacher_loss"),
        ppl=last.get("teacher_ppl"),
        accuracy=last.get("teacher_accuracy"),
        note=last.get("teacher_note") or "",
    )


def card_context(script_args, ens_args, training_args, target, repo, state, config, run, data_revision) -> dict:
    """What ``model_cards/ensemble_card.md`` says: members, rounds, combination, distillation, data, cost."""
    total = sum(m.get("params_total") or 0 for m in state.members)
    non_embedding = sum(m.get("params_non_embedding") or 0 for m in state.members)
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    return dict(
        model_name=target.repo_id(repo),
        repo_location=target.location("model", repo),
        task=script_args.task,
        size=composition([m["size"] for m in state.members]),
        members=state.members,
        rounds=state.log,
        combine=config.combine,
        weights=[round(w, 4) for w in config.normalised_weights()],
        params_total=format_params(total),
        params_total_exact=f"{total:,}",
        params_non_embedding=format_params(non_embedding),
        boosting=ens_args.boosting,
        kd=run.kd_info,
        dataset_repo=run.dataset_repo,
        dataset_revision=data_revision or run.dataset_revision or "unknown",
        teacher=state.log[-1].get("teacher") if state.log else None,
        teacher_note=state.log[-1].get("teacher_note") if state.log else "",
        hyperparameters=(
            f"learning_rate={training_args.learning_rate}, lr_scheduler={scheduler}, "
            f"epochs={training_args.num_train_epochs}, max_steps={training_args.max_steps}, "
            f"batch_size={training_args.per_device_train_batch_size}x{training_args.gradient_accumulation_steps}"
            f"x{training_args.world_size}, max_length={training_args.max_length}, seed={training_args.seed} + round - 1"
        ),
        recipe=script_args.recipe or "command line",
        code_revision=code_revision(),
        example_messages=repr([{"role": "user", "content": run.example_user}]),
        fmt=fmt,
    )


def cli(argv: list[str] | None = None) -> str:
    parser = TrlParser((ScriptArguments, EnsembleArguments, DistillationArguments, SFTConfig, ModelConfig))
    argv = sys.argv[1:] if argv is None else argv
    script_args, ens_args, kd_args, training_args, model_args = parser.parse_args_and_config(argv)
    if "--config" in argv and script_args.recipe is None:
        script_args.recipe = argv[argv.index("--config") + 1]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return main(script_args, ens_args, training_args, model_args, kd_args)


if __name__ == "__main__":
    cli()
