"""Dataset statistics for the Data page and ``python -m fracture scan``.

Counts come from the manifest alone. Image sizes, colour modes and bit depths
come from file headers (:func:`~fracture.data.imageio.read_image_header`, no
pixel decoding), read in parallel and cached on disk by path, size and
``mtime_ns`` (:mod:`fracture.data.header_cache`), so a second scan of a
40k-image dataset takes about a second. Grey-level figures (min, max, mean,
standard deviation per image) need decoding, so they come from a seeded
sample (every image of a small set), cached the same way. Files that cannot
be read are listed with the loader's reason, never dropped silently.
Everything is returned as plain pandas frames and dicts that the UI can chart
and the CLI can print or dump as JSON.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fracture.data.header_cache import HeaderCache, scan_headers, scan_intensities
from fracture.data.manifest import SPLITS, Manifest
from fracture.errors import CacheError

logger = logging.getLogger(__name__)

COUNT_COLUMNS = ("images", "studies", "patients", "positives", "positive_studies", "positive_rate")
HEADER_COLUMNS = ("path", "width", "height", "mode", "format", "bit_depth")
INTENSITY_COLUMNS = ("path", "width", "height", "min", "max", "mean", "std")
UNREADABLE_COLUMNS = ("path", "stage", "reason", "detail", "message")
#: Images decoded for the intensity figures unless told otherwise (all of a smaller set).
INTENSITY_SAMPLE = 500


@dataclass
class DatasetStats:
    """Counts, header and intensity statistics of one manifest.

    Attributes:
        overall: dataset-wide numbers and identity (layout, root, fingerprint,
            class names, problem count, images-per-study summary) -- JSON-able.
        by_split: one row per split (in SPLITS order) with COUNT_COLUMNS
            (so studies and patients per split).
        by_body_part: one row per body part with COUNT_COLUMNS.
        by_label: one row per label with its class name and image/study/patient counts.
        by_split_body_part: long table (split, body_part, label, class_name,
            images): the split x body part x label counts.
        images_per_study: long table (split, images_per_study, studies): how
            many studies have 1, 2, ... images, per split and for ``all``.
        headers: one row per header read (HEADER_COLUMNS).
        sizes: describe() of width, height and megapixels over ``headers``.
        modes: image counts per (format, mode, bit_depth).
        intensities: one row per decoded image of the sample (INTENSITY_COLUMNS;
            grey levels 0..255 of the loader's uint8 output).
        intensity_summary: describe() of the per-image min, max, mean and std.
        unreadable: files whose header (``stage`` ``header``) or pixels
            (``decode``) could not be read, with the loader's reason, detail
            and full message (UNREADABLE_COLUMNS).
        headers_read: how many files' headers were attempted.
        headers_total: how many images the manifest has.
        intensity_sampled: how many files were picked for decoding.
        scan: how the scan went: cache file, rows from the cache and read
            now, seconds per stage.
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
    images_per_study: pd.DataFrame = field(default_factory=pd.DataFrame)
    intensities: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(INTENSITY_COLUMNS)))
    intensity_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    intensity_sampled: int = 0
    scan: dict = field(default_factory=dict)

    def to_dict(self, *, per_file: bool = False) -> dict:
        """Everything as JSON-able dicts and lists.

        Args:
            per_file: also include the per-file ``headers`` and
                ``intensities`` tables (large for big datasets).
        """
        result = {
            "overall": self.overall,
            "by_split": _records(self.by_split),
            "by_body_part": _records(self.by_body_part),
            "by_label": _records(self.by_label),
            "by_split_body_part": _records(self.by_split_body_part),
            "images_per_study": _records(self.images_per_study),
            "sizes": _describe_dict(self.sizes),
            "modes": _records(self.modes),
            "intensity_summary": _describe_dict(self.intensity_summary),
            "unreadable": _records(self.unreadable),
            "headers_read": self.headers_read,
            "headers_total": self.headers_total,
            "intensity_sampled": self.intensity_sampled,
            "intensity_decoded": len(self.intensities),
            "scan": self.scan,
        }
        if per_file:
            result["headers"] = _records(self.headers)
            result["intensities"] = _records(self.intensities)
        return result


