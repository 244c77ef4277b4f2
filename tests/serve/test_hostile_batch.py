"""Nothing aborts a batch (issue 19 item 5; issue 22 weak items): every file gets its row whatever goes wrong
with it (a PALETTE COLOR DICOM without file meta among good images included), reasons say what is wrong, no
traceback reaches stderr, hidden entries are counted, the megapixel and "Many files" limits hold."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture.cli import main
from fracture.errors import ConfigError

from app_support import app_home, demo_template, fresh_app_home  # noqa: F401  (fixtures)
from dicom_support import mono_dicom as _mono_dicom, palette_dicom_without_meta


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from checkpoint_support import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", in_chans=3)


def _png(path: Path, seed: int, shape=(48, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))
    return path


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {r["path"]: r for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))}


def test_a_folder_of_hostile_files_gives_every_row_with_its_reason(checkpoint, tmp_path, capsys):
    import tifffile

    folder = tmp_path / "xrays"
    for i in range(3):
        _png(folder / "good" / f"g{i}.png", i)
    palette_dicom_without_meta(folder / "OT-PAL-8-face.dcm")
    _mono_dicom(folder / "bits7.dcm", BitsAllocated=7)
    _mono_dicom(folder / "cut.dcm", pixel_data=bytes(100))
    tifffile.imwrite(folder / "float.tif", np.random.default_rng(0).random((20, 30, 3)), photometric="rgb")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    _png(folder / "._g0.png", 9)  # a macOS resource fork: hidden
    (folder / ".cache").mkdir()
    _png(folder / ".cache" / "x.png", 8)
    out = tmp_path / "out"
    assert main(["batch", str(folder), "--out", str(out), "--backend", "torch", "--checkpoint", str(checkpoint),
                 "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert "3 hidden file(s)/folder(s) not read" in captured.out
    rows = _rows(out / "predictions.csv")
    assert sorted(rows) == ["OT-PAL-8-face.dcm", "bits7.dcm", "cut.dcm", "float.tif", "good/g0.png", "good/g1.png",
                            "good/g2.png"]
    for name in ("good/g0.png", "good/g1.png", "good/g2.png"):
        assert rows[name]["error"] == "" and 0 <= float(rows[name]["probability"]) <= 1
    palette = rows["OT-PAL-8-face.dcm"]  # read; its header says modality OT, so the radiograph gate may refuse it
    assert palette["error"] == ""
    if palette.get("not_radiograph"):  # refused by the gate, with its reason and no label
        assert palette["probability"] == "" and palette["label"] == ""
    else:
        assert 0 <= float(palette["probability"]) <= 1
    assert rows["bits7.dcm"]["error"].startswith("invalid (") and "Bits Allocated" in rows["bits7.dcm"]["error"]
    assert rows["cut.dcm"]["error"].startswith("truncated (")
    assert rows["float.tif"]["error"].startswith("unsupported (a valid 30x20 TIFF")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "3 hidden file(s) or folder(s)" in page


def test_any_exception_while_reading_or_scoring_one_file_is_its_row(checkpoint, tmp_path, monkeypatch, caplog):
    import fracture.serve.batch as batch
    from fracture.serve.scorer import Scorer

    folder = tmp_path / "in"
    for i in range(5):
        _png(folder / f"f{i}.png", i)
    assert cv2.imwrite(str(folder / "flat.png"), np.zeros((40, 40), np.uint8))
    real_load, real_score = batch._load, Scorer.score

    def load(name, source):
        if name == "f1.png":
            raise KeyError("a library bug")
        return real_load(name, source)

    def score(self, images, **kwargs):
        if any(float(np.std(im)) == 0 for im in images):  # the flat image breaks "the model"
            raise FloatingPointError("division by zero in a layer")
        return real_score(self, images, **kwargs)

    monkeypatch.setattr(batch, "_load", load)
    monkeypatch.setattr(Scorer, "score", score)
    with caplog.at_level("DEBUG", logger="fracture.serve.batch"):
        result = batch.predict_folder(folder, checkpoint, backend="torch", batch_size=3)
    by_name = {r.path: r for r in result.rows}
    assert len(result.rows) == 6
    assert by_name["f1.png"].error == "KeyError: 'a library bug'" and by_name["f1.png"].probability is None
    assert by_name["flat.png"].error == "scoring failed: FloatingPointError: division by zero in a layer"
    scored = [r for r in result.rows if not r.error]
    assert sorted(r.path for r in scored) == ["f0.png", "f2.png", "f3.png", "f4.png"]
    assert all(0 <= r.probability <= 1 and r.label in ("normal", "abnormal") for r in scored)
    assert result.counts()["unreadable"] == 2
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks and all(r.levelname == "DEBUG" for r in tracebacks)  # in the log, not on the console


def test_batch_decodes_within_the_megapixel_limit(checkpoint, tmp_path, monkeypatch):
    import fracture.data.imageio as imageio

    folder = tmp_path / "big"
    _png(folder / "big.png", 1, shape=(400, 300))
    seen = []
    real = imageio.decode_image

    def spy(*args, **kwargs):
        decoded = real(*args, **kwargs)
        seen.append(decoded.image.shape)
        return decoded

    monkeypatch.setattr(imageio, "decode_image", spy)
    monkeypatch.setenv("FRACTURE_MAX_IMAGE_MEGAPIXELS", "0.03")
    from fracture.serve.batch import predict_folder

    result = predict_folder(folder, checkpoint, backend="torch")
    assert result.rows[0].error == "" and seen == [(200, 150)]  # reduced by 2 while decoding
    monkeypatch.delenv("FRACTURE_MAX_IMAGE_MEGAPIXELS")
    seen.clear()
    predict_folder(folder, checkpoint, backend="torch")
    assert seen == [(400, 300)]


def test_many_files_limit_is_enforced_in_the_core(checkpoint):
    from fracture.serve.batch import predict_files

    ok, data = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    items = [(f"f{i}.png", data.tobytes()) for i in range(3)]
    with pytest.raises(ConfigError, match=r"3 files: at most 2 at once \(FRACTURE_MAX_UPLOAD_FILES\)"):
        predict_files(items, checkpoint, backend="torch", max_files=2)
    assert len(predict_files(items, checkpoint, backend="torch", max_files=3).rows) == 3


def test_the_predict_page_refuses_more_files_than_the_limit(app_home, monkeypatch):
    from app_support import assert_no_exception, run_page, write_tiny_run

    monkeypatch.setenv("FRACTURE_MAX_UPLOAD_FILES", "2")
    write_tiny_run(app_home / "runs", "20260101-000000-small_cnn")
    at = run_page("pages/4_Predict.py", model="20260101-000000-small_cnn (run)")
    at.radio(key="predict-mode").set_value("Many files").run()
    _, png = cv2.imencode(".png", np.full((40, 30), 128, dtype=np.uint8))
    at.file_uploader(key="predict-many-upload").set_value(
        [(f"{i}.png", png.tobytes(), "image/png") for i in range(3)]).run()
    assert_no_exception(at)
    assert any("3 files: at most 2 at once (FRACTURE_MAX_UPLOAD_FILES)" in e.value for e in at.error)
    assert not at.get("download_button")
