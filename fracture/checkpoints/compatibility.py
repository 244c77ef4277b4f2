"""Does a model belong with a dataset? A plain sentence when it does not.

A checkpoint remembers what it was trained on (``dataset_fingerprint``,
``dataset_layout``, ``class_names``, ``train_config.data``); a manifest says
what the active dataset is. When they differ, metrics on that dataset and
predictions on its samples mean little, and pages say so
(:func:`describe_mismatch` returns the sentence, pages show it with
``st.warning``). No match found is no proof of a match: a checkpoint without
this metadata gets no warning.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fracture.data.manifest import Manifest

DATA_NAMES = {
    "fracatlas": "FracAtlas",
    "mura": "MURA",
    "demo": "the synthetic demo dataset",
    "folders": "a class-folder dataset",
}
DEMO_MARKER = "DEMO.txt"


def _name(kind: str) -> str:
    return DATA_NAMES.get(kind, kind)


def model_data_kind(meta: dict[str, Any]) -> str | None:
    """What a checkpoint was trained on: ``fracatlas``, ``mura``, ``demo``, ``folders`` or None (unknown)."""
    source = meta.get("dataset_source")
    if isinstance(source, str) and source:
        return source
    data = (meta.get("train_config") or {}).get("data")
    if isinstance(data, str) and data:
        if data == "demo":
            return "demo"
        try:
            if (Path(data).expanduser() / DEMO_MARKER).is_file():
                return "demo"
        except OSError:
            pass
    layout = meta.get("dataset_layout")
    return layout if isinstance(layout, str) and layout else None


def dataset_kind(manifest: Manifest) -> str:
    """The active dataset's kind: its most common ``source`` value (``demo`` for the synthetic set)."""
    sources = Counter(manifest.frame["source"].astype(str)) if "source" in manifest.frame else Counter()
    return sources.most_common(1)[0][0] if sources else manifest.layout


def describe_mismatch(meta: dict[str, Any] | None, manifest: Manifest) -> str | None:
    """One plain sentence when the model and the dataset do not belong together, else None.

    Checks, in order: the same dataset (fingerprint equal: no warning); a
    different kind of data (FracAtlas vs the synthetic demo, MURA vs
    FracAtlas); other class names; the same kind of data in another copy or
    split (its test images may have been training images).
    """
    if not meta:
        return None
    fingerprint = meta.get("dataset_fingerprint")
    if isinstance(fingerprint, str) and fingerprint and fingerprint == manifest.fingerprint():
        return None
    trained, active = model_data_kind(meta), dataset_kind(manifest)
    model_classes = tuple(meta.get("class_names") or ())
    data_classes = tuple(manifest.class_names)
    classes_differ = bool(model_classes) and model_classes != data_classes
    class_note = (
        f" It predicts '{model_classes[1]}' vs '{model_classes[0]}'; this dataset labels "
        f"'{data_classes[1]}' vs '{data_classes[0]}'." if classes_differ else ""
    )
    if trained is not None and trained != active:
        if "demo" in (trained, active):
            other = active if trained == "demo" else trained
            if trained == "demo":
                text = (f"This model was trained on the synthetic demo dataset; the active dataset is {_name(other)} "
                        "(real radiographs): expect meaningless numbers.")
            else:
                text = (f"This model was trained on {_name(trained)}; the demo dataset is synthetic: "
                        "expect meaningless numbers.")
        else:
            text = (f"This model was trained on {_name(trained)}; the active dataset is {_name(active)}: "
                    "expect numbers that say little about either.")
        return text + class_note
    if classes_differ:
        return ("This model was trained on other labels than this dataset's, so its probabilities answer "
                f"another question.{class_note}")
    if isinstance(fingerprint, str) and fingerprint and trained is not None:
        return (f"This model was trained on another copy or split of {_name(trained)} (dataset fingerprint "
                f"{fingerprint[:12]} vs {manifest.fingerprint()[:12]}): images here may have been training "
                "images, so its numbers may be optimistic.")
    return None
