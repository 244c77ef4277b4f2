"""Tiny checkpoints for tests: the smallest valid metadata and a seeded small_cnn saved with it.

One home for what several test folders need (tests/checkpoints, tests/util, tests/serve), so a change to
the metadata contract is made once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_meta(size: int = 32, in_chans: int = 1, **overrides: Any) -> dict[str, Any]:
    """The required metadata of a binary ``normal``/``abnormal`` model at ``size`` px (letterboxed)."""
    meta: dict[str, Any] = {
        "preprocess": [{"op": "resize", "size": size, "mode": "letterbox"}],
        "normalization": {"mean": [0.5] * in_chans, "std": [0.5] * in_chans},
        "class_names": ["normal", "abnormal"],
        "body_parts": [],
        "multitask": False,
        "threshold": 0.5,
    }
    meta.update(overrides)
    return meta


def save_tiny_checkpoint(path: Path, *, size: int = 32, in_chans: int = 1, seed: int = 0, **overrides: Any) -> Path:
    """A seeded ``small_cnn`` saved at ``path`` with :func:`tiny_meta` (``overrides`` on top)."""
    import torch

    from fracture.checkpoints.format import save_checkpoint
    from fracture.models import create_model

    torch.manual_seed(seed)
    model = create_model("small_cnn", in_chans=in_chans)
    return save_checkpoint(path, model, tiny_meta(size, in_chans, **overrides))
