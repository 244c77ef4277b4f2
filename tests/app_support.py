"""Helpers shared by the AppTest tests of the Streamlit pages (tests/test_app_*.py).

Each test gets its own FRACTURE_HOME in tmp_path, so the app generates a
small demo dataset there (FRACTURE_DEMO_STUDIES) and finds only the
checkpoints the test writes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "app.py"
DEMO_STUDIES = 34  # a small size whose val and test splits hold both classes (seed 0, generator v4; checked below)
TIMEOUT = 60


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small demo set per test session, copied into each test's home (fast)."""
    from fracture.data import open_dataset
    from fracture.ui.demo import ensure_demo_dataset

    root = ensure_demo_dataset(tmp_path_factory.mktemp("demo-template") / "demo", studies=DEMO_STUDIES)
    frame = open_dataset(root).frame
    for split in ("val", "test"):  # a one-class split turns the runs' val_roc_auc into val_loss
        labels = set(frame.loc[frame["split"] == split, "label"])
        assert labels == {0, 1}, f"DEMO_STUDIES={DEMO_STUDIES}: the {split} split holds only {labels}; pick another size"
    return root


@pytest.fixture
def fresh_app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty FRACTURE_HOME: the app generates its small demo set on first run.

    The app's weights folder is pointed at an empty ``HOME/weights`` so that
    checkpoints shipped in the repository do not change what a test sees.
    """
    from dataclasses import replace

    import fracture.ui.context as context
    from fracture.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("FRACTURE_HOME", str(home))
    monkeypatch.setenv("FRACTURE_DEMO_STUDIES", str(DEMO_STUDIES))
    for name in ("FRACTURE_RUNS_DIR", "FRACTURE_CACHE_DIR", "FRACTURE_DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FRACTURE_MAX_TRAINING_JOBS", "1")
    weights = home / "weights"
    weights.mkdir(parents=True)
    monkeypatch.setattr(context, "get_settings", lambda: replace(get_settings(), weights_dir=weights))
    return home


@pytest.fixture
def app_home(fresh_app_home: Path, demo_template: Path) -> Path:
    """``fresh_app_home`` with the session's demo set already in place."""
    shutil.copytree(demo_template, fresh_app_home / "demo")
    return fresh_app_home


BODY_PARTS = ["elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"]


def write_tiny_run(runs_dir: Path, name: str, *, seed: int = 0, image_size: int = 32,
                   epochs: int = 2, multitask: bool = False) -> Path:
    """A run folder with a tiny untrained small_cnn checkpoint and an event log.

    The events are what the trainer writes (run_started, epoch_end, finished),
    so the Train and Compare pages can draw their curves; the numbers in them
    are arbitrary test inputs, not results.
    """
    import torch

    from checkpoint_support import tiny_meta
    from fracture.checkpoints.format import save_checkpoint
    from fracture.models import create_model
    from fracture.recipes.config import TrainConfig
    from fracture.train.events import EventLog

    torch.manual_seed(seed)
    parts = BODY_PARTS if multitask else []
    model = create_model("small_cnn", in_chans=1, num_body_parts=len(parts))
    run_dir = runs_dir / name
    config = TrainConfig(data="demo", model="small_cnn", in_chans=1, image_size=image_size,
                         epochs=epochs, seed=seed, multitask=multitask)
    run_dir.mkdir(parents=True)
    config.save(run_dir / "config.json")
    meta = tiny_meta(image_size, body_parts=parts, multitask=multitask, threshold_rule="youden",
                     train_config=config.to_dict())
    save_checkpoint(run_dir / "best.safetensors", model, meta)
    log = EventLog(run_dir)
    log.emit("run_started", model="small_cnn", epochs=epochs, steps_per_epoch=3, monitor="val_roc_auc")
    for epoch in range(epochs):
        for step in range(1, 4):
            log.emit("step", epoch=epoch, step=step, steps_per_epoch=3, loss=0.7 - 0.01 * step,
                     images_per_s=50.0, eta_s=1.0)
        log.emit("epoch_end", epoch=epoch, epochs=epochs, train_loss=0.7 - 0.05 * epoch,
                 val_loss=0.69 - 0.04 * epoch, train_accuracy=0.5 + 0.05 * epoch,
                 val_accuracy=0.5 + 0.04 * epoch, val_roc_auc=0.5 + 0.05 * epoch,
                 best_metric=0.5 + 0.05 * epoch, lr=1e-3)
    log.emit("checkpoint_saved", path=str(run_dir / "best.safetensors"), epoch=epochs - 1)
    log.emit("finished", best_checkpoint=str(run_dir / "best.safetensors"), threshold=0.5)
    return run_dir


def make_foreign_and_calibrated(run_dir: Path, *, flag_everything: bool = True, temperature: float = 2.0) -> Path:
    """Rewrite a tiny run's checkpoint as if trained on FracAtlas and calibrated (issue 11 tests).

    Adds a temperature, two operating points and an OOD detector whose
    threshold flags every image (or none), so pages show the model/data
    mismatch warning on the demo set and the OOD warning on any image.
    """
    import numpy as np

    from fracture.checkpoints.format import load_checkpoint, save_checkpoint
    from fracture.gate.ood import OodDetector

    path = run_dir / "best.safetensors"
    model, meta = load_checkpoint(path)
    dim = int(model.num_features)
    detector = OodDetector(mean=np.zeros(dim), components=np.eye(1, dim), variances=np.ones(2),
                           threshold=1e-9 if flag_everything else 1e9, val_flag_rate=0.05)
    meta["train_config"] = {**meta.get("train_config", {}), "data": "../shared/data/fracatlas"}
    meta.update(
        dataset_layout="fracatlas", dataset_fingerprint="0" * 64,
        calibration={"method": "temperature", "temperature": temperature},
        operating_points=[
            {"name": "default", "label": "default (youden, stored in the checkpoint)", "threshold": 0.5},
            {"name": "sensitivity_90", "label": "90% sensitivity (screening)", "threshold": 0.2,
             "sensitivity": 0.9, "specificity": 0.4, "ppv": 0.3, "npv": 0.95},
        ],
        ood={**detector.meta_block(), "fitted_on": "train", "n_fit": 10},
    )
    save_checkpoint(path, model, meta, extra_tensors=detector.tensors())
    return path


def select_model(at, run_name: str) -> None:
    """Make a run's checkpoint the active model in the sidebar of an AppTest."""
    at.session_state["sidebar_model"] = f"{run_name} (run)"


def png_bytes(size: int = 96, seed: int = 0) -> bytes:
    """A small synthetic grayscale PNG."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    image = (rng.random((size, size)) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def switch_to(at, page: str):
    """``at.switch_page`` for a page path relative to the repository (``pages/4_Predict.py``)."""
    return at.switch_page(str(REPO_ROOT / page))


def run_page(page: str | None = None, *, model: str | None = None, query: dict | None = None):
    """Run the app (and switch to ``page``, e.g. ``"pages/4_Predict.py"``); return the AppTest."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if model is not None:
        select_model(at, model)
    at.run()
    if page is not None:
        switch_to(at, page)
        for key, value in (query or {}).items():
            at.query_params[key] = value
        at.run()
    return at


def assert_no_exception(at) -> None:
    """Fail with the exception texts when a script run raised."""
    assert not at.exception, [e.value for e in at.exception]


def metric_values(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}
