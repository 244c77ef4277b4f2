"""Tiny fake datasets in the layouts the readers understand, built in tmp_path.

Images are 16x16 generated grayscale PNG/JPEG files (a few hundred bytes
each), so a whole fake MURA or FracAtlas tree is written in milliseconds.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (16, 16)) -> Path:
    """A small gray image with a gradient, in the format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    gradient = np.linspace(0, 60, width, dtype=np.float64)[None, :].repeat(height, axis=0)
    pixels = np.clip(gradient + value - 30, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# ---------------------------------------------------------------------- MURA

# (split, part, patient, study, label, images)
MURA_STUDIES = [
    ("train", "XR_WRIST", "patient00001", "study1", 1, 2),
    ("train", "XR_WRIST", "patient00001", "study2", 0, 1),
    ("train", "XR_WRIST", "patient00002", "study1", 0, 2),
    ("train", "XR_HAND", "patient00003", "study1", 1, 1),
    ("train", "XR_HAND", "patient00004", "study1", 0, 2),
    ("train", "XR_ELBOW", "patient00005", "study1", 1, 3),
    ("train", "XR_ELBOW", "patient00006", "study1", 0, 1),
    ("train", "XR_SHOULDER", "patient00007", "study1", 1, 2),
    ("train", "XR_SHOULDER", "patient00008", "study1", 0, 1),
    ("train", "XR_SHOULDER", "patient00009", "study1", 1, 1),
    ("train", "XR_FINGER", "patient00010", "study1", 0, 2),
    ("train", "XR_FINGER", "patient00011", "study1", 1, 1),
    ("valid", "XR_WRIST", "patient11185", "study1", 1, 2),
    ("valid", "XR_HAND", "patient11186", "study1", 0, 1),
    ("valid", "XR_ELBOW", "patient11187", "study1", 0, 2),
]


def make_mura(
    parent: Path,
    *,
    folder: str = "MURA-v1.1",
    studies=MURA_STUDIES,
    missing_study: bool = False,
    unlisted_image: bool = False,
    missing_image: bool = False,
    demo: bool = False,
) -> Path:
    """Write a MURA-v1.1 tree with its four header-less CSVs under ``parent/folder``.

    Args:
        missing_study: add a labelled study to train_labeled_studies.csv that is not on disk.
        unlisted_image: put an extra image on disk that no CSV lists.
        missing_image: list an image in train_image_paths.csv that is not on disk.
        demo: write the DEMO.txt marker.

    Returns:
        The dataset folder (``parent/folder``).
    """
    root = parent / folder
    image_rows: dict[str, list[str]] = {"train": [], "valid": []}
    study_rows: dict[str, list[tuple[str, int]]] = {"train": [], "valid": []}
    for index, (split, part, patient, study, label, count) in enumerate(studies):
        study_dir = f"{split}/{part}/{patient}/{study}_{'positive' if label else 'negative'}"
        study_rows[split].append((f"MURA-v1.1/{study_dir}/", label))
        for image in range(1, count + 1):
            rel = f"{study_dir}/image{image}.png"
            write_image(root / rel, value=60 + 10 * index)
            image_rows[split].append(f"MURA-v1.1/{rel}")
    if missing_study:
        study_rows["train"].append(("MURA-v1.1/train/XR_WRIST/patient00099/study1_negative/", 0))
    if unlisted_image:
        write_image(root / "train/XR_WRIST/patient00001/study1_positive/image9.png")
    if missing_image:
        image_rows["train"].append("MURA-v1.1/train/XR_WRIST/patient00002/study1_negative/image7.png")
    for split in ("train", "valid"):
        with (root / f"{split}_image_paths.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([row] for row in image_rows[split])
        with (root / f"{split}_labeled_studies.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(study_rows[split])
    if demo:
        (root / "DEMO.txt").write_text("synthetic demo set\n")
    return root


# ----------------------------------------------------------------- FracAtlas

FRACATLAS_HEADER = [
    "image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan",
    "fractured", "fracture_count", "frontal", "lateral", "oblique",
]
_REGIONS = ("hand", "leg", "hip", "shoulder")


def make_fracatlas(
    root: Path,
    *,
    n_images: int = 60,
    duplicate_pairs: list[tuple[int, int]] = (),
    folder_csv_disagreement: int | None = None,
    missing_file: int | None = None,
    extra_file: bool = False,
) -> Path:
    """Write a FracAtlas tree: dataset.csv, images/Fractured, images/Non_fractured.

    Image ``i`` is ``IMG{i:07d}.jpg``; every 4th image is fractured; regions
    cycle hand/leg/hip/shoulder and every 7th image is 'mixed' (two regions).

    Args:
        duplicate_pairs: index pairs written to duplicate_pairs.txt.
        folder_csv_disagreement: an index whose file goes to Fractured/ while
            the CSV says fractured=0 (the IMG0003298 quirk).
        missing_file: an index whose CSV row has no file.
        extra_file: add an image file that has no CSV row.
    """
    rows = []
    for i in range(n_images):
        name = f"IMG{i:07d}.jpg"
        fractured = int(i % 4 == 0)
        regions = {region: 0 for region in _REGIONS}
        regions[_REGIONS[i % 4]] = 1
        mixed = int(i % 7 == 0)
        if mixed:
            regions[_REGIONS[(i + 1) % 4]] = 1
        folder = "Fractured" if fractured or i == folder_csv_disagreement else "Non_fractured"
        if i != missing_file:
            write_image(root / "images" / folder / name, value=80 + i % 50)
        rows.append([name, *regions.values(), mixed, i % 3 == 0, 0, fractured, fractured, 1, i % 2, 0])
    if extra_file:
        write_image(root / "images" / "Non_fractured" / "IMG9999999.jpg")
    with (root / "dataset.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FRACATLAS_HEADER)
        writer.writerows([[int(v) if isinstance(v, bool) else v for v in row] for row in rows])
    if duplicate_pairs:
        lines = ["# pairs of identical images"]
        for a, b in duplicate_pairs:
            lines.append(f"{_folder(rows[a])}/{rows[a][0]} {_folder(rows[b])}/{rows[b][0]}")
        (root / "duplicate_pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def _folder(row: list) -> str:
    return "Fractured" if row[8] else "Non_fractured"


# -------------------------------------------------------------- class folders


def make_class_folders(
    root: Path,
    *,
    splits: dict[str, str] | None = None,
    classes: tuple[str, str] = ("not fractured", "fractured"),
    per_class: int = 6,
    nested: str = "",
    suffix: str = ".png",
) -> Path:
    """Write ``root/<split>/<class>/<nested>/imgN<suffix>`` (or ``root/<class>/...`` when splits is None).

    Args:
        splits: our split name -> folder name to write, e.g. {"train": "Training"}.
        classes: folder names for label 0 and label 1.
        per_class: images per class per split.
        nested: an extra folder level below the class folder ('' for none).
    """
    tops = [""] if splits is None else list(splits.values())
    for top in tops:
        for label, class_dir in enumerate(classes):
            for i in range(per_class):
                folder = root / top / class_dir / nested if top else root / class_dir / nested
                write_image(folder / f"img{label}{i}{suffix}", value=70 + 20 * label + i)
    return root
