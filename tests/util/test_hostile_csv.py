"""CSV injection: every CSV the project writes neutralises formula cells (OWASP) and keeps one row per file,
read back with pandas and with the csv module, however the file names look."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracture.util.csvsafe import FORMULA_PREFIXES, csv_bytes, csv_text, frame_csv_text, safe_cell

HOSTILE = ["=cmd|' /C calc'!A0", "@SUM(1)", "+HYPERLINK(\"http://x\",\"y\")", "-2+3", "\tx", "\rcr", "a\rb", "c\nd",
           'quote"d', "plain"]


def _expected(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def test_safe_cell_follows_owasp():
    assert [safe_cell(t) for t in HOSTILE[:6]] == ["'" + t for t in HOSTILE[:6]]
    assert safe_cell("a=b") == "a=b" and safe_cell("") == ""
    assert safe_cell(-2.5) == -2.5 and safe_cell(-3) == -3 and safe_cell(None) is None  # numbers stay numbers


@pytest.mark.parametrize("reader", ["pandas", "csv"])
def test_hostile_cells_read_back_one_row_each(reader):
    text = csv_text(["name", "value"], [[name, i - 3.5] for i, name in enumerate(HOSTILE)])
    if reader == "pandas":
        frame = pd.read_csv(io.StringIO(text), keep_default_na=False)
        names, values = frame["name"].tolist(), frame["value"].tolist()
    else:
        rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
        names, values = [r[0] for r in rows], [float(r[1]) for r in rows]
    assert names == [_expected(t) for t in HOSTILE]
    assert values == [i - 3.5 for i in range(len(HOSTILE))]
    for line in text.split("\n")[1:-1]:  # no line of the file starts a formula
        assert not line.startswith(FORMULA_PREFIXES) or line.startswith('"')


def test_mappings_and_frames():
    data = csv_bytes(["a", "=b"], [{"a": "=1", "=b": None}, {"a": 2}])
    assert list(csv.reader(io.StringIO(data.decode()))) == [["a", "'=b"], ["'=1", ""], ["2", ""]]
    with pytest.raises(ValueError, match="not columns"):
        csv_text(["a"], [{"a": 1, "z": 2}])
    frame = pd.DataFrame({"path": ["-1.png", "x\ry.png"], "prob": [0.25, float("nan")], "label": [1, 0]})
    back = pd.read_csv(io.StringIO(frame_csv_text(frame)))
    assert back["path"].tolist() == ["'-1.png", "x\ry.png"] and back["label"].tolist() == [1, 0]
    assert back["prob"].iloc[0] == 0.25 and np.isnan(back["prob"].iloc[1])


# ------------------------------------------------------------------ the files the project writes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from checkpoint_support import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", in_chans=3)


def _png_bytes(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (40, 48), dtype=np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def _both_ways(data: bytes) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    text = data.decode("utf-8")
    return pd.read_csv(io.StringIO(text), keep_default_na=False), list(csv.DictReader(io.StringIO(text, newline="")))


def test_uploaded_hostile_names_give_one_safe_row_each(checkpoint):
    """The web "Many files" CSV (BatchResult.csv_bytes from predict_files on uploads)."""
    from fracture.serve.batch import predict_files

    names = ["=cmd|' /C calc'!A0", "@SUM(1).png", "+HYPERLINK(\"x\").png", "-2+3.png", "a\rb.png", "ok.png"]
    result = predict_files([(n, _png_bytes(i)) for i, n in enumerate(names)] + [("=junk.png", b"junk")],
                           checkpoint, backend="torch")
    frame, rows = _both_ways(result.csv_bytes())
    expected = [_expected(n) for n in [*names, "=junk.png"]]
    assert frame["path"].tolist() == expected and [r["path"] for r in rows] == expected
    assert len(frame) == len(names) + 1 and frame["error"].tolist()[-1].startswith("not an image")
    assert all(0 <= float(r["probability"]) <= 1 for r in rows[:-1])


def test_folder_batch_and_studies_csv_are_safe(checkpoint, tmp_path):
    from fracture.serve.batch import predict_folder, write_report

    folder = tmp_path / "in"
    names = ["@SUM(1).png", "+HYPERLINK(1).png", "-2+3.png", "a\rb.png", "=1+1/x.png", "plain.png"]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_png_bytes(i))
    result = predict_folder(folder, checkpoint, backend="torch", studies=True)
    written = write_report(result, tmp_path / "out")
    frame, rows = _both_ways((tmp_path / "out" / "predictions.csv").read_bytes())
    assert sorted(frame["path"]) == sorted(_expected(n) for n in names) and len(rows) == len(names)
    studies, _ = _both_ways((tmp_path / "out" / "studies.csv").read_bytes())
    assert sorted(studies["study"]) == ["'=1+1", "."] and studies["images"].sum() == len(names)
    assert len(written) == 3


def test_scan_manifest_csv_is_safe(tmp_path, capsys):
    from fracture.cli import main

    root = tmp_path / "folders"
    for label in ("normal", "abnormal"):
        for i in range(4):
            path = root / label / f"=HYPERLINK({i}){label}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_png_bytes(i))
    assert main(["scan", str(root), "--out", str(tmp_path / "m.csv"), "--intensity-sample", "0", "--no-cache"]) == 0
    frame, _ = _both_ways((tmp_path / "m.csv").read_bytes())
    assert len(frame) == 8
    assert all(not str(c).startswith(FORMULA_PREFIXES) for c in frame.astype(str).to_numpy().ravel())
