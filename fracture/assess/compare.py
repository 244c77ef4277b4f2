"""Evaluate checkpoints (and their ensemble) on a dataset split, with a disk cache.

Used by ``python -m fracture evaluate`` and the Compare page. Predictions are
cached per (checkpoint file content, dataset fingerprint, split, TTA), so
reopening a comparison costs a file read, not a pass of the network.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from fracture.util.files import atomic_write_bytes, file_sha256, read_bytes_bounded
from fracture.errors import CacheError, DatasetError, FractureError
from fracture.util.jsonio import parse_json
from fracture.settings import get_settings

if TYPE_CHECKING:
    import threading

    from fracture.serve.onnx_backend import InferenceProgress

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["path", "label", "body_part", "patient_id", "study_id", "prob"]


@dataclass
class EvaluationResult:
    name: str
    split: str
    predictions: pd.DataFrame
    report: dict[str, Any]
    threshold: float
    checkpoint_meta: dict[str, Any] | None = None
    problems: list[dict[str, str]] | None = None


def predict_split(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str,
    *,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    manifest=None,
    backend: str | None = None,
    on_progress: Callable[["InferenceProgress"], None] | None = None,
    cancel: "threading.Event | None" = None,
) -> tuple[pd.DataFrame, dict[str, Any], list[dict[str, str]]]:
    """Probabilities of one checkpoint for every image of a split (cached on disk).

    Returns:
        (predictions frame with PREDICTION_COLUMNS, checkpoint metadata,
        images that could not be read — reported, not silently dropped).
    ``backend`` (auto|torch|onnx, see :mod:`fracture.serve.onnx_backend`) runs the
    network; ``on_progress`` gets an ``InferenceProgress`` per chunk (image
    preparation, then prediction) and ``cancel`` stops between chunks.

    Raises:
        DatasetError: the split is empty or unknown.
        CheckpointError: the checkpoint is invalid.
        InferenceCancelled: ``cancel`` was set (nothing is cached).
    """
    from fracture.cache import ImageCache
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.checkpoints.meta import split_seed
    from fracture.data import SPLITS, open_dataset
    from fracture.serve.onnx_backend import preparation_progress
    from fracture.serve.scorer import Scorer

    checkpoint = Path(checkpoint)
    if split not in (*SPLITS, "all"):
        raise DatasetError(f"split {split!r}: choose one of {', '.join(SPLITS)} or all")
    meta = read_checkpoint_meta(checkpoint)
    manifest = manifest or open_dataset(data_root, seed=split_seed(meta))
    frame = (manifest.frame if split == "all" else manifest.subset(split)).reset_index(drop=True)
    if frame.empty:
        raise DatasetError(f"{data_root}: the {split} split is empty")
    cache_root = Path(cache_dir) if cache_dir else get_settings().cache_dir
    key = hashlib.sha256(
        json.dumps([file_sha256(checkpoint), manifest.fingerprint(), split, PREDICTION_CACHE_FORMAT]).encode()
    ).hexdigest()[:32]
    pred_path = cache_root / "predictions" / f"{key}.pred"
    if pred_path.exists():
        cached = read_prediction_cache(pred_path, frame)
        if isinstance(cached, str):
            log.warning("predictions cache %s is unusable (%s); computing the predictions again", pred_path, cached)
        else:
            return cached[0], meta, cached[1]
    cache = ImageCache.open_or_build(frame["path"].tolist(), meta["preprocess"], cache_root / "images",
                                     progress=preparation_progress(progress, on_progress, cancel))
    valid = np.asarray(cache.valid_mask, dtype=bool)
    problems = [{"path": f.path, "reason": f.reason, "message": f.message} for f in cache.failures]
    for problem in problems:
        log.warning("not evaluated: %s", problem["message"])
    positions = np.flatnonzero(valid)
    scorer = Scorer.from_checkpoint(checkpoint, backend=backend, device=device)
    body = scorer.body_indices(frame["body_part"].iloc[positions].tolist(), len(positions))
    scores = scorer.score_fetch(lambda p: cache.get_batch(positions[p]), len(positions), body_parts=body,
                                progress=on_progress, cancel=cancel, features=False)
    probs, used = scores.probs_uncalibrated, scorer.backend  # cached uncalibrated; evaluate_checkpoint calibrates
    log.info("%s: %d images predicted with %s", checkpoint.name, len(positions), used)
    out = frame.iloc[positions][PREDICTION_COLUMNS[:-1]].copy()
    out["prob"] = probs
    try:
        write_prediction_cache(pred_path, out, positions, problems)
    except OSError as exc:  # a full or read-only disk costs the cache, not the result
        log.warning("predictions not cached in %s: %s", pred_path, exc)
    return out.reset_index(drop=True), meta, problems


# --------------------------------------------------------------------------
# The predictions cache: one file, a JSON header line then the CSV. The header
# says which manifest rows were evaluated and holds the CSV's sha256, so a cut,
# garbled or mismatched file is found and rebuilt, never used.

PREDICTION_CACHE_FORMAT = 3
MAX_PREDICTION_CACHE_BYTES = 512 * 1024 * 1024


def write_prediction_cache(
    path: Path, out: pd.DataFrame, positions: np.ndarray, problems: list[dict[str, str]]
) -> None:
    """Write the predictions of the manifest rows ``positions`` (and the unreadable images) atomically."""
    body = out.to_csv(index=False).encode("utf-8")
    header = {
        "format": PREDICTION_CACHE_FORMAT,
        "columns": PREDICTION_COLUMNS,
        "rows": int(len(out)),
        "positions": [int(p) for p in positions],
        "sha256": hashlib.sha256(body).hexdigest(),
        "problems": problems,
    }
    atomic_write_bytes(path, json.dumps(header).encode("utf-8") + b"\n" + body)


def read_prediction_cache(path: Path, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]] | str:
    """The cached predictions for the manifest rows ``frame``, or why they cannot be used.

    Checked: the checksum of the CSV, its columns and row count, that its rows are
    exactly the manifest's rows minus the unreadable ones (paths and labels, in
    order), and that every probability is a number in [0, 1].
    """
    try:
        data = read_bytes_bounded(path, MAX_PREDICTION_CACHE_BYTES)
        head, sep, body = data.partition(b"\n")
        if not sep:
            return "no header line"
        header = parse_json(head, source=path, what="(predictions cache header)", error=CacheError)
        if not isinstance(header, dict) or header.get("format") != PREDICTION_CACHE_FORMAT:
            return "not a predictions cache of this version"
        if hashlib.sha256(body).hexdigest() != header.get("sha256"):
            return "checksum mismatch (cut or changed)"
        positions, problems = header.get("positions"), header.get("problems")
        if not isinstance(positions, list) or not all(isinstance(p, int) and 0 <= p < len(frame) for p in positions):
            return "bad row positions"
        if not isinstance(problems, list) or not all(
            isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("path", "reason", "message"))
            for p in problems
        ):
            return "bad list of unreadable images"
        if len(positions) + len(problems) != len(frame) or len(set(positions)) != len(positions):
            return (f"{len(positions)} evaluated + {len(problems)} unreadable images do not make the "
                    f"manifest's {len(frame)}")
        cached = pd.read_csv(io.BytesIO(body))
        if list(cached.columns) != PREDICTION_COLUMNS:
            return f"columns {list(cached.columns)} are not {PREDICTION_COLUMNS}"
        if len(cached) != len(positions) or len(cached) != header.get("rows"):
            return f"{len(cached)} rows where {len(positions)} were written"
        expected = frame.iloc[positions]
        if cached["path"].astype(str).tolist() != expected["path"].astype(str).tolist():
            return "image paths differ from the dataset's"
        if not np.array_equal(cached["label"].to_numpy(dtype=np.int64), expected["label"].to_numpy(dtype=np.int64)):
            return "labels differ from the dataset's"
        probs = cached["prob"].to_numpy(dtype=np.float64)
        if not (np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()):
            return "probabilities outside [0, 1]"
    except (OSError, ValueError, TypeError, KeyError, FractureError) as exc:  # bad JSON / CSV / numbers
        return f"{type(exc).__name__}: {exc}"
    return cached, problems


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str = "test",
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    backend: str | None = None,
    on_progress: Callable[["InferenceProgress"], None] | None = None,
    cancel: "threading.Event | None" = None,
    localisation: bool = True,
) -> EvaluationResult:
    """Image- and study-level metrics of a checkpoint on one split, at its stored threshold.

    Probabilities are the calibrated ones when the checkpoint has a temperature
    (``prob``; ``prob_uncalibrated`` keeps the model's own), and the stored
    threshold is mapped the same way, so labels do not change; a ``threshold``
    given here is on the calibrated scale. ``report["image"]["calibration"]``
    holds ECE and Brier before and after, and the reliability bins.
    """
    from fracture.checkpoints.decision import calibrate_predictions, calibrated_threshold
    from fracture.evaluate.report import evaluate_frame

    preds, meta, problems = predict_split(checkpoint, data_root, split, cache_dir=cache_dir, device=device,
                                          progress=progress, backend=backend, on_progress=on_progress, cancel=cancel)
    preds, calibration = calibrate_predictions(preds, meta)
    used = calibrated_threshold(meta) if threshold is None else float(threshold)
    report = evaluate_frame(preds, used, n_boot=n_boot, seed=0)
    report["image"]["calibration"] = calibration
    report["image"]["operating_points"] = operating_points_on(preds, meta)
    report["split"] = split
    report["n_unreadable"] = len(problems)
    if localisation:  # heatmap vs annotated boxes (None where no positive has a box); cached on disk
        from fracture.assess.localisation import split_localisation

        report["image"]["localisation"] = split_localisation(checkpoint, data_root, split, cache_dir=cache_dir,
                                                             device=device)
    return EvaluationResult(
        name=Path(checkpoint).stem if Path(checkpoint).name != "best.safetensors" else Path(checkpoint).parent.name,
        split=split, predictions=preds, report=report, threshold=used, checkpoint_meta=meta, problems=problems,
    )


def evaluate_ensemble(
    checkpoints: Sequence[str | Path],
    data_root: str | Path,
    split: str = "test",
    *,
    n_boot: int = 1000,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    backend: str | None = None,
) -> EvaluationResult:
    """Mean of the members' probabilities (binary softmax-average), at the mean of their thresholds."""
    from fracture.evaluate.ensemble import ensemble_probabilities
    from fracture.evaluate.report import evaluate_frame

    if len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    from fracture.evaluate.calibration import calibration_report
    from fracture.checkpoints.decision import calibrate_predictions, calibrated_threshold

    frames, thresholds, problems = [], [], []
    for ckpt in checkpoints:
        preds, meta, member_problems = predict_split(ckpt, data_root, split, cache_dir=cache_dir, device=device,
                                                     backend=backend)
        frames.append(calibrate_predictions(preds, meta)[0])  # members' calibrated probabilities, as shown
        thresholds.append(calibrated_threshold(meta))
        problems += member_problems
    common = set.intersection(*(set(f["path"]) for f in frames))
    frames = [f[f["path"].isin(common)].reset_index(drop=True) for f in frames]
    merged = ensemble_probabilities([f.drop(columns="prob_uncalibrated") for f in frames])
    raw = ensemble_probabilities([f.drop(columns="prob").rename(columns={"prob_uncalibrated": "prob"}) for f in frames])
    threshold = float(np.mean(thresholds))
    report = evaluate_frame(merged, threshold, n_boot=n_boot, seed=0)
    after = calibration_report(merged["label"].to_numpy(), merged["prob"].to_numpy(), None)
    before = calibration_report(raw["label"].to_numpy(), raw["prob"].to_numpy(), None)
    # The mean of the calibrated members vs the mean of the uncalibrated ones.
    report["image"]["calibration"] = {**after, **{f"{key}_uncalibrated": before[key] for key in ("ece", "brier", "bins")}}
    report["split"] = split
    return EvaluationResult(name="ensemble", split=split, predictions=merged, report=report,
                            threshold=threshold, problems=problems)


def operating_points_on(preds: pd.DataFrame, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The checkpoint's operating points (chosen on validation) measured on these predictions.

    ``preds["prob"]`` is calibrated (:func:`evaluate_checkpoint`), so each
    stored threshold is mapped to the calibrated scale first.
    """
    from fracture.checkpoints.decision import calibrated_threshold
    from fracture.evaluate.metrics import point_metrics

    labels, probs = preds["label"].to_numpy(), preds["prob"].to_numpy()
    return [
        {"name": point.get("name"), "label": point.get("label"),
         **point_metrics(labels, probs, calibrated_threshold(meta, point["threshold"]))}
        for point in meta.get("operating_points") or [] if isinstance(point, dict) and "threshold" in point
    ]


SUMMARY_KEYS = {
    "n": "n", "n_pos": "n_pos", "accuracy": "accuracy", "precision": "precision", "sensitivity": "recall",
    "specificity": "specificity", "f1": "f1", "auc": "roc_auc", "auc_ci": "roc_auc_ci", "pr_auc": "pr_auc",
    "kappa": "cohen_kappa", "confusion": "confusion",
}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {short: metrics.get(long) for short, long in SUMMARY_KEYS.items()}


def overall_localisation(block: dict[str, Any] | None) -> dict[str, Any] | None:
    """A localisation block without its per-body-part table (that goes under per_body_part)."""
    return None if block is None else {k: v for k, v in block.items() if k != "by_body_part"}


def part_localisation(block: dict[str, Any] | None, part: str) -> dict[str, Any]:
    """``{"localisation": ...}`` for one body part, or nothing when there is none."""
    found = (block or {}).get("by_body_part", {}).get(part)
    return {} if found is None else {"localisation": {**found, "method": block["method"]}}


def summarize_report(report: dict[str, Any], *, split: str, checkpoints: Sequence[str]) -> dict[str, Any]:
    """The compact JSON of ``fracture evaluate --json``: split, image, study, per_body_part."""
    return {
        "split": split,
        "checkpoints": [str(c) for c in checkpoints],
        "threshold": report["threshold"],
        "study_rule": "study probability = mean of its images' probabilities",
        "image": {**_summary(report["image"]["overall"]), "calibration": report["image"].get("calibration"),
                  "localisation": overall_localisation(report["image"].get("localisation"))},
        "study": _summary(report["study"]["overall"]),
        "per_body_part": {
            level: {part: {**_summary(m), **part_localisation(report[level].get("localisation"), part)}
                    for part, m in report[level]["by_body_part"].items()}
            for level in ("image", "study")
        },
    }
