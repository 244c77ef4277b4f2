"""Batch prediction over a folder: the CSV (every file a row), the HTML report, studies, the CLI."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fracture.serve.batch import CSV_COLUMNS, predict_files, predict_folder, write_report
from fracture.checkpoints.format import save_checkpoint
from fracture.cli import main
from fracture.errors import ConfigError
from fracture.models import create_model

from app_support import app_home, demo_template, fresh_app_home  # noqa: F401  (fixtures)

THRESHOLD = 0.5


def _tiny(path: Path, **extra) -> Path:
    torch.manual_seed(0)
    model = create_model("small_cnn", pretrained=False)
    meta = {
        "image_size": 32, "preprocess": [{"op": "resize", "size": 32, "mode": "letterbox"}],
        "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "class_names": ["normal", "abnormal"],
        "body_parts": [], "multitask": False, "threshold": THRESHOLD, "tta_hflip": True, **extra,
    }
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (40 + seed, 50), dtype=np.uint8), (5, 5), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "xrays"
    _png(root / "patient1" / "study1_positive" / "image1.png", 1)
    _png(root / "patient1" / "study1_positive" / "image2.png", 2)
    _png(root / "patient2" / "study1_negative" / "image1.png", 3)
    (root / "broken.png").write_bytes(b"this is not a png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_csv_has_every_file_and_reports_bad_ones_in_their_row(folder, checkpoint):
    result = predict_folder(folder, checkpoint, backend="torch", batch_size=2)
    data = result.csv_bytes()
    assert data.decode().splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = {r["path"]: r for r in _rows(data)}
    assert sorted(rows) == ["broken.png", "empty.jpg", "patient1/study1_positive/image1.png",
                            "patient1/study1_positive/image2.png", "patient2/study1_negative/image1.png"]
    assert rows["broken.png"]["probability"] == "" and rows["broken.png"]["label"] == ""
    assert rows["broken.png"]["error"].startswith("not an image")
    assert rows["empty.jpg"]["error"].startswith("empty")
    for name in ("patient1/study1_positive/image1.png", "patient2/study1_negative/image1.png"):
        row = rows[name]
        p = float(row["probability"])
        assert 0.0 <= p <= 1.0 and row["error"] == ""
        assert row["label"] == ("abnormal" if p >= THRESHOLD else "normal")
        assert float(row["threshold"]) == THRESHOLD
        assert row["ood"] == ""  # this model has no out-of-distribution detector
    assert result.skipped == ["notes.txt"]
    assert result.counts() == {"files": 5, "predicted": 3, "positive": result.counts()["positive"],
                               "negative": 3 - result.counts()["positive"], "unreadable": 2, "ood": 0,
                               "not_radiograph": 0, "skipped_not_images": 1, "skipped_hidden": 0}


def test_onnx_and_torch_backends_agree(folder, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    by_backend = {}
    for backend in ("torch", "onnx"):
        result = predict_folder(folder, checkpoint, backend=backend)
        assert result.backend == backend
        by_backend[backend] = np.array([r.probability or -1.0 for r in result.rows])
    assert np.abs(by_backend["torch"] - by_backend["onnx"]).max() <= 1e-4


def test_html_report_is_self_contained_sortable_and_escaped(tmp_path, checkpoint):
    folder = tmp_path / "in"
    _png(folder / "a<script>alert(1)</script>.png", 4)
    _png(folder / "b.png", 5)
    (folder / "c.png").write_bytes(b"junk")
    result = predict_folder(folder, checkpoint, backend="torch", cam=True)
    page = result.html_bytes().decode("utf-8")
    assert "<script>alert(1)</script>" not in page
    assert "a&lt;script&gt;alert(1)&lt;/script&gt;.png" in page
    assert page.count("data:image/jpeg;base64,") == 4  # thumbnail + Grad-CAM for each readable image
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert "<link" not in page
    assert 'addEventListener("click"' in page and "table.sortable" in page
    for text in ("<b>3</b>files", "<b>2</b>predicted", "<b>1</b>unreadable", "Grad-CAM", "not an image"):
        assert text in page
    assert all(r.heatmap for r in result.rows if not r.error)


def test_study_grouping_writes_studies_csv(folder, checkpoint, tmp_path):
    result = predict_folder(folder, checkpoint, backend="torch", studies=True)
    written = write_report(result, tmp_path / "report")
    assert sorted(p.name for p in written) == ["predictions.csv", "report.html", "studies.csv"]
    studies = {r["study"]: r for r in _rows((tmp_path / "report" / "studies.csv").read_bytes())}
    images = {r.path: r for r in result.rows}
    want = np.mean([images["patient1/study1_positive/image1.png"].probability,
                    images["patient1/study1_positive/image2.png"].probability])
    assert float(studies["patient1/study1_positive"]["probability"]) == pytest.approx(want, abs=1e-6)
    assert studies["patient1/study1_positive"]["images"] == "2"
    assert studies["."]["images"] == "2" and studies["."]["predicted"] == "0"  # the two bad files
    assert _rows(result.csv_bytes())[0]["study"] in studies


def test_report_is_not_overwritten_unless_asked(folder, checkpoint, tmp_path):
    result = predict_folder(folder, checkpoint, backend="torch")
    write_report(result, tmp_path / "out")
    with pytest.raises(ConfigError, match="--overwrite"):
        write_report(result, tmp_path / "out")
    write_report(result, tmp_path / "out", overwrite=True)


def test_uploaded_bytes_give_the_same_rows(checkpoint, tmp_path):
    _png(tmp_path / "x.png", 7)
    items = [("x.png", (tmp_path / "x.png").read_bytes()), ("bad.dcm", b"DICM nonsense")]
    result = predict_files(items, checkpoint, backend="torch")
    assert [r.path for r in result.rows] == ["x.png", "bad.dcm"]
    assert result.rows[0].probability is not None and result.rows[1].error


def test_cli_batch(folder, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["batch", str(folder), "--out", str(out), "--checkpoint", str(checkpoint), "--backend", "torch"]) == 0
    captured = capsys.readouterr()
    assert "5 files: 3 predicted" in captured.out and "2 unreadable" in captured.out
    assert "predicting: 5/5 images" in captured.err
    assert (out / "predictions.csv").is_file() and (out / "report.html").is_file()
    assert main(["batch", str(folder), "--out", str(out), "--checkpoint", str(checkpoint)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_calibrated_model_reports_calibrated_probabilities_and_threshold(folder, checkpoint, tmp_path):
    from fracture.evaluate.calibration import apply_temperature

    calibrated = _tiny(tmp_path / "calibrated.safetensors", calibration={"temperature": 2.0})
    raw = predict_folder(folder, checkpoint, backend="torch")
    result = predict_folder(folder, calibrated, backend="torch")
    assert result.threshold == pytest.approx(float(apply_temperature([THRESHOLD], 2.0)[0]))
    for before, after in zip(raw.rows, result.rows):
        if before.probability is not None:
            assert after.probability == pytest.approx(float(apply_temperature([before.probability], 2.0)[0]))


# ---------------------------------------------------------------- the Predict page's "many files" mode


def test_predict_page_many_files_mode_offers_the_csv_and_the_report(app_home):
    from app_support import assert_no_exception, metric_values, run_page, write_tiny_run

    write_tiny_run(app_home / "runs", "20260101-000000-small_cnn")
    at = run_page("pages/4_Predict.py", model="20260101-000000-small_cnn (run)")
    at.radio(key="predict-mode").set_value("Many files").run()
    assert_no_exception(at)
    _, png = cv2.imencode(".png", np.full((40, 30), 128, dtype=np.uint8))
    at.file_uploader(key="predict-many-upload").set_value(
        [("a.png", png.tobytes(), "image/png"), ("broken.png", b"junk", "image/png")]).run()
    assert_no_exception(at)
    metrics = metric_values(at)
    assert metrics["Files"] == "2" and metrics["Unreadable"] == "1"
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["⬇ predictions.csv", "⬇ report.html"]
    table = at.dataframe[0].value
    assert list(table["file"]) == ["a.png", "broken.png"] and table["error"].iloc[1].startswith("not an image")


def test_progress_panel_shows_images_done_and_cancel_sets_the_flag():
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st

        from fracture.serve.onnx_backend import InferenceProgress
        from fracture.ui.progress import ProgressPanel, was_cancelled

        if was_cancelled("t"):
            st.write("cancelled")
            st.stop()
        panel = ProgressPanel("t")
        panel.label = "model"
        for done in (100, 200):
            panel(InferenceProgress("predicting", done, 500, done / 10))

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert at.button[0].label == "Cancel"
    at.button[0].click().run()
    assert [m.value for m in at.markdown] == ["cancelled"]
