"""A student's training loss vs step, read from the TensorBoard event files its model repo carries under ``runs/``.

``make train`` logs through transformers' ``TensorBoardCallback``, which writes the training loss as the scalar
``train/loss``; a resumed run adds event files, so steps logged twice keep the later value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scalingdown.hub import HubTarget

LOSS_TAG = "train/loss"
EVENT_FILES = "events.out.tfevents.*"


@dataclass(frozen=True)
class LossCurve:
    steps: list[int]
    values: list[float]
    files: list[Path]


def event_files(folder: str | Path) -> list[Path]:
    """Every TensorBoard event file under ``folder/runs`` (any depth), oldest name first."""
    runs = Path(folder) / "runs"
    return sorted(runs.rglob(EVENT_FILES)) if runs.is_dir() else []


def loss_curve(folder: str | Path, tag: str = LOSS_TAG) -> LossCurve | None:
    """The scalar ``tag`` per step from a model folder's event files; None when no file logs it."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    latest: dict[int, tuple[float, float]] = {}  # step -> (wall time, value)
    used = []
    for path in event_files(folder):
        events = EventAccumulator(str(path), size_guidance={SCALARS: 0})  # 0: keep every point, no sampling
        events.Reload()
        if tag not in events.Tags()[SCALARS]:
            continue
        used.append(path)
        for event in events.Scalars(tag):
            if event.step not in latest or event.wall_time >= latest[event.step][0]:
                latest[event.step] = (event.wall_time, event.value)
    if not latest:
        return None
    steps = sorted(latest)
    return LossCurve(steps=steps, values=[latest[s][1] for s in steps], files=used)


def logs_folder(target: HubTarget, model_repo: str) -> Path:
    """A local folder with the model repo's ``runs/``: the repo itself, or only its logs from the Hub."""
    if target.kind == "local":
        return target.local_path("model", model_repo)
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(target.repo_id(model_repo), token=target.token, allow_patterns=["runs/**"])
    return Path(snapshot)
