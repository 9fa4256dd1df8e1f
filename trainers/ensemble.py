"""Ensembles of small students (``make train METHOD=ensemble``): one student distilled per round, logits averaged.

    make push-data LOGITS=16                                   # the teacher's stored top-k logits, once
    make train METHOD=ensemble ROUNDS=3 SIZE=1M                # three 1M students -> synthetic_gsm-ensemble-1M
    make train METHOD=ensemble ROUNDS=3 ROUND_SIZES=1M,1M,3M BOOSTING=1
    python -m trainers.ensemble --config recipes/train/ensemble.yaml --rounds 3 --size 1M

Round ``r`` distils one student with the ``kd`` method (``trainers.sft.build_run``, seed ``seed + r - 1``), boosted
against the rounds before it with ``--boosting`` (``trainers.boosting``), and saves it as ``round-<r>/`` of one
ensemble model repo, ``{task}-ensemble-{SIZE}``. Every round is one commit of that repo, so ``--rounds`` larger than
before resumes after the rounds already pushed; a pushed ensemble whose rounds had other settings is not extended.
The repo is a transformers model (``trainers.ensemble_repo``, ``trainers.ensemble_model``):
``AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)`` loads it. Each round is scored on the test split
(``trainers.ensemble_scores``) into ``rounds.json``/``.csv``/``.png`` and the card.

``trainers/stage.py`` runs the rest, as for every trainer: the output folder from the settings, each round's training
and measurement, and the push (TensorBoard logs under ``runs/round-<r>/``, the loss curve of every round, the card).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed
from trl import ModelConfig, SFTConfig

from eval.models import parameter_counts
from scalingdown.errors import run_cli
from scalingdown.hub import HubTarget, dataset_repo_name, model_repo_name
from trainers.boosting import BoostedKDTrainer
from trainers.ensemble_card import METHOD, TEMPLATE, card_context, card_tags, fmt
from trainers.ensemble_model import COMBINE_MODES, EnsembleConfig
from trainers.ensemble_model import EnsembleForCausalLM as Ensemble
from trainers.ensemble_repo import (
    EnsembleState,
    check_resume,
    link_ensemble,
    resume_state,
    rounds_history,
    save_round_logs,
    write_ensemble_files,
    write_log,
)
from trainers.ensemble_scores import RoundScorer
from trainers.kd import DistillationArguments
from trainers.sft import ScriptArguments, TrainingRun, build_run, save_for_push
from trainers.sizes import get_size
from trainers.stage import (
    Measurement,
    Publication,
    hyperparameters,
    parse,
    pin_inputs,
    prepare_output_dir,
    publish,
    run_settings,
    save_settings,
    settings_key,
    setup,
    train,
)

logger = logging.getLogger("trainers.ensemble")

MEMBER_METHOD = "kd"  # what each round's student is trained with
ENSEMBLE_FOLDER = "ensemble"  # in the output folder: the ensemble as pushed, plus the round being added


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


def member_runs(script_args, training_args, base: Path, round_index: int, size: str):
    """``(ScriptArguments, SFTConfig)`` of one round's student: the kd method, its size, its own output folder and
    seed (same-size rounds would otherwise start from the same weights)."""
    script = dataclasses.replace(script_args, method=MEMBER_METHOD, size=size, push=False)
    training = copy.deepcopy(training_args)
    training.output_dir = str(base / f"round-{round_index}")
    training.seed = training_args.seed + round_index - 1
    return script, training


def train_member(script_args, ens_args, kd_args, training_args, model_args, state, base, staging, round_index, size):
    """Distil round ``round_index``'s student (boosted against the ensemble in ``staging``) and save it, with its
    training logs, as the ``round-<r>`` folder; return ``(the TrainingRun, its member entry, its Measurement)``."""
    script, training = member_runs(script_args, training_args, base, round_index, size)
    set_seed(training.seed)
    boosted = ens_args.boosting if state.members else 0.0  # round 1 has no ensemble to boost against
    previous = Ensemble.from_pretrained(str(staging)) if boosted else None
    factory = functools.partial(BoostedKDTrainer, ensemble=previous, boosting=boosted)
    run = build_run(script, training, model_args, kd_args, kd_trainer=factory)
    _, measured = train(run.trainer, run.last_checkpoint, run.size.parameter_counts(), training.resume_from_checkpoint)
    folder = staging / f"round-{round_index}"
    save_for_push(run.trainer, run.tokenizer, folder, bool(model_args.use_peft))
    save_round_logs(run.output_dir, folder, staging, run.trainer.state)
    counts = parameter_counts(folder)
    member = {
        "name": folder.name,
        "subfolder": folder.name,
        "size": size,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "seed": training.seed,
        "boosting": boosted,
    }
    return run, member, measured


def log_entry(round_index: int, member: dict, members: list[dict], run: TrainingRun, measured: Measurement) -> dict:
    """A round's line of ``rounds.json`` before scoring: what it trained and what that cost (resumes included)."""
    return {
        "round": round_index,
        "size": member["size"],
        "seed": member["seed"],
        "boosting": member["boosting"],
        "params_total": member["params_total"],
        "ensemble_params_total": sum(m.get("params_total") or 0 for m in members),
        "train_rows": len(run.rows),
        "train_tokens": measured.tokens_total,
        "train_seconds": round(measured.seconds_total, 2),
        "tokens_per_second": measured.this_run["tokens_per_second"],
        "mfu": measured.this_run["mfu"],
        "final_train_loss": measured.final_train_loss,
    }


