"""One cache root: inside the project by default whatever the working directory, moved by SCALINGDOWN_CACHE, and a
fresh one for every test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from scalingdown.cache import cache_dir, cache_root

REPO = Path(__file__).resolve().parents[1]


def test_default_root_is_the_projects_ignored_cache_folder_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("SCALINGDOWN_CACHE")
    monkeypatch.chdir(tmp_path)
    assert cache_root() == REPO / ".cache"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(REPO / ".cache" / "eval" / "x.json")], cwd=REPO)
    assert ignored.returncode == 0  # .gitignore keeps it out of commits


def test_scalingdown_cache_moves_the_root_and_cache_dir_creates_folders_under_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALINGDOWN_CACHE", "relative/cache")
    folder = cache_dir("eval", "synthetic_gsm")
    assert folder == tmp_path / "relative" / "cache" / "eval" / "synthetic_gsm" and folder.is_dir()


def test_each_test_has_its_own_empty_cache_sharing_only_the_converted_teachers(test_cache, session_cache):
    assert Path(os.environ["SCALINGDOWN_CACHE"]) == test_cache == cache_root()
    assert not test_cache.is_relative_to(REPO) and test_cache != session_cache
    assert sorted(p.name for p in test_cache.iterdir()) == ["ctranslate2", "gguf", "teachers"]
    for part in ("ctranslate2", "teachers"):
        assert (test_cache / part).resolve() == (session_cache / part).resolve()
    (cache_dir("eval", "t") / "result.json").write_text("{}")
    assert not (session_cache / "eval").exists()


def test_the_hugging_face_caches_a_test_writes_are_the_sessions_own():
    """datasets and transformers read these once, at import: the session sets them before any test imports them."""
    import datasets
    from transformers.utils import hub

    assert Path(datasets.config.HF_DATASETS_CACHE) == Path(os.environ["HF_DATASETS_CACHE"])
    assert Path(hub.HF_MODULES_CACHE) == Path(os.environ["HF_MODULES_CACHE"])
