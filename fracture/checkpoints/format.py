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
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from fracture.util.files import NotRegularFileError, open_regular
from fracture.util.jsonio import json_default, json_depth, parse_json  # noqa: F401 (json_depth re-exported)
from fracture.errors import CheckpointError, ModelError, PreprocessError

if TYPE_CHECKING:
    from fracture.checkpoints.meta import CheckpointMeta
    from fracture.models.network import FractureModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_KEY = "fracture"
MAX_HEADER_BYTES = 4 * 1024 * 1024
"""Largest safetensors header read (tensor index, ~100 kB for the largest model, and metadata);
checked before reading it."""
MAX_META_BYTES = 2 * 1024 * 1024
"""Largest ``fracture`` metadata text accepted (a real one is a few kB)."""
MAX_JSON_DEPTH = 64
"""Deepest JSON nesting accepted in the header, checked before parsing."""
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
MAX_BODY_PARTS = 256
# What a caller must provide: what prediction needs to reproduce training's input and decision.
REQUIRED_META_KEYS = (
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
    validate_meta(full, where="checkpoint metadata")  # never write what read_checkpoint_meta would refuse
    return full


INPUT_SIZE_KEY = "image_size"
"""The network's input side: stored once, as the size of the pipeline's last resize step. Readers get it
back under this key (:func:`read_checkpoint_meta` fills it in); an older header that stores it as well must
agree; writers leave it out of the file."""


def _encode_meta(meta: dict[str, Any]) -> str:
    stored = {key: value for key, value in meta.items() if key != INPUT_SIZE_KEY}
    try:
        return json.dumps(stored, default=json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        bad = [key for key, value in meta.items() if not _is_jsonable(value)]
        raise CheckpointError(f"checkpoint metadata is not JSON serialisable (keys {bad}): {exc}") from exc


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value, default=json_default)
    except (TypeError, ValueError):
        return False
    return True


EXTRA_TENSOR_PREFIX = "ood."
"""Tensors under this prefix are not model weights but statistics kept beside them (fracture/gate/ood.py):
:func:`load_checkpoint` hands them over as ``model.checkpoint_extras`` and :func:`save_checkpoint`
writes them back, so a re-save (``evaluate --write-meta``) keeps them."""


def save_checkpoint(path: str | Path, model: FractureModel, meta: dict[str, Any], *, half: bool = False,
                    extra_tensors: dict[str, Any] | None = None) -> Path:
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
        extra_tensors: non-weight tensors named ``ood.*`` (float32 always);
            default: the model's ``checkpoint_extras`` from :func:`load_checkpoint`.

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
    extras = dict(getattr(model, "checkpoint_extras", None) or {}) if extra_tensors is None else dict(extra_tensors)
    for key, tensor in extras.items():
        if not key.startswith(EXTRA_TENSOR_PREFIX) or key in tensors:
            raise CheckpointError(f"extra tensor {key!r}: names must start with {EXTRA_TENSOR_PREFIX!r}")
        tensors[key] = torch.as_tensor(tensor).detach().to("cpu", torch.float32).contiguous()
    validate_meta(full_meta, where=f"{path} (being written)",
                  tensor_shapes={k: list(t.shape) for k, t in tensors.items() if k.startswith(EXTRA_TENSOR_PREFIX)})
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

    The header is read with bounded reads from a regular file only (a FIFO or a
    link to ``/dev/zero`` is refused, never read), refused when larger than
    :data:`MAX_HEADER_BYTES` (the ``fracture`` entry: :data:`MAX_META_BYTES`)
    or nested deeper than :data:`MAX_JSON_DEPTH` *before* any JSON parsing,
    and every field is then checked by :func:`validate_meta`.

    Raises:
        CheckpointError: the file is missing, not a regular file, not a
            safetensors file, not a Fracture Lab checkpoint, too large or deep,
            or a field is missing or has a bad type or value (the message names
            the file, the field and the fix).
    """
    path = Path(path)
    header = _read_header(path)
    metadata = header.get("__metadata__")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: the safetensors header's __metadata__ is not a JSON object; not a valid file")
    if META_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not a Fracture Lab checkpoint (no {META_KEY!r} metadata)"
        )
    text = metadata[META_KEY]
    if not isinstance(text, str):
        raise CheckpointError(f"{path}: the {META_KEY!r} metadata is not a JSON string; re-save the checkpoint")
    if len(text) > MAX_META_BYTES:
        raise CheckpointError(
            f"{path}: the {META_KEY!r} metadata is {len(text) / 2**20:.1f} MB, over the "
            f"{MAX_META_BYTES / 2**20:.0f} MB limit; this is not a checkpoint Fracture Lab wrote"
        )
    meta = _parse_json(text, path, f"the {META_KEY!r} metadata")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the {META_KEY!r} metadata is not a JSON object")
    missing = [key for key in (*REQUIRED_META_KEYS, "format_version", "architecture", "in_chans") if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks required keys {missing}")
    shapes = {key: list(entry.get("shape") or []) for key, entry in header.items()
              if key.startswith(EXTRA_TENSOR_PREFIX) and isinstance(entry, dict)}
    validate_meta(meta, where=str(path), tensor_shapes=shapes)
    from fracture.checkpoints.meta import input_size

    meta[INPUT_SIZE_KEY] = input_size(meta["preprocess"])
    return meta


def read_meta(path: str | Path) -> "CheckpointMeta":
    """The typed metadata of a checkpoint (:class:`fracture.checkpoints.meta.CheckpointMeta`), header only.

    Raises:
        CheckpointError: as :func:`read_checkpoint_meta`.
    """
    from fracture.checkpoints.meta import CheckpointMeta

    return CheckpointMeta.from_dict(read_checkpoint_meta(path), where=str(path))


# ------------------------------------------------------------ header parsing


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header: 8 bytes little-endian length, then that many bytes of JSON."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is not a safetensors file (only {len(prefix)} bytes)")
            length = int.from_bytes(prefix, "little")
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path} is not a safetensors file Fracture Lab wrote: its header claims "
                    f"{length / 2**20:.1f} MB, over the {MAX_HEADER_BYTES / 2**20:.0f} MB limit"
                )
            if length < 2 or 8 + length > size:
                raise CheckpointError(
                    f"{path} is not a safetensors file (header length {length} does not fit the "
                    f"{size}-byte file; truncated or another format)"
                )
            raw = handle.read(length)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except NotRegularFileError as exc:
        raise CheckpointError(f"checkpoint {exc}") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"checkpoint {path} is a directory; give the .safetensors file") from exc
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc.strerror or exc})") from exc
    if len(raw) != length:
        raise CheckpointError(f"{path} is not a safetensors file (header cut short; the file is truncated)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not a safetensors file (its header is not UTF-8 text)") from exc
    if not text.lstrip().startswith("{"):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    header = _parse_json(text, path, "the safetensors header", prefix="is not a safetensors file: ")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    return header


def _parse_json(text: str, path: Path, what: str, *, prefix: str = "") -> Any:
    """The one guarded JSON reader (size, depth, number length), NaN kept: metrics may be NaN and
    the fields prediction relies on are checked by :func:`validate_meta`."""
    return parse_json(
        text, source=path, what=f"{prefix}{what}", max_bytes=MAX_HEADER_BYTES, max_depth=MAX_JSON_DEPTH,
        nonfinite="allow", error=CheckpointError,
    )


# ------------------------------------------------------------ field checks


def validate_meta(meta: dict[str, Any], *, where: str = "checkpoint",
                  tensor_shapes: dict[str, list[int]] | None = None) -> None:
    """Check the type and range of every field prediction relies on, and every optional block.

    Args:
        meta: checkpoint metadata.
        where: the file (or "checkpoint metadata") named in errors.
        tensor_shapes: the file's ``ood.*`` tensor shapes, checked against the ``ood`` block
            (:func:`fracture.checkpoints.meta.validate_blocks`).

    Raises:
        CheckpointError: ``<where>: field <name> ...`` with what was found and
            what is expected.
    """
    from fracture.preprocess.pipeline import Pipeline

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"{where}: metadata field {field!r} {problem}; re-save the checkpoint with valid metadata "
            "(python -m fracture evaluate --write-meta rewrites it from a good copy)"
        )

    version = meta.get("format_version", FORMAT_VERSION)
    if not _is_int(version):
        raise bad("format_version", f"must be an integer, got {_show(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format {version} is newer than this version of "
            f"Fracture Lab understands ({FORMAT_VERSION}); update the fracture package"
        )
    if version < 1:
        raise bad("format_version", f"must be 1..{FORMAT_VERSION}, got {version}")
    arch = meta.get("architecture", "")
    if not isinstance(arch, str) or not arch or len(arch) > 100:
        raise bad("architecture", f"must be a model name (text), got {_show(arch)}")
    in_chans = meta.get("in_chans", 3)
    if not _is_int(in_chans) or in_chans not in (1, 3):
        raise bad("in_chans", f"must be 1 or 3, got {_show(in_chans)}")
    spec = meta.get("preprocess")
    if not isinstance(spec, list) or not all(isinstance(step, dict) for step in spec):
        raise bad("preprocess", f"must be a list of step objects, got {_show(spec)}")
    try:
        pipeline = Pipeline.from_spec(spec)
    except PreprocessError as exc:
        raise bad("preprocess", f"is not a valid pipeline ({exc})") from exc
    sizes = [step.params.get("size") for step in pipeline.steps if step.op == "resize"]
    if not sizes:  # without it, prediction would feed full-size images to the network
        raise bad("preprocess", "must end its resizing at the network's input size; it has no resize step")
    size = sizes[-1]
    if not _is_int(size) or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise bad("preprocess", f"must resize to an integer {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {_show(size)}")
    stored = meta.get(INPUT_SIZE_KEY, size)  # an older header stores it twice: both must agree
    if not _is_int(stored) or stored != size:
        raise bad(INPUT_SIZE_KEY, f"must equal the pipeline's last resize ({size}), got {_show(stored)}")
    _check_normalization(meta.get("normalization"), in_chans, bad)
    names = meta.get("class_names")
    if not (isinstance(names, list) and len(names) == 2 and all(isinstance(n, str) and n for n in names)):
        raise bad("class_names", f"must be two names (label 0, label 1), got {_show(names)}")
    parts = meta.get("body_parts")
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts) or len(parts) > MAX_BODY_PARTS:
        raise bad("body_parts", f"must be a list of at most {MAX_BODY_PARTS} names, got {_show(parts)}")
    if not isinstance(meta.get("multitask"), bool):
        raise bad("multitask", f"must be true or false, got {_show(meta.get('multitask'))}")
    num_parts = meta.get("num_body_parts", len(parts) if meta["multitask"] else 0)
    if not _is_int(num_parts) or not 0 <= num_parts <= MAX_BODY_PARTS:
        raise bad("num_body_parts", f"must be an integer 0..{MAX_BODY_PARTS}, got {_show(num_parts)}")
    if meta["multitask"] and num_parts != len(parts):
        raise bad("body_parts", f"lists {len(parts)} names but the model predicts {num_parts}")
    threshold = meta.get("threshold")
    if not _is_number(threshold) or not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise bad("threshold", f"must be a finite number in [0, 1], got {_show(threshold)}")
    for key, kinds, expected in (
        ("threshold_rule", (str, type(None)), "a rule name or null"),
        ("train_config", (dict,), "an object"),
        ("metrics", (dict,), "an object"),
        ("dataset_fingerprint", (str, type(None)), "text or null"),
        ("created_at", (str,), "text"),
        ("versions", (dict,), "an object"),
        ("stored_half", (bool,), "true or false"),
    ):
        if key in meta and not isinstance(meta[key], kinds):
            raise bad(key, f"must be {expected}, got {_show(meta[key])}")
    from fracture.checkpoints.meta import validate_blocks

    validate_blocks(meta, where=where, tensor_shapes=tensor_shapes)


def _check_normalization(norm: Any, in_chans: int, bad) -> None:
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        raise bad("normalization", f"must be an object with 'mean' and 'std', got {_show(norm)}")
    for key in ("mean", "std"):
        values = norm[key]
        if _is_number(values):
            values = [values]
        if not isinstance(values, list) or len(values) not in {1, 3, in_chans}:
            raise bad(f"normalization.{key}", f"must be 1 or {in_chans} numbers, got {_show(norm[key])}")
        for value in values:
            if not _is_number(value) or not math.isfinite(value):
                raise bad(f"normalization.{key}", f"must hold finite numbers, got {_show(norm[key])}")
            if key == "std" and value <= 0:
                raise bad("normalization.std", f"must be greater than 0, got {_show(norm[key])}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    extras = {key: tensors.pop(key) for key in list(tensors) if key.startswith(EXTRA_TENSOR_PREFIX)}
    from fracture.models.state import state_dict_mismatch

    expected = model.state_dict()
    mismatch = state_dict_mismatch(expected, tensors)
    if mismatch:
        raise CheckpointError(f"{path} does not match {arch}: {mismatch}")
    for key in expected:
        if tensors[key].is_floating_point():
            tensors[key] = tensors[key].to(torch.float32)
    model.load_state_dict(tensors, strict=True)
    if meta.get("ood") is not None:
        from fracture.checkpoints.meta import OOD_TENSORS, check_ood_arrays

        check_ood_arrays(*(extras[name].double().numpy() for name in OOD_TENSORS), where=str(path))
    model.checkpoint_extras = extras  # ood.* statistics (EXTRA_TENSOR_PREFIX), kept on re-save
    model.to(map_location)
    model.eval()
    return model, meta


# ------------------------------------------------------------ the one metadata writer
def read_extra_arrays(path: str | Path) -> dict[str, Any]:
    """Every ``ood.*`` tensor of a checkpoint (OOD statistics, radiograph gate) as float64 numpy, without torch.

    The OOD statistics are checked (:func:`fracture.checkpoints.meta.check_ood_arrays`) when the
    metadata has an ``ood`` block.

    Raises:
        CheckpointError: unreadable tensors, or OOD statistics that are missing or hold NaN/inf.
    """
    import numpy as np
    from safetensors import safe_open

    from fracture.checkpoints.meta import OOD_TENSORS, check_ood_arrays

    meta = read_checkpoint_meta(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            arrays = {name: np.asarray(handle.get_tensor(name), dtype=np.float64)
                      for name in handle.keys() if name.startswith(EXTRA_TENSOR_PREFIX)}
    except (SafetensorError, OSError, TypeError) as exc:
        raise CheckpointError(f"{path}: the ood.* tensors are unreadable ({exc}); "
                              "run `python -m fracture calibrate` again") from exc
    if meta.get("ood") is not None:
        check_ood_arrays(*(arrays[name] for name in OOD_TENSORS), where=str(path))
    return arrays


def update_checkpoint_meta(path: str | Path, meta: dict[str, Any], *,
                           extra_tensors: dict[str, Any] | None = None) -> Path:
    """Write new metadata (and optionally new ``ood.*`` tensors) into an existing checkpoint, atomically.

    The one place that re-writes a checkpoint's metadata: calibration, heatmap
    selection and ``evaluate --write-meta`` call it. The weights are copied as
    stored (float16 stays float16, bit for bit; no model is rebuilt, torch is not
    needed), the metadata is validated first (:func:`validate_meta`, the OOD
    block against the tensors that will be in the file).

    Args:
        meta: the complete new metadata (``format_version``, ``architecture``... as read).
        extra_tensors: replaces every ``ood.*`` tensor when given (float32 numpy or torch arrays).

    Raises:
        CheckpointError: invalid metadata, or the file is not a checkpoint.
    """
    import numpy as np
    from safetensors.numpy import save_file

    path = Path(path)
    old = read_checkpoint_meta(path)
    for key in ("architecture", "in_chans", "num_body_parts", "multitask"):
        if key in old and meta.get(key) != old[key]:
            raise CheckpointError(f"{path}: new metadata says {key}={meta.get(key)!r} but the weights are "
                                  f"{old[key]!r}; metadata cannot change the network")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, TypeError) as exc:
        raise CheckpointError(f"{path}: tensors unreadable ({exc})") from exc
    if extra_tensors is not None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_TENSOR_PREFIX)}
        for key, value in extra_tensors.items():
            if not key.startswith(EXTRA_TENSOR_PREFIX):
                raise CheckpointError(f"extra tensor {key!r}: names must start with {EXTRA_TENSOR_PREFIX!r}")
            array = value.detach().cpu().numpy() if hasattr(value, "detach") else value
            tensors[key] = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    full = {**meta, "stored_half": bool(old.get("stored_half", False))}
    shapes = {k: list(v.shape) for k, v in tensors.items() if k.startswith(EXTRA_TENSOR_PREFIX)}
    validate_meta(full, where=f"{path} (new metadata)", tensor_shapes=shapes)
    if full.get("ood") is not None:
        from fracture.checkpoints.meta import OOD_TENSORS, check_ood_arrays

        check_ood_arrays(*(tensors[name] for name in OOD_TENSORS), where=f"{path} (new metadata)")
    handle_fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle_fd)
    try:
        save_file(tensors, tmp_name, metadata={META_KEY: _encode_meta(full)})
        os.chmod(tmp_name, os.stat(path).st_mode & 0o777)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("updated the metadata of %s", path)
    return path
