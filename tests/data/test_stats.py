"""Dataset statistics (headers, intensities, cache), the intensity histogram, and the scan CLI."""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fracture.data.header_cache as header_cache_module
from _fake_datasets import MURA_STUDIES, make_class_folders, make_mura, write_image
from fracture.cli import main
from fracture.data import dataset_stats, intensity_histogram, open_dataset
from fracture.data.header_cache import HeaderCache, scan_headers
from fracture.data.readers import read_folders, read_mura

SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Every test gets its own empty header cache (never the user's)."""
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture()
def read_counts(monkeypatch):
    """Count header reads and decodes per path, still doing the real work."""
    counts = {"header": Counter(), "decode": Counter()}
    real_header, real_load = header_cache_module.read_image_header, header_cache_module.load_image

    def counting_header(path):
        counts["header"][str(path)] += 1
        return real_header(path)

    def counting_load(path, **kwargs):
        counts["decode"][str(path)] += 1
        return real_load(path, **kwargs)

    monkeypatch.setattr(header_cache_module, "read_image_header", counting_header)
    monkeypatch.setattr(header_cache_module, "load_image", counting_load)
    return counts


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


# ---------------------------------------------------------------- the cache


def test_second_scan_reads_no_header_and_decodes_nothing(tmp_path, read_counts):
    make_class_folders(tmp_path / "data", splits=SPLIT_NAMES, per_class=3)
    manifest = read_folders(tmp_path / "data")
    first = dataset_stats(manifest)
    assert sum(read_counts["header"].values()) == len(manifest) == 18
    assert sum(read_counts["decode"].values()) == 18  # a small set: every image decoded
    assert first.scan["headers_read_now"] == 18 and first.scan["headers_from_cache"] == 0
    read_counts["header"].clear()
    read_counts["decode"].clear()
    second = dataset_stats(manifest)
    assert not read_counts["header"] and not read_counts["decode"]
    assert second.scan["headers_from_cache"] == 18 and second.scan["intensities_from_cache"] == 18
    pd.testing.assert_frame_equal(first.headers, second.headers)
    pd.testing.assert_frame_equal(first.intensities, second.intensities)


def test_changed_file_is_read_again(tmp_path, read_counts):
    make_class_folders(tmp_path / "data", splits=SPLIT_NAMES, per_class=2)
    manifest = read_folders(tmp_path / "data")
    dataset_stats(manifest)
    changed = tmp_path / "data" / "val" / "fractured" / "img10.png"
    before = os.stat(changed)
    write_image(changed, value=200, size=(48, 24))
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    read_counts["header"].clear()
    read_counts["decode"].clear()
    stats = dataset_stats(manifest)
    assert dict(read_counts["header"]) == {str(changed): 1}
    assert dict(read_counts["decode"]) == {str(changed): 1}
    row = stats.headers.set_index("path").loc[str(changed)]
    assert (row["width"], row["height"]) == (48, 24)
    assert stats.intensities.set_index("path").loc[str(changed), "width"] == 48


def test_touching_a_file_invalidates_it(tmp_path, read_counts):
    paths = [str(write_image(tmp_path / f"img{i}.png")) for i in range(3)]
    with HeaderCache(tmp_path / "h.sqlite") as cache:
        scan_headers(paths, cache=cache)
        st = os.stat(paths[1])
        os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5))  # same bytes, new mtime
        read_counts["header"].clear()
        records, counts = scan_headers(paths, cache=cache)
    assert dict(read_counts["header"]) == {paths[1]: 1}
    assert (counts.cached, counts.read) == (2, 1)
    assert [r.path for r in records] == paths


def test_parallel_scan_keeps_order_and_matches_serial(tmp_path):
    paths = [str(write_image(tmp_path / f"{i:03d}.png", size=(8 + i % 9, 8))) for i in range(300)]
    parallel, _ = scan_headers(paths[::-1], workers=4)
    serial, _ = scan_headers(paths[::-1], workers=1)
    assert parallel == serial
    assert [r.path for r in parallel] == paths[::-1]
    assert [r.width for r in parallel] == [8 + i % 9 for i in range(299, -1, -1)]


