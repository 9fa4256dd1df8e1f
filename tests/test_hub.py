"""The Hub seam: local repos are git repos in the Hub's layout; the hf target goes through huggingface_hub."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scalingdown.hub import HubError, HubTarget


def _commits(repo: Path) -> list[str]:
    out = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_local_push_is_a_commit_and_identical_content_is_not(hub_dir, tmp_path):
    target = HubTarget.from_env()
    folder = tmp_path / "upload"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("# card\n")
    (folder / "data" / "train.parquet").write_bytes(b"one")

    first = target.push_folder(folder, "dataset", "toy-rationales", "first version")
    repo = hub_dir / "datasets" / "testorg" / "toy-rationales"
    assert (repo / "data" / "train.parquet").read_bytes() == b"one"
    assert target.revision("dataset", "toy-rationales") == first

    again = target.push_folder(folder, "dataset", "toy-rationales", "same content")
    assert again == first
    assert _commits(repo) == ["first version"]

    (folder / "data" / "train.parquet").write_bytes(b"two")
    second = target.push_folder(folder, "dataset", "toy-rationales", "second version")
    assert second != first
    assert _commits(repo) == ["second version", "first version"]
    assert target.list_repos("dataset") == ["toy-rationales"]
    assert target.location("dataset", "toy-rationales") == str(repo)


def test_delete_patterns_remove_stale_files(hub_dir, tmp_path):
    target = HubTarget.from_env()
    folder = tmp_path / "a"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train-00000-of-00002.parquet").write_text("x")
    (folder / "data" / "train-00001-of-00002.parquet").write_text("y")
    target.push_folder(folder, "dataset", "d", "two shards")
    fresh = tmp_path / "b"
    (fresh / "data").mkdir(parents=True)
    (fresh / "data" / "train-00000-of-00001.parquet").write_text("z")
    target.push_folder(fresh, "dataset", "d", "one shard", delete_patterns=["data/*"])
    repo = target.local_path("dataset", "d")
    assert sorted(p.name for p in (repo / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_unknown_target_and_missing_token_name_the_fix(monkeypatch, tmp_path):
    with pytest.raises(HubError, match="HUB_TARGET=local"):
        HubTarget.from_env(kind="s3")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    target = HubTarget.from_env(kind="hf", org="me")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "README.md").write_text("hi")
    with pytest.raises(HubError, match="HF_TOKEN"):
        target.push_folder(folder, "model", "m", "msg")


class _RecordingApi:
    """Stands in for huggingface_hub.HfApi: records calls instead of reaching the network."""

    calls: list = []
    tokens: list = []

    def __init__(self, token=None):
        self.tokens.append(token)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))

        class Info:
            oid = "abc123"

        return Info()


def test_hf_target_uses_create_repo_and_upload_folder_and_never_writes_the_token(monkeypatch, tmp_path, caplog):
    import logging

    import huggingface_hub

    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    _RecordingApi.calls, _RecordingApi.tokens = [], []
    caplog.set_level(logging.DEBUG)
    target = HubTarget.from_env(kind="hf", org="me")
    assert secret not in repr(target)
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "README.md").write_text("card")
    commit = target.push_folder(folder, "dataset", "gsm8k-rationales", "push", delete_patterns=["data/*"])
    assert commit == "abc123"
    (kind, repo_id, kwargs), (kind2, upload) = _RecordingApi.calls
    assert (kind, repo_id, kwargs["repo_type"], kwargs["exist_ok"]) == (
        "create_repo",
        "me/gsm8k-rationales",
        "dataset",
        True,
    )
    assert upload["repo_id"] == "me/gsm8k-rationales" and upload["delete_patterns"] == ["data/*"]
    assert target.url("dataset", "gsm8k-rationales") == "https://huggingface.co/datasets/me/gsm8k-rationales"
    # the token authenticates the client, and reaches neither what is uploaded (arguments, message) nor a log
    assert _RecordingApi.tokens == [secret]
    assert secret not in repr(_RecordingApi.calls) and secret not in caplog.text
