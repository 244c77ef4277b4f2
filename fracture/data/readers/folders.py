"""Reader for plain class-folder datasets (e.g. Bone Fracture Multi-Region X-ray).

Two shapes are understood::

    ROOT/{train,val,test}/{fractured,not fractured}/**/*.png    splits given
    ROOT/{fractured,normal}/**/*.jpg                            one pool, split 70/15/15 here

Folder names are matched ignoring case, spaces, underscores and hyphens:
``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing``;
``fractured``/``fracture``/``positive``/``abnormal`` are label 1 and
``not fractured``/``non_fractured``/``nonfractured``/``normal``/``negative``
label 0. A folder level named after a body part (``wrist``, ``XR_HAND``...)
sets ``body_part``; otherwise it is ``unknown``. Nothing links images to
patients, so each image is its own study and patient. When ``train`` is given
but ``val`` or ``test`` is not, each missing split takes 15% of ``train``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fracture.data.imageio import has_image_extension
from fracture.data.readers._safe import leaves_root, real_root, walk
from fracture.data.manifest import (
    KNOWN_BODY_PARTS,
    MANIFEST_COLUMNS,
    SPLITS,
    UNKNOWN_BODY_PART,
    DataProblem,
    Manifest,
    require_images,
)
from fracture.data.splits import DEFAULT_FRACTIONS, split_groups, stratum_keys
from fracture.errors import DatasetError

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
CLASS_ALIASES = {
    "fractured": 1, "fracture": 1, "positive": 1, "abnormal": 1,
    "notfractured": 0, "nonfractured": 0, "nonfracture": 0, "notfracture": 0,
    "normal": 0, "negative": 0,
}
CARVE_FRACTION = 0.15
"""Share of ``train`` moved to each of ``val``/``test`` when the folder lacks it."""
_SKIPPED_DIRS = ("__macosx",)


def normalise_name(name: str) -> str:
    """'Not_Fractured' -> 'notfractured': lower case without spaces, '_' or '-'."""
    return "".join(ch for ch in name.lower() if ch not in " _-")


def find_folders_root(root: str | os.PathLike[str]) -> Path | None:
    """``root`` when it is a class-folder layout (split folders holding class
    folders, or class folders of both labels side by side), else None."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        return None
    split_dirs = _split_dirs(root)
    if split_dirs and any(_class_dirs_below(folder) for folder in _flatten(split_dirs)):
        return root
    labels = {CLASS_ALIASES[normalise_name(d.name)] for d in _subdirs(root) if normalise_name(d.name) in CLASS_ALIASES}
    return root if labels == {0, 1} else None


def read_folders(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
) -> Manifest:
    """Read a class-folder dataset into a manifest.

    Args:
        root: the dataset folder.
        seed: seed of any split made here (flat layout, or missing val/test).
        fractions: train/val/test shares for a flat layout.

    Returns:
        A :class:`Manifest` (layout and source ``folders``). Non-image files,
        unknown folders and images with no class folder above them are in
        ``problems``.

    Raises:
        DatasetError: ``root`` is not a class-folder layout, or two folders
            name the same split (e.g. ``val`` and ``valid``).
    """
    folder = find_folders_root(root)
    if folder is None:
        raise DatasetError(
            f"{root}: no class folders here (looked for train/val/test folders holding "
            f"fractured/not fractured folders, or fractured and normal folders side by side)"
        )
    problems: list[DataProblem] = []
    root_real = real_root(folder)
    split_dirs = _split_dirs(folder)
    seen_names: set[str] = set()
    class_counts: dict[Path, int] = {}
    seen: set[str] = set()  # real folders read so far: a linked folder is never read into two splits
    if split_dirs:
        rows = []
        for split in SPLITS:
            for split_dir in split_dirs.get(split, []):
                outside = leaves_root(split_dir, root_real)
                if outside is not None:
                    problems.append(DataProblem(
                        str(split_dir), f"symbolic link to {outside}, outside the dataset folder; not followed"
                    ))
                    continue
                rows += _collect(folder, split_dir, split, problems, seen_names, root_real, class_counts, seen)
        _report_unused_top_level(folder, set(_flatten(split_dirs)), problems, "not a split folder")
        frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
        frame = _carve_missing_splits(frame, set(split_dirs), seed)
    else:
        rows = _collect(folder, folder, "train", problems, seen_names, root_real, class_counts, seen)
        frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
        if len(frame):
            frame["split"] = split_groups(
                frame["patient_id"], stratum_keys(frame["label"], frame["body_part"]), fractions, seed
            )
    class_names = ("normal", "abnormal") if seen_names & {"normal", "abnormal"} else ("not fractured", "fractured")
    for class_dir, count in sorted(class_counts.items()):
        if count == 0:
            problems.append(DataProblem(str(class_dir), "class folder holds no images; that class is empty here"))
    problems += split_class_problems(frame, folder, class_names)
    logger.debug("class folders %s: %d images, %d problems", folder, len(frame), len(problems))
    require_images(frame, folder, "folders", problems)
    return Manifest(frame=frame, root=folder, layout="folders", problems=problems, class_names=class_names)


# ------------------------------------------------------------------- helpers


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        d for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name.lower() not in _SKIPPED_DIRS
    )


