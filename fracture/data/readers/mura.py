"""Reader for the MURA-v1.1 layout (and the synthetic demo set, which copies it).

MURA: Rajpurkar et al., "MURA: Large Dataset for Abnormality Detection in
Musculoskeletal Radiographs", MIDL 2018 (arXiv:1712.06957). 40,561 upper-limb
radiographs in 14,863 studies of seven body parts, labelled normal (0) or
abnormal (1) per study by radiologists. Download (free registration) from
https://stanfordmlgroup.github.io/competitions/mura/.

Layout::

    MURA-v1.1/
      train_image_paths.csv        MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png
      train_labeled_studies.csv    MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1
      valid_image_paths.csv
      valid_labeled_studies.csv
      train/XR_<PART>/patientNNNNN/studyN_{positive,negative}/imageN.png
      valid/...

The CSVs have no header; their paths start with the dataset folder's name,
which is stripped so a renamed folder still works. Labels come from
``*_labeled_studies.csv``. MURA's ``valid`` set is the test split here (its
real test set is hidden); a validation split is carved out of ``train`` by
patient. A ``DEMO.txt`` file in the folder marks the synthetic demo set.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from fracture.data.boxes import demo_boxes
from fracture.data.manifest import MANIFEST_COLUMNS, DataProblem, Manifest, require_images
from fracture.data.readers._safe import entry_problem, leaves_root, read_csv_lines, real_root
from fracture.data.splits import leaking_groups, split_groups, stratum_keys
from fracture.errors import DatasetError

logger = logging.getLogger(__name__)

MURA_FOLDER = "MURA-v1.1"
MURA_CSVS = (
    "train_image_paths.csv",
    "train_labeled_studies.csv",
    "valid_image_paths.csv",
    "valid_labeled_studies.csv",
)
# MURA folder name -> our split name (before the val carve-out).
MURA_SPLITS = {"train": "train", "valid": "test"}
DEMO_MARKER = "DEMO.txt"
CLASS_NAMES = ("normal", "abnormal")
_STUDY_SUFFIXES = ("_positive", "_negative")


def find_mura_root(root: str | os.PathLike[str]) -> Path | None:
    """The MURA folder at ``root`` or directly inside it, or None.

    Accepts the ``MURA-v1.1`` folder itself or its parent (preferring a child
    called ``MURA-v1.1``, then the first other child, by name, that has the CSVs).
    """
    root = Path(os.path.abspath(root))
    if _has_mura_csv(root):
        return root
    if not root.is_dir():
        return None
    if _has_mura_csv(root / MURA_FOLDER):
        return root / MURA_FOLDER
    for child in sorted(root.iterdir()):
        if child.is_dir() and _has_mura_csv(child):
            return child
    return None


def read_mura(root: str | os.PathLike[str], *, seed: int = 0, val_fraction: float = 0.10) -> Manifest:
    """Read a MURA-v1.1 layout into a manifest.

    Args:
        root: the ``MURA-v1.1`` folder or its parent.
        seed: seed of the train/val carve-out.
        val_fraction: share of MURA-train images (whole patients) moved to ``val``.

    Returns:
        A :class:`Manifest` (layout ``mura``, source ``mura`` or ``demo``).
        Listed-but-missing images, studies missing on disk and images on disk
        that no CSV lists are in ``problems``; images without a study label
        are excluded from the frame.

    Raises:
        DatasetError: no MURA CSVs under ``root``, one of the four CSVs is
            missing, or ``val_fraction`` is outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    mura_dir = find_mura_root(root)
    if mura_dir is None:
        raise DatasetError(
            f"{root}: no MURA-v1.1 dataset here (looked for train_labeled_studies.csv "
            f"in it and in its sub-folders, e.g. {MURA_FOLDER}/)"
        )
    missing = [name for name in MURA_CSVS if not (mura_dir / name).is_file()]
    if missing:
        raise DatasetError(f"{mura_dir}: MURA CSV file(s) missing: {', '.join(missing)}")

    problems: list[DataProblem] = []
    rows: list[dict] = []
    listed_images: set[str] = set()
    for mura_split, split in MURA_SPLITS.items():
        labels = _read_study_labels(mura_dir, mura_split, problems)
        images = _read_image_list(mura_dir, mura_split, problems)
        listed_images.update(images)
        on_disk = _files_on_disk(mura_dir, mura_split, problems)
        _report_missing_studies(mura_dir, mura_split, labels, problems)
        study_ids = _study_ids(labels)
        csv_name = f"{mura_split}_image_paths.csv"
        for rel in images:
            if rel not in on_disk:
                if on_disk.is_refused(rel):  # a special file or a link out of the folder: reported already
                    continue
                problems.append(DataProblem(
                    _join(mura_dir, rel), f"listed in {csv_name} but missing on disk; excluded"
                ))
                continue
            study = rel.rsplit("/", 1)[0]
            if study not in labels:
                problems.append(DataProblem(
                    _join(mura_dir, rel),
                    f"its study is not in {mura_split}_labeled_studies.csv (no label); excluded",
                ))
                continue
            _, part_dir, patient, _, _ = rel.split("/")
            rows.append({
                "path": _join(mura_dir, rel),
                "label": labels[study],
                "body_part": _body_part(part_dir),
                "patient_id": patient,
                "study_id": study_ids[study],
                "split": split,
                "source": "mura",
            })
        for rel in sorted(on_disk - listed_images):
            problems.append(DataProblem(
                _join(mura_dir, rel), f"on disk but in no CSV (not in {csv_name}); excluded"
            ))

    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if _is_demo(root, mura_dir):
        frame["source"] = "demo"
        frame["boxes"] = demo_boxes(_demo_folder(root, mura_dir), frame["path"].tolist())
    frame = _carve_val(frame, val_fraction, seed)
    for patient in leaking_groups(frame):
        problems.append(DataProblem(patient, "patient appears in both MURA train and valid; kept as MURA splits them"))
    logger.debug("MURA %s: %d images, %d problems", mura_dir, len(frame), len(problems))
    require_images(frame, mura_dir, "mura", problems)
    return Manifest(frame=frame, root=mura_dir, layout="mura", problems=problems, class_names=CLASS_NAMES)