def test_process_workers_give_the_thread_result(tmp_path):
    paths = [str(write_image(tmp_path / f"{i:03d}.png", size=(8 + i % 5, 9))) for i in range(260)]
    (tmp_path / "999.png").write_text("not an image")
    paths.append(str(tmp_path / "999.png"))
    with HeaderCache(tmp_path / "h.sqlite") as cache:
        in_processes, counts = scan_headers(paths, cache=cache, processes=2)
    threads, _ = scan_headers(paths, processes=0)
    assert in_processes == threads and counts.read == 261
    assert in_processes[-1].reason == "not_an_image"


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    db = tmp_path / "headers.sqlite"
    db.write_bytes(b"this is not an sqlite database" * 40)
    path = str(write_image(tmp_path / "a.png"))
    with HeaderCache(db) as cache:
        scan_headers([path], cache=cache)
        assert len(cache) == 1


def test_unusable_cache_folder_scans_without_cache(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(blocker / "cache"))
    make_class_folders(tmp_path / "data", splits=SPLIT_NAMES, per_class=1)
    stats = dataset_stats(read_folders(tmp_path / "data"))
    assert stats.scan["cache"] is None and len(stats.headers) == 6
    assert "without the header cache" in caplog.text and "FRACTURE_CACHE_DIR" in caplog.text


# ------------------------------------------------------- intensities, studies


def test_intensity_figures_on_known_images(tmp_path):
    root = tmp_path / "data"
    known = {
        "half": np.hstack([np.zeros((10, 5), np.uint8), np.full((10, 5), 200, np.uint8)]),  # 0..200, mean 100
        "flat": np.full((6, 9), 77, np.uint8),
        "ramp": np.arange(256, dtype=np.uint8).reshape(16, 16),
    }
    paths = {}
    for split in SPLIT_NAMES:
        for label, folder in enumerate(("not fractured", "fractured")):
            for name, pixels in known.items():
                path = root / split / folder / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
                paths[str(path)] = pixels
    stats = dataset_stats(read_folders(root))
    assert len(stats.intensities) == len(paths) == 18
    for row in stats.intensities.itertuples(index=False):
        pixels = paths[row.path]
        assert (row.min, row.max) == (pixels.min(), pixels.max())
        assert row.mean == pytest.approx(pixels.mean())
        assert row.std == pytest.approx(pixels.std())
        assert (row.height, row.width) == pixels.shape
    summary = stats.intensity_summary
    assert summary.loc["count", "mean"] == 18
    assert summary.loc["max", "max"] == 255 and summary.loc["min", "min"] == 0
    assert summary.loc["mean", "mean"] == pytest.approx((100 + 77 + 127.5) / 3)


def test_intensity_sample_is_seeded_and_bounded(tmp_path):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=5)
    manifest = read_folders(tmp_path)
    first = dataset_stats(manifest, intensity_sample=7, seed=3)
    again = dataset_stats(manifest, intensity_sample=7, seed=3, cache=False)
    assert first.intensity_sampled == len(first.intensities) == 7
    assert first.intensities["path"].tolist() == again.intensities["path"].tolist()
    assert len(dataset_stats(manifest, intensity_sample=0).intensities) == 0


def test_unreadable_files_listed_with_stage_reason_and_message(tmp_path):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=2)
    empty = tmp_path / "train" / "fractured" / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "val" / "fractured" / "notes.png"
    text.write_text("not really a png")
    cut = tmp_path / "test" / "not fractured" / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])  # header intact, pixel data cut short
    stats = dataset_stats(read_folders(tmp_path))
    table = stats.unreadable.set_index("path")
    assert table.loc[str(empty), ["stage", "reason"]].tolist() == ["header", "empty"]
    assert table.loc[str(text), ["stage", "reason"]].tolist() == ["header", "not_an_image"]
    assert table.loc[str(cut), ["stage", "reason"]].tolist() == ["decode", "truncated"]
    assert len(table) == 3  # header failures are not decoded (and listed) twice
    for path, row in table.iterrows():
        assert row["message"].startswith(path) and row["reason"].replace("_", " ") in row["message"]
    assert str(cut) in stats.headers["path"].tolist()  # its header was fine
    assert str(cut) not in stats.intensities["path"].tolist()