def dataset_stats(
    manifest: Manifest,
    *,
    sample: int | None = None,
    seed: int = 0,
    intensity_sample: int | None = INTENSITY_SAMPLE,
    cache: HeaderCache | bool = True,
    workers: int | None = None,
    processes: int = 0,
) -> DatasetStats:
    """Count a manifest, read its image headers and decode a sample for grey levels.

    Args:
        manifest: the dataset.
        sample: read the headers of at most this many images (a seeded
            random sample); ``None`` reads every header.
        seed: seed of both samples.
        intensity_sample: decode at most this many images (seeded; every
            image when the set is smaller; ``None`` for all, 0 for none).
            Files whose header already failed are not decoded again.
        cache: a :class:`HeaderCache` to use, ``True`` for the default one
            (a cache that cannot be opened is logged and skipped), ``False``
            to read every file.
        workers: reader threads (default: two per usable CPU, at most 8).
        processes: read headers in this many worker processes instead of
            threads (0: threads); pays for big cold scans on many cores.

    Returns:
        A :class:`DatasetStats`.

    Raises:
        CacheError: a given cache cannot be read or written.
    """
    frame = manifest.frame
    header_cache, owned = _resolve_cache(cache)
    try:
        started = time.perf_counter()
        all_paths = _sorted_paths(frame)
        header_paths = _seeded_sample(all_paths, sample, seed)
        records, header_counts = scan_headers(header_paths, cache=header_cache, workers=workers,
                                                    processes=processes)
        header_seconds = time.perf_counter() - started

        failed = {r.path for r in records if not r.ok}
        candidates = [p for p in all_paths if p not in failed]
        intensity_paths = _seeded_sample(candidates, intensity_sample, seed)
        started = time.perf_counter()
        decoded, intensity_counts = scan_intensities(intensity_paths, cache=header_cache, workers=workers)
        intensity_seconds = time.perf_counter() - started
    finally:
        if owned and header_cache is not None:
            header_cache.close()

    headers = pd.DataFrame(
        [(r.path, r.width, r.height, r.mode, r.format, r.bit_depth) for r in records if r.ok],
        columns=list(HEADER_COLUMNS),
    )
    intensities = pd.DataFrame(
        [(r.path, r.width, r.height, r.min, r.max, r.mean, r.std) for r in decoded if r.ok],
        columns=list(INTENSITY_COLUMNS),
    )
    unreadable = pd.DataFrame(
        [(r.path, "header", r.reason, r.detail, r.message) for r in records if not r.ok]
        + [(r.path, "decode", r.reason, r.detail, r.message) for r in decoded if not r.ok],
        columns=list(UNREADABLE_COLUMNS),
    )
    if len(unreadable):
        logger.info("%d of %d files could not be read", len(unreadable), len(frame))
    per_study = _images_per_study(frame)
    overall = {
        "root": str(manifest.root),
        "layout": manifest.layout,
        "sources": sorted(frame["source"].unique().tolist()),
        "class_names": list(manifest.class_names),
        "fingerprint": manifest.fingerprint(),
        "problems": len(manifest.problems),
        "body_parts": manifest.body_parts,
        **_counts(frame),
        **_study_size_summary(frame),
    }
    scan = {
        "cache": str(header_cache.path) if header_cache is not None else None,
        "headers_from_cache": header_counts.cached,
        "headers_read_now": header_counts.read,
        "header_seconds": round(header_seconds, 4),
        "intensities_from_cache": intensity_counts.cached,
        "intensities_decoded_now": intensity_counts.read,
        "intensity_seconds": round(intensity_seconds, 4),
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
        headers_read=len(header_paths),
        headers_total=len(frame),
        images_per_study=per_study,
        intensities=intensities,
        intensity_summary=_intensity_summary(intensities),
        intensity_sampled=len(intensity_paths),
        scan=scan,
    )


