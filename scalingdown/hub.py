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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scalingdown.errors import UserError

RepoType = Literal["dataset", "model", "space"]
_FOLDERS = {"dataset": "datasets", "model": "models", "space": "spaces"}
DEFAULT_ORG = "scalingdown"


class HubError(UserError, RuntimeError):
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
        check_repo_id(f"{org}/scalingdown", what=f"ORG={org!r}")
        root_path = Path(root or os.environ.get("HUB_DIR") or "hub").expanduser()
        return cls(kind=kind, org=org, root=root_path, token=os.environ.get("HF_TOKEN"))

    def check_writable(self) -> None:
        """Fail before any work when pushes cannot land: ``HUB_DIR`` is a file or cannot be written."""
        if self.kind != "local":
            return
        existing = next((p for p in [self.root, *self.root.resolve().parents] if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise HubError(f"HUB_DIR={self.root} is not a folder ({existing} is a file): set HUB_DIR to a folder")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise HubError(f"HUB_DIR={self.root} cannot be written ({existing} is read-only): set HUB_DIR elsewhere")

    def require(self, repo_type: RepoType, name: str, made_by: str) -> None:
        """Fail before any work when a repo a stage reads is not there; ``made_by`` says which command makes it."""
        if not self.exists(repo_type, name):
            raise HubError(
                f"no {repo_type} repo {self.repo_id(name)} on the {self.kind} Hub target "
                f"({self.location(repo_type, name)}): {made_by}"
            )

    # -- naming ---------------------------------------------------------------------------------
    def repo_id(self, name: str) -> str:
        repo_id = name if "/" in name else f"{self.org}/{name}"
        return check_repo_id(repo_id)

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
        folder = Path(folder).resolve()  # git runs in the repo's folder: a relative path would point there
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
        """All or nothing: the new tree is built in a private index from HEAD plus ``folder``'s files, committed,
        and only then written into the repo's folder. Files nobody pushed (a stray edit, a truncated
        download) are never committed, and a failure before the commit leaves the repo exactly as it was."""
        # git runs inside the repo: relative paths (HUB_DIR=hub, a folder under outputs/) would mean other places there
        repo, folder = self.local_path(repo_type, name).absolute(), folder.absolute()
        self.check_writable()
        repo.mkdir(parents=True, exist_ok=True)
        if not (repo / ".git").is_dir():
            _git(repo, "init", "-q", "-b", "main")
        lock = repo / ".git" / "index.lock"
        if lock.exists():
            raise HubError(
                f"{lock} exists: another git command is running in {repo}, or one died; "
                f"if none is running, delete that file and re-run"
            )
        head = _head(repo)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.relative_to(folder).parts)
        with tempfile.TemporaryDirectory(dir=repo / ".git", prefix="push-") as scratch:
            env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
            if head:
                _git(repo, "read-tree", head, env=env)
            tracked = _git(repo, "ls-files", "-z", env=env).split("\0")
            removed = [rel for rel in tracked if rel and any(fnmatch.fnmatch(rel, pattern) for pattern in delete)]
            if removed:
                _git(repo, "update-index", "--force-remove", "-z", "--stdin", env=env, input="\0".join(removed))
            if files:
                blobs = _git(repo, "hash-object", "-w", "--stdin-paths", input="\n".join(map(str, files)))
                entries = [
                    f"{_mode(src)} {blob}\t{src.relative_to(folder).as_posix()}"
                    for src, blob in zip(files, blobs.split(), strict=True)
                ]
                _git(repo, "update-index", "--index-info", env=env, input="\n".join(entries) + "\n")
            tree = _git(repo, "write-tree", env=env).strip()
        if head and tree == _git(repo, "rev-parse", f"{head}^{{tree}}").strip():
            return head
        parents = ["-p", head] if head else []
        commit = _git(repo, "commit-tree", tree, *parents, "-m", message).strip()
        _git(repo, "update-ref", "refs/heads/main", commit, *([head] if head else []))
        try:
            _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
            for rel in removed:
                if rel not in {src.relative_to(folder).as_posix() for src in files}:
                    (repo / rel).unlink(missing_ok=True)
            for src in files:
                dst = repo / src.relative_to(folder)
                dst.parent.mkdir(parents=True, exist_ok=True)
                staged = dst.with_name(f".{dst.name}.push-tmp")
                shutil.copy2(src, staged)
                os.replace(staged, dst)  # a reader sees the old file or the new one, never half of one
            _git(repo, "reset", "-q")  # the repo's own index follows HEAD; stray edits stay unstaged
        except Exception:
            _git(repo, "checkout", "-q", "-f", "HEAD", "--", ".")
            raise
        return commit

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


def check_repo_id(repo_id: str, what: str | None = None) -> str:
    """``repo_id`` if the Hub would accept it (``huggingface_hub``'s own rule), so no name escapes ``HUB_DIR``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(
            f"{what or repo_id!r} is not a valid Hub name: use letters, digits, '-', '_' and '.', "
            f"one 'namespace/name' at most ({error})"
        ) from None
    return repo_id


def _head(repo: Path) -> str | None:
    found = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def _mode(path: Path) -> str:
    return "100755" if os.access(path, os.X_OK) else "100644"


def _git(repo: Path, *args: str, env: dict | None = None, input: str | None = None) -> str:
    identity = {
        "GIT_AUTHOR_NAME": "scalingdown",
        "GIT_AUTHOR_EMAIL": "scalingdown@localhost",
        "GIT_COMMITTER_NAME": "scalingdown",
        "GIT_COMMITTER_EMAIL": "scalingdown@localhost",
    }
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**(env or os.environ), **identity},
        input=input,
    )
    if result.returncode != 0:
        raise HubError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout
