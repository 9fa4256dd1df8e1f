"""A local push is all or nothing and commits only what the command wrote; repo names are checked as the Hub does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scalingdown import hub
from scalingdown.hub import HubError, HubTarget


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def write(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


@pytest.fixture
def pushed(tmp_path):
    """A model repo with one commit: weights and a card."""
    target = HubTarget(kind="local", org="acme", root=tmp_path / "hub")
    first = write(tmp_path / "first", {"model.safetensors": "weights v1", "README.md": "card v1"})
    commit = target.push_folder(first, "model", "m", "train")
    return target, target.local_path("model", "m"), commit


def test_a_push_commits_only_the_files_it_wrote_not_a_stray_edit(pushed, tmp_path):
    target, repo, first = pushed
    (repo / "model.safetensors").write_text("trunc")  # damaged on disk, outside any push
    (repo / "stray.txt").write_text("left by hand")
    card = write(tmp_path / "card", {"README.md": "card v2"})

    second = target.push_folder(card, "model", "m", "results in the card")

    assert second != first
    assert git(repo, "show", f"{second}:model.safetensors") == "weights v1"
    assert git(repo, "show", f"{second}:README.md") == "card v2"
    assert git(repo, "ls-tree", "--name-only", second).split() == ["README.md", "model.safetensors"]
    assert (repo / "README.md").read_text() == "card v2"
    assert git(repo, "diff", "--cached", "--name-only") == ""  # the repo's index matches its HEAD


def test_identical_content_makes_no_commit_and_delete_patterns_remove_files(pushed, tmp_path):
    target, repo, first = pushed
    same = write(tmp_path / "same", {"model.safetensors": "weights v1"})
    assert target.push_folder(same, "model", "m", "again") == first

    shards = write(tmp_path / "shards", {"data/a.parquet": "a", "data/b.parquet": "b"})
    target.push_folder(shards, "model", "m", "two shards")
    one = write(tmp_path / "one", {"data/c.parquet": "c"})
    head = target.push_folder(one, "model", "m", "one shard", delete_patterns=["data/*"])
    assert [p for p in git(repo, "ls-tree", "-r", "--name-only", head).split() if p.startswith("data/")] == [
        "data/c.parquet"
    ]
    assert not (repo / "data" / "a.parquet").exists()


def test_a_stale_lock_is_named_and_nothing_changes(pushed, tmp_path):
    target, repo, first = pushed
    (repo / ".git" / "index.lock").write_text("")
    new = write(tmp_path / "new", {"model.safetensors": "weights v2", "extra.json": "{}"})

    with pytest.raises(HubError, match=r"index\.lock"):
        target.push_folder(new, "model", "m", "train again")

    assert git(repo, "rev-parse", "HEAD").strip() == first
    assert (repo / "model.safetensors").read_text() == "weights v1"
    assert not (repo / "extra.json").exists()


def test_a_failure_before_the_commit_leaves_the_repo_as_it_was(pushed, tmp_path, monkeypatch):
    target, repo, first = pushed
    real_git = hub._git

    def failing_git(folder, *args, **kwargs):
        if args[0] == "write-tree":
            raise HubError("disk full")
        return real_git(folder, *args, **kwargs)

    monkeypatch.setattr(hub, "_git", failing_git)
    new = write(tmp_path / "new", {"model.safetensors": "weights v2", "extra.json": "{}"})
    with pytest.raises(HubError, match="disk full"):
        target.push_folder(new, "model", "m", "train again", delete_patterns=["*.safetensors"])

    assert git(repo, "rev-parse", "HEAD").strip() == first
    assert (repo / "model.safetensors").read_text() == "weights v1"
    assert not (repo / "extra.json").exists()
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("org", ["../../escaped", "acme/team", "my org", "-dash", "a..b"])
def test_an_org_the_hub_would_refuse_is_refused_before_anything_is_written(org, tmp_path, monkeypatch):
    monkeypatch.setenv("ORG", org)
    monkeypatch.setenv("HUB_DIR", str(tmp_path / "hub"))
    with pytest.raises(HubError, match="not a valid Hub name"):
        HubTarget.from_env()
    assert not (tmp_path / "hub").exists()


def test_a_repo_name_that_would_leave_the_hub_folder_is_refused(tmp_path):
    target = HubTarget(kind="local", org="acme", root=tmp_path / "hub")
    with pytest.raises(HubError, match="not a valid Hub name"):
        target.local_path("model", "../../outside")
    assert target.repo_id("m") == "acme/m"


def test_a_hub_dir_that_is_a_file_or_read_only_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(HubError, match="not a folder"):
        HubTarget(kind="local", root=tmp_path / "file" / "hub").check_writable()
    HubTarget(kind="local", root=tmp_path / "new" / "hub").check_writable()  # created on the first push


def test_a_relative_hub_dir_and_folder_are_pushed(pushed, tmp_path, monkeypatch):
    _, repo, _ = pushed
    monkeypatch.chdir(tmp_path)
    target = HubTarget(kind="local", org="acme", root=Path("hub"))  # HUB_DIR=hub, as make runs it
    write(tmp_path / "outputs" / "push", {"README.md": "card v2"})
    commit = target.push_folder(Path("outputs") / "push", "model", "m", "relative")
    assert git(repo, "show", f"{commit}:README.md") == "card v2"
    assert git(repo, "show", f"{commit}:model.safetensors") == "weights v1"
