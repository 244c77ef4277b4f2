"""Shared fixtures: generated images and datasets, and the path to ../shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FRACATLAS = Path(
    os.environ.get("FRACTURE_FRACATLAS", REPO_ROOT.parent / "shared" / "data" / "fracatlas")
)


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: uses ../shared data (skipped when absent)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def fracatlas_root() -> Path:
    """The real FracAtlas copy beside the checkout; skip with the reason when absent."""
    if not (SHARED_FRACATLAS / "dataset.csv").is_file():
        pytest.skip(f"FracAtlas not found at {SHARED_FRACATLAS} (set FRACTURE_FRACATLAS)")
    return SHARED_FRACATLAS


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small synthetic MURA-layout dataset, generated once per test session."""
    from fracture.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "MURA-demo"
    make_demo_dataset(root, seed=0, studies=32)
    return root


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Point FRACTURE_HOME (runs, caches, demo) at a temporary folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("FRACTURE_HOME", str(home))
    monkeypatch.delenv("FRACTURE_RUNS_DIR", raising=False)
    monkeypatch.delenv("FRACTURE_CACHE_DIR", raising=False)
    return home


@pytest.fixture(autouse=True)
def _restore_main_module():
    """AppTest runs page scripts as ``__main__`` and may leave one in ``sys.modules``; cache workers
    (forkserver/spawn) re-import ``__main__``, so a leftover script would run, and fail, in each worker."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
