"""A team shares cached features through a DVC remote: one clone extracts and pushes, a second
clone pulls, after which `dvc repro` there skips extraction (README, "Sharing features")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import small_params, write_project
from test_dvc import init_repo, sh

EXTRACT = ["extract@video", "extract@audio", "extract@text"]


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("remote")
    first = init_repo(write_project(base / "first", small_params(), with_code=True))
    sh("dvc", "remote", "add", "-d", "shared", str(base / "dvc-remote"), cwd=first)
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-qm", "project", cwd=first)
    sh("dvc", "repro", *EXTRACT, cwd=first)
    sh("dvc", "push", cwd=first)
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-qm", "features", cwd=first)
    second = base / "second"
    sh("git", "clone", "-q", str(first), str(second), cwd=base)
    return first, second


def test_pull_restores_the_features(clones: tuple[Path, Path]) -> None:
    first, second = clones
    assert not (second / "data").exists()
    out = sh("dvc", "pull", *EXTRACT, "--with-deps", cwd=second)
    assert "fetched" in out.lower() or "added" in out.lower()
    for modality in ("video", "audio", "text"):
        path = Path("data/features/synthetic_sentiment") / f"{modality}.h5"
        assert (second / path).read_bytes() == (first / path).read_bytes()


def test_repro_after_pull_skips_extraction(clones: tuple[Path, Path]) -> None:
    _, second = clones
    sh("dvc", "pull", *EXTRACT, "--with-deps", cwd=second)
    out = sh("dvc", "repro", *EXTRACT, cwd=second)
    assert "Running stage" not in out
    for stage in ["generate@synthetic_sentiment", "prepare", *EXTRACT]:
        assert f"Stage '{stage}' didn't change, skipping" in out


def test_without_the_remote_the_clone_has_nothing(clones: tuple[Path, Path], tmp_path: Path) -> None:
    """The control: a clone that cannot reach the cache must recompute (so the test above proves the pull)."""
    first, _ = clones
    third = tmp_path / "third"
    sh("git", "clone", "-q", str(first), str(third), cwd=tmp_path)
    shutil.rmtree(third / ".dvc" / "cache", ignore_errors=True)
    out = sh("dvc", "status", *EXTRACT, cwd=third)
    assert "deleted" in out or "changed" in out
