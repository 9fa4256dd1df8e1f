"""`make push-space`: the Space folder, pushed as the ``{ORG}/scalingdown`` Space repo.

    python space/push_space.py      # HUB_TARGET=local -> hub/spaces/ORG/scalingdown; HUB_TARGET=hf -> the Hub

A Space repo holds only its own files, so the few project modules ``app.py`` imports are copied in beside it
(they are small, pure Python, and their third-party imports are in ``requirements.txt``), together with
``space_config.json``, which tells the app which Hub target and org its repos are on.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from scalingdown.errors import run_cli
from scalingdown.hub import SPACE_REPO_NAME, HubTarget

SPACE_DIR = Path(__file__).resolve().parent
REPO = SPACE_DIR.parent
SPACE_FILES = [
    "app.py",
    "leaderboard_view.py",
    "scaling_plot.py",
    "side_by_side.py",
    "training_curve.py",
    "README.md",
    "requirements.txt",
]
# The project modules app.py imports, directly or through each other (tests/test_space.py checks the list).
VENDORED = [
    "scalingdown/__init__.py",
    "scalingdown/answers.py",
    "scalingdown/cache.py",
    "scalingdown/compat.py",
    "scalingdown/dataset_repo.py",
    "scalingdown/errors.py",
    "scalingdown/hub.py",
    "scalingdown/prompts.py",
    "scalingdown/schema.py",
    "datasets_builders/__init__.py",
    "datasets_builders/synthetic_gsm.py",
    "datasets_builders/tasks.py",
    "datasets_builders/teacher_base.py",
    "datasets_builders/teachers.py",
    "eval/__init__.py",
    "eval/leaderboard.py",
    "eval/plots.py",
    "eval/report.py",
    "model_cards/__init__.py",
    "model_cards/leaderboard_card.md",
    # side_by_side compares an ensemble repo's remote code with these before trusting it
    "trainers/__init__.py",
    "trainers/ensemble_model/__init__.py",
    "trainers/ensemble_model/configuration_ensemble.py",
    "trainers/ensemble_model/modeling_ensemble.py",
]
CONFIG_FILE = "space_config.json"


def build_space_folder(folder: str | Path, target: HubTarget) -> Path:
    """Write everything the Space runs from into ``folder``: app files, vendored modules and its Hub target."""
    folder = Path(folder)
    for name in SPACE_FILES:
        shutil.copy2(SPACE_DIR / name, folder / name)
    for name in VENDORED:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, folder / name)
    recorded = {"hub_target": target.kind, "org": target.org}
    if target.kind == "local":
        recorded["hub_dir"] = str(target.root.resolve())
    (folder / CONFIG_FILE).write_text(json.dumps(recorded, indent=2) + "\n")
    return folder


def push_space(target: HubTarget, message: str = "make push-space") -> str:
    """Build the Space folder and push it as the Space repo; return the commit."""
    with tempfile.TemporaryDirectory() as scratch:
        build_space_folder(scratch, target)
        return target.push_folder(
            scratch, "space", SPACE_REPO_NAME, message, delete_patterns=["*.py", "*.md", "*.txt", "*.json"]
        )


def main(argv: list[str] | None = None) -> None:
    target = HubTarget.from_env()
    commit = push_space(target, " ".join(argv or sys.argv[1:]) or "make push-space")
    print(f"Space: {target.url('space', SPACE_REPO_NAME)} (commit {commit[:10]})")
    if target.kind == "local":
        print(f"  run it: make space, or: cd {target.local_path('space', SPACE_REPO_NAME)} && python app.py")


if __name__ == "__main__":
    run_cli(main)
