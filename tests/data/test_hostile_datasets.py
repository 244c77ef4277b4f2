"""Hostile datasets: a bad CSV line is one problem (file and line) and the rest loads; empty classes
and one-class splits are problems; links leaving a data root and special files are refused, never opened."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from _fake_datasets import MURA_STUDIES, make_class_folders, make_fracatlas, make_mura, write_image
from fracture.cli import main
from fracture.data import open_dataset
from fracture.data.readers import read_folders, read_fracatlas, read_mura
from fracture.errors import DatasetError
from fracture.settings import Settings, check_data_path, get_settings

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
N_MURA_IMAGES = sum(study[5] for study in MURA_STUDIES)


def _problems(manifest, fragment: str) -> list[tuple[str, str]]:
    return [(p.path, p.reason) for p in manifest.problems if fragment in p.reason]


def _replace_line(path: Path, number: int, new: bytes) -> bytes:
    lines = path.read_bytes().splitlines(keepends=True)
    old = lines[number - 1]
    lines[number - 1] = new
    path.write_bytes(b"".join(lines))
    return old


# ----------------------------------------------------------------------- CSV rows


def test_a_non_utf8_byte_in_a_mura_csv_is_one_problem_and_the_rest_loads(tmp_path):
    root = make_mura(tmp_path)
    csv_path = root / "train_image_paths.csv"
    old = _replace_line(csv_path, 2, b"MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image\xff2.png\r\n")
    manifest = read_mura(root)
    bad = _problems(manifest, "not UTF-8")
    assert bad == [(str(csv_path), "train_image_paths.csv line 2: not UTF-8 text (byte 0xff at column 60); skipped")]
    # the image that line listed is on disk but now in no CSV: reported, not dropped silently
    assert any(old.decode().strip().rsplit("/", 1)[1] in p for p, _ in _problems(manifest, "in no CSV"))
    assert len(manifest) == N_MURA_IMAGES - 1


def test_a_bad_line_in_mura_study_labels_excludes_only_that_study(tmp_path):
    root = make_mura(tmp_path)
    csv_path = root / "train_labeled_studies.csv"
    _replace_line(csv_path, 1, b"MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/\x80,1\n")
    manifest = read_mura(root)
    assert [p for p, _ in _problems(manifest, "train_labeled_studies.csv line 1: not UTF-8")] == [str(csv_path)]
    assert len(manifest) == N_MURA_IMAGES - 2  # that study's two images have no label
    assert len(_problems(manifest, "no label")) == 2


def test_a_fracatlas_row_with_extra_fields_is_one_problem(tmp_path):
    make_fracatlas(tmp_path, n_images=20)
    csv_path = tmp_path / "dataset.csv"
    _replace_line(csv_path, 4, b"IMG0000002.jpg,0,0,1,0,0,0,0,0,0,1,0,0,EXTRA,FIELDS\n")
    manifest = read_fracatlas(tmp_path)
    assert _problems(manifest, "fields") == [
        (str(csv_path), "dataset.csv line 4: 15 fields where the header has 13; skipped")
    ]
    assert len(manifest) == 19
    assert [Path(p).name for p, _ in _problems(manifest, "no row in dataset.csv")] == ["IMG0000002.jpg"]


def test_fracatlas_non_utf8_and_non_numeric_rows_name_their_lines(tmp_path):
    make_fracatlas(tmp_path, n_images=20)
    csv_path = tmp_path / "dataset.csv"
    _replace_line(csv_path, 3, b"IMG0000001.jpg,0,1,0,0,0,0,0,0,0,1,0,\xe9\n")
    _replace_line(csv_path, 6, b"IMG0000004.jpg,0,0,0,0,0,0,0,maybe,0,1,0,0\n")
    manifest = read_fracatlas(tmp_path)
    reasons = [p.reason for p in manifest.problems if "dataset.csv line" in p.reason]
    assert reasons == [
        "dataset.csv line 3: not UTF-8 text (byte 0xe9 at column 38); skipped",
        "dataset.csv line 6 (IMG0000004.jpg): non-numeric or non-0/1 values; skipped",
    ]
    assert len(manifest) == 18


def test_fracatlas_duplicate_pairs_bad_line_and_special_file(tmp_path):
    make_fracatlas(tmp_path, n_images=12, duplicate_pairs=[(1, 2)])
    pairs = tmp_path / "duplicate_pairs.txt"
    pairs.write_bytes(pairs.read_bytes() + b"Fractured/\xffIMG.jpg Non_fractured/IMG0000003.jpg\n")
    manifest = read_fracatlas(tmp_path)
    assert [r for _, r in _problems(manifest, "duplicate_pairs.txt line 3")] == [
        "duplicate_pairs.txt line 3: not UTF-8 text (byte 0xff at column 11); skipped"]
    frame = manifest.frame.set_index("study_id")
    assert frame.loc["IMG0000001", "split"] == frame.loc["IMG0000002", "split"]
    if hasattr(os, "mkfifo"):
        pairs.unlink()
        os.mkfifo(pairs)
        manifest = read_fracatlas(tmp_path)
        assert len(manifest) == 12 and _problems(manifest, "duplicate pairs not used")


@needs_fifo
def test_a_fifo_metadata_csv_is_a_dataset_error_not_a_hang(tmp_path, capsys):
    make_fracatlas(tmp_path, n_images=8)
    (tmp_path / "dataset.csv").unlink()
    os.mkfifo(tmp_path / "dataset.csv")
    assert main(["scan", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "dataset.csv" in err[0] and "not a regular file" in err[0]


def test_cli_missing_column_is_one_error_line(tmp_path, capsys):
    make_fracatlas(tmp_path, n_images=8)
    csv_path = tmp_path / "dataset.csv"
    _replace_line(csv_path, 1, b"image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fracture_count,"
                               b"frontal,lateral,oblique\n")
    assert main(["scan", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.csv" in err[0] and "fractured" in err[0]


# ---------------------------------------------------------------- class folders


def test_an_empty_class_folder_and_a_one_class_split_are_problems(tmp_path):
    make_class_folders(tmp_path, splits={"train": "train", "val": "val", "test": "test"}, per_class=3)
    for image in (tmp_path / "test" / "fractured").iterdir():
        image.unlink()
    manifest = read_folders(tmp_path)
    assert _problems(manifest, "class folder holds no images") == [
        (str(tmp_path / "test" / "fractured"), "class folder holds no images; that class is empty here")
    ]
    one_class = _problems(manifest, "split holds only")
    assert len(one_class) == 1 and "test split holds only 'not fractured'" in one_class[0][1]
    assert len(manifest) == 15  # the rest loads


def test_a_split_without_one_class_folder_is_a_problem(tmp_path):
    make_class_folders(tmp_path, splits={"train": "train", "val": "val", "test": "test"}, per_class=2)
    for image in (tmp_path / "val" / "not fractured").iterdir():
        image.unlink()
    (tmp_path / "val" / "not fractured").rmdir()
    manifest = read_folders(tmp_path)
    assert [r for _, r in _problems(manifest, "split holds only")] == [
        "the val split holds only 'fractured' images (no 'not fractured'); it cannot be validated or tested: "
        "add images of both classes"]


def test_healthy_class_folders_have_no_problems(tmp_path):
    make_class_folders(tmp_path, splits={"train": "train", "val": "val", "test": "test"}, per_class=2)
    assert read_folders(tmp_path).problems == []


# ------------------------------------------------------------------- symlinks


def test_a_symlinked_class_folder_leaving_the_root_is_refused(tmp_path):
    data = make_class_folders(tmp_path / "data", splits={"train": "train", "val": "val", "test": "test"},
                              per_class=2)
    outside = tmp_path / "elsewhere" / "secret"
    write_image(outside / "private.png")
    extra = data / "train" / "more"
    extra.mkdir()
    (extra / "fractured").symlink_to(outside, target_is_directory=True)
    (data / "train" / "fractured" / "link.png").symlink_to(outside / "private.png")
    manifest = read_folders(data)
    refused = _problems(manifest, "outside the dataset folder")
    assert sorted(Path(p).name for p, _ in refused) == ["fractured", "link.png"]
    assert all(str(outside) in r for _, r in refused)
    assert not {Path(p).name for p in manifest.frame["path"]} & {"private.png", "link.png"}
    assert len(manifest) == 12


def test_a_symlinked_folder_inside_the_root_is_read_once(tmp_path):
    data = make_class_folders(tmp_path / "data", splits={"train": "train", "val": "val", "test": "test"},
                              per_class=2)
    (data / "test" / "again").symlink_to(data / "train" / "fractured", target_is_directory=True)
    manifest = read_folders(data)
    assert len(manifest) == 12  # the train images are not read a second time into test
    assert _problems(manifest, "already read")


def test_a_symlinked_split_folder_leaving_the_root_is_refused(tmp_path):
    data = make_class_folders(tmp_path / "data", splits={"train": "train", "val": "val"}, per_class=2)
    make_class_folders(tmp_path / "outside", splits={"test": "test"}, per_class=2)
    (data / "test").symlink_to(tmp_path / "outside" / "test", target_is_directory=True)
    manifest = read_folders(data)
    assert [Path(p).name for p, _ in _problems(manifest, "outside the dataset folder")] == ["test"]
    assert not manifest.frame["path"].str.contains("outside").any()


def test_mura_and_fracatlas_refuse_links_out_of_the_folder(tmp_path):
    root = make_mura(tmp_path / "m")
    write_image(tmp_path / "secret.png")
    study = root / "train/XR_WRIST/patient00001/study1_positive"
    (study / "image1.png").unlink()
    (study / "image1.png").symlink_to(tmp_path / "secret.png")
    manifest = read_mura(root)
    assert [Path(p).name for p, _ in _problems(manifest, "outside the dataset folder")] == ["image1.png"]
    assert not _problems(manifest, "missing on disk")  # reported once, as the link it is
    assert len(manifest) == N_MURA_IMAGES - 1

    # a whole study folder linked outside: one problem, its images not also "missing on disk"
    study = root / "train/XR_HAND/patient00004/study1_negative"
    moved = tmp_path / "moved_study"
    study.rename(moved)
    study.symlink_to(moved, target_is_directory=True)
    manifest = read_mura(root)
    assert len(_problems(manifest, "outside the dataset folder")) == 2
    assert not _problems(manifest, "missing on disk")
    assert len(manifest) == N_MURA_IMAGES - 3

    atlas = make_fracatlas(tmp_path / "f", n_images=8)
    (atlas / "images" / "Non_fractured" / "IMG0000001.jpg").unlink()
    (atlas / "images" / "Non_fractured" / "IMG0000001.jpg").symlink_to(tmp_path / "secret.png")
    manifest = read_fracatlas(atlas)
    assert [Path(p).name for p, _ in _problems(manifest, "outside the dataset folder")] == ["IMG0000001.jpg"]
    assert len(manifest) == 7


def test_detection_refuses_a_dataset_folder_that_is_a_link_out(tmp_path):
    make_mura(tmp_path / "real")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "MURA-v1.1").symlink_to(tmp_path / "real" / "MURA-v1.1", target_is_directory=True)
    with pytest.raises(DatasetError, match="outside"):
        open_dataset(tmp_path / "root")


def test_check_data_path_refuses_links_leaving_a_data_root(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "inside").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (allowed / "escape").symlink_to(tmp_path / "private", target_is_directory=True)
    (allowed / "loop").symlink_to(allowed / "loop")
    settings = Settings(**{**get_settings().__dict__, "data_roots": (allowed,)})
    assert check_data_path(allowed / "inside", settings) == (allowed / "inside").resolve()
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        check_data_path(allowed / "escape", settings)
    with pytest.raises(DatasetError):
        check_data_path(allowed / "loop", settings)


# -------------------------------------------------------------- special files


@needs_fifo
def test_fifos_named_like_images_are_problems_never_opened(tmp_path):
    data = make_class_folders(tmp_path / "c", splits={"train": "train", "val": "val", "test": "test"},
                              per_class=2)
    os.mkfifo(data / "train" / "fractured" / "hang.jpg")
    manifest = open_dataset(data)
    assert [(Path(p).name, r) for p, r in _problems(manifest, "FIFO")] == [
        ("hang.jpg", "a FIFO (named pipe), not a regular file; ignored (never opened)")]
    assert len(manifest) == 12

    mura = make_mura(tmp_path / "m")
    os.mkfifo(mura / "train/XR_WRIST/patient00001/study1_positive/image5.png")
    assert len(_problems(read_mura(mura), "FIFO")) == 1

    atlas = make_fracatlas(tmp_path / "f", n_images=8)
    (atlas / "images" / "Fractured" / "IMG0000000.jpg").unlink()
    os.mkfifo(atlas / "images" / "Fractured" / "IMG0000000.jpg")
    manifest = read_fracatlas(atlas)
    assert [Path(p).name for p, _ in _problems(manifest, "FIFO")] == ["IMG0000000.jpg"]
    assert len(manifest) == 7



@needs_fifo
def test_scan_lists_the_fifo_as_a_problem(tmp_path, capsys):
    data = make_class_folders(tmp_path / "c", splits={"train": "train", "val": "val", "test": "test"},
                              per_class=2)
    os.mkfifo(data / "val" / "fractured" / "pipe.png")
    assert main(["scan", str(data), "--problems", "5"]) == 0
    out = capsys.readouterr().out
    assert "problems: 1" in out and "pipe.png" in out
