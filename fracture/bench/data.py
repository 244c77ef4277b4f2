"""The images the benchmarks run on: a small, fixed subset of a real dataset.

A few hundred images are enough to time a data path, and a subset keeps the
first-time cache build short. The subset is a class-folder dataset of
hard links (``split/label/NNNNN.ext``) in a temporary folder, so the
trainer, the cache and :func:`fracture.data.open_dataset` read it exactly as
they read any dataset, and no image is copied (unless the scratch folder is
on another file system). Not symbolic links: a dataset refuses links that
lead out of its folder. The source is the real
FracAtlas beside the checkout when it is there, otherwise the synthetic demo
set generated on the spot.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fracture.errors import DatasetError

logger = logging.getLogger(__name__)

#: Word that asks for the generated demo set instead of a folder.
DEMO = "demo"
#: Share of the subset per split (the trainer needs both labels in train, and a val split).
SUBSET_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
_LABEL_FOLDERS = {1: "fractured", 0: "not fractured"}


@dataclass(frozen=True)
class BenchData:
    """A benchmark dataset.

    Attributes:
        root: a class-folder dataset of links that ``open_dataset`` reads.
        source: ``fracatlas``, ``demo`` or the layout of the given folder.
        origin: the folder the images come from.
        paths: the subset's image files (links), in a stable order.
    """

    root: Path
    source: str
    origin: Path
    paths: list[str]


def default_data_root() -> Path | None:
    """FracAtlas at ``../shared/data/fracatlas`` beside the checkout, when present."""
    from fracture.settings import REPO_ROOT

    candidate = REPO_ROOT.parent / "shared" / "data" / "fracatlas"
    return candidate if (candidate / "dataset.csv").is_file() else None


def prepare_bench_data(
    work_dir: Path,
    *,
    data: str | os.PathLike | None = None,
    max_images: int = 320,
    demo_studies: int = 160,
    demo_size_range: tuple[int, int] = (200, 512),
    seed: int = 0,
) -> BenchData:
    """Pick the benchmark images and lay them out as a small dataset.

    Args:
        work_dir: a scratch folder (the subset and any demo set go in it).
        data: a dataset root, ``"demo"`` for the generated set, or None for
            FracAtlas when present, else the demo set.
        max_images: size of the subset.
        demo_studies, demo_size_range: how big a generated demo set is.
        seed: which images are picked.

    Returns:
        The subset.

    Raises:
        DatasetError: the folder is no dataset, or it lacks a split or class
            the trainer needs.
    """
    from fracture.data import open_dataset

    work_dir = Path(work_dir)
    if data is None:
        data = default_data_root() or DEMO
    if str(data) == DEMO:
        from fracture.data.demo import make_demo_dataset

        origin = make_demo_dataset(
            work_dir / "demo", seed=seed, studies=demo_studies, size_range=demo_size_range
        )
    else:
        origin = Path(data).expanduser().resolve()
    manifest = open_dataset(origin, seed=seed)
    frame = _pick_subset(manifest.frame, max_images, seed)
    root = work_dir / "subset"
    if root.exists():
        shutil.rmtree(root)
    paths = []
    for i, row in enumerate(frame.itertuples(index=False)):
        folder = root / row.split / _LABEL_FOLDERS[int(row.label)]
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{i:05d}{Path(row.path).suffix.lower()}"
        _link_or_copy(Path(row.path), link)
        paths.append(str(link))
    logger.info("benchmark data: %d images from %s (%s)", len(paths), origin, manifest.frame["source"].iloc[0])
    return BenchData(root=root, source=str(manifest.frame["source"].iloc[0]), origin=origin, paths=paths)


def _pick_subset(frame, max_images: int, seed: int):
    """Up to ``max_images`` rows: each split its share, both labels in each split."""
    rng = np.random.default_rng(seed)
    picked = []
    for split, share in SUBSET_FRACTIONS.items():
        rows = frame[frame["split"] == split]
        want = max(2, int(round(max_images * share)))
        per_label = []
        for label in (0, 1):
            labelled = rows[rows["label"] == label]
            per_label.append(labelled.iloc[rng.permutation(len(labelled))])
        # Half of each label where possible, the rest from the larger class.
        half = want // 2
        take_pos = min(len(per_label[1]), max(half, want - len(per_label[0])))
        take_neg = min(len(per_label[0]), want - take_pos)
        picked += [per_label[0].iloc[:take_neg], per_label[1].iloc[:take_pos]]
    subset = pd.concat(picked, ignore_index=True)
    train_labels = set(subset.loc[subset["split"] == "train", "label"])
    if train_labels != {0, 1} or not (subset["split"] == "val").any():
        raise DatasetError(
            f"the benchmark needs both labels in the train split and a val split; the dataset gave train "
            f"labels {sorted(train_labels)} and {int((subset['split'] == 'val').sum())} val images; "
            "give another dataset with --data or use --data demo"
        )
    return subset


def _link_or_copy(source: Path, link: Path) -> None:
    """A hard link (a regular file inside the subset: datasets refuse symlinks that leave their folder),
    else a copy (another file system)."""
    try:
        os.link(source, link)
    except OSError:
        shutil.copy2(source, link)