def test_unreadable_failures_are_cached_too(tmp_path, read_counts):
    make_class_folders(tmp_path, splits=SPLIT_NAMES, per_class=1)
    (tmp_path / "val" / "fractured" / "broken.png").write_text("nope")
    manifest = read_folders(tmp_path)
    dataset_stats(manifest)
    read_counts["header"].clear()
    again = dataset_stats(manifest)
    assert not read_counts["header"]
    assert again.unreadable["reason"].tolist() == ["not_an_image"]


def test_images_per_study_distribution(tmp_path):
    make_mura(tmp_path)
    stats = dataset_stats(read_mura(tmp_path, val_fraction=0.2), intensity_sample=0)
    expected = Counter(s[5] for s in MURA_STUDIES)
    table = stats.images_per_study
    every = table[table["split"] == "all"].set_index("images_per_study")["studies"].to_dict()
    assert every == dict(expected)
    per_split = table[table["split"] != "all"].groupby("images_per_study")["studies"].sum().to_dict()
    assert per_split == dict(expected)
    test_rows = table[table["split"] == "test"].set_index("images_per_study")["studies"].to_dict()
    assert test_rows == dict(Counter(s[5] for s in MURA_STUDIES if s[0] == "valid"))
    assert stats.overall["images_per_study_max"] == 3
    assert stats.overall["images_per_study_mean"] == pytest.approx(
        sum(s[5] for s in MURA_STUDIES) / len(MURA_STUDIES))


def test_cli_scan_json_file_has_counts_sizes_modes_and_unreadable(tmp_path, capsys):
    make_class_folders(tmp_path / "data", splits=SPLIT_NAMES, per_class=2)
    write_image(tmp_path / "data" / "train" / "fractured" / "wide.png", size=(40, 20))
    (tmp_path / "data" / "test" / "fractured" / "broken.png").write_text("not an image")
    out = tmp_path / "out" / "scan.json"
    assert main(["scan", str(tmp_path / "data"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "images per split x body part x class" in printed and "grey levels of 13 decoded" in printed
    assert "unreadable files: 1" in printed and "broken.png: not an image" in printed
    data = json.loads(out.read_text())
    assert data["overall"]["images"] == 14
    assert sum(row["images"] for row in data["by_split_body_part"]) == 14
    assert {row["split"]: row["studies"] for row in data["by_split"]} == {"train": 5, "val": 4, "test": 5}
    assert data["sizes"]["width"]["max"] == 40
    assert data["modes"] == [{"format": "PNG", "mode": "L", "bit_depth": 8, "images": 13}]
    assert [(u["stage"], u["reason"]) for u in data["unreadable"]] == [("header", "not_an_image")]
    assert len(data["headers"]) == 13 and len(data["intensities"]) == 13
    assert data["intensity_summary"]["mean"]["count"] == 13
    assert main(["scan", str(tmp_path / "data")]) == 0
    assert "14 from cache, 0 read now" in capsys.readouterr().out


@pytest.mark.integration
def test_real_fracatlas_stats_from_headers(fracatlas_root):
    stats = dataset_stats(open_dataset(fracatlas_root), sample=300, intensity_sample=20)
    assert stats.headers_read == 300 and stats.unreadable.empty
    assert stats.headers["width"].max() <= 512 and stats.headers["height"].max() <= 512
    assert stats.overall["images"] == 3445
    assert len(stats.intensities) == 20 and stats.intensities["max"].max() <= 255


def test_undecodable_file_name_is_read_but_not_cached(tmp_path):
    name = os.fsdecode(b"bad-\xff-name.png")
    try:
        path = str(write_image(tmp_path / name))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    with HeaderCache(tmp_path / "h.sqlite") as cache:
        first, _ = scan_headers([path], cache=cache)
        second, counts = scan_headers([path], cache=cache)
    assert first[0].ok and second[0].width == 16
    assert (counts.cached, counts.read) == (0, 1)
