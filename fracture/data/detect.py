"""Open any supported dataset folder without saying which layout it has."""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fracture.data.manifest import Manifest
from fracture.data.readers._safe import leaves_root, real_root
from fracture.data.readers import (
    find_folders_root,
    find_fracatlas_root,
    find_mura_root,
    read_folders,
    read_fracatlas,
    read_mura,
)
from fracture.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """A dataset layout: how to recognise it, how to read it, what it looks like."""

    name: str
    find: Callable[[Path], Path | None]
    read: Callable[..., Manifest]
    looks_like: str


LAYOUTS = (
    Layout("mura", find_mura_root, read_mura,
           "MURA-v1.1: train_labeled_studies.csv, train_image_paths.csv, valid_*.csv and "
           "train/XR_<PART>/patient*/study*/ in ROOT or ROOT/MURA-v1.1 (also the demo set)"),
    Layout("fracatlas", find_fracatlas_root, read_fracatlas,
           "FracAtlas: dataset.csv and images/Fractured, images/Non_fractured in ROOT or ROOT/FracAtlas"),
    Layout("folders", find_folders_root, read_folders,
           "class folders: ROOT/{train,val,test}/{fractured,not fractured}/ or ROOT/{fractured,normal}/"),
)
"""Known layouts, tried in this order."""


def detect_layout(root: str | os.PathLike[str]) -> tuple[str, Path]:
    """Name the layout of ``root`` and the folder its reader should open.

    A folder holding exactly one sub-folder (an unzipped archive's wrapper)
    is looked into when ``root`` itself matches nothing.

    Returns:
        (layout name, dataset folder).

    Raises:
        DatasetError: ``root`` does not exist, is not a folder, or matches no
            layout; the message lists what was looked for.
    """
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; check the path")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file; give the dataset's folder")
    candidates = [root]
    root_real = real_root(root)
    children = [c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")]
    if len(children) == 1 and leaves_root(children[0], root_real) is None:
        candidates.append(children[0])
    for candidate in candidates:
        for layout in LAYOUTS:
            found = layout.find(candidate)
            if found is not None:
                outside = leaves_root(found, root_real)
                if outside is not None:  # e.g. ROOT/MURA-v1.1 -> /elsewhere
                    raise DatasetError(
                        f"{found}: a symbolic link to {outside}, outside {root}; give the real folder "
                        "(under an allowed data root) instead"
                    )
                logger.debug("%s: %s layout at %s", root, layout.name, found)
                return layout.name, found
    looked_for = "\n".join(f"  - {layout.looks_like}" for layout in LAYOUTS)
    raise DatasetError(f"{root}: not a dataset layout we know. Looked for:\n{looked_for}")


def open_dataset(root: str | os.PathLike[str], *, seed: int = 0, **reader_kwargs) -> Manifest:
    """Detect the layout of ``root`` and read it into a :class:`Manifest`.

    Args:
        root: a dataset folder (MURA-v1.1 or its parent, FracAtlas, class folders).
        seed: split seed passed to the reader.
        **reader_kwargs: options of the detected reader (``val_fraction`` for
            MURA; ``fractions`` for FracAtlas and class folders;
            ``label_source`` for FracAtlas).

    Returns:
        The manifest.

    Raises:
        DatasetError: no layout matched (the message lists those looked for),
            or an option does not apply to the detected layout.
    """
    name, folder = detect_layout(root)
    layout = next(layout for layout in LAYOUTS if layout.name == name)
    accepted = set(inspect.signature(layout.read).parameters) - {"root", "seed"}
    unknown = sorted(set(reader_kwargs) - accepted)
    if unknown:
        raise DatasetError(
            f"{folder} is a {name} dataset, whose reader does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'only seed'}"
        )
    return layout.read(folder, seed=seed, **reader_kwargs)
