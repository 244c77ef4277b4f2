"""Localisation as a metric: does a model's heatmap point at the annotated fracture?

Two numbers per fractured image that has boxes, both on the square model input
(the heatmap's own geometry), with the boxes mapped into it through the same
letterbox arithmetic as the preprocessing (:mod:`fracture.data.boxes`):

* **pointing hit** (the pointing game, Zhang et al. 2018; CheXlocalize): the
  heatmap's maximum lies inside a box grown by :data:`MARGIN` (5% of the
  image's width on the left and right, 5% of its height above and below,
  clipped to the image). A maximum in the letterbox padding is always a miss.
* **mass in box**: the share of the heatmap's total inside the (not grown)
  boxes. The denominator is the whole input square, so mass in the padding
  counts as outside. Next to it, **box area**: the boxes' share of the same
  square, i.e. what a uniform map would score (chance). A pointing hit alone
  can be 100% with little mass inside, hence both (CheXlocalize's advice).

The rate of hits gets a percentile bootstrap 95% CI over images. Everything is
reported overall and per body part, on positives that have boxes, for the
fracture logit's heatmap.

Pure numpy/pandas: the heatmaps themselves are made by the checkpoint's scorer
(:mod:`fracture.assess.localisation` runs a checkpoint over a split).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fracture.data.boxes import Box, box_mask, boxes_to_input

MARGIN = 0.05
"""How far outside a box (fraction of the image's side, per axis) a maximum still counts as a hit."""
N_BOOT = 2000
PER_IMAGE_COLUMNS = ("path", "body_part", "hit", "mass_in_box", "box_area", "chance_hit", "centre_hit")


@dataclass(frozen=True)
class ImageLocalisation:
    """One image's scores: pointing hit, heatmap mass inside the boxes, the boxes' area share.

    ``chance_hit`` is the share of the input covered by the grown boxes (the
    hit probability of a maximum placed at random); ``centre_hit`` says whether
    a map peaking at the image's centre would hit (a centre-bias baseline).
    """

    hit: bool
    mass_in_box: float
    box_area: float
    chance_hit: float = 0.0
    centre_hit: bool = False


def grow_boxes(boxes: Sequence[Box], margin: float = MARGIN) -> tuple[Box, ...]:
    """Boxes (normalised to the original image) grown by ``margin`` on each side, clipped to [0, 1]."""
    return tuple(
        (max(0.0, x0 - margin), max(0.0, y0 - margin), min(1.0, x1 + margin), min(1.0, y1 + margin))
        for x0, y0, x1, y1 in boxes
    )


def score_heatmap(
    heatmap: np.ndarray,
    boxes: Sequence[Box],
    original_hw: tuple[int, int],
    *,
    resize_mode: str = "letterbox",
    margin: float = MARGIN,
) -> ImageLocalisation:
    """Score one heatmap against its image's boxes.

    Args:
        heatmap: (S, S) non-negative map on the model input (letterboxed or
            stretched square), as :func:`fracture.explain.forward.forward_with_cam` gives.
        boxes: ``(x_min, y_min, x_max, y_max)`` normalised to the original image.
        original_hw: (height, width) of the original image.
        resize_mode: how the preprocessing made the square (``letterbox`` or ``stretch``).
        margin: see :data:`MARGIN`.

    Returns:
        The image's :class:`ImageLocalisation`. An all-zero map is a miss with no mass inside.

    Raises:
        ValueError: no boxes, or a heatmap that is not square and 2-d.
    """
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0)
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1]:
        raise ValueError(f"localisation needs a square (S, S) heatmap on the model input, got {heatmap.shape}")
    if not boxes:
        raise ValueError("localisation needs at least one box")
    size = heatmap.shape[0]
    heatmap = np.clip(heatmap, 0.0, None)
    inside = box_mask(boxes_to_input(boxes, original_hw, size, resize_mode), size, size) > 0
    near = box_mask(boxes_to_input(grow_boxes(boxes, margin), original_hw, size, resize_mode), size, size) > 0
    centre = boxes_to_input([(0.5, 0.5, 0.5, 0.5)], original_hw, size, resize_mode)[0]
    centre_hit = bool(near[min(int(centre[1] * size), size - 1), min(int(centre[0] * size), size - 1)])
    baselines = {"box_area": float(inside.mean()), "chance_hit": float(near.mean()), "centre_hit": centre_hit}
    total = float(heatmap.sum())
    if total <= 0.0:
        return ImageLocalisation(hit=False, mass_in_box=0.0, **baselines)
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return ImageLocalisation(hit=bool(near[peak]), mass_in_box=float(heatmap[inside].sum() / total), **baselines)