# ---------------------------------------------------------------- CSV parsing


def _has_mura_csv(folder: Path) -> bool:
    return (folder / "train_labeled_studies.csv").is_file()


def _csv_relative(entry: str) -> str:
    """'MURA-v1.1/train/XR_X/p/s/' -> 'train/XR_X/p/s': drop the first component.

    Plain string work: pathlib costs seconds on MURA's 40k rows.
    """
    parts = [part for part in entry.strip().replace("\\", "/").split("/") if part and part != "."]
    return "/".join(parts[1:])


def _read_rows(path: Path, problems: list[DataProblem]) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their line numbers; a bad line (not UTF-8, not CSV) is a problem, the rest load."""
    return list(read_csv_lines(path, problems))


def _read_study_labels(mura_dir: Path, mura_split: str, problems: list[DataProblem]) -> dict[str, int]:
    """study folder (relative, no trailing slash) -> label, from *_labeled_studies.csv."""
    csv_path = mura_dir / f"{mura_split}_labeled_studies.csv"
    labels: dict[str, int] = {}
    for number, row in _read_rows(csv_path, problems):
        where = f"{csv_path.name} line {number}"
        if len(row) < 2 or row[1].strip() not in ("0", "1"):
            problems.append(DataProblem(
                str(csv_path), f"{where}: expected 'study_path/,0|1', got {','.join(row)!r}; skipped"
            ))
            continue
        study = _csv_relative(row[0])
        if not _has_shape(study, 4, mura_split):
            problems.append(DataProblem(str(csv_path), f"{where}: study path {row[0]!r} is not "
                                        f"{mura_split}/XR_<PART>/patient<N>/study<N>_...; skipped"))
            continue
        label = int(row[1].strip())
        if labels.setdefault(study, label) != label:
            problems.append(DataProblem(str(mura_dir / study), f"{where}: study listed twice with different labels; "
                                        f"kept the first ({labels[study]})"))
        _check_folder_label(mura_dir, study, label, problems)
    return labels


def _read_image_list(mura_dir: Path, mura_split: str, problems: list[DataProblem]) -> list[str]:
    """Relative image paths from *_image_paths.csv, in file order, without repeats."""
    csv_path = mura_dir / f"{mura_split}_image_paths.csv"
    images: dict[str, None] = {}
    for number, row in _read_rows(csv_path, problems):
        rel = _csv_relative(row[0])
        if not _has_shape(rel, 5, mura_split):
            problems.append(DataProblem(str(csv_path), f"{csv_path.name} line {number}: image path {row[0]!r} is not "
                                        f"{mura_split}/XR_<PART>/patient<N>/study<N>_.../<image>; skipped"))
            continue
        if rel in images:
            problems.append(DataProblem(str(mura_dir / rel), f"{csv_path.name} line {number}: listed twice; kept once"))
            continue
        images[rel] = None
    return list(images)


def _join(mura_dir: Path, rel: str) -> str:
    """Absolute path string of a '/'-separated path relative to the dataset folder."""
    return str(mura_dir) + os.sep + rel.replace("/", os.sep)


def _has_shape(rel: str, depth: int, mura_split: str) -> bool:
    parts = rel.split("/")
    return len(parts) == depth and parts[0] == mura_split and parts[1].upper().startswith("XR_")


def _check_folder_label(mura_dir: Path, study: str, label: int, problems: list[DataProblem]) -> None:
    folder = study.rsplit("/", 1)[-1]
    named = 1 if folder.endswith("_positive") else 0 if folder.endswith("_negative") else None
    if named is not None and named != label:
        problems.append(DataProblem(str(mura_dir / study), f"folder name says {folder.rsplit('_', 1)[-1]} but the "
                                    f"CSV label is {label}; using the CSV label"))


# -------------------------------------------------------------------- on disk


class _FilesOnDisk(set):
    """Relative paths of the usable files; ``refused`` holds those reported as problems instead."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: set[str] = set()

    def is_refused(self, rel: str) -> bool:
        """``rel`` or a folder above it was refused (e.g. a study folder linked outside the dataset)."""
        parts = rel.split("/")
        return any("/".join(parts[:depth]) in self.refused for depth in range(1, len(parts) + 1))


def _files_on_disk(mura_dir: Path, mura_split: str, problems: list[DataProblem]) -> _FilesOnDisk:
    """Relative paths of the files at split/XR_*/patient*/study*/<file> (hidden entries skipped).

    ``os.scandir`` rather than ``Path.glob``: several times faster on 40k files.
    Nothing is opened: special files (a FIFO named ``image1.png``) and links
    that leave the dataset folder are reported in ``problems`` and refused.
    """
    found = _FilesOnDisk()
    root_real = real_root(mura_dir)

    def walk(folder: str, rel: str, depth: int) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                child = f"{rel}/{entry.name}"
                why = entry_problem(entry, root_real)
                if why is not None:
                    problems.append(DataProblem(entry.path, why))
                    found.refused.add(child)
                elif depth == 3:
                    if entry.is_file():
                        found.add(child)
                elif entry.is_dir():
                    walk(entry.path, child, depth + 1)

    split_dir = mura_dir / mura_split
    if split_dir.is_dir():
        outside = leaves_root(split_dir, root_real)
        if outside is not None:
            problems.append(DataProblem(str(split_dir), f"symbolic link to {outside}, outside the dataset folder; "
                                        "not followed"))
        else:
            walk(str(split_dir), mura_split, 0)
    return found


def _report_missing_studies(
    mura_dir: Path, mura_split: str, labels: dict[str, int], problems: list[DataProblem]
) -> None:
    csv_name = f"{mura_split}_labeled_studies.csv"
    base = str(mura_dir)
    for study in sorted(labels):
        if not os.path.isdir(os.path.join(base, study)):
            problems.append(DataProblem(str(mura_dir / study), f"study listed in {csv_name} but missing on disk"))


def _study_ids(labels: dict[str, int]) -> dict[str, str]:
    """Study folder -> id without the _positive/_negative suffix (kept where that would collide)."""
    short = {study: _strip_suffix(study) for study in labels}
    counts: dict[str, int] = {}
    for value in short.values():
        counts[value] = counts.get(value, 0) + 1
    return {study: (value if counts[value] == 1 else study) for study, value in short.items()}


def _strip_suffix(study: str) -> str:
    for suffix in _STUDY_SUFFIXES:
        if study.endswith(suffix):
            return study[: -len(suffix)]
    return study


def _body_part(part_dir: str) -> str:
    """'XR_WRIST' -> 'wrist'."""
    return part_dir[3:].lower()


def _demo_folder(root: str | os.PathLike[str], mura_dir: Path) -> Path | None:
    """The folder holding DEMO.txt: the dataset folder, the folder given, or the folder around it."""
    places = (mura_dir, Path(os.path.abspath(root)), mura_dir.parent)
    return next((place for place in places if (place / DEMO_MARKER).is_file()), None)


def _is_demo(root: str | os.PathLike[str], mura_dir: Path) -> bool:
    return _demo_folder(root, mura_dir) is not None


def _carve_val(frame: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Move ``val_fraction`` of the train images, whole patients, stratified by part and label, to val."""
    train = frame["split"] == "train"
    if val_fraction == 0 or not train.any():
        return frame
    subset = frame.loc[train]
    frame.loc[train, "split"] = split_groups(
        subset["patient_id"],
        stratum_keys(subset["body_part"], subset["label"]),
        fractions={"train": 1.0 - val_fraction, "val": val_fraction},
        seed=seed,
    )
    return frame
