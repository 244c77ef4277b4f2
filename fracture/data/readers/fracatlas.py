"""Reader for FracAtlas.

FracAtlas: Abedeen et al., "FracAtlas: A Dataset for Fracture Classification,
Localization and Segmentation of Musculoskeletal Radiographs", Scientific Data
10, 521 (2023), https://doi.org/10.1038/s41597-023-02432-4. 4,083 radiographs
(hand, leg, hip, shoulder, mixed), labelled fractured (1) / not fractured (0).
CC BY 4.0; download from https://doi.org/10.6084/m9.figshare.22363012.

Layout::

    ROOT/dataset.csv          image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,
                              fractured,fracture_count,frontal,lateral,oblique
    ROOT/images/Fractured/IMG0000019.jpg
    ROOT/images/Non_fractured/IMG0000000.jpg
    ROOT/duplicate_pairs.txt  (optional) "Fractured/IMG0002886.jpg Non_fractured/IMG0004243.jpg"

The label is the CSV's ``fractured`` column; where the folder disagrees (the
release has one such image, IMG0003298.jpg) the row is kept with the CSV label
and the disagreement is listed in ``problems``. FracAtlas has no patient ids,
so each image is its own study and its "patient" is its duplicate group:
images listed together in ``duplicate_pairs.txt`` share a group and therefore
a split, so one picture can never be on both sides.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fracture.data.imageio import has_image_extension
from fracture.data.boxes import read_fracatlas_boxes
from fracture.data.manifest import MANIFEST_COLUMNS, UNKNOWN_BODY_PART, DataProblem, Manifest, require_images
from fracture.data.readers._safe import entry_problem, leaves_root, read_csv_lines, read_text_lines, real_root
from fracture.data.splits import DEFAULT_FRACTIONS, split_groups, stratum_keys, union_groups
from fracture.errors import DatasetError

logger = logging.getLogger(__name__)

CSV_NAME = "dataset.csv"
IMAGES_DIR = "images"
DUPLICATES_NAME = "duplicate_pairs.txt"
CSV_COLUMNS = (
    "image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan",
    "fractured", "fracture_count", "frontal", "lateral", "oblique",
)
REGION_COLUMNS = ("hand", "leg", "hip", "shoulder")
EXTRA_COLUMNS = ("hardware", "multiscan", "frontal", "lateral", "oblique", "fracture_count")
"""Source-specific columns kept in the manifest after MANIFEST_COLUMNS."""
CLASS_NAMES = ("not fractured", "fractured")
# Normalised image sub-folder name -> label the folder implies.
_FOLDER_LABELS = {"fractured": 1, "nonfractured": 0, "notfractured": 0}


def find_fracatlas_root(root: str | os.PathLike[str]) -> Path | None:
    """The FracAtlas folder (with dataset.csv and images/) at ``root`` or in ``root/FracAtlas``."""
    root = Path(os.path.abspath(root))
    for candidate in (root, root / "FracAtlas"):
        if (candidate / CSV_NAME).exists() and (candidate / IMAGES_DIR).is_dir():  # a FIFO CSV is refused by name
            return candidate
    return None


def read_fracatlas(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    label_source: str = "csv",
) -> Manifest:
    """Read FracAtlas into a manifest with a seeded train/val/test split.

    Args:
        root: the folder holding ``dataset.csv`` and ``images/`` (or its parent
            when the folder is called ``FracAtlas``).
        seed: split seed; the split is identical on every machine for one seed.
        fractions: train/val/test shares (by images), split by duplicate
            group and stratified by label and body part.
        label_source: ``"csv"`` (default: the ``fractured`` column) or
            ``"folder"`` (Fractured/ vs Non_fractured/) where they disagree.

    Returns:
        A :class:`Manifest` (layout and source ``fracatlas``) with the extra
        columns ``hardware, multiscan, frontal, lateral, oblique, fracture_count``.

    Raises:
        DatasetError: no FracAtlas layout at ``root``, ``dataset.csv`` lacks
            columns, or ``label_source`` is unknown.
    """
    if label_source not in ("csv", "folder"):
        raise DatasetError(f"label_source must be 'csv' or 'folder', got {label_source!r}")
    folder = find_fracatlas_root(root)
    if folder is None:
        raise DatasetError(f"{root}: no FracAtlas dataset here (looked for {CSV_NAME} and {IMAGES_DIR}/)")
    problems: list[DataProblem] = []
    table = _read_csv(folder / CSV_NAME, problems)
    files = _image_files(folder / IMAGES_DIR, problems)

    rows: list[dict] = []
    for record in table.itertuples(index=False):
        image_id = record.image_id
        if image_id not in files:
            problems.append(DataProblem(
                str(folder / IMAGES_DIR / image_id),
                f"in {CSV_NAME} but not found in {IMAGES_DIR}/Fractured or {IMAGES_DIR}/Non_fractured; excluded",
            ))
            continue
        path, folder_label = files[image_id]
        label = int(record.fractured)
        if folder_label is not None and folder_label != label:
            chosen = label if label_source == "csv" else folder_label
            problems.append(DataProblem(
                str(path),
                f"sits in {path.parent.name}/ but {CSV_NAME} says fractured={label}; "
                f"kept with label {chosen} (from the {label_source})",
            ))
            label = chosen
        body_part = _body_part(record)
        if body_part == UNKNOWN_BODY_PART:
            problems.append(DataProblem(str(path), f"no body region set in {CSV_NAME}; body_part 'unknown'"))
        stem = Path(image_id).stem
        row = {
            "path": str(path), "label": label, "body_part": body_part,
            "patient_id": stem, "study_id": stem, "split": "train", "source": "fracatlas",
        }
        row.update({column: int(getattr(record, column)) for column in EXTRA_COLUMNS})
        rows.append(row)
    listed = set(table["image_id"])
    for image_id in sorted(set(files) - listed):
        problems.append(DataProblem(str(files[image_id][0]), f"image has no row in {CSV_NAME}; excluded (no label)"))

    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + list(EXTRA_COLUMNS))
    boxes = read_fracatlas_boxes(folder, [Path(p).name for p in frame["path"]], problems)
    frame["boxes"] = [boxes.get(Path(p).name, ()) for p in frame["path"]]
    pairs = _read_duplicate_pairs(folder / DUPLICATES_NAME, problems)
    groups = union_groups(frame["study_id"].tolist(), pairs)
    frame["patient_id"] = frame["study_id"].map(groups)
    frame["split"] = split_groups(
        frame["patient_id"], stratum_keys(frame["label"], frame["body_part"]), fractions, seed
    )
    logger.debug("FracAtlas %s: %d images, %d problems", folder, len(frame), len(problems))
    require_images(frame, folder, "fracatlas", problems)
    return Manifest(frame=frame, root=folder, layout="fracatlas", problems=problems, class_names=CLASS_NAMES)


def _read_csv(csv_path: Path, problems: list[DataProblem]) -> pd.DataFrame:
    """dataset.csv, sorted by image_id, with 0/1 columns checked; bad rows go to problems.

    Read line by line (not ``pd.read_csv``), so a line that is not UTF-8 or has
    the wrong number of fields is one problem naming the file and line, and
    every other row still loads.
    """
    header: list[str] | None = None
    records: list[list[str]] = []
    line_numbers: list[int] = []
    for number, fields in read_csv_lines(csv_path, problems):
        if header is None:
            header = [field.strip() for field in fields]
            missing = [column for column in CSV_COLUMNS if column not in header]
            if missing:
                raise DatasetError(
                    f"{csv_path}: missing column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}"
                )
            continue
        if len(fields) != len(header):
            problems.append(DataProblem(str(csv_path), f"{csv_path.name} line {number}: {len(fields)} fields where "
                                        f"the header has {len(header)}; skipped"))
            continue
        records.append(fields)
        line_numbers.append(number)
    if header is None:
        raise DatasetError(f"{csv_path}: empty; expected a header line {','.join(CSV_COLUMNS)} and one row per image")
    table = pd.DataFrame(records, columns=header, dtype=str)
    table["image_id"] = table["image_id"].str.strip()
    numeric = [c for c in CSV_COLUMNS if c != "image_id"]
    values = table[numeric].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | ~values["fractured"].isin([0, 1]) | (table["image_id"] == "")
    for index in table.index[bad]:
        problems.append(DataProblem(
            str(csv_path), f"{csv_path.name} line {line_numbers[index]} ({table.at[index, 'image_id']}): "
            "non-numeric or non-0/1 values; skipped"
        ))
    table = table.loc[~bad].copy()
    table[numeric] = values.loc[~bad].astype("int64")
    duplicated = table["image_id"].duplicated(keep="first")
    for image_id in table.loc[duplicated, "image_id"]:
        problems.append(DataProblem(str(csv_path), f"{image_id} has more than one row; kept the first"))
    table = table.loc[~duplicated]
    return table.sort_values("image_id", kind="stable").reset_index(drop=True)


def _image_files(images_dir: Path, problems: list[DataProblem]) -> dict[str, tuple[Path, int | None]]:
    """image file name -> (path, label implied by its folder or None).

    Nothing is opened: special files and links leaving the dataset folder are problems.
    """
    files: dict[str, tuple[Path, int | None]] = {}
    root_real = real_root(images_dir.parent)
    outside = leaves_root(images_dir, root_real)
    if outside is not None:
        problems.append(DataProblem(str(images_dir), f"symbolic link to {outside}, outside the dataset folder; "
                                    "not followed"))
        return files

    def usable(folder: Path) -> list[os.DirEntry]:
        with os.scandir(folder) as listing:
            entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
        kept = []
        for entry in entries:
            why = entry_problem(entry, root_real)
            if why is not None:
                problems.append(DataProblem(entry.path, why))
            else:
                kept.append(entry)
        return kept

    for sub in usable(images_dir):
        if not sub.is_dir():
            candidates, folder_label = [sub], None
        else:
            folder_label = _FOLDER_LABELS.get(_normalise(sub.name))
            candidates = usable(Path(sub.path))
        for entry in candidates:
            path = Path(entry.path)
            if not entry.is_file():
                continue
            if not has_image_extension(path):
                problems.append(DataProblem(str(path), "not an image file name; ignored"))
                continue
            if path.name in files:
                problems.append(DataProblem(str(path), f"same file name also at {files[path.name][0]}; kept the first"))
                continue
            files[path.name] = (path, folder_label)
    return files


def _read_duplicate_pairs(path: Path, problems: list[DataProblem]) -> list[tuple[str, str]]:
    """Pairs of image stems from duplicate_pairs.txt ('#' comments, blank lines ignored)."""
    if not (path.exists() or path.is_symlink()):
        return []
    pairs: list[tuple[str, str]] = []
    try:
        for number, line in read_text_lines(path, problems):  # a bad line is a problem, the rest load
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            tokens = text.split()
            if len(tokens) != 2:
                problems.append(DataProblem(str(path), f"{path.name} line {number}: expected two image paths, "
                                            f"got {line!r}; ignored"))
                continue
            pairs.append((Path(tokens[0]).stem, Path(tokens[1]).stem))
    except DatasetError as exc:  # optional file: a FIFO or unreadable one is reported, the dataset still loads
        problems.append(DataProblem(str(path), f"{exc}; duplicate pairs not used"))
    return pairs


def _body_part(record) -> str:
    """One region -> its name; several, or the 'mixed' flag -> 'mixed'; none -> 'unknown'."""
    regions = [column for column in REGION_COLUMNS if getattr(record, column) == 1]
    if record.mixed == 1 or len(regions) > 1:
        return "mixed"
    return regions[0] if regions else UNKNOWN_BODY_PART


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())
