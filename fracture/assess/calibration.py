"""Fitting a checkpoint's calibration, operating points, OOD statistics and radiograph gate on its splits.

The hook the trainer and ``python -m fracture calibrate`` call: it runs the model
through the checkpoint's scorer (:meth:`fracture.serve.scorer.Scorer.from_model`: the
same tensor conversion, flip TTA and pooled features as every prediction), fits with the
pure maths of :mod:`fracture.evaluate.calibration` and :mod:`fracture.gate`, and writes
the blocks back through the one metadata writer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fracture.evaluate.calibration import (
    DEFAULT_METHOD, METHODS, calibration_report, check_fit_input, fit_temperature, fit_temperature_bias,
)
from fracture.evaluate.metrics import EvaluationError

log = logging.getLogger(__name__)


@dataclass
class SplitSource:
    """Images of one split for :func:`fit_calibration`, without saying where they live.

    Attributes:
        fetch: maps an array of positions ``0..n-1`` to uint8 images ``(B, S, S[, C])``
            already through the checkpoint's preprocessing (e.g. an ``ImageCache`` slice).
        n: how many images.
        labels: 0/1 labels (needed for the validation split).
        body_parts: body-part indices for a multi-task model (-1 unknown), or None.
    """

    fetch: Callable[[np.ndarray], np.ndarray]
    n: int
    labels: np.ndarray | None = None
    body_parts: np.ndarray | None = None

    def subsample(self, max_n: int, seed: int = 0) -> "SplitSource":
        """At most ``max_n`` of these images, a seeded sorted sample (itself when already small enough)."""
        if self.n <= max_n:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(self.n, max_n, replace=False))
        return SplitSource(
            fetch=lambda p: self.fetch(keep[np.asarray(p)]), n=int(max_n),
            labels=None if self.labels is None else np.asarray(self.labels)[keep],
            body_parts=None if self.body_parts is None else np.asarray(self.body_parts)[keep],
        )


def fit_calibration(
    checkpoint: str | Path,
    model: Any,
    meta: dict[str, Any],
    *,
    val: SplitSource,
    train: SplitSource | None = None,
    device: Any = "cpu",
    half: bool | None = None,
    target_sensitivity: float = 0.9,
    method: str = DEFAULT_METHOD,
    ood_components: int | None = None,
    batch_size: int = 32,
    progress: Callable[[str, int, int], None] | None = None,
    test: SplitSource | None = None,
    probes: dict[str, dict[str, np.ndarray]] | None = None,
    max_train_images: int = 1000,
    strict: bool = True,
) -> dict[str, Any] | None:
    """Fit temperature, operating points and the out-of-distribution score; save them in the checkpoint.

    The trainer's hook and the engine of ``python -m fracture calibrate``. One
    pass over the validation images gives the (flip-averaged, as the model
    predicts) probabilities and the pooled features; one pass over ``train``
    (a subsample is enough) gives the feature statistics of the OOD score,
    whose threshold is set on the validation features. Everything else in
    ``meta`` is kept; the file is rewritten atomically by
    :func:`fracture.checkpoints.format.save_checkpoint`.

    Args:
        checkpoint: the file to rewrite (usually the one ``model`` came from).
        model: the loaded model (eval mode is set here).
        meta: its metadata.
        val: the validation split (labels required).
        train: training images for the OOD statistics (a seeded sample of at
            most ``max_train_images`` is used); None fits them on the
            validation features (thresholded on the same images, so its flag
            rate on new in-distribution images will be somewhat higher).
        half: None (re-calibration): only the metadata and OOD tensors are rewritten, the weights
            stay bit for bit as stored; True/False (the trainer's final write): ``model`` is saved,
            float16 when True.
        target_sensitivity: the screening operating point's sensitivity.
        method: ``temperature+bias`` (default) or ``temperature`` (see the module notes).
        strict: False (the trainer's choice) turns a validation split that
            cannot be calibrated (too few images, one class) into a logged
            warning and ``None``, the checkpoint left as it was.
        ood_components: principal components kept by the OOD score (default
            :data:`fracture.gate.ood.DEFAULT_COMPONENTS`, fewer with few images).
        test, probes: measured only, never fitted on: the OOD flag rate on the
            test split, and per probe group (raw uint8 images of any size, e.g.
            :func:`fracture.gate.probes.probe_sets`) how many are flagged; stored
            under ``meta["ood"]["measured"]`` for the model card.

    Returns:
        A summary: temperature, ECE before/after on val, operating points, OOD
        threshold and val flag rate.

    Raises:
        EvaluationError: a validation split without labels, with one class or too few images.
        CheckpointError: the checkpoint cannot be written.
    """
    from fracture.assess import gate_fit
    from fracture.checkpoints.format import save_checkpoint, update_checkpoint_meta
    from fracture.evaluate.metrics import operating_points
    from fracture.gate import ood, radiograph
    from fracture.serve.scorer import Scorer

    if not strict:
        from fracture.gate.ood import OodError

        try:
            return fit_calibration(checkpoint, model, meta, val=val, train=train, device=device, half=half,
                                   target_sensitivity=target_sensitivity, method=method,
                                   ood_components=ood_components, batch_size=batch_size, progress=progress,
                                   test=test, probes=probes, max_train_images=max_train_images, strict=True)
        except (EvaluationError, OodError) as exc:
            log.warning("%s left uncalibrated: %s", checkpoint, exc)
            return None
    if val.labels is None:
        raise EvaluationError("fit_calibration needs the labels of the validation split")
    if method not in METHODS:
        raise EvaluationError(f"unknown calibration method {method!r}; use one of {METHODS}")
    check_fit_input(np.asarray(val.labels), np.full(len(val.labels), 0.5))  # before any model run
    scorer = Scorer.from_model(checkpoint, model, meta, device=device)

    def report(what: str):
        return None if progress is None else (lambda step: progress(what, step.done, step.total))

    val_stats = radiograph.StatsRecorder(val.fetch)  # image statistics for the radiograph gate, same pass
    val_scores = scorer.score_fetch(val_stats.fetch, val.n, body_parts=val.body_parts, chunk=batch_size,
                                    features=True, progress=report("validation images"))
    val_probs, val_features = val_scores.probs_uncalibrated, val_scores.features
    labels = np.asarray(val.labels).astype(np.int64)
    temperature_alone = fit_temperature(labels, val_probs)
    if method == "temperature":
        temperature, bias = temperature_alone, 0.0
    else:
        temperature, bias = fit_temperature_bias(labels, val_probs)
    val_report = calibration_report(labels, val_probs, temperature, bias=bias)
    alone_report = calibration_report(labels, val_probs, temperature_alone)
    points = operating_points(labels, val_probs, target_sensitivity=target_sensitivity,
                              rule_used=meta.get("threshold_rule"), stored_threshold=float(meta["threshold"]))
    if train is not None and train.n > 0:
        train = train.subsample(max_train_images)
        train_stats = radiograph.StatsRecorder(train.fetch)
        fit_features = scorer.features_fetch(train_stats.fetch, train.n, chunk=batch_size,
                                             progress=report("training images"))
        fit_stats, fitted_on = train_stats.array(), "train"
    else:
        fit_features, fit_stats, fitted_on = val_features, val_stats.array(), "val"
    detector = ood.fit_detector(fit_features, val_features, components=ood_components)
    try:  # level (a): radiograph or not; a fit that cannot be made leaves the DICOM and colour checks alone
        gate, gate_block = gate_fit.fit_for_model(scorer, fit_features, fit_stats, val_features=val_features,
                                                  val_stats=val_stats.array())
    except radiograph.GateError as exc:
        log.warning("%s: no radiograph gate fitted: %s", checkpoint, exc)
        gate, gate_block = None, None
    measured: dict[str, Any] = {}
    gate_measured: dict[str, Any] = {}
    if test is not None and test.n > 0:
        test_stats = radiograph.StatsRecorder(test.fetch)
        test_features = scorer.features_fetch(test_stats.fetch, test.n, chunk=batch_size,
                                              progress=report("test images"))
        measured["test_flag_rate"] = float(detector.flags(detector.score(test_features)).mean())
        measured["n_test"] = int(test.n)
        if gate is not None:
            gated = int(gate.gated(test_features, test_stats.array()).sum())
            gate_measured["test"] = {"n": int(test.n), "gated": gated, "rate": gated / max(1, int(test.n))}
    if probes:  # one pass per probe group serves both the OOD score and the gate
        seen = {group: (list(images), *gate_fit.features_and_stats(scorer, list(images.values())))
                for group, images in probes.items() if images}
        measured["probes"] = {group: {"n": len(features), "flagged": int(detector.flags(detector.score(features)).sum())}
                              for group, (_, features, _) in seen.items()}
        gate_measured["probes"] = gate_fit.measure_features(gate, seen)
    new_meta = dict(meta)
    new_meta["calibration"] = {
        "method": method,
        "temperature": temperature,
        "bias": bias,
        "fitted_on": "val",
        "n": int(len(labels)),
        "rule": "p' = sigmoid(logit(p) / T + bias), p = the flip-averaged probability",
        "temperature_alone": {"temperature": temperature_alone, "val_ece": alone_report["ece"]},
        "val_ece": val_report["ece"],
        "val_ece_uncalibrated": val_report["ece_uncalibrated"],
        "val_brier": val_report["brier"],
        "val_brier_uncalibrated": val_report["brier_uncalibrated"],
    }
    new_meta["operating_points"] = points
    new_meta["ood"] = {**detector.meta_block(), "fitted_on": fitted_on, "n_fit": int(len(fit_features))}
    if measured:
        new_meta["ood"]["measured"] = measured
    new_meta.pop("radiograph_gate", None)
    extras = detector.tensors()
    if gate is not None:
        new_meta["radiograph_gate"] = {**gate_block, **({"measured": gate_measured} if gate_measured else {})}
        extras.update(gate.tensors())
    if half is None:  # re-calibrating a checkpoint: its weights stay exactly as stored
        update_checkpoint_meta(checkpoint, new_meta, extra_tensors=extras)
    else:  # the trainer's first write of its final checkpoint, from the model in memory
        save_checkpoint(checkpoint, model, new_meta, half=half, extra_tensors=extras)
    model.checkpoint_extras = extras
    log.info("calibrated %s: T=%.3f, bias %.3f, val ECE %.3f -> %.3f; OOD threshold %.2f flags %.1f%% of val",
             checkpoint, temperature, bias, val_report["ece_uncalibrated"], val_report["ece"],
             detector.threshold, 100 * detector.val_flag_rate)
    return {
        "checkpoint": str(checkpoint),
        "method": method,
        "temperature": temperature,
        "bias": bias,
        "temperature_alone": new_meta["calibration"]["temperature_alone"],
        "val_ece_uncalibrated": val_report["ece_uncalibrated"],
        "val_ece": val_report["ece"],
        "val_brier_uncalibrated": val_report["brier_uncalibrated"],
        "val_brier": val_report["brier"],
        "operating_points": points,
        "ood": new_meta["ood"],
        "radiograph_gate": new_meta.get("radiograph_gate"),
    }