def intensity_histogram(
    manifest: Manifest, n_sample: int = 200, seed: int = 0, *, cache: HeaderCache | bool = True,
) -> pd.DataFrame:
    """Mean grey-level histogram per class over a seeded sample of decoded images.

    The sample is split evenly between the labels (as far as each has
    images). Files that fail to load are skipped and listed in
    ``result.attrs["unreadable"]`` as ``{"path", "reason", "detail"}`` dicts.
    Decoded histograms are cached like the scan's (same cache).

    Args:
        manifest: the dataset.
        n_sample: images to decode in total.
        seed: sample seed.
        cache: as for :func:`dataset_stats`.

    Returns:
        A long DataFrame with columns ``intensity`` (0..255), ``label``,
        ``class_name``, ``fraction`` (mean share of pixels at that intensity;
        sums to 1 per class) and ``images`` (how many were decoded).
    """
    frame = manifest.frame.sort_values("path", kind="stable")
    labels = sorted(frame["label"].unique().tolist())
    per_label = max(1, n_sample // max(1, len(labels)))
    rng = np.random.RandomState(seed)
    chosen = {}
    for label in labels:
        paths = frame.loc[frame["label"] == label, "path"].to_numpy()
        chosen[label] = paths[np.sort(rng.choice(len(paths), size=min(per_label, len(paths)), replace=False))]
    header_cache, owned = _resolve_cache(cache)
    try:
        every = [str(p) for label in labels for p in chosen[label]]
        records, _ = scan_intensities(every, cache=header_cache)
    finally:
        if owned and header_cache is not None:
            header_cache.close()
    parts = []
    unreadable: list[dict] = []
    offset = 0
    for label in labels:
        block = records[offset:offset + len(chosen[label])]
        offset += len(chosen[label])
        total = np.zeros(256, dtype=np.float64)
        decoded = 0
        for record in block:
            if not record.ok:
                unreadable.append({"path": record.path, "reason": record.reason, "detail": record.detail})
                continue
            total += record.histogram / record.histogram.sum()
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


def _resolve_cache(cache: HeaderCache | bool) -> tuple[HeaderCache | None, bool]:
    """(cache to use, whether we opened it and must close it)."""
    if isinstance(cache, HeaderCache):
        return cache, False
    if not cache:
        return None, False
    try:
        return HeaderCache(), True
    except CacheError as exc:
        logger.warning("scanning without the header cache: %s", exc)
        return None, False


def _sorted_paths(frame: pd.DataFrame) -> list[str]:
    """Absolute, normalised paths (as the cache keys them), sorted."""
    return sorted(os.path.abspath(p) for p in frame["path"].astype(str))


def _seeded_sample(paths: list[str], size: int | None, seed: int) -> list[str]:
    """``size`` of the sorted ``paths`` picked with ``seed`` (kept in order); all when fewer."""
    if size is None or size >= len(paths):
        return list(paths)
    rng = np.random.RandomState(seed)
    picked = np.sort(rng.choice(len(paths), size=max(0, size), replace=False))
    return [paths[i] for i in picked]


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


def _images_per_study(frame: pd.DataFrame) -> pd.DataFrame:
    """Studies with 1, 2, ... images, per split (SPLITS order) and for ``all``."""
    rows = []
    groups = [("all", frame)] + [(split, frame[frame["split"] == split]) for split in SPLITS]
    for split, part in groups:
        sizes = part.groupby("study_id").size()
        for n_images, n_studies in sizes.value_counts().sort_index().items():
            rows.append({"split": split, "images_per_study": int(n_images), "studies": int(n_studies)})
    return pd.DataFrame(rows, columns=["split", "images_per_study", "studies"])


def _study_size_summary(frame: pd.DataFrame) -> dict:
    sizes = frame.groupby("study_id").size()
    if sizes.empty:
        return {"images_per_study_mean": 0.0, "images_per_study_median": 0.0, "images_per_study_max": 0}
    return {
        "images_per_study_mean": float(sizes.mean()),
        "images_per_study_median": float(sizes.median()),
        "images_per_study_max": int(sizes.max()),
    }


# ------------------------------------------------------------------- headers


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


def _intensity_summary(intensities: pd.DataFrame) -> pd.DataFrame:
    return intensities[["min", "max", "mean", "std"]].astype("float64").describe()


def _describe_dict(table: pd.DataFrame) -> dict:
    """describe() output as ``{column: {statistic: value}}``."""
    return {str(column): _plain_dict(values) for column, values in table.to_dict().items()}


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
