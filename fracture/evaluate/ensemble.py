"""Ensembles of binary models: average their probabilities image by image.

For a binary problem, averaging the members' softmax outputs (the
"softmax-average" ensembles of the MURA literature) and reading the positive
class equals averaging their positive-class probabilities, which is what
:func:`ensemble_probabilities` does. Members are aligned by image path, never
by row order, so a member evaluated on a differently sorted table cannot put
probabilities next to the wrong images.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fracture.evaluate.metrics import EvaluationError, choose_threshold

logger = logging.getLogger(__name__)

ENSEMBLE_METHODS = ("mean", "median")
_SHOWN_PATHS = 5


def _describe_paths(paths: Sequence[str]) -> str:
    shown = ", ".join(str(p) for p in list(paths)[:_SHOWN_PATHS])
    more = f" and {len(paths) - _SHOWN_PATHS} more" if len(paths) > _SHOWN_PATHS else ""
    return shown + more


def _check_member(index: int, frame: pd.DataFrame) -> None:
    for column in ("path", "prob"):
        if column not in frame.columns:
            raise EvaluationError(
                f"ensemble member {index} lacks column {column!r} (has {list(frame.columns)})"
            )
    duplicated = frame["path"][frame["path"].duplicated()].unique()
    if len(duplicated):
        raise EvaluationError(
            f"ensemble member {index} has more than one row for path(s) "
            f"{_describe_paths(duplicated)}; give one probability per image"
        )


def ensemble_probabilities(
    frames: Sequence[pd.DataFrame],
    how: str = "mean",
) -> pd.DataFrame:
    """Combine members' per-image probabilities into one prediction table.

    Args:
        frames: one table per member with columns ``path`` and ``prob`` (other
            columns such as ``label, body_part, study_id, patient_id`` are taken
            from the first member).
        how: ``"mean"`` (softmax average) or ``"median"``.

    Returns:
        The first member's table (same row order) with ``prob`` replaced by the
        combined probability and one ``prob_<i>`` column per member.

    Raises:
        EvaluationError (a ``ValueError``): no members, unknown ``how``, a
            member without ``path``/``prob``, duplicate paths, members that do
            not cover the same images (the missing paths are named), or
            members that disagree on an image's label.
    """
    if how not in ENSEMBLE_METHODS:
        raise EvaluationError(f"unknown ensemble method {how!r}; use one of {ENSEMBLE_METHODS}")
    if not frames:
        raise EvaluationError("an ensemble needs at least one member's predictions")
    for index, frame in enumerate(frames):
        _check_member(index, frame)
    base = frames[0].reset_index(drop=True)
    base_paths = pd.Index(base["path"])
    member_probs = []
    for index, frame in enumerate(frames):
        paths = pd.Index(frame["path"])
        missing = base_paths.difference(paths)
        extra = paths.difference(base_paths)
        if len(missing) or len(extra):
            problems = []
            if len(missing):
                problems.append(f"lacks {len(missing)} image(s) of member 0: {_describe_paths(missing)}")
            if len(extra):
                problems.append(f"has {len(extra)} image(s) member 0 lacks: {_describe_paths(extra)}")
            raise EvaluationError(
                f"ensemble member {index} {'; '.join(problems)}; evaluate every member on "
                "the same images"
            )
        aligned = frame.set_index("path").loc[base_paths]
        if "label" in base.columns and "label" in aligned.columns:
            differs = aligned["label"].to_numpy() != base["label"].to_numpy()
            if differs.any():
                raise EvaluationError(
                    f"ensemble member {index} disagrees with member 0 on the label of "
                    f"{_describe_paths(base_paths[differs])}; the members were evaluated on "
                    "different manifests"
                )
        member_probs.append(aligned["prob"].to_numpy(dtype=np.float64))
    stacked = np.vstack(member_probs)
    combined = stacked.mean(axis=0) if how == "mean" else np.median(stacked, axis=0)
    result = base.copy()
    result["prob"] = combined
    for index, probs in enumerate(member_probs):
        result[f"prob_{index}"] = probs
    logger.debug("ensembled %d members over %d images (%s)", len(frames), len(result), how)
    return result


def ensemble_threshold(
    member_thresholds: Sequence[float],
    *,
    val_labels: Any = None,
    val_probs: Any = None,
    rule: str = "youden",
    target: float | None = None,
) -> float:
    """Decision threshold of an ensemble.

    By default the mean of the members' own thresholds (each chosen on
    validation data when the member was trained). Better, when the ensemble's
    validation predictions are at hand: pass ``val_labels`` and ``val_probs``
    (the ENSEMBLE's probabilities on the validation split, from
    :func:`ensemble_probabilities`) and the threshold is chosen on them with
    :func:`~fracture.evaluate.metrics.choose_threshold` and ``rule``/``target``.
    Never pass test-split predictions here.

    Raises:
        EvaluationError: no member thresholds and no validation data, only one
            of ``val_labels``/``val_probs``, or what ``choose_threshold`` raises.
    """
    if (val_labels is None) != (val_probs is None):
        raise EvaluationError("give both val_labels and val_probs, or neither")
    if val_labels is not None:
        return choose_threshold(val_labels, val_probs, rule=rule, target=target)
    values = np.asarray(list(member_thresholds), dtype=np.float64)
    if values.size == 0:
        raise EvaluationError(
            "no member thresholds to average; pass the members' thresholds or validation data"
        )
    if not np.isfinite(values).all():
        raise EvaluationError(f"member thresholds must be finite numbers; got {values.tolist()}")
    return float(values.mean())
