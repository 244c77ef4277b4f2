"""Shared widgets: preprocessing sliders, image helpers and the model card.

The sliders are built from :func:`fracture.preprocess.pipeline.list_ops`, so
every range the UI offers is a range the core accepts, and a new parameter in
the core appears on the pages without a page change.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
import streamlit as st

#: Parameters left out of the sliders: fixed for teaching, still at the core's defaults.
HIDDEN_PARAMS = {"diffusion": ("gamma", "option")}


def op_schema(op: str) -> dict[str, Any]:
    """The parameter schema of one preprocessing step (label, help, params)."""
    from fracture.preprocess.pipeline import list_ops

    return list_ops()[op]


def op_controls(op: str, *, key: str, container: Any = None, hidden: Sequence[str] = ()) -> dict[str, Any]:
    """Sliders for a step's parameters; returns a complete spec step ``{"op": op, ...}``.

    Args:
        op: step name (``clahe``, ``canny``, ``diffusion`` ...).
        key: widget key prefix, unique on the page.
        container: where to draw (default: the current one).
        hidden: parameters kept at their default (in addition to :data:`HIDDEN_PARAMS`).
    """
    container = container or st
    schema = op_schema(op)
    step: dict[str, Any] = {"op": op}
    skip = set(hidden) | set(HIDDEN_PARAMS.get(op, ()))
    params = schema["params"]
    if {"low", "high"} <= set(params) and not {"low", "high"} & skip:
        # One range slider: two separate ones let "low" pass "high", which the core refuses.
        low_p, high_p = params["low"], params["high"]
        top = min(int(high_p["max"]), _UI_MAX.get((op, "high"), int(high_p["max"])))
        step["low"], step["high"] = container.slider(
            "thresholds (low – high)", int(low_p["min"]), top, (int(low_p["default"]), int(high_p["default"])),
            key=f"{key}-{op}-thresholds",
            help=f"{low_p.get('help') or 'low threshold'} / {high_p.get('help') or 'high threshold'}")
        skip |= {"low", "high"}
    for name, param in params.items():
        label = name.replace("_", " ")
        if name in skip:
            step.setdefault(name, param["default"])
            continue
        widget_key = f"{key}-{op}-{name}"
        if "choices" in param:
            step[name] = container.selectbox(label, param["choices"], key=widget_key,
                                             index=param["choices"].index(param["default"]),
                                             help=param.get("help"))
        elif param["type"] == "int":
            low, high = int(param["min"]), int(param["max"])
            if param.get("odd_or_zero"):
                options = [0] + list(range(1, min(high, 31) + 1, 2))
                step[name] = container.select_slider(label, options, value=param["default"],
                                                     key=widget_key, help=param.get("help"))
            else:
                high = min(high, _UI_MAX.get((op, name), high))
                step[name] = container.slider(label, low, high, int(param["default"]),
                                              step=int(param.get("step") or 1), key=widget_key,
                                              help=param.get("help"))
        else:
            low, high = float(param["min"]), float(param["max"])
            high = min(high, _UI_MAX.get((op, name), high))
            step[name] = container.slider(label, low, high, float(param["default"]),
                                          step=float(param.get("step") or 0.01), key=widget_key,
                                          help=param.get("help"))
    return step


#: Narrower slider ends than the core allows, where the full range is useless on a page.
_UI_MAX = {("canny", "low"): 500, ("canny", "high"): 500, ("canny_overlay", "low"): 500,
           ("canny_overlay", "high"): 500, ("diffusion", "iterations"): 50, ("clahe", "tile_grid"): 32}


def enhancement_controls(*, key: str, container: Any = None) -> list[dict[str, Any]]:
    """CLAHE and Canny-overlay toggles with their sliders (Predict page).

    Returns:
        The extra preprocessing steps to run before the checkpoint's own
        pipeline (an empty list when both toggles are off).
    """
    container = container or st
    steps: list[dict[str, Any]] = []
    if container.toggle("CLAHE", key=f"{key}-clahe-on",
                        help="Contrast-limited adaptive histogram equalisation before the model."):
        steps.append(op_controls("clahe", key=key, container=container))
    if container.toggle("Canny edges", key=f"{key}-canny-on",
                        help="Brighten Canny edges on the image before the model."):
        steps.append(op_controls("canny_overlay", key=key, container=container))
    return steps


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 grayscale or RGB array as PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # OpenCV refuses only arrays that are not images at all
        raise ValueError(f"cannot encode an array of shape {image.shape} as PNG")
    return encoded.tobytes()


def overlay(image: np.ndarray, heatmap: np.ndarray | None, alpha: float, boxes: Sequence = ()) -> np.ndarray:
    """The Grad-CAM heatmap blended on the image (the image itself when there is no map),
    with the annotated fracture boxes drawn on top when the image has them."""
    from fracture.explain.annotate import draw_boxes
    from fracture.explain.gradcam import overlay_heatmap

    blended = image if heatmap is None else overlay_heatmap(image, heatmap, alpha)
    return draw_boxes(blended, boxes)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


CARD_METRICS = ("roc_auc", "accuracy", "recall", "specificity", "f1", "cohen_kappa", "n")


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``split, level, metric...`` from a checkpoint's ``metrics`` entry.

    A finished run stores full reports (``{split: {"image": {"overall": ...},
    "study": ...}}``); a checkpoint saved during training stores flat
    validation numbers (``{"val": {"level": "image", "val_roc_auc": ...}}``).
    """
    rows = []
    for split, report in metrics.items():
        if not isinstance(report, dict):
            continue
        nested = [level for level in ("image", "study") if isinstance(report.get(level), dict)]
        for level in nested:
            overall = report[level].get("overall") or {}
            rows.append({"split": split, "level": level, **{k: overall.get(k) for k in CARD_METRICS}})
        if not nested:
            prefix = f"{split}_"
            values = {k.removeprefix(prefix): v for k, v in report.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            rows.append({"split": split, "level": report.get("level", "image"),
                         **{k: values.get(k) for k in CARD_METRICS if k in values}})
    return rows


def metric_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The model card's metric rows as text: three decimals, ``n`` whole, a missing value as "–" (never "None")."""
    frame = pd.DataFrame(rows)
    for column in CARD_METRICS:
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        fmt = "{:.0f}" if column == "n" else "{:.3f}"
        frame[column] = [("–" if pd.isna(v) else fmt.format(v)) for v in values]
    return frame


def describe_spec(spec: list[dict[str, Any]]) -> str:
    """A preprocessing spec in words (``CLAHE (clip 2, 8x8 tiles) → resize to 224 px``)."""
    from fracture.errors import PreprocessError
    from fracture.preprocess.pipeline import Pipeline

    if not spec:
        return "none"
    try:
        return Pipeline.from_spec(spec).describe()
    except PreprocessError as exc:
        return f"unreadable ({exc})"


def model_card(entry: Any) -> None:
    """What a checkpoint is, what it was trained on and how it scored on held-out data.

    Shows the facts stored in the checkpoint's metadata, and the model card: the
    Markdown file beside a shipped checkpoint (``NAME.md``), else one rendered
    from the metadata by :func:`fracture.assess.card.render_model_card`.
    """
    meta = entry.meta or {}
    card = Path(entry.path).with_suffix(".md")
    train = meta.get("train_config") or {}
    threshold = meta.get("threshold")
    if isinstance(threshold, (int, float)):  # on the scale of the probabilities shown (calibrated, if stored)
        from fracture.checkpoints.decision import calibrated_threshold

        threshold = calibrated_threshold(meta)
    st.markdown(
        f"**Architecture:** `{meta.get('architecture', '?')}` · **input** {meta.get('image_size', '?')} px × "
        f"{meta.get('in_chans', '?')} channel(s) · **threshold** {_fmt(threshold)} "
        f"({meta.get('threshold_rule') or '?'} rule, chosen on the validation split) · "
        f"**created** {str(meta.get('created_at', '?'))[:10]}"
    )
    st.markdown(
        f"**Trained on:** `{train.get('data', '?')}` (dataset fingerprint "
        f"`{str(meta.get('dataset_fingerprint', '?'))[:12]}`) · mode `{train.get('mode', '?')}` · "
        f"{train.get('epochs', '?')} epochs · body parts: {', '.join(meta.get('body_parts') or []) or '–'}"
    )
    st.markdown(f"**Preprocessing:** {describe_spec(meta.get('preprocess') or [])}")
    rows = metric_rows(meta.get("metrics") or {})
    if rows:
        st.dataframe(metric_table(rows), hide_index=True)
        st.caption("Computed by the trainer at the stored threshold. The validation split also chose "
                   "the threshold and the checkpoint; the test split was not used in training.")
    else:
        st.caption("This checkpoint stores no evaluation metrics.")
    with st.expander("Model card", expanded=False):
        if card.is_file():
            st.markdown(card.read_text())
        else:
            from fracture.errors import CheckpointError
            from fracture.assess.card import render_model_card

            try:
                st.markdown(render_model_card(meta, checkpoint_name=Path(entry.path).name))
            except CheckpointError as exc:
                st.info(f"No model card yet: {exc}")
    with st.expander("Raw metadata"):
        st.code(json.dumps({k: v for k, v in meta.items() if k != "metrics"}, indent=2, default=str),
                language="json")
