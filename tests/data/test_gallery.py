"""The shipped gallery of real radiographs: its limits, its provenance, its builder and reader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracture.data.gallery import GALLERY_DIR, INDEX_NAME, load_gallery
from fracture.errors import DatasetError
from fracture.gallery.build import MAX_ITEMS, MAX_TOTAL_BYTES, allocate, build_gallery


def test_the_shipped_gallery_is_small_balanced_and_attributed():
    items = load_gallery()
    assert 0 < len(items) <= MAX_ITEMS
    size = sum(p.stat().st_size for p in GALLERY_DIR.rglob("*") if p.is_file())
    assert size <= MAX_TOTAL_BYTES
    labels = [item.label for item in items]
    assert labels.count(1) == labels.count(0)
    assert len({item.body_part for item in items}) >= 4
    for item in items:
        assert (item.label == 1) == bool(item.boxes), item.describe()
        with Image.open(item.path) as image:
            assert image.mode == "L" and max(image.size) <= 384
    readme = (GALLERY_DIR / "README.md").read_text(encoding="utf-8")
    for needed in ("CC BY 4.0", "10.1038/s41597-023-02432-4", "Scientific Data", "Changes made",
                   "Downscaling", "Re-encoding", "Selection"):
        assert needed in readme


@pytest.mark.integration
def test_every_shipped_image_is_from_the_test_split_with_its_label_and_boxes(fracatlas_root):
    from fracture.data import open_dataset

    frame = open_dataset(fracatlas_root, seed=0).frame
    by_name = frame.set_index(frame["path"].map(lambda p: Path(p).name))
    for item in load_gallery():
        row = by_name.loc[item.source_id]
        assert row["split"] == "test", f"{item.source_id} is in {row['split']}, the model may have seen it"
        assert (row["label"], row["body_part"]) == (item.label, item.body_part)
        assert np.allclose(np.array(row["boxes"], dtype=float).reshape(-1, 4),
                           np.array(item.boxes, dtype=float).reshape(-1, 4))


def test_allocate_shares_evenly_and_moves_what_small_strata_lack():
    assert allocate(20, {"hand": 50, "hip": 1, "leg": 27, "mixed": 13, "shoulder": 2}) == \
        {"hand": 6, "hip": 1, "leg": 6, "mixed": 5, "shoulder": 2}
    assert allocate(10, {"a": 3, "b": 3}) == {"a": 3, "b": 3}
    assert allocate(3, {"a": 5, "b": 0}) == {"a": 3, "b": 0}


def _tiny_fracatlas(root: Path, n: int = 60) -> Path:
    """A FracAtlas-shaped folder: dataset.csv, images in class folders, YOLO boxes."""
    rng = np.random.default_rng(0)
    rows = ["image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique"]
    for i in range(n):
        label, part = i % 2, ("hand", "leg", "hip")[i % 3]
        name = f"IMG{i:07d}.jpg"
        folder = root / "images" / ("Fractured" if label else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (600, 450), dtype=np.uint8)).save(folder / name)
        flags = {p: int(p == part) for p in ("hand", "leg", "hip", "shoulder")}
        rows.append(f"{name},{flags['hand']},{flags['leg']},{flags['hip']},{flags['shoulder']},0,0,0,{label},{label},1,0,0")
        if label:
            (root / "annotations" / "YOLO").mkdir(parents=True, exist_ok=True)
            (root / "annotations" / "YOLO" / f"IMG{i:07d}.txt").write_text("0 0.5 0.4 0.2 0.1\n")
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    return root


def test_the_builder_is_reproducible_and_takes_only_test_images(tmp_path):
    from fracture.data import open_dataset

    data = _tiny_fracatlas(tmp_path / "fracatlas")
    first = build_gallery(data, tmp_path / "a", n=6, max_side=96)
    second = build_gallery(data, tmp_path / "b", n=6, max_side=96)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    items = load_gallery(first)
    assert len(items) == 6 and sum(item.label for item in items) == 3
    test_names = {Path(p).name for p in open_dataset(data, seed=0).frame.query("split == 'test'")["path"]}
    assert {item.source_id for item in items} <= test_names
    fractured = next(item for item in items if item.label == 1)
    assert fractured.boxes == ((0.4, 0.35, 0.6, 0.45),)
    with Image.open(fractured.path) as image:
        assert max(image.size) == 96 and image.mode == "L"


def test_a_broken_index_names_the_file_and_the_entry(tmp_path):
    with pytest.raises(DatasetError, match="no gallery index"):
        load_gallery(tmp_path)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.jpg")
    entry = {"file": "images/a.jpg", "source_id": "a.jpg", "label": 1, "body_part": "hand",
             "boxes": [[0.5, 0.5, 0.2, 0.9]]}
    (tmp_path / INDEX_NAME).write_text(json.dumps({"format": 1, "items": [entry]}))
    with pytest.raises(DatasetError, match=r"items\[0\]: box"):
        load_gallery(tmp_path)
    entry.update(boxes=[], file="../outside.jpg")
    (tmp_path / INDEX_NAME).write_text(json.dumps({"format": 1, "items": [entry]}))
    with pytest.raises(DatasetError, match="not a file inside"):
        load_gallery(tmp_path)


# --------------------------------------------------------------------------
# In the app (AppTest): Predict and the Preprocessing Lab start from the gallery.

from app_support import (  # noqa: E402,F401  (fixtures)
    app_home,
    assert_no_exception,
    demo_template,
    fresh_app_home,
    metric_values,
    run_page,
    write_tiny_run,
)

RUN = "20260101-000000-small_cnn"


def test_predict_samples_default_to_the_gallery_and_the_url_picks_the_image(app_home):
    write_tiny_run(app_home / "runs", RUN)
    item = load_gallery()[5]
    at = run_page("pages/4_Predict.py", model=f"{RUN} (run)", query={"input": "Sample", "xray": item.key})
    assert_no_exception(at)
    assert at.radio(key="samples").value == "Gallery"
    assert at.selectbox(key="gallery-pick").value == item.key
    assert "Study P(abnormal)" in metric_values(at)
    assert at.query_params["xray"] == [item.key] or at.query_params["xray"] == item.key
    at.button(key="gallery-pick-random").click().run()
    assert_no_exception(at)
    assert at.selectbox(key="gallery-pick").value != item.key


def test_the_lab_works_on_a_gallery_image_by_default(app_home):
    at = run_page("pages/2_Preprocessing_Lab.py")
    assert_no_exception(at)
    assert at.radio(key="samples").value == "Gallery"
    assert at.selectbox(key="gallery-pick").value == load_gallery()[0].key
    assert at.get("plotly_chart"), "the variants are drawn"

