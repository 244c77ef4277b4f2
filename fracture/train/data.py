"""A run's data: the manifest, its train/val/test splits and the image cache behind them.

Every image is preprocessed once into :class:`fracture.cache.ImageCache` (the
whole manifest, so evaluation and later runs reuse it); a split is the rows of
one split that decoded, with their positions in the cache, labels and
body-part indices. Problems (unreadable rows, undecodable images) are reported
as events, never dropped silently.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fracture.errors import TrainingError
from fracture.recipes.config import TrainConfig

MAX_PROBLEM_EVENTS = 50
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SplitData:
    """One split's rows, their positions in the image cache, labels and body parts."""

    name: str
    frame: pd.DataFrame
    cache_pos: np.ndarray
    labels: np.ndarray
    body: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, rows: np.ndarray) -> "SplitData":
        """The split restricted (or cycled) to ``rows``."""
        return SplitData(self.name, self.frame.iloc[rows].reset_index(drop=True), self.cache_pos[rows],
                         self.labels[rows], self.body[rows])


@dataclass
class TrainData:
    """What the trainer reads: splits, the cache, the preprocessing spec and the dataset's identity."""

    manifest: Any
    fingerprint: str
    body_vocab: list[str]
    spec: list[dict]
    cache: Any
    cache_root: Path
    splits: dict[str, SplitData]
    monitor: str

    def split_sizes(self) -> dict[str, dict[str, int]]:
        return {
            name: {"images": len(split), "positives": int(split.labels.sum()),
                   "studies": int(split.frame["study_id"].nunique())}
            for name, split in self.splits.items()
        }


def report_problems(emit: Callable[..., Any], problems: list[tuple[str, str]], kind: str) -> None:
    """``data_problem`` events for the first problems, then one line counting the rest."""
    for path, reason in problems[:MAX_PROBLEM_EVENTS]:
        emit("data_problem", kind=kind, path=str(path), reason=reason)
    if len(problems) > MAX_PROBLEM_EVENTS:
        emit("data_problem", kind=kind, path="",
             reason=f"{len(problems) - MAX_PROBLEM_EVENTS} more {kind} problems not listed")


def _subsample_train(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded subset of the training rows (quick runs); other splits untouched."""
    if not limit:
        return frame
    train_rows = frame.index[frame["split"] == "train"]
    if len(train_rows) <= limit:
        return frame
    keep = np.random.default_rng(seed).choice(train_rows, limit, replace=False)
    return frame[(frame["split"] != "train") | frame.index.isin(keep)].reset_index(drop=True)


def load_data(
    cfg: TrainConfig, emit: Callable[..., Any], progress: Callable[[str, int, int], None],
) -> TrainData:
    """Open the dataset, build or open the image cache, and cut the splits.

    Args:
        emit: the run's event emitter.
        progress: ``(what, done, total)`` during the cache build (may raise to stop).

    Raises:
        DatasetError / CacheError: unreadable data.
        TrainingError: train or val split empty, or the train split has one class.
    """
    from fracture.cache import ImageCache
    from fracture.data import open_dataset
    from fracture.serve.inference import body_part_indices
    from fracture.preprocess.pipeline import Pipeline
    from fracture.settings import get_settings

    manifest = open_dataset(cfg.data, seed=cfg.split_seed)
    report_problems(emit, [(p.path, p.reason) for p in manifest.problems], "dataset")
    body_vocab = list(manifest.body_parts)
    spec = Pipeline.from_spec(cfg.preprocess).with_resize(cfg.image_size, cfg.resize_mode).to_spec()
    frame = _subsample_train(manifest.frame.reset_index(drop=True), cfg.max_train_images, cfg.seed)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else get_settings().cache_dir
    started = time.time()
    cache = ImageCache.open_or_build(
        frame["path"].tolist(), spec, cache_root / "images",
        workers=cfg.workers or None,
        progress=lambda done, total: progress("caching images", done, total),
    )
    emit("log", message=f"image cache ready ({len(cache)} images, {time.time() - started:.1f} s)", cache_key=cache.key)
    report_problems(emit, [(f.path, f"{f.reason}: {f.message}") for f in cache.failures], "image")
    valid = np.asarray(cache.valid_mask, dtype=bool)
    positions = np.arange(len(frame))
    splits = {}
    for name in SPLIT_NAMES:
        mask = (frame["split"].to_numpy() == name) & valid
        sub = frame[mask].reset_index(drop=True)
        splits[name] = SplitData(
            name=name, frame=sub, cache_pos=positions[mask],
            labels=sub["label"].to_numpy(dtype=np.float32),
            body=body_part_indices(sub["body_part"].tolist(), body_vocab),
        )
    monitor = _check_splits(cfg, splits, emit)
    return TrainData(manifest=manifest, fingerprint=manifest.fingerprint(), body_vocab=body_vocab, spec=spec,
                     cache=cache, cache_root=cache_root, splits=splits, monitor=monitor)


def _check_splits(cfg: TrainConfig, splits: dict[str, SplitData], emit: Callable[..., Any]) -> str:
    """Refuse splits nothing can be learned from; the metric to monitor (val_loss when val has one class)."""
    train_split, val_split = splits["train"], splits["val"]
    if len(train_split) == 0 or len(val_split) == 0:
        raise TrainingError(
            f"{cfg.data}: needs images in both the train and val splits "
            f"(found {len(train_split)} train, {len(val_split)} val)"
        )
    if len(np.unique(train_split.labels)) < 2:
        raise TrainingError(f"{cfg.data}: the train split has only one class; both are needed")
    if len(np.unique(val_split.labels)) < 2:
        emit(
            "log", level="warning",
            message=f"the val split ({len(val_split)} images) has only one class: ROC AUC is undefined, so the "
            "best checkpoint is chosen by val_loss and the threshold stays 0.5; use a larger dataset for real results",
        )
        return "val_loss"
    return cfg.monitor


def class_balance(labels: np.ndarray, balancing: str) -> tuple[float | None, np.ndarray | None]:
    """``(pos_weight for the loss, per-item sampling weights)`` for the balancing mode; unused ones None."""
    n_pos = float(labels.sum())
    n_neg = float(len(labels) - n_pos)
    if balancing == "class_weights":
        return n_neg / max(n_pos, 1.0), None
    if balancing == "oversample":
        counts = {0: n_neg, 1: n_pos}
        return None, np.array([1.0 / counts[int(y)] for y in labels])
    return None, None
