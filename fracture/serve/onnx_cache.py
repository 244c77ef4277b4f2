"""The on-disk cache of ONNX exports that onnxruntime serves from, verified on every load.

Above both the writer (export) and the runtime (onnx_backend): a checkpoint is
exported once per content digest, a record beside the file names that digest and
the export's own, and a cut, garbled or substituted graph is made again, never run.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from fracture.errors import CheckpointError, FractureError
from fracture.serve import export
from fracture.serve.onnx_backend import OrtModel
from fracture.serve.onnx_format import ONNX_EXPORT_VERSION
from fracture.settings import get_settings
from fracture.util.files import atomic_write_bytes, file_sha256
from fracture.util.jsonio import read_json

log = logging.getLogger(__name__)
_EXPORT_LOCK = threading.Lock()
"""One export at a time in this process (app sessions share the cache)."""
FAILED_EXPORTS: dict[str, str] = {}
"""Exports that failed in this process, by checkpoint path: ``auto`` falls back to torch without trying again."""


def cached_onnx_path(checkpoint: str | Path, cache_dir: str | Path | None = None,
                     source_sha256: str | None = None) -> Path:
    """Where the export of this checkpoint's content lives (it may not exist yet)."""

    root = Path(cache_dir) if cache_dir else get_settings().cache_dir
    digest = source_sha256 or file_sha256(checkpoint)
    return root / "onnx" / f"{digest[:32]}-v{ONNX_EXPORT_VERSION}.onnx"


def _cache_record(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _verify_cached(path: Path, source_sha256: str) -> str | None:
    """Why the cached export at ``path`` cannot be used for a checkpoint of ``source_sha256`` (None: it can).

    Checked here: the record beside it names that checkpoint digest and the file's own
    sha256 -- so a cut, garbled or substituted graph is never run. The file's own metadata
    (the same checkpoint digest) is checked once onnxruntime has opened it
    (:func:`load_onnx_model`), which reads it without the ``onnx`` package (half a second
    of imports a one-image predict would pay).
    """

    if not path.is_file():
        return "not exported yet"
    try:
        record = read_json(_cache_record(path), max_bytes=4096, error=CheckpointError)
    except (FractureError, OSError) as exc:
        return f"its record is missing or unreadable ({exc})"
    if not isinstance(record, dict) or record.get("source_sha256") != source_sha256:
        return "its record names another checkpoint"
    if file_sha256(path) != record.get("onnx_sha256"):
        return "the file's digest differs from the one recorded when it was exported (changed or substituted)"
    return None


def load_onnx_model(checkpoint: str | Path, *, cache_dir: str | Path | None = None,
                    threads: int | None = None) -> OrtModel:
    """The checkpoint as an :class:`OrtModel`, exported on first use and cached on disk.

    The cache is verified on every load (:func:`_verify_cached`: the checkpoint's digest
    and the export's own); an export that fails the check is logged and made again.

    Raises:
        CheckpointError: an invalid checkpoint, or an export onnxruntime cannot load
            (the message names the cached file and how to clear it).
        ExportError: torch cannot export the network.
    """

    source = file_sha256(checkpoint)
    path = cached_onnx_path(checkpoint, cache_dir, source)
    with _EXPORT_LOCK:
        problem = _verify_cached(path, source)
        if problem is not None:
            _export_into_cache(checkpoint, path, source, problem)
    model = _open(checkpoint, path, threads)
    if model.metadata.get("source_sha256") != source:  # read by onnxruntime itself, not the onnx package
        with _EXPORT_LOCK:
            _export_into_cache(checkpoint, path, source, "its metadata names another checkpoint")
        model = _open(checkpoint, path, threads)
        if model.metadata.get("source_sha256") != source:
            raise CheckpointError(f"{path}: a fresh export of {checkpoint} does not name it in its metadata; "
                                  "delete the file and run with --backend torch")
    return model


def _export_into_cache(checkpoint: str | Path, path: Path, source_sha256: str, problem: str) -> None:
    """Export ``checkpoint`` to ``path`` with its record (the caller holds :data:`_EXPORT_LOCK`)."""
    if path.exists():
        log.warning("cached ONNX export %s is not used (%s); exporting %s again", path, problem, Path(checkpoint).name)
    else:
        log.info("exporting %s to ONNX for onnxruntime (once per checkpoint): %s", Path(checkpoint).name, path)
    _cache_record(path).unlink(missing_ok=True)
    export.export_onnx(checkpoint, path, overwrite=True)
    record = {"source_sha256": source_sha256, "onnx_sha256": file_sha256(path), "source": Path(checkpoint).name}
    atomic_write_bytes(_cache_record(path), json.dumps(record).encode("utf-8"))


def _open(checkpoint: str | Path, path: Path, threads: int | None) -> OrtModel:
    try:
        return OrtModel.from_file(path, threads=threads)
    except FractureError as exc:
        raise type(exc)(f"{exc}. This is the cached export of {checkpoint}: delete {path} to have it made "
                        f"again, or run with --backend torch") from exc
