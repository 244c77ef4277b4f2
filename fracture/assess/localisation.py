"""Localisation of a checkpoint on a dataset split: its heatmaps scored against the annotated boxes.

The heatmaps come from the checkpoint's scorer (:meth:`fracture.serve.scorer.Scorer.heatmap_sets`:
the same pipeline, tensor conversion and forward as its probability); each is scored by the
pure pointing game of :mod:`fracture.evaluate.localisation`. Per-image scores are cached on disk
per (checkpoint content, dataset, split, heatmap, margin).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from fracture.errors import FractureError
from fracture.evaluate.localisation import (
    MARGIN, N_BOOT, PER_IMAGE_COLUMNS, describe_method, positives_with_boxes, score_heatmap, summarize_localisation,
)
from fracture.util.jsonio import read_json

logger = logging.getLogger(__name__)

CACHE_VERSION = 2


def score_frame(
    scorer,
    frame: pd.DataFrame,
    choices: Sequence[Any],
    *,
    batch_size: int = 16,
    margin: float = MARGIN,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Any, pd.DataFrame]:
    """Per-image localisation of several heatmap choices, with one forward pass per batch.

    Args:
        scorer: a torch :class:`fracture.serve.scorer.Scorer`.
        frame: rows with ``path``, ``boxes`` (non-empty), ``body_part``.
        choices: :class:`fracture.explain.forward.CamChoice` objects; every
            layer they name is captured in the same pass.

    Returns:
        ``{choice: per-image frame with PER_IMAGE_COLUMNS}``; unreadable images
        are logged and left out.
    """
    import numpy as np

    from fracture.data.imageio import load_image
    from fracture.errors import ImageLoadError, PreprocessError

    resize_mode = scorer.pipeline.resize_mode
    rows: dict[Any, list[dict[str, Any]]] = {choice: [] for choice in choices}
    records = frame.to_dict("records")
    for start in range(0, len(records), batch_size):
        chunk, inputs, shapes = [], [], []
        for record in records[start:start + batch_size]:
            try:
                image = load_image(record["path"])
                inputs.append(scorer.prepare(image))
            except (ImageLoadError, PreprocessError) as exc:
                logger.warning("localisation: %s left out (%s)", record["path"], exc)
                continue
            chunk.append(record)
            shapes.append(image.shape[:2])
        if chunk:
            body = scorer.body_indices([r["body_part"] for r in chunk], len(chunk))
            maps = scorer.heatmap_sets(np.stack(inputs), choices, body_parts=body)
            for choice in choices:
                for record, shape, heatmap in zip(chunk, shapes, maps[choice]):
                    scored = score_heatmap(heatmap, record["boxes"], shape, resize_mode=resize_mode, margin=margin)
                    rows[choice].append({"path": record["path"], "body_part": record["body_part"],
                                         **dataclasses.asdict(scored)})
        if progress is not None:
            progress(min(start + batch_size, len(records)), len(records))
    return {choice: pd.DataFrame(rows[choice], columns=list(PER_IMAGE_COLUMNS)) for choice in choices}


def split_localisation(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str,
    *,
    manifest=None,
    choice=None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    n_boot: int = N_BOOT,
) -> dict[str, Any] | None:
    """The localisation block of one checkpoint on one split (per-image scores cached on disk).

    Args:
        checkpoint: a checkpoint file.
        data_root: the dataset (its manifest must carry boxes).
        split: a split name or ``all``.
        manifest: an already opened manifest of ``data_root`` (saves a rescan).
        choice: a :class:`~fracture.explain.forward.CamChoice`; default: the
            checkpoint's stored one (``meta["explain"]``), else Grad-CAM.

    Returns:
        The block of :func:`summarize_localisation`, or None when no positive
        image of the split has a box (MURA, class folders).
    """
    from fracture.checkpoints.format import read_meta
    from fracture.checkpoints.meta import split_seed
    from fracture.data import open_dataset
    from fracture.preprocess.pipeline import Pipeline
    from fracture.settings import get_settings
    from fracture.util.files import file_sha256
    from fracture.util.jsonio import atomic_write_json

    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    manifest = manifest or open_dataset(data_root, seed=split_seed(meta.raw))
    frame = manifest.frame if split == "all" else manifest.subset(split)
    rows = positives_with_boxes(frame)
    if rows.empty:
        return None
    if choice is None:
        from fracture.explain.forward import CamChoice

        choice = CamChoice() if meta.explain is None else CamChoice(meta.explain.method, meta.explain.layer)
    resize_mode = Pipeline.from_spec(list(meta.preprocess)).resize_mode
    layer = choice.layer if isinstance(choice.layer, str) else list(choice.layer)
    cache_root = Path(cache_dir) if cache_dir else get_settings().cache_dir
    key = hashlib.sha256(json.dumps(
        [file_sha256(checkpoint), manifest.fingerprint(), split, choice.method, layer, MARGIN, CACHE_VERSION]
    ).encode()).hexdigest()[:32]
    path = cache_root / "localisation" / f"{key}.json"
    cached = _read_cache(path)
    if cached is not None:
        per_image, label = cached
    else:
        from fracture.explain.forward import usable_choice
        from fracture.serve.scorer import Scorer

        scorer = Scorer.from_checkpoint(checkpoint, backend="torch", device=device, need_heatmaps=True)
        used = usable_choice(scorer.model, choice)
        per_image = score_frame(scorer, rows, [used])[used]
        label = used.label()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"choice": label, "rows": per_image.to_dict("records")})
    method = describe_method(label, meta.image_size, resize_mode)
    block = summarize_localisation(per_image, method, n_boot=n_boot)
    block["n_unreadable"] = int(len(rows) - len(per_image))
    return block


def _read_cache(path: Path) -> tuple[pd.DataFrame, str] | None:
    if not path.is_file():
        return None
    try:  # the guarded reader: a deep or damaged cache is recomputed, never a traceback on Compare
        data = read_json(path, max_bytes=256 * 1024 * 1024, nonfinite="allow", what="(localisation cache)")
        return pd.DataFrame(data["rows"], columns=list(PER_IMAGE_COLUMNS)), str(data["choice"])
    except (OSError, ValueError, KeyError, TypeError, FractureError) as exc:
        logger.warning("localisation cache %s unreadable (%s); recomputing", path, exc)
        return None
