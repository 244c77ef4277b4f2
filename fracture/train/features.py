"""Frozen-feature mode: the backbone's pooled features, computed once and kept on disk.

In ``frozen`` mode only the heads train, so the backbone's output for every
cached image is fixed: it is computed once per (model, weights, TTA, images,
device kind) through the one forward path (:func:`fracture.serve.inference.extract_features`)
and stored as ``CACHE/features/<model>-<key>.npy``; an epoch then takes
seconds on a CPU.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fracture.util.files import atomic_replace
from fracture.recipes.config import TrainConfig
from fracture.train.data import TrainData

FEATURES_VERSION = 2  # 2: extracted under bf16 autocast on CUDA, like every other forward


def feature_key(cfg: TrainConfig, cache_key: str, device: torch.device) -> str:
    """What the features depend on: model, weights, channels, images (the cache key), TTA, device kind."""
    weights_id = "random-seed-%d" % cfg.seed
    if cfg.pretrained:
        weights_id = "pretrained"
        if cfg.weights_path:
            stat = Path(cfg.weights_path).stat()
            weights_id = f"{Path(cfg.weights_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    amp = bool(cfg.amp and device.type == "cuda")
    payload = json.dumps(
        {"model": cfg.model, "weights": weights_id, "in_chans": cfg.in_chans, "cache": cache_key,
         "tta": cfg.tta_hflip, "amp": amp, "version": FEATURES_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def features_path(cfg: TrainConfig, data: TrainData, device: torch.device) -> Path:
    return data.cache_root / "features" / f"{cfg.model}-{feature_key(cfg, data.cache.key, device)}.npy"


def freeze_backbone(model: torch.nn.Module) -> "HeadOnly":
    """Freeze the backbone; the module training calls (features in, heads only)."""
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    return HeadOnly(model)


class HeadOnly(torch.nn.Module):
    """``forward`` = the model's heads on pooled features, so DDP (which calls
    ``forward``) can wrap frozen-mode training like any other."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, body_part: torch.Tensor | None = None):
        return self.model.forward_head(features, body_part=body_part)


def load_or_extract(
    cfg: TrainConfig, data: TrainData, model: torch.nn.Module, input_spec, device: torch.device,
    emit: Callable[..., Any], progress: Callable[[str, int, int], None], *, extract: bool = True,
) -> dict[str, torch.Tensor]:
    """Features of every split on ``device``, from the cache file or extracted now (and saved atomically).

    Args:
        extract: False on torchrun ranks other than 0, which only read the file
            rank 0 wrote (after a barrier).
    """
    from fracture.serve.inference import extract_features

    path = features_path(cfg, data, device)
    if path.is_file() or not extract:
        feats = np.load(path, mmap_mode="r")
        emit("log", message=f"frozen features from cache {path.name}")
    else:
        started = time.time()
        n = len(data.cache)
        feats = extract_features(
            model, data.cache.get_batch, n, input_spec, device=device, batch_size=64,
            tta_hflip=cfg.tta_hflip, amp=cfg.amp, progress=lambda done, total: progress("extracting features", done, total),
        )
        with atomic_replace(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, feats)
        emit("log", message=f"extracted {n} feature vectors in {time.time() - started:.1f} s",
             images_per_s=n / max(1e-9, time.time() - started))
    all_feats = torch.from_numpy(np.array(feats, dtype=np.float32))  # a writable copy of the memory map
    return {name: all_feats[split.cache_pos].to(device) for name, split in data.splits.items()}
