"""Dataset readers, layout detection and the manifest, on fake trees (plus the real FracAtlas)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from _fake_datasets import MURA_STUDIES, make_class_folders, make_fracatlas, make_mura, write_image
from fracture.data import MANIFEST_COLUMNS, SPLITS, Manifest, open_dataset
from fracture.data.detect import detect_layout
from fracture.data.manifest import validate_frame
from fracture.data.readers import read_folders, read_fracatlas, read_mura
from fracture.data.splits import leaking_groups
from fracture.errors import DatasetError


def _reasons(manifest: Manifest, fragment: str) -> list[str]:
    return [p.path for p in manifest.problems if fragment in p.reason]


def _check_manifest(manifest: Manifest) -> None:
    frame = manifest.frame
    assert tuple(frame.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert set(frame["split"]) <= set(SPLITS)
    assert set(frame["label"]) <= {0, 1}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    assert leaking_groups(frame) == []


# ----------------------------------------------------------------------- MURA


def test_mura_reads_labels_parts_and_ids(tmp_path):
    make_mura(tmp_path)
    manifest = read_mura(tmp_path)
    _check_manifest(manifest)
    frame = manifest.frame
    assert len(frame) == sum(study[5] for study in MURA_STUDIES)
    assert manifest.layout == "mura" and set(frame["source"]) == {"mura"}
    assert manifest.class_names == ("normal", "abnormal")
    assert manifest.body_parts == ["elbow", "finger", "hand", "shoulder", "wrist"]
    row = frame[frame["path"].str.endswith("train/XR_WRIST/patient00001/study1_positive/image1.png")].iloc[0]
    assert (row["label"], row["body_part"], row["patient_id"]) == (1, "wrist", "patient00001")
    assert row["study_id"] == "train/XR_WRIST/patient00001/study1"
    assert manifest.problems == []


def test_mura_valid_is_test_and_val_carved_by_patient(tmp_path):
    make_mura(tmp_path)
    frame = read_mura(tmp_path, val_fraction=0.3, seed=1).frame
    from_valid = frame["study_id"].str.startswith("valid/")
    assert (frame.loc[from_valid, "split"] == "test").all()
    assert set(frame.loc[~from_valid, "split"]) == {"train", "val"}
    assert frame.groupby("patient_id")["split"].nunique().max() == 1


def test_mura_val_fraction_zero_and_bad(tmp_path):
    make_mura(tmp_path)
    assert "val" not in set(read_mura(tmp_path, val_fraction=0.0).frame["split"])
    with pytest.raises(DatasetError, match="val_fraction"):
        read_mura(tmp_path, val_fraction=1.0)


def test_mura_root_may_be_folder_or_parent_or_renamed(tmp_path):
    folder = make_mura(tmp_path)
    from_parent = read_mura(tmp_path)
    from_folder = read_mura(folder)
    assert from_parent.root == from_folder.root == folder
    assert from_parent.fingerprint() == from_folder.fingerprint()
    renamed = folder.rename(tmp_path / "mura_copy")  # CSV paths still say MURA-v1.1/...
    manifest = read_mura(renamed)
    assert len(manifest) == len(from_folder) and manifest.problems == []


def test_mura_fingerprint_same_on_another_machine_path(tmp_path):
    first = read_mura(make_mura(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere")
    second = read_mura(tmp_path / "elsewhere")
    assert first.fingerprint() == second.fingerprint()
    assert first.fingerprint() != read_mura(tmp_path / "a", seed=5, val_fraction=0.4).fingerprint()


def test_mura_problems_reported_not_dropped(tmp_path):
    make_mura(tmp_path, missing_study=True, unlisted_image=True, missing_image=True)
    manifest = read_mura(tmp_path)
    assert any("patient00099" in p for p in _reasons(manifest, "missing on disk"))
    assert any(p.endswith("image7.png") for p in _reasons(manifest, "listed in train_image_paths.csv"))
    unlisted = _reasons(manifest, "in no CSV")
    assert len(unlisted) == 1 and unlisted[0].endswith("study1_positive/image9.png")
    paths = set(manifest.frame["path"])
    assert not any(p.endswith(("image9.png", "image7.png")) for p in paths)
    assert len(manifest) == sum(study[5] for study in MURA_STUDIES)


def test_mura_folder_label_disagreement_uses_csv(tmp_path):
    root = make_mura(tmp_path)
    csv_path = root / "train_labeled_studies.csv"
    text = csv_path.read_text().replace("patient00003/study1_positive/,1", "patient00003/study1_positive/,0")
    csv_path.write_text(text)
    manifest = read_mura(root)
    rows = manifest.frame[manifest.frame["patient_id"] == "patient00003"]
    assert (rows["label"] == 0).all()
    assert any("patient00003" in p for p in _reasons(manifest, "folder name says positive"))


def test_mura_missing_csv_and_demo_marker(tmp_path):
    root = make_mura(tmp_path, demo=True)
    assert set(read_mura(root).frame["source"]) == {"demo"}
    (root / "valid_image_paths.csv").unlink()
    with pytest.raises(DatasetError, match="valid_image_paths.csv"):
        read_mura(root)


# ------------------------------------------------------------------ FracAtlas


def test_fracatlas_labels_parts_and_extra_columns(tmp_path):
    make_fracatlas(tmp_path, n_images=40)
    manifest = read_fracatlas(tmp_path)
    _check_manifest(manifest)
    frame = manifest.frame
    assert len(frame) == 40 and frame["label"].sum() == 10
    assert manifest.class_names == ("not fractured", "fractured")
    assert set(frame["body_part"]) == {"hand", "leg", "hip", "shoulder", "mixed"}
    assert frame.set_index("study_id").loc["IMG0000007", "body_part"] == "mixed"
    assert frame.set_index("study_id").loc["IMG0000001", "body_part"] == "leg"
    for column in ("hardware", "multiscan", "frontal", "lateral", "oblique", "fracture_count"):
        assert column in frame.columns
    assert (frame["study_id"] == frame["patient_id"]).all()  # no duplicates file: each image alone


def test_fracatlas_duplicates_share_a_split(tmp_path):
    pairs = [(1, 2), (2, 3), (3, 5), (10, 20), (30, 31)]  # 1-2-3-5 is a chain
    make_fracatlas(tmp_path, n_images=60, duplicate_pairs=pairs)
    for seed in range(5):
        frame = read_fracatlas(tmp_path, seed=seed).frame.set_index("study_id")
        for a, b in pairs:
            ids = (f"IMG{a:07d}", f"IMG{b:07d}")
            assert frame.loc[ids[0], "split"] == frame.loc[ids[1], "split"]
            assert frame.loc[ids[0], "patient_id"] == frame.loc[ids[1], "patient_id"]
        assert frame.loc["IMG0000005", "patient_id"] == "IMG0000001"


def test_fracatlas_folder_csv_disagreement_keeps_csv_label(tmp_path):
    make_fracatlas(tmp_path, n_images=20, folder_csv_disagreement=5)
    manifest = read_fracatlas(tmp_path)
    row = manifest.frame.set_index("study_id").loc["IMG0000005"]
    assert row["label"] == 0 and "Fractured" in row["path"]
    assert len(_reasons(manifest, "says fractured=0")) == 1
    assert read_fracatlas(tmp_path, label_source="folder").frame.set_index("study_id").loc["IMG0000005", "label"] == 1


def test_fracatlas_missing_and_unlisted_files_reported(tmp_path):
    make_fracatlas(tmp_path, n_images=20, missing_file=3, extra_file=True)
    manifest = read_fracatlas(tmp_path)
    assert len(manifest) == 19
    assert [Path(p).name for p in _reasons(manifest, "not found in images")] == ["IMG0000003.jpg"]
    assert [Path(p).name for p in _reasons(manifest, "no row in dataset.csv")] == ["IMG9999999.jpg"]


def test_fracatlas_split_deterministic_and_proportional(tmp_path):
    make_fracatlas(tmp_path, n_images=200)
    first = read_fracatlas(tmp_path, seed=3)
    assert first.fingerprint() == read_fracatlas(tmp_path, seed=3).fingerprint()
    shares = first.frame["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.70) < 0.03 and abs(shares["test"] - 0.15) < 0.03
    custom = read_fracatlas(tmp_path, fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    assert abs((custom.frame["split"] == "train").mean() - 0.5) < 0.03


def test_fracatlas_missing_column(tmp_path):
    make_fracatlas(tmp_path, n_images=8)
    table = pd.read_csv(tmp_path / "dataset.csv").drop(columns=["fractured"])
    table.to_csv(tmp_path / "dataset.csv", index=False)
    with pytest.raises(DatasetError, match="fractured"):
        read_fracatlas(tmp_path)


@pytest.mark.integration
def test_real_fracatlas(fracatlas_root):
    manifest = read_fracatlas(fracatlas_root)
    frame = manifest.frame
    csv_table = pd.read_csv(fracatlas_root / "dataset.csv")
    assert len(frame) == 3445
    # dataset.csv is the label source: 613 positives; the Fractured/ folder holds 614 files,
    # the difference being IMG0003298.jpg, reported as a problem.
    assert frame["label"].sum() == csv_table["fractured"].sum() == 613
    assert len(list((fracatlas_root / "images" / "Fractured").glob("*.jpg"))) == 614
    assert [Path(p.path).name for p in manifest.problems] == ["IMG0003298.jpg"]
    shares = frame["split"].value_counts(normalize=True)
    for split, share in {"train": 0.70, "val": 0.15, "test": 0.15}.items():
        assert abs(shares[split] - share) < 0.02
    by_id = frame.set_index("study_id")["split"]
    pairs = [line.split() for line in (fracatlas_root / "duplicate_pairs.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(pairs) == 83
    for a, b in pairs:
        assert by_id[Path(a).stem] == by_id[Path(b).stem], (a, b)
    assert leaking_groups(frame) == []
    assert manifest.fingerprint() == read_fracatlas(fracatlas_root).fingerprint()
    assert open_dataset(fracatlas_root).fingerprint() == manifest.fingerprint()


# ------------------------------------------------------------- class folders


@pytest.mark.parametrize("split_names,class_names", [
    ({"train": "train", "val": "val", "test": "test"}, ("not fractured", "fractured")),
    ({"train": "Training", "val": "Validation", "test": "TESTING"}, ("Non_fractured", "Fracture")),
    ({"train": "train", "val": "valid", "test": "test"}, ("non-fractured", "FRACTURED")),
    ({"train": "train", "val": "val", "test": "test"}, ("negative", "positive")),
])
def test_folders_split_layout_name_variants(tmp_path, split_names, class_names):
    make_class_folders(tmp_path, splits=split_names, classes=class_names, per_class=3)
    manifest = read_folders(tmp_path)
    _check_manifest(manifest)
    frame = manifest.frame
    assert frame.groupby(["split", "label"]).size().to_dict() == {
        (split, label): 3 for split in SPLITS for label in (0, 1)
    }
    for label, class_dir in enumerate(class_names):
        assert (frame.loc[frame["path"].str.contains(f"/{class_dir}/", regex=False), "label"] == label).all()
    assert set(frame["body_part"]) == {"unknown"}
    assert (frame["patient_id"] == frame["study_id"]).all() and frame["study_id"].is_unique


def test_folders_flat_layout_gets_seeded_split(tmp_path):
    make_class_folders(tmp_path, classes=("normal", "abnormal"), per_class=20, suffix=".jpg")
    manifest = read_folders(tmp_path, seed=4)
    assert manifest.class_names == ("normal", "abnormal")
    frame = manifest.frame
    assert frame["split"].value_counts().to_dict() == {"train": 28, "val": 6, "test": 6}
    assert frame.groupby("split")["label"].sum().to_dict() == {"test": 3, "train": 14, "val": 3}
    assert manifest.fingerprint() == read_folders(tmp_path, seed=4).fingerprint()


def test_folders_nested_files_and_body_part_level(tmp_path):
    splits = {"train": "train", "test": "test"}
    make_class_folders(tmp_path / "data", splits=splits, per_class=4, nested="batch1/deep")
    for split in splits.values():
        write_image(tmp_path / "data" / split / "XR_WRIST" / "fractured" / "w.png")
    (tmp_path / "data" / "train" / "fractured" / "readme.txt").write_text("notes")
    manifest = read_folders(tmp_path / "data")
    frame = manifest.frame
    assert len(frame) == 2 * (2 * 4 + 1)
    assert set(frame.loc[frame["path"].str.endswith("w.png"), "body_part"]) == {"wrist"}
    assert set(frame["split"]) == {"train", "val", "test"}  # val carved from train
    assert any(p.endswith("readme.txt") for p in _reasons(manifest, "not an image"))


def test_folders_two_folders_for_one_split_raise(tmp_path):
    make_class_folders(tmp_path, splits={"train": "train", "val": "val", "test": "valid"}, per_class=1)
    with pytest.raises(DatasetError, match="val"):
        read_folders(tmp_path)


# ------------------------------------------------------------------ detection


def test_open_dataset_detects_each_layout(tmp_path):
    make_mura(tmp_path / "m")
    make_fracatlas(tmp_path / "f", n_images=12)
    make_class_folders(tmp_path / "c", splits={"train": "train", "val": "val", "test": "test"}, per_class=2)
    assert open_dataset(tmp_path / "m").layout == "mura"
    assert open_dataset(tmp_path / "f").layout == "fracatlas"
    assert open_dataset(tmp_path / "c").layout == "folders"
    assert detect_layout(tmp_path / "m") == ("mura", tmp_path / "m" / "MURA-v1.1")


def test_open_dataset_looks_inside_single_wrapper_folder(tmp_path):
    make_fracatlas(tmp_path / "download" / "fracatlas_v2", n_images=8)
    assert open_dataset(tmp_path / "download").layout == "fracatlas"


def test_open_dataset_on_non_dataset_lists_layouts(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError) as info:
        open_dataset(tmp_path)
    message = str(info.value)
    for expected in ("MURA-v1.1", "FracAtlas", "class folders", "dataset.csv", str(tmp_path)):
        assert expected in message


def test_open_dataset_missing_root_and_file_root(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        open_dataset(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        open_dataset(tmp_path / "file.txt")


def test_open_dataset_passes_and_checks_reader_options(tmp_path):
    make_mura(tmp_path)
    assert "val" not in set(open_dataset(tmp_path, val_fraction=0.0).frame["split"])
    with pytest.raises(DatasetError, match="fractions"):
        open_dataset(tmp_path, fractions={"train": 1.0})


# ------------------------------------------------------------------- manifest


def _frame(**overrides) -> pd.DataFrame:
    row = {"path": "/data/a.png", "label": 1, "body_part": "hand", "patient_id": "p1",
           "study_id": "s1", "split": "train", "source": "folders"}
    row.update(overrides)
    return pd.DataFrame([row])


@pytest.mark.parametrize("overrides,match", [
    ({"label": 2}, "0 or 1"),
    ({"split": "valid"}, "split"),
    ({"source": "kaggle"}, "source"),
    ({"body_part": "Hand"}, "lower case"),
    ({"path": "relative/a.png"}, "absolute"),
    ({"patient_id": None}, "empty"),
])
def test_validate_frame_rejects_bad_values(overrides, match):
    with pytest.raises(DatasetError, match=match):
        validate_frame(_frame(**overrides))


def test_validate_frame_missing_column_and_extra_columns_kept():
    with pytest.raises(DatasetError, match="study_id"):
        validate_frame(_frame().drop(columns=["study_id"]))
    frame = validate_frame(_frame(hardware=1)[["hardware", *MANIFEST_COLUMNS]])
    assert list(frame.columns) == [*MANIFEST_COLUMNS, "hardware"]


def test_manifest_subset_and_unknown_split(tmp_path):
    make_mura(tmp_path)
    manifest = read_mura(tmp_path)
    test = manifest.subset("test")
    assert len(test) == 5 and (test["split"] == "test").all() and list(test.index) == list(range(5))
    with pytest.raises(DatasetError, match="valid"):
        manifest.subset("valid")


def test_layout_without_images_raises(tmp_path):
    (tmp_path / "fractured").mkdir()
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "list.txt").write_text("x")
    with pytest.raises(DatasetError, match="no usable images.*list.txt"):
        open_dataset(tmp_path)
