"""The ensemble repo's files: its transformers model (config, remote code, tokenizer, one folder per round), the
per-round log and training logs, and what a resumed run reads back from the pushed repo."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from datasets_builders.logits import tokenizer_identity
from eval.plots import rounds_figure
from scalingdown.hub import HubTarget
from trainers.ensemble_model import AUTO_MAP, CODE_DIR, REMOTE_CODE_FILES, EnsembleConfig
from trainers.stage import LOSS_CURVE_FILE, SETTINGS_FILE, SettingsChanged, differences

LOG_JSON, LOG_CSV, LOG_PLOT = "rounds.json", "rounds.csv", "rounds.png"
TRAINER_STATE = "trainer_state.json"  # in each round's folder: its loss history, for the ensemble's loss curve
PUBLISHED_FILES = ("README.md", LOSS_CURVE_FILE, "training_cost.json", SETTINGS_FILE)  # written anew by each push
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
    "mfu",
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


def write_ensemble_files(
    folder: Path, members: list[dict], tokenizer, combine: str = "logits", weights: list[float] | None = None
) -> EnsembleConfig:
    """config.json (with ``auto_map``), the remote code, the shared tokenizer and generation config, for the
    member folders already in ``folder``."""
    member_configs = [json.loads((folder / m["subfolder"] / "config.json").read_text()) for m in members]
    config = EnsembleConfig(
        members=members,
        weights=weights[: len(members)] if weights else None,
        combine=combine,
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
    """The per-round log as JSON and CSV, and its figure."""
    (folder / LOG_JSON).write_text(json.dumps(log, indent=1) + "\n")
    with open(folder / LOG_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(log)
    rounds_figure(log).savefig(folder / LOG_PLOT)


def save_round_logs(run_dir: Path, member_folder: Path, staging: Path, trainer_state) -> None:
    """A round's training logs in the ensemble folder: its TensorBoard files as ``runs/<round>/`` and its trainer
    state (the loss history) beside its weights."""
    if (run_dir / "runs").is_dir():
        shutil.copytree(run_dir / "runs", staging / "runs" / member_folder.name, dirs_exist_ok=True)
    trainer_state.save_to_json(str(member_folder / TRAINER_STATE))


def rounds_history(staging: Path, members: list[dict]) -> list[dict]:
    """Every round's logged losses one after the other: round ``r``'s steps continue where round ``r - 1`` stopped."""
    history, offset = [], 0
    for member in members:
        saved = staging / member["subfolder"] / TRAINER_STATE
        if not saved.is_file():
            continue
        state = json.loads(saved.read_text())
        history += [{**entry, "step": entry["step"] + offset} for entry in state["log_history"] if "step" in entry]
        offset += state.get("global_step", 0)
    return history


def link_ensemble(staging: Path, folder: Path) -> None:
    """The ensemble as ``folder`` will be pushed: ``staging``'s files hard-linked where the file system allows it
    (weights are not copied), bar those each push writes anew (written there, they would change ``staging`` too)."""

    def link(source: str, destination: str) -> None:
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)

    shutil.copytree(staging, folder, copy_function=link, ignore=shutil.ignore_patterns(*PUBLISHED_FILES))


@dataclass
class EnsembleState:
    """What the ensemble repo already holds: its members (one per pushed round), the per-round log, the settings
    its rounds were trained with."""

    members: list[dict]
    log: list[dict]
    settings: dict | None = None


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
    settings = json.loads((staging / SETTINGS_FILE).read_text()) if (staging / SETTINGS_FILE).is_file() else None
    return EnsembleState(list(config.get("members") or []), log, settings)


def check_resume(state: EnsembleState, settings: dict, location: str) -> None:
    """Refuse to add rounds to a pushed ensemble whose rounds were trained with other settings (inputs, sizes,
    combine mode, any option but ``--rounds``), naming each difference."""
    if not state.members:
        return
    if state.settings is None:
        raise SettingsChanged(
            f"{location} has {len(state.members)} rounds but no {SETTINGS_FILE}, so what they were trained with is "
            "unknown: pass --ensemble_name for a new ensemble"
        )
    changed = differences(state.settings, settings)
    if changed:
        raise SettingsChanged(
            f"{location} holds {len(state.members)} rounds trained with other settings ({'; '.join(changed)}); "
            "adding rounds would mix two ensembles: keep those settings, or pass --ensemble_name for a new ensemble"
        )
