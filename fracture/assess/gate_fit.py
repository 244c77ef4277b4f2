"""Fitting and measuring a checkpoint's radiograph gate (level a) with the checkpoint's own scorer.

The gate itself (:mod:`fracture.gate.radiograph`) is pure: a logistic regression on
pooled features and image statistics. What it is fitted on and measured against --
the training radiographs, the generated non-radiographs of
:func:`fracture.gate.probes.fit_probe_sets`, the held-out probe groups -- goes through
:class:`fracture.serve.scorer.Scorer` here, so the gate reads exactly the features
every prediction computes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fracture.gate.radiograph import COLOUR_LIMIT, RadiographGate, fit_gate, image_statistics


def features_and_stats(scorer, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and image statistics of raw uint8 images through the checkpoint's own pipeline."""
    prepared = np.stack([scorer.prepare(np.asarray(image)) for image in images])
    return scorer.features(prepared), image_statistics(prepared)


def fit_for_model(scorer, train_features: np.ndarray, train_stats: np.ndarray, *,
                  val_features: np.ndarray | None = None,
                  val_stats: np.ndarray | None = None) -> tuple[RadiographGate, dict[str, Any]]:
    """Fit a model's gate on its training radiographs against :func:`~fracture.gate.probes.fit_probe_sets`.

    Returns:
        The gate and its ``meta["radiograph_gate"]`` block (with what it was fitted on).

    Raises:
        GateError: too few images to fit.
    """
    from fracture.gate.probes import fit_probe_sets

    others = fit_probe_sets()
    other_features, other_stats = features_and_stats(scorer, list(others.values()))
    gate = fit_gate(train_features, train_stats, other_features, other_stats,
                    val_features=val_features, val_stats=val_stats)
    block = {**gate.meta_block(), "n_radiographs": int(len(train_features)), "n_other": int(len(others)),
             "fitted_on": "train-split radiographs vs fracture.gate.probes.fit_probe_sets (photo crops, documents "
                          "and screen shots, noise, CT/MR-like slices)"}
    return gate, block


def measure(gate: RadiographGate | None, scorer, groups: Mapping[str, Mapping[str, np.ndarray]]
            ) -> dict[str, dict[str, Any]]:
    """Per probe group ``{"n", "gated", "rate"}``: how many the pixel gate refuses (held-out images only).

    Runs the scorer over each group; a caller that already has the groups' features uses
    :func:`measure_features`.
    """
    if gate is None:
        return {}
    return measure_features(gate, {name: (list(images), *features_and_stats(scorer, list(images.values())))
                                   for name, images in groups.items() if images})


def measure_features(gate: RadiographGate | None,
                     groups: Mapping[str, tuple[Sequence[str], np.ndarray, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """:func:`measure` on ``{group: (image names, features, statistics)}`` already computed.

    The probes are gray; for scikit-image's sample photos, whose files are in colour, the group also
    says ``gated_as_files``: refused by the colour check or the pixels, as an upload of the file would be.
    """
    from fracture.gate.probes import HELD_OUT_PHOTOS, photo_colourfulness

    out: dict[str, dict[str, Any]] = {}
    if gate is None:
        return out
    colour = None
    for name, (keys, features, stats) in groups.items():
        gated = gate.gated(features, stats)
        out[name] = {"n": int(len(gated)), "gated": int(gated.sum()), "rate": float(gated.mean())}
        if set(keys) <= set(HELD_OUT_PHOTOS):
            colour = colour or photo_colourfulness()
            as_files = gated | np.array([colour.get(k, 0.0) > COLOUR_LIMIT for k in keys])
            out[name]["gated_as_files"] = int(as_files.sum())
    return out
