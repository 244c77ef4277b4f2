"""Which datasets lie under the allowed data roots (for the sidebar's dropdown).

Why: pointing the app at a folder used to mean knowing to type its path;
a teacher should see "fracatlas (FracAtlas)" in a list. Only folder names and
marker files are looked at (:func:`fracture.data.detect.detect_layout`), never
an image, so listing a few roots stays well under a second.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fracture.data.demo import DEMO_MARKER
from fracture.data.detect import detect_layout
from fracture.errors import DatasetError

logger = logging.getLogger(__name__)


#: How deep below a root a dataset folder may lie (root/fracatlas, root/class/mura).
MAX_DEPTH = 2
#: At most this many folders are looked at per root (a huge tree must not stall the sidebar).
MAX_FOLDERS_PER_ROOT = 400


@dataclass(frozen=True)
class FoundDataset:
    """A dataset folder and its layout (``mura``, ``fracatlas`` or ``folders``)."""

    path: Path
    layout: str

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.layout}) — {self.path}"


def find_datasets(roots: Iterable[Path], *, max_depth: int = MAX_DEPTH,
                  skip: Iterable[Path] = ()) -> list[FoundDataset]:
    """Dataset folders under ``roots`` (a root itself counts), sorted by path; ``skip``: folders left out.

    A folder recognised as a dataset is not looked into further. Missing or
    unreadable roots are skipped (logged at debug level).
    """
    skipped = {Path(p).resolve() for p in skip}
    found: dict[Path, FoundDataset] = {}
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            logger.debug("data root %s is not a folder; nothing listed from it", root)
            continue
        queue, seen = [(root, 0)], 0
        while queue and seen < MAX_FOLDERS_PER_ROOT:
            folder, depth = queue.pop(0)
            seen += 1
            resolved = folder.resolve()
            if resolved in skipped or resolved in found:
                continue
            try:
                layout, dataset = detect_layout(folder)  # may be the one sub-folder of a wrapper
            except DatasetError:
                layout = None
            except OSError as exc:  # unreadable folder: not offered
                logger.debug("cannot look into %s: %s", folder, exc)
                continue
            if layout is not None:
                # The folder a person would type: the wrapper's single child ("data/fracatlas"), not "data".
                dataset = Path(dataset).resolve()
                found[dataset] = FoundDataset(dataset, layout)
                continue
            if depth < max_depth:
                try:
                    children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
                except OSError as exc:
                    logger.debug("cannot list %s: %s", folder, exc)
                    continue
                queue.extend((child, depth + 1) for child in children)
    return sorted(found.values(), key=lambda d: str(d.path))


def fracatlas_root() -> Path | None:
    """FracAtlas where this project keeps it: ``FRACTURE_FRACATLAS``, else ``../shared/data/fracatlas``
    beside the checkout; None when neither holds a FracAtlas dataset."""
    import os

    from fracture.settings import REPO_ROOT

    configured = os.environ.get("FRACTURE_FRACATLAS")  # when set, the only place looked at
    candidates = [Path(configured).expanduser()] if configured else [REPO_ROOT.parent / "shared" / "data" / "fracatlas"]
    for candidate in candidates:
        try:
            layout, folder = detect_layout(candidate)
        except (DatasetError, OSError):
            continue
        if layout == "fracatlas":
            return Path(folder).resolve()
    return None


def data_kind(dataset: FoundDataset) -> str:
    """What a found folder holds, named as checkpoints name their training data
    (:func:`fracture.checkpoints.compatibility.model_data_kind`): the demo set's marker wins over its layout."""
    return "demo" if (dataset.path / DEMO_MARKER).is_file() else dataset.layout


def dataset_for_models(model_kinds: Iterable[str | None], active_kind: str,
                       candidates: Iterable[FoundDataset]) -> FoundDataset | None:
    """The dataset to evaluate models on when the active one is of another kind.

    When every model was trained on the same kind of data (``fracatlas``) and the
    active dataset is of another kind (the synthetic demo), the first candidate of
    the models' kind; None keeps the active dataset (it matches, or the models
    disagree, or nothing of their kind is here).
    """
    kinds = set(model_kinds)
    if len(kinds) != 1 or None in kinds:
        return None
    (kind,) = kinds
    if kind == active_kind:
        return None
    return next((d for d in candidates if data_kind(d) == kind), None)
