"""Hostile command lines: a bad number names its option or field in one line before anything is written,
and ``scan --json`` lists every problem (file, reason) that the text summary lists."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture.cli import main
from fracture.errors import ConfigError
from fracture.recipes.config import TrainConfig


def _folders(root: Path) -> Path:
    for label in ("normal", "abnormal"):
        for i in range(4):
            (root / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / label / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (40, 50), np.uint8))
    (root / "abnormal" / "bad.png").write_bytes(b"junk")
    return root


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--seed", "4294967296"), ("--problems", "-3"),
                                         ("--sample", "x")])
def test_scan_numbers_name_the_option(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["scan", str(_folders(tmp_path / "d")), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and "Traceback" not in err


@pytest.mark.parametrize("field, value", [("seed", -1), ("split_seed", 2**32), ("seed", 1.5), ("seed", True)])
def test_train_seeds_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        TrainConfig(data="x", **{field: value}).validate()


def test_train_seed_minus_one_is_one_line_and_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(_folders(tmp_path / "d")), "--model", "small_cnn",
                 "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: seed=-1: use a whole number in 0..4294967295 (--seed)"
    assert not out.exists()


def test_scan_json_lists_the_problems_and_unreadable_files(tmp_path, capsys):
    root = _folders(tmp_path / "d")
    out = tmp_path / "scan.json"
    assert main(["scan", str(root), "--json", str(out), "--no-cache"]) == 0
    result = json.loads(out.read_text())
    from fracture.data import open_dataset

    expected = [{"path": str(p.path), "reason": str(p.reason)} for p in open_dataset(root).problems]
    assert expected and result["problems"] == expected  # the same list the text summary prints
    unreadable = {Path(r["path"]).name: r["reason"] for r in result["unreadable"]}
    assert unreadable == {"bad.png": "not_an_image"}


@pytest.mark.parametrize("n", ["100000", "-1"])
def test_export_check_images_is_bounded_before_any_work(tmp_path, capsys, monkeypatch, n):
    import fracture.serve.export as export

    def refuse(*_args, **_kwargs):  # nothing may be drawn or exported for a refused N
        raise AssertionError("work started")

    monkeypatch.setattr(export, "demo_images", refuse)
    monkeypatch.setattr(export, "export_checked", refuse)
    monkeypatch.setattr(export, "export_onnx", refuse)
    out = tmp_path / "model.onnx"
    assert main(["export", "--out", str(out), "--check-images", n]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: --check-images {n}: give 0 (no check) to 256"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_deep_preprocess_spec_is_one_typed_line(tmp_path, capsys):
    from fracture.errors import PreprocessError
    from fracture.preprocess.pipeline import Pipeline

    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(PreprocessError, match="preprocessing spec: is nested 100000 levels deep"):
        Pipeline.from_spec(deep)
    with pytest.raises(PreprocessError, match="not valid JSON"):
        Pipeline.from_spec("[{")
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), "--preprocess", deep]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "neither a preset" in err[-1] and "(is 195 KB, over the 64 KB limit" in err[-1]
    assert not (tmp_path / "run").exists()
