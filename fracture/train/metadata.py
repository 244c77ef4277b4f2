"""What a checkpoint says about itself, and the end of a run.

The best checkpoint (by the monitored validation metric) is rewritten
atomically each time it improves, with the threshold chosen on validation.
At the end the best weights are evaluated on val and test, the reports go
into the checkpoint and ``metrics.json``, the per-image probabilities into
``predictions_<split>.csv``, and a ``finished`` event sums it up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fracture.util.csvsafe import frame_csv_text
from fracture.util.files import atomic_write_text
from fracture.util.jsonio import atomic_write_json
from fracture.errors import TrainingError
from fracture.recipes.config import TrainConfig
from fracture.train.data import TrainData

BEST_CHECKPOINT = "best.safetensors"

Predict = Callable[[str, torch.nn.Module], np.ndarray]


def base_meta(cfg: TrainConfig, data: TrainData, input_spec, run_dir: Path) -> dict[str, Any]:
    """Everything a checkpoint needs to predict as it was validated, and where it came from."""
    return {
        "architecture": cfg.model,
        "in_chans": cfg.in_chans,
        "image_size": cfg.image_size,
        "preprocess": data.spec,
        "normalization": {"mean": list(input_spec.mean), "std": list(input_spec.std)},
        "class_names": list(data.manifest.class_names),
        "body_parts": data.body_vocab,
        "multitask": bool(cfg.multitask),
        "train_config": cfg.to_dict(),
        "dataset_fingerprint": data.fingerprint,
        "dataset_layout": data.manifest.layout,
        "tta_hflip": bool(cfg.tta_hflip),
        "run_dir": str(run_dir),
        "split_sizes": data.split_sizes(),
    }


def save_best(
    path: Path, model: torch.nn.Module, meta: dict[str, Any], cfg: TrainConfig, *, labels: np.ndarray,
    val_probs: np.ndarray, val_metrics: dict[str, Any], epoch: int,
) -> float:
    """Write the best checkpoint with the threshold chosen on validation; that threshold."""
    from fracture.checkpoints.format import save_checkpoint
    from fracture.evaluate.metrics import choose_threshold

    labels = labels.astype(int)
    threshold = 0.5
    if len(np.unique(labels)) >= 2:
        threshold = float(choose_threshold(labels, val_probs, rule=cfg.threshold_rule, target=cfg.target_sensitivity))
    meta = dict(meta, threshold=threshold, threshold_rule=cfg.threshold_rule, epoch=epoch,
                metrics={"val": {"split": "val", "level": "image", **val_metrics}})
    save_checkpoint(path, model, meta, half=cfg.checkpoint_half)
    return threshold


def finish(
    run_dir: Path, cfg: TrainConfig, data: TrainData, predict: Predict, device: torch.device,
    *, stopped_early: bool, on_phase: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate the best checkpoint on val (and test), store the reports; ``(path, finished-event fields)``.

    ``on_phase`` is told when calibration starts (the Train page names the phase).

    Raises:
        TrainingError: no checkpoint was ever saved.
    """
    from fracture.checkpoints.format import load_checkpoint, save_checkpoint
    from fracture.evaluate.report import evaluate_frame

    best_path = run_dir / BEST_CHECKPOINT
    if not best_path.is_file():
        raise TrainingError("no checkpoint was saved (validation metric never defined)")
    best_model, meta = load_checkpoint(best_path, map_location=device)
    if device.type == "cuda" and cfg.channels_last:
        best_model = best_model.to(memory_format=torch.channels_last)
    threshold = meta["threshold"]
    metrics = {}
    for name in ("val", "test"):
        split = data.splits[name]
        if (name == "test" and not cfg.eval_test) or len(split) == 0:
            continue
        frame = split.frame[["path", "label", "body_part", "patient_id", "study_id"]].copy()
        frame["prob"] = predict(name, best_model)
        atomic_write_text(run_dir / f"predictions_{name}.csv", frame_csv_text(frame))  # spreadsheet-safe paths
        report = evaluate_frame(frame, threshold, seed=cfg.seed)
        report["split"] = name
        metrics[name] = report
    meta["metrics"] = metrics
    meta["stopped_early"] = stopped_early
    if on_phase is not None:
        on_phase("calibrating on the val split")
    if _calibrate(best_path, best_model, meta, cfg, data, device) is None:
        save_checkpoint(best_path, best_model, meta, half=cfg.checkpoint_half)  # calibration writes it otherwise
    atomic_write_json(run_dir / "metrics.json", metrics)
    summary = {
        f"{name}_{level}_roc_auc": metrics[name][level]["overall"].get("roc_auc")
        for name in metrics for level in ("image", "study")
    }
    return best_path, dict(best_checkpoint=str(best_path), threshold=threshold, **summary)


def _calibrate(best_path: Path, model: torch.nn.Module, meta: dict[str, Any], cfg: TrainConfig, data: TrainData,
               device: torch.device) -> dict[str, Any] | None:
    """Temperature (and bias), operating points and the out-of-distribution statistics, fitted on the
    val split (OOD features on a training subsample) and written into the checkpoint with ``meta``.
    A val split too small or with one class only logs a warning (``strict=False``) and returns None:
    the run still finishes, uncalibrated."""
    from fracture.assess.calibration import SplitSource, fit_calibration

    val, train = data.splits["val"], data.splits["train"]
    body = cfg.multitask
    return fit_calibration(
        best_path, model, meta, device=device, half=cfg.checkpoint_half, strict=False,
        val=SplitSource(lambda p: data.cache.get_batch(val.cache_pos[p]), len(val), val.labels.astype(int),
                        val.body if body else None),
        train=SplitSource(lambda p: data.cache.get_batch(train.cache_pos[p]), len(train),
                          body_parts=train.body if body else None),
    )
