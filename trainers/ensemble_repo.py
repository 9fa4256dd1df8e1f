"""The ensemble repo's files: its transformers model (config, remote code, tokenizer, one folder per round), the
per-round log, and what a resumed run reads back from the pushed repo."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from datasets_builders.logits import tokenizer_identity
from eval.plots import rounds_figure
from scalingdown.hub import HubTarget
from trainers.ensemble_model import AUTO_MAP, CODE_DIR, REMOTE_CODE_FILES, EnsembleConfig

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


def check_resume(state: EnsembleState, sizes: list[str], combine: str, location: str) -> None:
    """Refuse to extend a pushed ensemble with settings that contradict its rounds (sizes, combine mode)."""
    pushed = [m.get("size") for m in state.members]
    if pushed != sizes[: len(pushed)]:
        raise ValueError(
            f"{location} has rounds of sizes {pushed}, but this run plans {sizes[: len(pushed)]} for them: keep "
            "SIZE/ROUND_SIZES as they were, or pass --ensemble_name for a new ensemble"
        )
    if state.combine and state.combine != combine:
        raise ValueError(
            f"{location} combines its members with combine={state.combine!r}; pass --combine {state.combine} "
            "to add rounds, or --ensemble_name for a new ensemble"
        )
