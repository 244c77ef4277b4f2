"""The pure helpers behind the pages: uploads, the demo lock, counts, variants, tables."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from app_support import png_bytes


class _Upload:
    """What Streamlit's UploadedFile offers: a name and getvalue()."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_read_uploads_decodes_in_memory_and_reports_each_bad_file():
    from fracture.ui.uploads import read_uploads

    good = png_bytes(50, seed=1)
    loaded, problems = read_uploads(
        [_Upload("a.png", good), ("b.png", b"plain text"), _Upload("c.png", good)], max_mb=1)
    assert [item.name for item in loaded] == ["a.png", "c.png"]
    assert loaded[0].image.dtype == np.uint8 and loaded[0].image.shape == (50, 50)
    assert loaded[0].digest == loaded[1].digest
    assert [(p.name, p.reason) for p in problems] == [("b.png", "not_an_image")]
    assert "b.png" in problems[0].message


def test_read_uploads_refuses_files_over_the_size_limit_before_decoding():
    from fracture.ui.uploads import read_uploads

    big = b"\x89PNG" + bytes(2 * 1024 * 1024)
    loaded, problems = read_uploads([("big.png", big)], max_mb=1)
    assert not loaded
    assert problems[0].reason == "too_large"
    assert "FRACTURE_MAX_UPLOAD_MB" in problems[0].message


def test_the_demo_set_is_generated_once_under_concurrent_starts(tmp_path, monkeypatch):
    import fracture.data.demo as demo
    from fracture.ui.demo import READY_FLAG, ensure_demo_dataset

    calls = []
    real = demo.make_demo_dataset

    def counting(out_dir, **kwargs):
        calls.append(out_dir)
        return real(out_dir, **kwargs)

    monkeypatch.setattr(demo, "make_demo_dataset", counting)
    target = tmp_path / "home" / "demo"
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo_dataset(target, studies=4)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [target] * 3
    assert (target / READY_FLAG).is_file()
    assert not list(tmp_path.joinpath("home").glob(".demo.partial"))


def test_a_half_written_demo_set_is_generated_again(tmp_path):
    from fracture.data import open_dataset
    from fracture.ui.demo import READY_FLAG, ensure_demo_dataset

    target = tmp_path / "demo"
    target.mkdir()
    (target / "train_image_paths.csv").write_text("half written\n")  # no ready flag
    ensure_demo_dataset(target, studies=4)
    assert (target / READY_FLAG).is_file()
    assert len(open_dataset(target).frame) > 0


def test_complete_label_counts_fills_missing_body_parts_with_zero():
    from fracture.ui.samples import complete_label_counts

    table = pd.DataFrame({"split": ["train", "train", "val"], "body_part": ["hand", "wrist", "hand"],
                          "label": [0, 1, 1], "class_name": ["n", "a", "a"], "images": [3, 2, 1]})
    counts = complete_label_counts(table)
    assert len(counts) == 2 * 2 * 2
    val_wrist = counts[(counts["split"] == "val") & (counts["body_part"] == "wrist")]
    assert val_wrist["count"].tolist() == [0, 0]
    assert counts["count"].sum() == table["images"].sum()


def test_filter_frame_and_study_table():
    from fracture.ui.samples import ALL, filter_frame, study_table

    frame = pd.DataFrame({
        "path": ["a1", "a2", "b1", "c1"], "label": [1, 1, 0, 0],
        "body_part": ["hand", "hand", "hand", "wrist"], "study_id": ["a", "a", "b", "c"],
        "split": ["train", "train", "test", "test"],
    })
    studies = study_table(filter_frame(frame, split=ALL, body_part="hand", label=ALL))
    assert studies.set_index("study_id")["images"].to_dict() == {"a": 2, "b": 1}
    assert filter_frame(frame, split="test", label=1).empty


def test_lab_variants_are_valid_specs_that_change_the_image():
    from fracture.preprocess.pipeline import Pipeline
    from fracture.ui.lab import DEFAULT_VARIANTS, fit_image, lab_variants
    from fracture.ui.widgets import op_schema

    def defaults(op):
        return {"op": op, **{k: p["default"] for k, p in op_schema(op)["params"].items()}}

    variants = lab_variants(defaults("clahe"), defaults("canny"), defaults("diffusion"))
    assert tuple(variants) == DEFAULT_VARIANTS
    rng = np.random.default_rng(0)
    image = (rng.random((90, 120)) * 200).astype(np.uint8)
    outputs = {name: Pipeline.from_spec(spec)(image) for name, spec in variants.items()}
    assert np.array_equal(outputs["Original"], image)
    for name, out in outputs.items():
        assert out.shape == image.shape and out.dtype == np.uint8, name
        if name != "Original":
            assert not np.array_equal(out, image), name
    assert max(fit_image(np.zeros((2000, 1000), np.uint8)).shape) == 768
    assert fit_image(image) is image


def test_metric_rows_read_full_reports_and_flat_validation_numbers():
    from fracture.ui.widgets import metric_rows

    full = {"test": {"image": {"overall": {"roc_auc": 0.8, "n": 10}},
                     "study": {"overall": {"roc_auc": 0.9, "n": 4}}}}
    flat = {"val": {"split": "val", "level": "image", "val_roc_auc": 0.7, "val_accuracy": 0.6}}
    rows = metric_rows({**full, **flat})
    assert [(r["split"], r["level"], r["roc_auc"]) for r in rows] == [
        ("test", "image", 0.8), ("test", "study", 0.9), ("val", "image", 0.7)]
    assert rows[2]["accuracy"] == 0.6


def test_format_seconds_and_events_table():
    from fracture.ui.job_viewer import events_table, format_seconds

    assert [format_seconds(v) for v in (None, 5, 95, 3700)] == ["–", "5 s", "1 min 35 s", "1 h 01 min"]
    events = [{"event": "step", "time": "2026-01-01T10:00:01.000+00:00", "loss": 0.5, "epoch": 0},
              {"event": "finished", "time": "2026-01-01T10:00:09.000+00:00"}]
    table = events_table(events)
    assert table["event"].tolist() == ["finished", "step"]
    assert table["time"].tolist() == ["10:00:09", "10:00:01"]


def test_preparation_progress_reads_the_latest_counted_log_event():
    from fracture.ui.job_viewer import preparation_progress

    assert preparation_progress([])[0] == 0.0
    events = [{"event": "log", "message": "caching images: 10/40", "done": 10, "total": 40},
              {"event": "log", "message": "image cache ready"}]
    assert preparation_progress(events) == (0.25, "preparing: caching images: 10/40")


@pytest.mark.slow
def test_pretrained_weights_are_refused_for_a_model_without_offline_weights():
    from fracture.errors import WeightsUnavailableError
    from fracture.recipes.config import TrainConfig

    TrainConfig(data="x", model="small_cnn", pretrained=False).check_weights_available()
    with pytest.raises(WeightsUnavailableError, match="small_cnn"):
        TrainConfig(data="x", model="small_cnn", pretrained=True).check_weights_available()


def test_png_bytes_round_trip():
    import cv2

    from fracture.ui.widgets import png_bytes as encode

    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 0] = 255  # red
    decoded = cv2.imdecode(np.frombuffer(encode(rgb), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (8, 9, 3) and decoded[0, 0].tolist() == [0, 0, 255]  # BGR
