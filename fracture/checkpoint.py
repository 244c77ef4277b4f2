"""Checkpoints: one ``.safetensors`` file, JSON metadata in its header.

Everything needed to use a model again lives in that one file: the weights and,
under the header metadata key ``fracture``, the architecture, input size and
channels, the preprocessing pipeline, class and body-part names, the decision
threshold, the training config and the metrics. Loading never unpickles
anything (safetensors holds tensors only) and refuses a file that does not match
the model it names, saying which key differs. Writing goes to a temporary file
in the same folder and then ``os.replace`` (timm's checkpoint saver), so a crash
never leaves half a checkpoint behind.

torch and the model registry are imported inside the functions that need them,
so listing checkpoints (:func:`read_checkpoint_meta`) stays cheap.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from fracture._json import json_default
from fracture.errors import CheckpointError, ModelError

if TYPE_CHECKING:
    from fracture.models.network import FractureModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "fracture"
# What a caller must provide: what prediction needs to reproduce training's input and decision.
REQUIRED_META_KEYS = (
    "image_size",
    "preprocess",
    "normalization",
    "class_names",
    "body_parts",
    "multitask",
    "threshold",
)
# Filled from the model and the environment on save.
AUTO_META_KEYS = ("format_version", "architecture", "in_chans", "num_body_parts", "created_at", "versions")
# Optional keys written with these defaults when absent.
OPTIONAL_META_DEFAULTS: dict[str, Any] = {
    "threshold_rule": None,
    "train_config": {},
    "metrics": {},
    "dataset_fingerprint": None,
}


def _versions() -> dict[str, str]:
    import safetensors
    import timm
    import torch

    import fracture

    return {
        "fracture": fracture.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
    }


def _complete_meta(model: FractureModel, meta: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in REQUIRED_META_KEYS if key not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint metadata lacks required keys {missing}; required: {list(REQUIRED_META_KEYS)}"
        )
    derived = {"architecture": model.arch, "in_chans": model.in_chans, "num_body_parts": model.num_body_parts}
    for key, value in derived.items():
        if key in meta and meta[key] != value:
            raise CheckpointError(f"metadata says {key}={meta[key]!r} but the model has {key}={value!r}")
    if bool(meta["multitask"]) != (model.num_body_parts > 0):
        raise CheckpointError(
            f"metadata says multitask={meta['multitask']!r} but the model has {model.num_body_parts} body-part outputs"
        )
    if model.num_body_parts and len(meta["body_parts"]) != model.num_body_parts:
        raise CheckpointError(
            f"metadata lists {len(meta['body_parts'])} body parts but the model predicts {model.num_body_parts}"
        )
    full = {**OPTIONAL_META_DEFAULTS, **meta, **derived}
    full["format_version"] = FORMAT_VERSION
    full["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    full["versions"] = _versions()
    return full


def _encode_meta(meta: dict[str, Any]) -> str:
    try:
        return json.dumps(meta, default=json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        bad = [key for key, value in meta.items() if not _is_jsonable(value)]
        raise CheckpointError(f"checkpoint metadata is not JSON serialisable (keys {bad}): {exc}") from exc


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value, default=json_default)
    except (TypeError, ValueError):
        return False
    return True


def save_checkpoint(path: str | Path, model: FractureModel, meta: dict[str, Any], *, half: bool = False) -> Path:
    """Write ``model`` and ``meta`` to one ``.safetensors`` file, atomically.

    Args:
        path: destination (parent folders are created).
        model: the model to save (any device; tensors are copied to the CPU).
        meta: JSON-able metadata with at least :data:`REQUIRED_META_KEYS`;
            ``format_version``, ``architecture``, ``in_chans``,
            ``num_body_parts``, ``created_at``, ``versions`` and
            ``stored_half`` are filled in.
        half: store floating-point tensors as float16 (half the size);
            :func:`load_checkpoint` restores float32.

    Returns:
        The path written.

    Raises:
        CheckpointError: missing or inconsistent metadata, or metadata that is
            not JSON serialisable.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    full_meta = _complete_meta(model, dict(meta))
    full_meta["stored_half"] = bool(half)
    header = {META_KEY: _encode_meta(full_meta)}
    tensors = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float16 if half else torch.float32)
        tensors[key] = tensor.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, tmp_name, metadata=header)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("saved checkpoint %s (%s, %d tensors)", path, full_meta["architecture"], len(tensors))
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint, reading only the file header (no tensors, no torch).

    Raises:
        CheckpointError: the file is missing, not a safetensors file, not a
            Fracture Lab checkpoint, or lacks required metadata keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a safetensors file ({exc})") from exc
    if META_KEY not in header:
        raise CheckpointError(
            f"{path} is a safetensors file but not a Fracture Lab checkpoint (no {META_KEY!r} metadata)"
        )
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the {META_KEY!r} metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the {META_KEY!r} metadata is not a JSON object")
    missing = [key for key in (*REQUIRED_META_KEYS, "format_version", "architecture", "in_chans") if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks required keys {missing}")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format_version']} is newer than this version of "
            f"Fracture Lab understands ({FORMAT_VERSION}); update the fracture package"
        )
    return meta


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> tuple[FractureModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint, in eval mode.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: device for the model (``"cpu"``, ``"cuda"``, a torch.device).

    Returns:
        ``(model, meta)``; floating-point weights are float32 even when the
        file stores float16.

    Raises:
        CheckpointError: the file is missing, not a safetensors checkpoint of
            ours, names an unknown architecture, or its tensors do not match
            that architecture (first mismatching key and both shapes, or the
            missing/unexpected keys).
    """
    import torch
    from safetensors.torch import load_file

    from fracture.models import create_model, model_names

    path = Path(path)
    meta = read_checkpoint_meta(path)
    arch = meta["architecture"]
    try:
        model = create_model(
            arch, pretrained=False, in_chans=int(meta["in_chans"]),
            num_body_parts=int(meta.get("num_body_parts", len(meta["body_parts"]) if meta["multitask"] else 0)),
        )
    except ModelError as exc:
        if arch not in model_names():
            raise CheckpointError(
                f"{path}: unknown architecture {arch!r}; known: {', '.join(model_names())}"
            ) from exc
        raise CheckpointError(f"{path}: cannot rebuild {arch!r} ({exc})") from exc
    try:
        tensors = load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: tensors unreadable ({exc})") from exc
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match {arch}: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, reference in expected.items():
        if tensors[key].shape != reference.shape:
            raise CheckpointError(
                f"{path} does not match {arch}: {key} has shape {tuple(tensors[key].shape)} in the file, "
                f"the model expects {tuple(reference.shape)}"
            )
        if tensors[key].is_floating_point():
            tensors[key] = tensors[key].to(torch.float32)
    model.load_state_dict(tensors, strict=True)
    model.to(map_location)
    model.eval()
    return model, meta