def _split_dirs(root: Path) -> dict[str, list[Path]]:
    """split name -> the folders naming it (normally one)."""
    found: dict[str, list[Path]] = {}
    for sub in _subdirs(root):
        split = SPLIT_ALIASES.get(normalise_name(sub.name))
        if split is not None:
            found.setdefault(split, []).append(sub)
    clashes = {split: dirs for split, dirs in found.items() if len(dirs) > 1}
    if clashes:
        split, dirs = next(iter(clashes.items()))
        raise DatasetError(
            f"{root}: folders {', '.join(d.name for d in dirs)} all name the {split!r} split; "
            f"merge or rename them so each split has one folder"
        )
    return found


def _flatten(split_dirs: dict[str, list[Path]]) -> list[Path]:
    return [d for dirs in split_dirs.values() for d in dirs]


def _class_dirs_below(folder: Path) -> bool:
    """True when some folder at any depth below ``folder`` is a class name."""
    for _, dirnames, _ in os.walk(folder):
        if any(normalise_name(name) in CLASS_ALIASES for name in dirnames):
            return True
    return False


def _report_unused_top_level(root: Path, used: set[Path], problems: list[DataProblem], why: str) -> None:
    for sub in _subdirs(root):
        if sub not in used:
            problems.append(DataProblem(str(sub), f"{why}; ignored"))


def split_class_problems(frame: pd.DataFrame, root: Path, class_names: tuple[str, str]) -> list[DataProblem]:
    """A problem for each split that holds images of one class only (or none of a split given).

    A one-class split cannot be validated (no ROC AUC, no threshold) or
    tested, so it is reported instead of passing as "problems: 0".
    """
    problems = []
    for split in SPLITS:
        labels = set(frame.loc[frame["split"] == split, "label"].tolist()) if len(frame) else set()
        if len(labels) == 1:
            (only,) = labels
            problems.append(DataProblem(
                str(root), f"the {split} split holds only {class_names[only]!r} images (no "
                f"{class_names[1 - only]!r}); it cannot be validated or tested: add images of both classes"
            ))
    return problems


def _collect(
    root: Path, top: Path, split: str, problems: list[DataProblem], seen_names: set[str],
    root_real: str, class_counts: dict[Path, int], seen: set[str],
) -> list[dict]:
    """Rows for every image below ``top`` whose path passes through a class folder.

    Only regular files are listed; links leaving the dataset folder and special
    files are problems (see :func:`fracture.data.readers._safe.walk`).
    ``class_counts`` gets each class folder and how many images it holds.
    """
    rows: list[dict] = []
    for current, filenames in walk(top, root_real, problems, skip_dirs=_SKIPPED_DIRS, seen=seen):
        levels = current.relative_to(top).parts
        label, body_part = _read_levels(levels, seen_names)
        class_dir = _class_dir(top, levels)
        if class_dir is not None:
            class_counts.setdefault(class_dir, 0)
        for name in filenames:
            path = current / name
            if not has_image_extension(path):
                problems.append(DataProblem(str(path), "not an image file name; ignored"))
                continue
            if label is None:
                problems.append(DataProblem(str(path), "no class folder (e.g. fractured/normal) above it; excluded"))
                continue
            study = path.relative_to(root).with_suffix("").as_posix()
            if class_dir is not None:
                class_counts[class_dir] += 1
            rows.append({
                "path": str(path), "label": label, "body_part": body_part,
                "patient_id": study, "study_id": study, "split": split, "source": "folders",
            })
    return rows


def _class_dir(top: Path, levels: tuple[str, ...]) -> Path | None:
    """The deepest class-named folder on the way from ``top`` down ``levels`` (the one giving the label)."""
    for depth in range(len(levels), 0, -1):
        if normalise_name(levels[depth - 1]) in CLASS_ALIASES:
            return top.joinpath(*levels[:depth])
    return None


def _read_levels(levels: tuple[str, ...], seen_names: set[str]) -> tuple[int | None, str]:
    """Label from the deepest class-named folder, body part from any part-named folder."""
    label = None
    body_part = UNKNOWN_BODY_PART
    for level in levels:
        name = normalise_name(level)
        if name in CLASS_ALIASES:
            label = CLASS_ALIASES[name]
            seen_names.add(name)
            continue
        part = _part_name(name)
        if part is not None:
            body_part = part
    return label, body_part


def _part_name(name: str) -> str | None:
    """'xrwrist' / 'wrists' / 'wrist' -> 'wrist'; anything else -> None."""
    if name.startswith("xr"):
        name = name[2:]
    if name in KNOWN_BODY_PARTS:
        return name
    if name.endswith("s") and name[:-1] in KNOWN_BODY_PARTS:
        return name[:-1]
    return None


def _carve_missing_splits(frame: pd.DataFrame, present: set[str], seed: int) -> pd.DataFrame:
    """Give each split missing from the folders CARVE_FRACTION of train."""
    missing = [split for split in ("val", "test") if split not in present]
    train = frame["split"] == "train"
    if not missing or not train.any():
        return frame
    fractions = {"train": 1.0 - CARVE_FRACTION * len(missing), **{split: CARVE_FRACTION for split in missing}}
    subset = frame.loc[train]
    frame.loc[train, "split"] = split_groups(
        subset["patient_id"], stratum_keys(subset["label"], subset["body_part"]), fractions, seed
    )
    logger.info("class folders: no %s folder; carved from train", " or ".join(missing))
    return frame