def progress_line(entry: dict, rounds: int) -> str:
    """One line per round: what it trained, and the test loss (ppl) and accuracy of student, ensemble, teacher."""

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


def publication(
    repo: str,
    staging: Path,
    state: EnsembleState,
    config: EnsembleConfig,
    run: TrainingRun,
    settings: dict,
    script_args: ScriptArguments,
    ens_args: EnsembleArguments,
    training_args: SFTConfig,
) -> Publication:
    """How the ensemble in ``staging`` becomes one commit of its repo after a round, through the runner's publish."""
    target = HubTarget.from_env()
    member = state.members[-1]
    sizes = ens_args.sizes(script_args.size)
    boosted = "boosted " if member["boosting"] else ""
    cost_columns = ("round", "train_tokens", "train_seconds", "tokens_per_second", "mfu")

    def card(measured: Measurement):
        return card_context(
            first_size=get_size(sizes[0]),
            members=state.members,
            log=state.log,
            combine=config.combine,
            weights=config.normalised_weights(),
            boosting=ens_args.boosting,
            measured=measured,
            model_name=target.repo_id(repo),
            repo_location=target.location("model", repo),
            inputs=run.inputs,
            train_rows=len(run.rows),
            hyperparameters=hyperparameters(training_args, "seed_of_round_r=seed+r-1"),
            recipe=script_args.recipe,
            settings_key=settings_key(settings),
            task=script_args.task,
            kd=run.kd_info,
            example_messages=repr([{"role": "user", "content": run.example_user}]),
        )

    return Publication(
        repo=repo,
        save=lambda folder: link_ensemble(staging, folder),
        template=TEMPLATE,
        tags=card_tags(script_args.task, state.members, run.kd_info),
        commit_message=f"Round {len(state.members)}: {boosted}{member['size']} student",
        card=card,
        figures=lambda measured: {"rounds": [{key: entry.get(key) for key in cost_columns} for entry in state.log]},
        log_history=lambda: rounds_history(staging, state.members),
    )


def main(
    script_args: ScriptArguments,
    ens_args: EnsembleArguments,
    kd_args: DistillationArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
) -> str:
    """Train the rounds the ensemble repo does not have yet, pushing it after each; return its location."""
    setup(training_args)
    if training_args.world_size > 1:
        raise ValueError("the ensemble stage trains its (small) members in one process: run it without accelerate")
    if not script_args.push:
        raise ValueError("an ensemble resumes from its pushed repo (one commit per round): drop --push false")
    target = HubTarget.from_env()
    task, sizes = script_args.task, ens_args.sizes(script_args.size)
    repo = ens_args.repo_name(task, script_args.size)
    location = target.location("model", repo)
    inputs = pin_inputs(script_args.dataset_name, dataset_repo_name(task), get_size(sizes[0]), target)
    settings = run_settings(inputs, training_args, script_args, ens_args, model_args, kd_args)
    base, _ = prepare_output_dir(training_args, "train", repo, settings)
    staging = base / ENSEMBLE_FOLDER
    state = resume_state(target, repo, staging)
    if len(state.members) >= ens_args.rounds:
        print(f"{location} already has {len(state.members)} rounds (ROUNDS={ens_args.rounds}): nothing to train")
        return location
    check_resume(state, settings, location)
    if state.members:
        print(f"{location}: resuming after round {len(state.members)} of {ens_args.rounds}")
    save_settings(base, settings)
    scorer = RoundScorer(
        task,
        inputs.dataset_location,
        teacher_spec=ens_args.eval_teacher or kd_args.kd_teacher,
        output_dir=base / "eval",
        batch_size=ens_args.eval_batch_size,
        loss_limit=ens_args.loss_limit,
        accuracy_limit=ens_args.accuracy_limit,
        max_gen_toks=ens_args.accuracy_max_gen_toks,
    )

    for round_index in range(len(state.members) + 1, ens_args.rounds + 1):
        size = sizes[round_index - 1]
        run, member, measured = train_member(
            script_args, ens_args, kd_args, training_args, model_args, state, base, staging, round_index, size
        )
        state.members.append(member)
        config = write_ensemble_files(staging, state.members, run.tokenizer, ens_args.combine, ens_args.weight_list)
        entry = log_entry(round_index, member, state.members, run, measured)
        entry.update(scorer.score(run, staging / member["subfolder"], staging, state.log))
        state.log = [e for e in state.log if e["round"] < round_index] + [entry]
        write_log(staging, state.log)
        print(progress_line(entry, ens_args.rounds), flush=True)
        ensemble = publication(repo, staging, state, config, run, settings, script_args, ens_args, training_args)
        publish(ensemble, run.trainer, base, measured)
    return location


def cli(argv: list[str] | None = None) -> str:
    return main(*parse((ScriptArguments, EnsembleArguments, DistillationArguments, SFTConfig, ModelConfig), argv))


if __name__ == "__main__":
    run_cli(cli)
