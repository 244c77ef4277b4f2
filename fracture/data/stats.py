"""Dataset statistics for the Data page and ``python -m fracture stats``.

Counts come from the manifest alone; image sizes and colour modes from file
headers (:func:`~fracture.data.imageio.read_image_header`, no pixel decoding),
so a 40k-image dataset takes seconds; only :func:`intensity_histogram`
decodes, and only a sample. Everything is returned as plain pandas frames and
dicts that the UI can chart and the CLI can print or dump as JSON.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fracture.data.imageio import load_image, read_image_header
from fracture.data.manifest import SPLITS, Manifest
from fracture.errors import ImageLoadError

logger = logging.getLogger(__name__)

COUNT_COLUMNS = ("images", "studies", "patients", "positives", "positive_studies", "positive_rate")
HEADER_COLUMNS = ("path", "width", "height", "mode", "format", "bit_depth")
UNREADABLE_COLUMNS = ("path", "reason", "detail")


@dataclass
class DatasetStats:
    """Counts and header statistics of one manifest.

    Attributes:
        overall: dataset-wide numbers and identity (layout, root, fingerprint,
            class names, problem count) -- JSON-able.
        by_split: one row per split (in SPLITS order) with COUNT_COLUMNS.
        by_body_part: one row per body part with COUNT_COLUMNS.
        by_label: one row per label with its class name and image/study/patient counts.
        by_split_body_part: long table (split, body_part, label, class_name,
            images) for stacked bar charts.
        headers: one row per header read (HEADER_COLUMNS).
        sizes: describe() of width, height and megapixels over ``headers``.
        modes: image counts per (format, mode, bit_depth).
        unreadable: files whose header could not be read, with the reason.
        headers_read: how many files' headers were attempted.
        headers_total: how many images the manifest has.
    """

    overall: dict
    by_split: pd.DataFrame
    by_body_part: pd.DataFrame
    by_label: pd.DataFrame
    by_split_body_part: pd.DataFrame
    headers: pd.DataFrame
    sizes: pd.DataFrame
    modes: pd.DataFrame
    unreadable: pd.DataFrame
    headers_read: int
    headers_total: int

    def to_dict(self) -> dict:
        """Everything except the per-file header table, as JSON-able dicts and lists."""
        return {
            "overall": self.overall,
            "by_split": _records(self.by_split),
            "by_body_part": _records(self.by_body_part),
            "by_label": _records(self.by_label),
            "by_split_body_part": _records(self.by_split_body_part),
            "sizes": {column: _plain_dict(values) for column, values in self.sizes.to_dict().items()},
            "modes": _records(self.modes),
            "unreadable": _records(self.unreadable),
            "headers_read": self.headers_read,
            "headers_total": self.headers_total,
        }


def dataset_stats(manifest: Manifest, *, sample: int | None = None, seed: int = 0) -> DatasetStats:
    """Count a manifest and read its image headers.

    Args:
        manifest: the dataset.
        sample: read the headers of at most this many images (a seeded
            random sample); ``None`` reads every header.
        seed: seed of that sample.

    Returns:
        A :class:`DatasetStats`.
    """
    frame = manifest.frame
    headers, unreadable, attempted = _read_headers(frame, sample, seed)
    overall = {
        "root": str(manifest.root),
        "layout": manifest.layout,
        "sources": sorted(frame["source"].unique().tolist()),
        "class_names": list(manifest.class_names),
        "fingerprint": manifest.fingerprint(),
        "problems": len(manifest.problems),
        "body_parts": manifest.body_parts,
        **_counts(frame),
    }
    return DatasetStats(
        overall=overall,
        by_split=_counts_by(frame, "split", order=SPLITS),
        by_body_part=_counts_by(frame, "body_part"),
        by_label=_label_table(frame, manifest.class_names),
        by_split_body_part=_split_body_part_table(frame, manifest.class_names),
        headers=headers,
        sizes=_size_summary(headers),
        modes=_mode_table(headers),
        unreadable=unreadable,
        headers_read=attempted,
        headers_total=len(frame),
    )


def intensity_histogram(manifest: Manifest, n_sample: int = 200, seed: int = 0) -> pd.DataFrame:
    """Mean grey-level histogram per class over a seeded sample of decoded images.

    The sample is split evenly between the labels (as far as each has
    images). Files that fail to load are skipped and listed in
    ``result.attrs["unreadable"]`` as ``{"path", "reason"}`` dicts.

    Args:
        manifest: the dataset.
        n_sample: images to decode in total.
        seed: sample seed.

    Returns:
        A long DataFrame with columns ``intensity`` (0..255), ``label``,
        ``class_name``, ``fraction`` (mean share of pixels at that intensity;
        sums to 1 per class) and ``images`` (how many were decoded).
    """
    frame = manifest.frame.sort_values("path", kind="stable")
    labels = sorted(frame["label"].unique().tolist())
    per_label = max(1, n_sample // max(1, len(labels)))
    rng = np.random.RandomState(seed)
    parts = []
    unreadable: list[dict] = []
    for label in labels:
        paths = frame.loc[frame["label"] == label, "path"].to_numpy()
        chosen = paths[np.sort(rng.choice(len(paths), size=min(per_label, len(paths)), replace=False))]
        total = np.zeros(256, dtype=np.float64)
        decoded = 0
        for path in chosen:
            try:
                image = load_image(path)
            except ImageLoadError as exc:
                unreadable.append({"path": str(path), "reason": exc.reason})
                continue
            total += np.bincount(image.ravel(), minlength=256) / image.size
            decoded += 1
        fraction = total / decoded if decoded else total
        parts.append(pd.DataFrame({
            "intensity": np.arange(256),
            "label": label,
            "class_name": manifest.class_names[label],
            "fraction": fraction,
            "images": decoded,
        }))
    result = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["intensity", "label", "class_name", "fraction", "images"]
    )
    result.attrs["unreadable"] = unreadable
    return result


# -------------------------------------------------------------------- counts


def _counts(frame: pd.DataFrame) -> dict:
    studies = frame.groupby("study_id")["label"].max() if len(frame) else pd.Series(dtype="int64")
    images = len(frame)
    positives = int(frame["label"].sum())
    return {
        "images": images,
        "studies": int(frame["study_id"].nunique()),
        "patients": int(frame["patient_id"].nunique()),
        "positives": positives,
        "positive_studies": int(studies.sum()),
        "positive_rate": positives / images if images else 0.0,
    }


def _counts_by(frame: pd.DataFrame, column: str, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    keys = list(order) if order is not None else sorted(frame[column].unique().tolist())
    rows = [{column: key, **_counts(frame[frame[column] == key])} for key in keys]
    return pd.DataFrame(rows, columns=[column, *COUNT_COLUMNS])


def _label_table(frame: pd.DataFrame, class_names: tuple[str, str]) -> pd.DataFrame:
    rows = []
    for label in (0, 1):
        part = frame[frame["label"] == label]
        rows.append({
            "label": label,
            "class_name": class_names[label],
            "images": len(part),
            "studies": int(part["study_id"].nunique()),
            "patients": int(part["patient_id"].nunique()),
        })
    return pd.DataFrame(rows)


def _split_body_part_table(frame: pd.DataFrame, class_names: tuple[str, str]) -> pd.DataFrame:
    table = frame.groupby(["split", "body_part", "label"]).size().rename("images").reset_index()
    table["class_name"] = table["label"].map(dict(enumerate(class_names)))
    table["split"] = pd.Categorical(table["split"], categories=list(SPLITS), ordered=True)
    table = table.sort_values(["split", "body_part", "label"]).reset_index(drop=True)
    table["split"] = table["split"].astype(str)
    return table[["split", "body_part", "label", "class_name", "images"]]


# ------------------------------------------------------------------- headers


def _read_headers(frame: pd.DataFrame, sample: int | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    paths = np.sort(frame["path"].to_numpy().astype(str))
    if sample is not None and sample < len(paths):
        rng = np.random.RandomState(seed)
        paths = paths[np.sort(rng.choice(len(paths), size=max(0, sample), replace=False))]
    rows, failures = [], []
    for path in paths:
        try:
            header = read_image_header(path)
        except ImageLoadError as exc:
            failures.append((path, exc.reason, exc.detail))
            continue
        rows.append((path, header.width, header.height, header.mode, header.format, header.bit_depth))
    if failures:
        logger.info("%d of %d image headers could not be read", len(failures), len(paths))
    return (
        pd.DataFrame(rows, columns=list(HEADER_COLUMNS)),
        pd.DataFrame(failures, columns=list(UNREADABLE_COLUMNS)),
        len(paths),
    )


def _size_summary(headers: pd.DataFrame) -> pd.DataFrame:
    sizes = pd.DataFrame({
        "width": headers["width"].astype("float64"),
        "height": headers["height"].astype("float64"),
        "megapixels": headers["width"].astype("float64") * headers["height"].astype("float64") / 1e6,
    })
    return sizes.describe()


def _mode_table(headers: pd.DataFrame) -> pd.DataFrame:
    if headers.empty:
        return pd.DataFrame(columns=["format", "mode", "bit_depth", "images"])
    return (
        headers.groupby(["format", "mode", "bit_depth"]).size().rename("images").reset_index()
        .sort_values("images", ascending=False, kind="stable").reset_index(drop=True)
    )


def _records(frame: pd.DataFrame) -> list[dict]:
    return [_plain_dict(row) for row in frame.to_dict(orient="records")]


def _plain_dict(values: dict) -> dict:
    """numpy scalars -> Python scalars; NaN -> None (valid JSON)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[str(key)] = value
    return out
