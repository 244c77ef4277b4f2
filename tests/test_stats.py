"""Dataset statistics from headers, the intensity histogram, and the scan/stats CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _fake_datasets import MURA_STUDIES, make_class_folders, make_mura, write_image
from fracture.cli import main
from fracture.data import dataset_stats, intensity_histogram, open_dataset
from fracture.data.readers import read_folders, read_mura

SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}


def test_counts_overall_per_split_and_body_part(tmp_path):
    make_mura(tmp_path)
    manifest = read_mura(tmp_path, val_fraction=0.2)
    stats = dataset_stats(manifest)
    frame = manifest.frame
    overall = stats.overall
    assert overall["images"] == len(frame) == sum(s[5] for s in MURA_STUDIES)
    assert overall["studies"] == len(MURA_STUDIES)
    assert overall["patients"] == len({s[2] for s in MURA_STUDIES})
    assert overall["positive_studies"] == sum(s[4] for s in MURA_STUDIES)
    assert overall["positives"] == sum(s[4] * s[5] for s in MURA_STUDIES)
    assert overall["fingerprint"] == manifest.fingerprint()
    assert list(stats.by_split["split"]) == ["train", "val", "test"]
    assert stats.by_split["images"].sum() == len(frame)
    assert stats.by_split.set_index("split").loc["test", "studies"] == 3
    wrist = stats.by_body_part.set_index("body_part").loc["wrist"]
    assert (wrist["images"], wrist["studies"], wrist["patients"]) == (7, 4, 3)
    assert stats.by_label.set_index("label")["images"].sum() == len(frame)
    assert stats.by_label.set_index("label").loc[1, "class_name"] == "abnormal"
    assert stats.by_split_body_part["images"].sum() == len(frame)


def test_headers_sizes_modes_and_unreadable(tmp_path):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=2)
    write_image(tmp_path / "train" / "fractured" / "wide.png", size=(40, 20))
    (tmp_path / "val" / "fractured" / "broken.png").write_text("not really a png")
    manifest = read_folders(tmp_path)
    stats = dataset_stats(manifest)
    assert stats.headers_read == stats.headers_total == len(manifest) == 14
    assert len(stats.headers) == 13
    assert stats.unreadable["path"].str.endswith("broken.png").tolist() == [True]
    assert stats.unreadable["reason"].tolist() == ["not_an_image"]
    assert stats.headers["width"].max() == 40 and stats.headers["height"].min() == 16
    assert stats.modes.to_dict(orient="records") == [{"format": "PNG", "mode": "L", "bit_depth": 8, "images": 13}]
    assert stats.sizes.loc["count", "width"] == 13


def test_header_sample_limits_reads_and_is_seeded(tmp_path):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=5)
    manifest = read_folders(tmp_path)
    first = dataset_stats(manifest, sample=7, seed=1)
    assert first.headers_read == 7 and len(first.headers) == 7 and first.headers_total == 30
    assert first.headers["path"].tolist() == dataset_stats(manifest, sample=7, seed=1).headers["path"].tolist()


def test_to_dict_is_json(tmp_path):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=2)
    text = json.dumps(dataset_stats(read_folders(tmp_path)).to_dict())
    loaded = json.loads(text)
    assert loaded["overall"]["images"] == 12
    assert loaded["sizes"]["width"]["mean"] == 16.0


def test_intensity_histogram_per_class(tmp_path):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=3)
    (tmp_path / "test" / "fractured" / "broken.png").write_bytes(b"")
    manifest = read_folders(tmp_path)
    histogram = intensity_histogram(manifest, n_sample=100, seed=0)
    assert set(histogram["class_name"]) == {"not fractured", "fractured"}
    sums = histogram.groupby("label")["fraction"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    images = histogram.groupby("label")["images"].first().to_dict()
    assert images == {0: 9, 1: 9}  # the empty file was skipped ...
    assert [u["reason"] for u in histogram.attrs["unreadable"]] == ["empty"]  # ... and listed
    small = intensity_histogram(manifest, n_sample=4, seed=0)
    assert small.groupby("label")["images"].first().to_dict() == {0: 2, 1: 2}


# ------------------------------------------------------------------------ CLI


def test_cli_scan_prints_counts_problems_and_writes_manifest(tmp_path, capsys):
    make_mura(tmp_path / "data", unlisted_image=True)
    out = tmp_path / "out" / "manifest.csv"
    assert main(["scan", str(tmp_path / "data"), "--out", str(out), "--seed", "2", "--problems", "5"]) == 0
    printed = capsys.readouterr().out
    assert "layout:      mura" in printed
    assert "problems: 1" in printed and "image9.png" in printed
    assert "wrist" in printed and "abnormal" in printed
    written = open_dataset(tmp_path / "data", seed=2)
    assert len(pd.read_csv(out)) == len(written)


def test_cli_stats_json_and_table(tmp_path, capsys):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=2)
    assert main(["stats", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overall"]["layout"] == "folders" and data["headers_read"] == 12
    assert main(["stats", str(tmp_path), "--sample", "3"]) == 0
    assert "image headers read: 3 of 12" in capsys.readouterr().out


def test_cli_on_non_dataset_exits_2(tmp_path, capsys):
    assert main(["scan", str(tmp_path)]) == 2
    assert "not a dataset layout" in capsys.readouterr().err


@pytest.mark.integration
def test_real_fracatlas_stats_from_headers(fracatlas_root):
    stats = dataset_stats(open_dataset(fracatlas_root), sample=300)
    assert stats.headers_read == 300 and stats.unreadable.empty
    assert stats.headers["width"].max() <= 512 and stats.headers["height"].max() <= 512
    assert stats.overall["images"] == 3445
