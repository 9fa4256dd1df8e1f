"""Hub targets: where every stage reads and writes its repos.

``local`` (default) keeps repos in the Hub's own layout under ``HUB_DIR`` (``hub/datasets/ORG/NAME``,
``hub/models/ORG/NAME``, ``hub/spaces/ORG/NAME``), each a git repo where every push is a commit.
``HUB_DIR`` defaults to ``./hub`` relative to the working directory: it is the user's Hub, like a Hub account,
not project state (the cache, ``scalingdown.cache``, follows the package instead).
``hf`` pushes the same folders to the real Hub through ``huggingface_hub``. Everything else in the
project goes through :class:`HubTarget`, so a stage never knows which one it is talking to.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

RepoType = Literal["dataset", "model", "space"]
_FOLDERS = {"dataset": "datasets", "model": "models", "space": "spaces"}
DEFAULT_ORG = "scalingdown"


class HubError(RuntimeError):
    """A Hub target cannot do what was asked; the message says how to fix it."""


def dataset_repo_name(task: str) -> str:
    return f"{task}-rationales"


def model_repo_name(task: str, method: str, size: str, lora: bool = False) -> str:
    return f"{task}-{method}-{size}" + ("-lora" if lora else "")


def leaderboard_repo_name(task: str) -> str:
    return f"{task}-leaderboard"


def pretrain_repo_name(size: str) -> str:
    """The model repo ``make pretrain SIZE=…`` writes; ``SIZE=<size>-pt`` students start from it."""
    return f"pretrain-{size}"


PRETRAINED_HERE = "-pt"  # size suffix: ``8M-pt`` is the scratch size 8M started from ``pretrain-8M``


CORPUS_REPO_NAME = "pretrain-corpus"  # the dataset repo ``make pretrain`` builds its corpus into (by default)


SPACE_REPO_NAME = "scalingdown"


@dataclass
class HubTarget:
    """A place repos live: ``kind='local'`` under ``root``, or ``kind='hf'`` on the Hugging Face Hub."""

    kind: Literal["local", "hf"] = "local"
    org: str = DEFAULT_ORG
    root: Path = field(default_factory=lambda: Path("hub"))
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, kind: str | None = None, org: str | None = None, root: str | None = None) -> HubTarget:
        """Target from arguments, falling back to ``HUB_TARGET``, ``ORG``, ``HUB_DIR`` and ``HF_TOKEN``."""
        kind = kind or os.environ.get("HUB_TARGET") or "local"
        if kind not in ("local", "hf"):
            raise HubError(f"unknown Hub target {kind!r}: use HUB_TARGET=local (default, ./hub) or HUB_TARGET=hf")
        org = org or os.environ.get("ORG") or DEFAULT_ORG
        root_path = Path(root or os.environ.get("HUB_DIR") or "hub").expanduser()
        return cls(kind=kind, org=org, root=root_path, token=os.environ.get("HF_TOKEN"))

    # -- naming ---------------------------------------------------------------------------------
    def repo_id(self, name: str) -> str:
        return name if "/" in name else f"{self.org}/{name}"

    def local_path(self, repo_type: RepoType, name: str) -> Path:
        return self.root / _FOLDERS[repo_type] / self.repo_id(name)

    def location(self, repo_type: RepoType, name: str) -> str:
        """What ``load_dataset``/``from_pretrained`` take for this repo: a local path or a repo id."""
        if self.kind == "local":
            return str(self.local_path(repo_type, name))
        return self.repo_id(name)

    def url(self, repo_type: RepoType, name: str) -> str:
        """A link a person can open (a local path when the target is local)."""
        if self.kind == "local":
            return str(self.local_path(repo_type, name).resolve())
        prefix = {"dataset": "datasets/", "model": "", "space": "spaces/"}[repo_type]
        return f"https://huggingface.co/{prefix}{self.repo_id(name)}"

    # -- reading --------------------------------------------------------------------------------
    def exists(self, repo_type: RepoType, name: str) -> bool:
        if self.kind == "local":
            return (self.local_path(repo_type, name) / ".git").is_dir()
        return self._api().repo_exists(self.repo_id(name), repo_type=repo_type)

    def list_repos(self, repo_type: RepoType, prefix: str = "") -> list[str]:
        """Names (without org) of this org's repos of one type that start with ``prefix``."""
        if self.kind == "local":
            folder = self.root / _FOLDERS[repo_type] / self.org
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.iterdir() if (p / ".git").is_dir() and p.name.startswith(prefix))
        api = self._api()
        listing = {"dataset": api.list_datasets, "model": api.list_models, "space": api.list_spaces}[repo_type]
        names = [info.id.split("/", 1)[1] for info in listing(author=self.org)]
        return sorted(n for n in names if n.startswith(prefix))

    def revision(self, repo_type: RepoType, name: str) -> str | None:
        """The commit a repo is at now: what cards and caches record as 'trained on' / 'scored at'."""
        if self.kind == "local":
            return folder_revision(self.local_path(repo_type, name))
        info = self._api().repo_info(self.repo_id(name), repo_type=repo_type)
        return info.sha

    def local_folder(self, repo_type: RepoType, name: str) -> Path:
        """A local folder holding the repo's files: the repo itself, or a Hub snapshot in the HF cache."""
        if self.kind == "local":
            return self.local_path(repo_type, name)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.repo_id(name), repo_type=repo_type, token=self.token))

    # -- writing --------------------------------------------------------------------------------
    def push_folder(
        self,
        folder: str | Path,
        repo_type: RepoType,
        name: str,
        message: str,
        delete_patterns: list[str] | None = None,
        space_sdk: str = "gradio",
    ) -> str:
        """Upload a folder's files into a repo (``upload_folder`` semantics) and return the commit.

        Files in ``folder`` are added or replaced; files already in the repo matching ``delete_patterns``
        are removed first, so a re-run can replace all shards. Identical content makes no new commit.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise HubError(f"nothing to push: {folder} is not a folder")
        if self.kind == "local":
            return self._push_local(folder, repo_type, name, message, delete_patterns or [])
        api = self._api()
        repo_id = self.repo_id(name)
        api.create_repo(
            repo_id, repo_type=repo_type, exist_ok=True, space_sdk=space_sdk if repo_type == "space" else None
        )
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            commit_message=message,
            delete_patterns=delete_patterns,
        )
        return getattr(info, "oid", None) or str(info)

    def _push_local(self, folder: Path, repo_type: RepoType, name: str, message: str, delete: list[str]) -> str:
        repo = self.local_path(repo_type, name)
        repo.mkdir(parents=True, exist_ok=True)
        if not (repo / ".git").is_dir():
            _git(repo, "init", "-q", "-b", "main")
        if delete:
            for path in sorted(repo.rglob("*")):
                rel = path.relative_to(repo).as_posix()
                if rel.startswith(".git") or not path.is_file():
                    continue
                if any(fnmatch.fnmatch(rel, pattern) for pattern in delete):
                    path.unlink()
        for src in folder.rglob("*"):
            if src.is_file() and ".git" not in src.relative_to(folder).parts:
                dst = repo / src.relative_to(folder)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        _git(repo, "add", "-A")
        has_head = (
            subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo, capture_output=True).returncode
            == 0
        )
        staged = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=repo).returncode != 0
        if staged or not has_head:
            _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        return _git(repo, "rev-parse", "HEAD").strip()

    def _api(self):
        from huggingface_hub import HfApi, get_token

        token = self.token or get_token()
        if not token:
            raise HubError(
                "HUB_TARGET=hf needs a Hugging Face token: run `hf auth login` or set HF_TOKEN "
                "(or use the default HUB_TARGET=local, which writes to ./hub)"
            )
        return HfApi(token=token)


def folder_revision(path: str | Path) -> str | None:
    """The commit a local git repo folder is at (None for a plain folder or a Hub id)."""
    if not (Path(path) / ".git").is_dir():
        return None
    return _git(Path(path), "rev-parse", "HEAD").strip() or None


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=scalingdown", "-c", "user.email=scalingdown@localhost", *args],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise HubError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout
