"""describe_mismatch: a plain sentence when a model and a dataset do not belong together."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fracture.checkpoints.compatibility import dataset_kind, describe_mismatch, model_data_kind
from fracture.data.manifest import Manifest


def manifest(source: str, *, classes=("normal", "abnormal"), layout: str | None = None, n: int = 4) -> Manifest:
    frame = pd.DataFrame({
        "path": [f"/data/{source}/img{i}.png" for i in range(n)], "label": [i % 2 for i in range(n)],
        "body_part": ["hand"] * n, "patient_id": [f"p{i}" for i in range(n)], "study_id": [f"s{i}" for i in range(n)],
        "split": ["train", "val", "test", "test"][:n], "source": [source] * n,
    })
    return Manifest(frame=frame, root=Path(f"/data/{source}"),
                    layout=layout or ("mura" if source == "demo" else source), problems=[], class_names=classes)


FRACATLAS_MODEL = {"dataset_layout": "fracatlas", "dataset_fingerprint": "a" * 64,
                   "class_names": ["normal", "abnormal"], "train_config": {"data": "../shared/data/fracatlas"}}


def test_same_fingerprint_means_no_warning():
    m = manifest("fracatlas")
    assert describe_mismatch({**FRACATLAS_MODEL, "dataset_fingerprint": m.fingerprint()}, m) is None


def test_fracatlas_model_on_the_demo_set():
    text = describe_mismatch(FRACATLAS_MODEL, manifest("demo"))
    assert text == "This model was trained on FracAtlas; the demo dataset is synthetic: expect meaningless numbers."


def test_demo_model_on_real_data_and_mura_on_fracatlas():
    demo_model = {"dataset_layout": "mura", "train_config": {"data": "demo"}, "class_names": ["normal", "abnormal"]}
    assert model_data_kind(demo_model) == "demo"
    assert "trained on the synthetic demo dataset; the active dataset is FracAtlas" in describe_mismatch(
        demo_model, manifest("fracatlas"))
    mura = {"dataset_layout": "mura", "dataset_fingerprint": "b" * 64, "class_names": ["normal", "abnormal"]}
    text = describe_mismatch(mura, manifest("fracatlas", classes=("not fractured", "fractured")))
    assert "trained on MURA; the active dataset is FracAtlas" in text
    assert "It predicts 'abnormal' vs 'normal'; this dataset labels 'fractured' vs 'not fractured'." in text


def test_demo_marker_in_the_training_folder_means_demo(tmp_path):
    (tmp_path / "DEMO.txt").write_text("synthetic\n")
    assert model_data_kind({"dataset_layout": "mura", "train_config": {"data": str(tmp_path)}}) == "demo"


def test_another_copy_or_split_of_the_same_data():
    text = describe_mismatch(FRACATLAS_MODEL, manifest("fracatlas"))
    assert text.startswith("This model was trained on another copy or split of FracAtlas")
    assert "optimistic" in text


def test_other_labels_on_the_same_kind_of_data():
    text = describe_mismatch({**FRACATLAS_MODEL, "dataset_fingerprint": None}, manifest("fracatlas", classes=("a", "b")))
    assert "other labels" in text


@pytest.mark.parametrize("meta", [None, {}, {"class_names": ["normal", "abnormal"]}])
def test_unknown_training_data_gives_no_warning(meta):
    assert describe_mismatch(meta, manifest("demo")) is None


def test_dataset_kind_is_the_source_column():
    assert dataset_kind(manifest("demo")) == "demo" and dataset_kind(manifest("fracatlas")) == "fracatlas"
