"""Choose a checkpoint's default heatmap (method and layer) by localisation on validation data.

Every offered method on every layer preset the model has is scored with the
localisation metric (:mod:`fracture.evaluate.localisation`, run by
:mod:`fracture.assess.localisation` through the checkpoint's scorer) on the validation
split's fractured images with boxes; the best pointing hit wins, ties broken by
mass in box, then by the order of :data:`fracture.explain.cam.METHODS` and the
layer presets (plain Grad-CAM on the last block first). All candidates share one
forward and one partial backward pass per batch, so the search costs about as
much as one prediction per image. The test split is never looked at.

The choice goes into the checkpoint's metadata as ``meta["explain"]``, which
:class:`fracture.serve.predictor.Predictor` and the localisation metric read.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from fracture.errors import DatasetError, ModelError
from fracture.explain.cam import METHODS
from fracture.explain.forward import CamChoice
from fracture.explain.layers import LAYER_PRESETS, available_layers

logger = logging.getLogger(__name__)

SELECTION_SPLIT = "val"


@dataclass
class HeatmapSelection:
    """The ranked candidates and the winner."""

    table: pd.DataFrame  # method, layer, n, pointing_hit, mass_in_box, box_area; best first
    best: CamChoice
    split: str
    n_images: int
    extra: dict[str, Any] = field(default_factory=dict)

    def meta_entry(self) -> dict[str, Any]:
        """What goes into ``meta["explain"]``."""
        top = self.table.iloc[0]
        return {
            "method": self.best.method,
            "layer": self.best.layer if isinstance(self.best.layer, str) else list(self.best.layer),
            "val_pointing_hit": float(top["pointing_hit"]),
            "val_mass_in_box": float(top["mass_in_box"]),
            "val_box_area": float(top["box_area"]),
            "n_images": int(self.n_images),
            "chosen_on": self.split,
            "rule": "highest pointing hit, ties by mass in box, then plain Grad-CAM on the last block first",
        }


def rank_candidates(scores: dict[CamChoice, pd.DataFrame]) -> pd.DataFrame:
    """One row per candidate (mean hit, mass in box, box area), best first; ties keep the given order."""
    rows = []
    for order, (choice, per_image) in enumerate(scores.items()):
        rows.append({
            "method": choice.method, "layer": choice.layer, "n": int(len(per_image)),
            "pointing_hit": float(per_image["hit"].astype(float).mean()) if len(per_image) else 0.0,
            "mass_in_box": float(per_image["mass_in_box"].mean()) if len(per_image) else 0.0,
            "box_area": float(per_image["box_area"].mean()) if len(per_image) else 0.0,
            "order": order, "choice": choice,
        })
    table = pd.DataFrame(rows).sort_values(["pointing_hit", "mass_in_box", "order"], ascending=[False, False, True])
    return table.reset_index(drop=True)


def candidate_choices(model, methods: Sequence[str] | None = None, layers: Sequence[str] | None = None) -> list[CamChoice]:
    """Every (method, layer preset) pair to try; Grad-CAM on the last block first."""
    presets = available_layers(model)
    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS] + [layer for layer in layers or () if layer not in LAYER_PRESETS]
    if unknown:
        raise ModelError(f"unknown heatmap method or layer {', '.join(unknown)}; methods: {', '.join(METHODS)}; "
                         f"layers: {', '.join(LAYER_PRESETS)}")
    layers = [layer for layer in (layers or LAYER_PRESETS) if layer in presets]
    return [CamChoice(method, layer) for layer in layers for method in methods]


def select_heatmap(
    checkpoint: str | Path,
    data_root: str | Path,
    *,
    split: str = SELECTION_SPLIT,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    device: str = "auto",
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> HeatmapSelection:
    """Score every candidate heatmap on ``split`` and pick the best.

    Raises:
        DatasetError: no fractured image of ``split`` has a box.
        CheckpointError: the checkpoint is invalid.
    """
    from fracture.assess.localisation import score_frame
    from fracture.checkpoints.meta import split_seed
    from fracture.data import open_dataset
    from fracture.evaluate.localisation import positives_with_boxes
    from fracture.serve.scorer import Scorer

    scorer = Scorer.from_checkpoint(checkpoint, backend="torch", device=device, need_heatmaps=True)
    rows = positives_with_boxes(open_dataset(data_root, seed=split_seed(scorer.meta.raw)).subset(split))
    if rows.empty:
        raise DatasetError(
            f"{data_root}: no fractured image of the {split} split has an annotated box; heatmaps are chosen "
            "on boxes (FracAtlas annotations/YOLO, the demo set's fracture_locations.csv)"
        )
    choices = candidate_choices(scorer.model, methods, layers)
    scores = score_frame(scorer, rows, choices, batch_size=batch_size, progress=progress)
    table = rank_candidates(scores)
    best = table.iloc[0]["choice"]
    logger.info("heatmap chosen on %s (%d images): %s, pointing hit %.3f", split, len(rows), best.label(),
                table.iloc[0]["pointing_hit"])
    return HeatmapSelection(table=table.drop(columns=["order", "choice"]), best=best, split=split,
                            n_images=int(table.iloc[0]["n"]))


def store_selection(checkpoint: str | Path, selection: HeatmapSelection) -> Path:
    """Re-save ``checkpoint`` with ``meta["explain"]`` set, every other field kept."""
    from fracture.checkpoints.format import read_checkpoint_meta, update_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)
    meta["explain"] = selection.meta_entry()
    return update_checkpoint_meta(checkpoint, meta)