def bootstrap_rate_ci(values: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap 95% interval of the mean of ``values`` (None for no values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def describe_method(choice_label: str, image_size: int | None, resize_mode: str, margin: float = MARGIN,
                    n_boot: int = N_BOOT) -> str:
    """The ``method`` text of a localisation block: what was measured, exactly."""
    size = f"{image_size} px " if image_size else ""
    return (
        f"{choice_label} heatmap of the fracture logit, on fractured images with annotated boxes. "
        f"pointing_hit: the heatmap maximum lies in a box grown by {margin:.0%} of the image's width/height "
        f"on each side (a maximum in padding is a miss). mass_in_box: share of the heatmap's sum inside the "
        f"boxes on the {size}{resize_mode} model input (mass in the padding counts as outside); box_area: the "
        f"boxes' share of that input, what a uniform map scores. Baselines for the hit: chance_hit (share of "
        f"the input the grown boxes cover: a maximum placed at random) and centre_hit (a maximum at the image "
        f"centre). 95% CI: percentile bootstrap over images ({n_boot} resamples, seed 0)."
    )


def _block(rows: pd.DataFrame, method: str, n_boot: int, seed: int) -> dict[str, Any]:
    n = int(len(rows))
    if n == 0:
        return {"n": 0, "pointing_hit": None, "pointing_hit_ci": None, "mass_in_box": None, "box_area": None,
                "mass_vs_chance": None, "chance_hit": None, "centre_hit": None, "method": method}
    mass, area = float(rows["mass_in_box"].mean()), float(rows["box_area"].mean())
    return {
        "n": n,
        "pointing_hit": float(rows["hit"].astype(float).mean()),
        "pointing_hit_ci": bootstrap_rate_ci(rows["hit"].astype(float).to_numpy(), n_boot=n_boot, seed=seed),
        "mass_in_box": mass,
        "box_area": area,
        "mass_vs_chance": mass / area if area > 0 else None,
        "chance_hit": float(rows["chance_hit"].mean()),
        "centre_hit": float(rows["centre_hit"].astype(float).mean()),
        "method": method,
    }


def summarize_localisation(
    per_image: pd.DataFrame, method: str, *, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """The ``localisation`` block: overall scores plus ``by_body_part`` (same keys).

    Args:
        per_image: one row per scored image with :data:`PER_IMAGE_COLUMNS`.
        method: the text from :func:`describe_method`.
    """
    block = _block(per_image, method, n_boot, seed)
    block["by_body_part"] = {
        str(part): {k: v for k, v in _block(rows, method, n_boot, seed).items() if k != "method"}
        for part, rows in sorted(per_image.groupby("body_part"), key=lambda item: str(item[0]))
    } if len(per_image) else {}
    return block


def positives_with_boxes(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` labelled positive that carry at least one box."""
    if "boxes" not in frame.columns:
        return frame.iloc[0:0]
    has = frame["boxes"].map(lambda b: bool(b) if isinstance(b, (tuple, list)) else False)
    return frame[(frame["label"] == 1) & has].reset_index(drop=True)


def format_localisation(block: dict[str, Any]) -> str:
    """One line for terminals: hit rate with its CI, mass in box against chance."""
    if not block or not block.get("n"):
        return "localisation: no positive image with a box"
    low, high = block["pointing_hit_ci"]
    return (
        f"localisation on {block['n']} fractured images with boxes: pointing hit {block['pointing_hit']:.3f} "
        f"(95% CI {low:.3f}-{high:.3f}), heatmap mass in box {block['mass_in_box']:.3f} vs box area "
        f"{block['box_area']:.3f} (chance)"
    )


def localisation_card_lines(meta: dict[str, Any]) -> list[str]:
    """The model card's Localisation section, from ``meta["metrics"]["test"]`` and ``meta["explain"]`` only."""
    test = (meta.get("metrics") or {}).get("test") or {}
    block = (test.get("image") or {}).get("localisation")
    if not block or not block.get("n"):
        return []
    low, high = block["pointing_hit_ci"]
    ratio = block.get("mass_vs_chance")
    lines = [
        "## Localisation",
        "",
        f"Does the heatmap point at the fracture? On the test split's {block['n']} fractured images with "
        f"annotated boxes: **pointing hit {block['pointing_hit']:.3f} (95% CI {low:.3f}–{high:.3f})**; heatmap "
        f"mass inside the boxes {block['mass_in_box']:.3f} against the boxes' own area {block['box_area']:.3f} "
        f"(what chance gives){f', {ratio:.1f}x chance' if ratio else ''}.",
        "",
    ]
    choice = meta.get("explain")
    if isinstance(choice, dict) and choice.get("method"):
        val_hit = choice.get("val_pointing_hit")
        lines += [
            f"Heatmap: `{choice['method']}` on layer `{choice.get('layer')}`, chosen on the "
            f"{choice.get('chosen_on', 'validation')} split by pointing hit"
            f"{f' ({val_hit:.3f})' if isinstance(val_hit, (int, float)) else ''}, ties by mass in box "
            "(`python -m fracture explain-select`).",
            "",
        ]
    parts = block.get("by_body_part") or {}
    if parts:
        lines += ["| body part | images | pointing hit (95% CI) | mass in box | box area |", "| --- | --- | --- | --- | --- |"]
        for part, row in parts.items():
            ci = row.get("pointing_hit_ci") or [float("nan")] * 2
            lines.append(f"| {part} | {row['n']} | {row['pointing_hit']:.3f} ({ci[0]:.3f}–{ci[1]:.3f}) | "
                         f"{row['mass_in_box']:.3f} | {row['box_area']:.3f} |")
        lines.append("")
    lines += [f"Method: {block['method']}", ""]
    return lines


def localisation_table(reports: dict[str, dict[str, Any]], *, by_body_part: bool = False) -> pd.DataFrame:
    """One row per model (or per model and body part) with a localisation block, for Compare.

    Args:
        reports: ``{name: report}`` as :func:`fracture.assess.compare.evaluate_checkpoint` returns them;
            reports without a block (ensembles, datasets without boxes) are left out.
        by_body_part: one row per (model, body part) instead of per model.
    """
    rows = []
    for name, report in reports.items():
        block = (report.get("image") or {}).get("localisation")
        if not block or not block.get("n"):
            continue
        entries = block.get("by_body_part", {}).items() if by_body_part else [(None, block)]
        for part, entry in entries:
            low, high = entry.get("pointing_hit_ci") or (None, None)
            row = {"model": name}
            if by_body_part:
                row["body part"] = part
            row.update({
                "n": entry["n"], "pointing hit": entry["pointing_hit"], "CI low": low, "CI high": high,
                "mass in box": entry["mass_in_box"], "box area (chance)": entry["box_area"],
                "centre baseline": entry.get("centre_hit"),
            })
            rows.append(row)
    index = ["model", "body part"] if by_body_part else ["model"]
    return pd.DataFrame(rows).set_index(index) if rows else pd.DataFrame()
