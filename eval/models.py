"""Which models a task's leaderboard scores: the teachers of its dataset repo and every student repo of the task.

Each becomes an ``EvalModel``: a local folder ``from_pretrained`` (and lm-eval's ``hf`` model) can read, how it is
prompted (chat template or plain few-shot, the setting each was built for), its parameter counts read from the
safetensors headers (no weights loaded), and a ``weights_key`` that changes exactly when its weights or config do.
The key, not the repo commit, is what cached results hang on: ``make eval`` itself commits results into student
cards, and that must not invalidate them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub import ModelCard

from scalingdown.errors import UserError
from scalingdown.hub import HubTarget

logger = logging.getLogger("eval.models")

FEWSHOT_FOR_BASE_MODELS = 1  # a base teacher is scored with one worked shot, as it wrote its rationales (push-data)
WEIGHT_FILES = ("config.json", "*.safetensors", "scalingdown_source.json")
ENSEMBLE_MODEL_TYPE = "scalingdown_ensemble"  # trainers.ensemble_model.EnsembleConfig.model_type


class ModelDiscoveryError(UserError, ValueError):
    """A requested model or teacher cannot be found; the message names what exists."""


@dataclass
class EvalModel:
    """One model to score, and everything a leaderboard row says about it besides its results."""

    name: str  # repo name for students, short name for teachers
    role: str  # teacher | student | ensemble
    path: str  # a local folder, or what from_pretrained takes
    repo_id: str | None = None  # Hub repo id of a student (None for teachers)
    revision: str | None = None  # commit of the student repo when scored
    method: str | None = None
    size: str | None = None
    init: str | None = None  # scratch | pretrained | pruned | minitron | teacher
    lora: bool = False
    chat: bool = True  # scored through its chat template (else plain text with few-shot examples)
    num_fewshot: int = 0
    trust_remote_code: bool = False
    params_total: int | None = None
    params_non_embedding: int | None = None
    weights_key: str | None = None
    problem: str | None = None  # why it cannot be scored (bad path, no weights): becomes a failed row

    def to_dict(self) -> dict:
        return asdict(self)


# -- facts read from a model folder ------------------------------------------------------------------


def ensemble_members(folder: str | Path) -> list[Path | None] | None:
    """The member model folders of an ensemble repo (``make train METHOD=ensemble``), None for any other model.

    Members in subfolders are read there, a member referenced by a local folder in that folder; a member only on the
    Hub is not downloaded and is listed as None (its size is then unknown, never undercounted).
    """
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    if config.get("model_type") != ENSEMBLE_MODEL_TYPE:
        return None
    members = []
    for member in config.get("members") or []:
        path = Path(folder) / member["subfolder"] if member.get("subfolder") else Path(member.get("repo", ""))
        if member.get("subfolder") and not (path / "config.json").is_file():
            raise ModelDiscoveryError(f"ensemble {folder} lacks its member folder {member['subfolder']}")
        members.append(path if (path / "config.json").is_file() else None)
    return members


def parameter_counts(folder: str | Path) -> dict[str, int] | None:
    """Total and non-embedding parameters from the safetensors headers (no tensors are read), counted by
    ``trainers.sizes.count_parameters`` like every other count. An ensemble counts every parameter of every
    member: what it holds in memory and computes with."""
    from safetensors import safe_open

    from trainers.sizes import count_parameters

    members = ensemble_members(folder)
    if members is not None:
        counts = [parameter_counts(member) if member else None for member in members]
        if not counts or any(c is None for c in counts):
            return None
        return {key: sum(c[key] for c in counts) for key in ("total", "non_embedding")}
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    shapes = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            shapes += [(key, math.prod(handle.get_slice(key).get_shape())) for key in handle.keys()]
    return count_parameters(shapes)


def weights_key(folder: str | Path) -> str:
    """A content key of the weights and config: git blob ids in a local repo, else file hashes. For an ensemble:
    its config and code, and every member folder's weights and config."""
    folder = Path(folder)
    files = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise ModelDiscoveryError(f"{folder} has no config.json or *.safetensors: not a model folder")
    members = ensemble_members(folder)
    if members is not None:
        inside = [m for m in members if m and m.is_relative_to(folder)]  # the others are pinned in config.json
        files += sorted(folder.glob("*.py")) + [
            p for m in inside for pattern in WEIGHT_FILES for p in sorted(m.glob(pattern)) if p.is_file()
        ]
    digest = hashlib.sha256()
    in_git = (folder / ".git").exists()
    for file in files:
        name = file.relative_to(folder).as_posix()
        digest.update(name.encode())
        blob = None
        if in_git:
            done = subprocess.run(["git", "rev-parse", f"HEAD:{name}"], cwd=folder, capture_output=True, text=True)
            blob = done.stdout.strip() if done.returncode == 0 else None
        if blob:
            digest.update(blob.encode())
        else:
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def has_chat_template(folder: str | Path) -> bool:
    """Whether the tokenizer in a folder carries a chat template (in its config or a template file)."""
    folder = Path(folder)
    if any(folder.glob("chat_template.*")):
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def card_tags(folder: str | Path) -> dict[str, str]:
    """``method``/``size`` from a student card's ``method-X``/``size-Y`` tags, plus ``lora`` when tagged."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return {}
    tags = ModelCard.load(readme).data.tags or []
    found = {tag.split("-", 1)[0]: tag.split("-", 1)[1] for tag in tags if tag.startswith(("method-", "size-"))}
    if "lora" in tags:
        found["lora"] = "true"
    return found


# -- discovery ----------------------------------------------------------------------------------------


def teacher_models(names: list[str]) -> list[EvalModel]:
    """Teachers by spec (packaged name, folder, .gguf or Hub id), prompted the way they wrote rationales."""
    from datasets_builders.teachers import PACKAGED_TEACHERS, resolve_model_source, teacher_name

    models = []
    for spec in names:
        if spec.startswith("openai:"):
            logger.warning("skipping teacher %s: endpoints are not scored by the hf backend", spec)
            continue
        try:
            name, path = resolve_model_source(spec)
        except (ValueError, OSError) as error:
            models.append(EvalModel(name=teacher_name(spec), role="teacher", path=spec, problem=str(error)))
            continue
        packaged = PACKAGED_TEACHERS.get(spec)
        chat = packaged.chat if packaged else has_chat_template(path)
        models.append(
            EvalModel(
                name=name,
                role="teacher",
                path=path,
                init="teacher",
                chat=chat,
                num_fewshot=0 if chat else FEWSHOT_FOR_BASE_MODELS,
            )
        )
    return models


def student_models(task: str, target: HubTarget) -> list[EvalModel]:
    """Every model repo of this task on the Hub target (``{task}-{method}-{size}``), read from its card."""
    models = []
    for repo in target.list_repos("model", prefix=f"{task}-"):
        path = target.local_folder("model", repo)
        tags = card_tags(path)
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        role = "ensemble" if tags.get("method") == "ensemble" else "student"
        pruned_from = config.get("pruned_from")
        init = pruned_from.get("method", "pruned") if pruned_from else None  # minitron names itself; layer drops don't
        models.append(
            EvalModel(
                name=repo,
                role=role,
                path=str(path),
                repo_id=target.repo_id(repo),
                revision=target.revision("model", repo),
                method=tags.get("method"),
                size=tags.get("size"),
                init=init,
                lora=tags.get("lora") == "true",
                chat=has_chat_template(path),
                trust_remote_code=bool(config.get("auto_map")),
            )
        )
    return models


def with_facts(model: EvalModel) -> EvalModel:
    """Fill in parameter counts and the weights key (cheap: headers and blob ids); record why not if it can't."""
    if model.problem:
        return model
    try:
        model.weights_key = weights_key(model.path)
        counts = parameter_counts(model.path)
    except Exception as error:  # a bad folder, or safetensors' own SafetensorError (not an OSError)
        model.problem = f"{type(error).__name__}: {error}"
        return model
    if counts:
        model.params_total, model.params_non_embedding = counts["total"], counts["non_embedding"]
    return model


def select(models: list[EvalModel], patterns: str | None) -> list[EvalModel]:
    """Models whose name matches one of the comma-separated names or globs (all when no filter)."""
    if not patterns:
        return models
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [m for m in models if any(fnmatch.fnmatch(m.name, p) for p in wanted)]
    unmatched = [p for p in wanted if not any(fnmatch.fnmatch(m.name, p) for m in models)]
    if unmatched:
        raise ModelDiscoveryError(
            f"MODELS={','.join(unmatched)} matches nothing; models of this task: {', '.join(m.name for m in models)}"
        )
    return chosen
