"""Shared fixtures: generated images and datasets, and the path to ../shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]  # tests/data/test_fracatlas_fixture.py runs this conftest in a scratch folder

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRACATLAS = REPO_ROOT.parent / "shared" / "data" / "fracatlas"


def pytest_collection_modifyitems(config, items):
    """A test that asks for the real data set is an integration test, marked or not."""
    for item in items:
        if "fracatlas_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fracatlas_root() -> Path:
    """The real FracAtlas copy: $FRACTURE_FRACATLAS, else ../shared/data/fracatlas beside the checkout.

    Absent at the default place: skip, saying where it looked. Asked for with
    FRACTURE_FRACATLAS but not there: fail, so a CI that means to run the
    integration tests never passes by skipping them.
    """
    asked = os.environ.get("FRACTURE_FRACATLAS")
    root = Path(asked) if asked else DEFAULT_FRACATLAS
    if not (root / "dataset.csv").is_file():
        if asked:
            pytest.fail(f"FRACTURE_FRACATLAS={asked}: no dataset.csv there; point it at the FracAtlas folder "
                        "(dataset.csv, images/) or unset it", pytrace=False)
        pytest.skip(f"FracAtlas not found at {root} (set FRACTURE_FRACATLAS to its folder)")
    return root


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
