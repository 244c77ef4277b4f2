"""The manifest: one table that every data source is read into.

Every reader (MURA-v1.1, FracAtlas, class folders, the synthetic demo set)
returns a :class:`Manifest` whose ``frame`` has at least
:data:`MANIFEST_COLUMNS`, so training, evaluation and the UI never care where
the images came from. Files that could not be used are listed in
``problems`` -- reported, never silently dropped.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pandas.api import types as ptypes

from fracture.errors import DatasetError

MANIFEST_COLUMNS = ("path", "label", "body_part", "patient_id", "study_id", "split", "source")
"""Columns every manifest frame has, in this order (readers may add more after them)."""

SPLITS = ("train", "val", "test")
"""The split names, in order."""

SOURCES = ("mura", "fracatlas", "folders", "demo")
"""Values of the ``source`` column."""

UNKNOWN_BODY_PART = "unknown"
"""Body part of images whose part no metadata or folder names."""

KNOWN_BODY_PARTS = (
    "ankle", "elbow", "femur", "finger", "foot", "forearm", "hand", "hip",
    "humerus", "knee", "leg", "pelvis", "shoulder", "spine", "tibia", "wrist",
)
"""Body-part words a folder name may carry (MURA's seven parts, FracAtlas's regions, a few more)."""

_STRING_COLUMNS = ("path", "body_part", "patient_id", "study_id", "split", "source")


@dataclass(frozen=True)
class DataProblem:
    """One file (or metadata row) that a reader could not use as given.

    Attributes:
        path: the file or metadata entry concerned.
        reason: what is wrong, in words, and what the reader did about it.
    """

    path: str
    reason: str


@dataclass
class Manifest:
    """A dataset read into one table, with where it came from and what went wrong.

    Attributes:
        frame: one row per image with :data:`MANIFEST_COLUMNS` (validated on
            construction) and possibly source-specific extra columns.
        root: the dataset folder; ``fingerprint`` uses paths relative to it.
        layout: the reader that produced it: ``mura``, ``fracatlas`` or ``folders``.
        problems: files or rows that were excluded or needed a decision.
        class_names: names of label 0 and label 1.
    """

    frame: pd.DataFrame
    root: Path
    layout: str
    problems: list[DataProblem] = field(default_factory=list)
    class_names: tuple[str, str] = ("negative", "positive")

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.frame = validate_frame(self.frame)
        if "boxes" not in self.frame.columns:  # no source annotation: every image has none
            self.frame["boxes"] = [()] * len(self.frame)
        self.class_names = tuple(self.class_names)
        if len(self.class_names) != 2:
            raise DatasetError(f"class_names must name label 0 and label 1, got {self.class_names!r}")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def body_parts(self) -> list[str]:
        """The sorted body-part vocabulary of this dataset."""
        return sorted(self.frame["body_part"].unique().tolist())

    def subset(self, split: str) -> pd.DataFrame:
        """Rows of one split, re-indexed from 0.

        Raises:
            DatasetError: ``split`` is not one of :data:`SPLITS`.
        """
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return self.frame[self.frame["split"] == split].reset_index(drop=True)

    def relative_paths(self) -> pd.Series:
        """Image paths relative to ``root`` in POSIX form (absolute when outside root)."""
        prefix = str(self.root).rstrip(os.sep) + os.sep
        return self.frame["path"].map(lambda p: _relative_posix(p, prefix))

    def fingerprint(self) -> str:
        """SHA-256 over the sorted (relative path, label, split, body part) rows.

        Relative paths make it the same on every machine that holds the same
        files in the same splits; it changes when any image, label, split or
        body part changes. Checkpoints store it to say what they were trained on.
        """
        rows = sorted(
            f"{rel}\t{int(label)}\t{split}\t{part}"
            for rel, label, split, part in zip(
                self.relative_paths(), self.frame["label"], self.frame["split"], self.frame["body_part"]
            )
        )
        digest = hashlib.sha256()
        for row in rows:
            digest.update(row.encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()

    def problems_frame(self) -> pd.DataFrame:
        """The problems as a two-column DataFrame (``path``, ``reason``)."""
        return pd.DataFrame(
            [(p.path, p.reason) for p in self.problems], columns=["path", "reason"]
        )


def require_images(frame: pd.DataFrame, root: Path, layout: str, problems: list[DataProblem]) -> None:
    """Raise when a reader recognised a layout but found no usable image in it.

    Raises:
        DatasetError: naming the folder, the layout and the first problems found.
    """
    if len(frame):
        return
    detail = "; ".join(f"{p.path}: {p.reason}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
    raise DatasetError(
        f"{root}: looks like the {layout} layout but holds no usable images"
        + (f"; first problems: {detail}{more}" if detail else "; add images to its folders")
    )


def validate_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a manifest frame's columns and values; return it with canonical dtypes.

    Args:
        frame: a candidate manifest table.

    Returns:
        A copy with :data:`MANIFEST_COLUMNS` first, ``label`` as int64 and the
        text columns as strings, index reset.

    Raises:
        DatasetError: a column is missing, a value is null, a label is not 0/1,
            a split or source is unknown, a body part is not lower case or a
            path is not absolute.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(f"a manifest frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"manifest is missing column(s) {', '.join(missing)}; expected {', '.join(MANIFEST_COLUMNS)}"
        )
    extra = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    out = frame.loc[:, list(MANIFEST_COLUMNS) + extra].reset_index(drop=True).copy()

    for column in MANIFEST_COLUMNS:
        nulls = out[column].isna()
        if nulls.any():
            raise DatasetError(f"manifest column {column!r} has {int(nulls.sum())} empty value(s)")

    if not ptypes.is_numeric_dtype(out["label"]) and len(out):
        raise DatasetError(f"manifest column 'label' must be 0/1 integers, got dtype {out['label'].dtype}")
    bad_labels = ~out["label"].isin([0, 1])
    if bad_labels.any():
        raise DatasetError(
            f"manifest labels must be 0 or 1; found {sorted(set(out.loc[bad_labels, 'label'].tolist()))[:5]}"
        )
    out["label"] = out["label"].astype("int64")
    for column in _STRING_COLUMNS:
        out[column] = out[column].astype(str)

    _check_values(out, "split", SPLITS)
    _check_values(out, "source", SOURCES)
    not_lower = out["body_part"] != out["body_part"].str.lower()
    if not_lower.any():
        raise DatasetError(f"body parts must be lower case; found {out.loc[not_lower, 'body_part'].iloc[0]!r}")
    relative = ~out["path"].map(os.path.isabs)
    if relative.any():
        raise DatasetError(f"manifest paths must be absolute; found {out.loc[relative, 'path'].iloc[0]!r}")
    return out


def _check_values(frame: pd.DataFrame, column: str, allowed: tuple[str, ...]) -> None:
    bad = ~frame[column].isin(allowed)
    if bad.any():
        raise DatasetError(
            f"manifest column {column!r} has value {frame.loc[bad, column].iloc[0]!r}; "
            f"allowed: {', '.join(allowed)}"
        )


def _relative_posix(path: str, root_prefix: str) -> str:
    """Strip ``root_prefix`` (root plus separator); string work, fast on 40k rows."""
    if path.startswith(root_prefix):
        path = path[len(root_prefix):]
    return path.replace(os.sep, "/")
