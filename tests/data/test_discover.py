"""fracture.data.discover: dataset folders under the allowed roots, without opening an image."""
from __future__ import annotations

from pathlib import Path

from fracture.data.discover import find_datasets


def _fracatlas(folder: Path) -> Path:
    (folder / "images" / "Fractured").mkdir(parents=True)
    (folder / "images" / "Non_fractured").mkdir(parents=True)
    (folder / "dataset.csv").write_text("image_id,fractured\n")
    return folder


def test_datasets_are_found_below_roots_and_wrappers_named_by_their_inner_folder(tmp_path):
    root = tmp_path / "root"
    _fracatlas(root / "wrapper" / "fracatlas")  # an unzipped archive: one folder inside another
    (root / "classes" / "train" / "fractured").mkdir(parents=True)
    (root / "classes" / "train" / "normal").mkdir(parents=True)
    (root / "notes").mkdir()
    skipped = _fracatlas(root / "skipped")
    found = find_datasets([root, tmp_path / "missing"], skip=[skipped])
    layouts = {d.path.relative_to(root.resolve()).as_posix(): d.layout for d in found}
    assert layouts.get("wrapper/fracatlas") == "fracatlas"
    assert "notes" not in layouts and "skipped" not in layouts and "wrapper" not in layouts
    assert all(d.path.is_absolute() for d in found)


def test_depth_is_bounded(tmp_path):
    _fracatlas(tmp_path / "a" / "b" / "c" / "deep")
    assert find_datasets([tmp_path], max_depth=2) == []
    assert [d.path.name for d in find_datasets([tmp_path], max_depth=4)] == ["deep"]


def test_models_trained_on_one_kind_of_data_get_a_dataset_of_that_kind(tmp_path):
    from fracture.data.discover import FoundDataset, dataset_for_models

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "DEMO.txt").write_text("synthetic\n")
    demo_set = FoundDataset(demo, "mura")  # the demo set has the MURA layout, but is "demo" data
    fracatlas = FoundDataset(_fracatlas(tmp_path / "fa"), "fracatlas")
    candidates = [demo_set, fracatlas]
    assert dataset_for_models(["fracatlas"], "demo", candidates) == fracatlas
    assert dataset_for_models(["fracatlas", "fracatlas"], "fracatlas", candidates) is None, "already matching"
    assert dataset_for_models(["fracatlas", "demo"], "demo", candidates) is None, "models disagree"
    assert dataset_for_models([None], "demo", candidates) is None, "unknown training data"
    assert dataset_for_models(["demo"], "fracatlas", candidates) == demo_set
    assert dataset_for_models(["mura"], "demo", candidates) is None, "no MURA here"


def test_fracatlas_root_follows_the_environment(tmp_path, monkeypatch):
    from fracture.data.discover import fracatlas_root

    monkeypatch.setenv("FRACTURE_FRACATLAS", str(_fracatlas(tmp_path / "FracAtlas")))
    assert fracatlas_root() == (tmp_path / "FracAtlas").resolve()
    monkeypatch.setenv("FRACTURE_FRACATLAS", str(tmp_path / "missing"))
    assert fracatlas_root() is None, "when set, the variable is the only place looked at"
