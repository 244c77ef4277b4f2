"""Promotion: copy a run's checkpoint into ``weights/`` without ever losing one.

A promotion is how a trained model becomes one the app offers everywhere, so
it must not be a way to destroy another model: an existing checkpoint (shipped
or promoted) is replaced only when the caller says ``overwrite=True``, and the
web UI refuses the names of shipped checkpoints altogether
(``protect_shipped=True``). Names are plain, portable file-name stems. Each
promoted checkpoint gets its own model card (``NAME.md``), rendered from that
checkpoint's metadata, so no card ever describes another file. Which files
were promoted (rather than shipped) is recorded in ``weights/promoted.json``.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fracture.util.files import (
    FileTooLargeError,
    LockHeldError,
    NotRegularFileError,
    acquire_pid_lock,
    atomic_temp_path,
    atomic_write_text,
    open_regular,
    read_bytes_bounded,
    release_pid_lock,
)
from fracture.util.jsonio import JsonFileError, atomic_write_json, parse_json
from fracture.errors import CheckpointError
from fracture.settings import get_settings

log = logging.getLogger(__name__)

DEFAULT_POINTER = "default.txt"
"""The file in ``weights/`` naming the app's default checkpoint."""
REGISTRY_NAME = "promoted.json"
"""Names promoted into ``weights/`` (everything else there is shipped)."""
SHIPPED_CARD = "README.md"
"""The shipped checkpoint's model card."""
CHECKPOINT_SUFFIX = ".safetensors"
MAX_NAME_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
RESERVED_NAMES = frozenset(
    {"default", "readme", "promoted", "con", "prn", "aux", "nul", "clock$"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
)
"""Names that clash with our own files (default.txt, README.md, promoted.json) or are
device names on Windows (where ``CON.anything`` is a device too)."""

_LOCK_NAME = ".promote.lock"
_thread_lock = threading.Lock()  # the pid lock does not exclude threads of this process


def validate_checkpoint_name(name: str) -> str:
    """The checkpoint name's stem, or a :class:`CheckpointError` saying what to change.

    A name is letters, digits, ``.``, ``_`` and ``-``, does not start with
    ``.``, is at most :data:`MAX_NAME_LENGTH` characters, and is not one of
    :data:`RESERVED_NAMES`. A trailing ``.safetensors`` is dropped.
    """
    if not isinstance(name, str):
        raise CheckpointError(f"checkpoint name must be text, got {type(name).__name__}")
    stem = name
    if stem.lower().endswith(CHECKPOINT_SUFFIX):
        stem = stem[: -len(CHECKPOINT_SUFFIX)]
    if not stem:
        raise CheckpointError("checkpoint name is empty; use letters, digits, '-', '_' and '.' only")
    if not _NAME.fullmatch(stem) or stem.endswith("."):
        raise CheckpointError(
            f"{name!r}: use letters, digits, '-', '_' and '.' only for a checkpoint name "
            "(not starting or ending with '.')"
        )
    if len(stem) > MAX_NAME_LENGTH:
        raise CheckpointError(f"{name!r}: a checkpoint name has at most {MAX_NAME_LENGTH} characters; shorten it")
    if stem.split(".", 1)[0].lower() in RESERVED_NAMES:
        raise CheckpointError(
            f"{name!r}: {stem.split('.', 1)[0]!r} is a reserved name (our own files or a Windows device); "
            "choose another checkpoint name"
        )
    return stem


def promoted_names(weights_dir: str | Path) -> set[str]:
    """Stems of the checkpoints that promotion put into ``weights_dir``."""
    path = Path(weights_dir) / REGISTRY_NAME
    try:
        data = parse_json(read_bytes_bounded(path, 4 * 1024 * 1024), source=path)  # guarded: deep, huge numbers
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, NotRegularFileError, JsonFileError) as exc:
        log.warning("%s is unreadable (%s); treating every checkpoint there as shipped", path, exc)
        return set()
    entries = data.get("promoted") if isinstance(data, dict) else None
    return {k for k in entries if isinstance(k, str)} if isinstance(entries, dict) else set()


def shipped_names(weights_dir: str | Path) -> set[str]:
    """Stems of the checkpoints in ``weights_dir`` that were shipped, not promoted."""
    weights_dir = Path(weights_dir)
    present = {p.name[: -len(CHECKPOINT_SUFFIX)] for p in _checkpoint_files(weights_dir)}
    return present - promoted_names(weights_dir)


def card_path(weights_dir: str | Path, stem: str) -> Path:
    """Where the model card of checkpoint ``stem`` lives: ``README.md`` when that is its card, else ``STEM.md``."""
    weights_dir = Path(weights_dir)
    readme = weights_dir / SHIPPED_CARD
    if _card_names(readme) == f"{stem}{CHECKPOINT_SUFFIX}":
        return readme
    return weights_dir / f"{stem}.md"


def promote_checkpoint(
    source: str | Path,
    name: str,
    weights_dir: str | Path | None = None,
    *,
    make_default: bool = False,
    overwrite: bool = False,
    protect_shipped: bool = False,
    card_text: "Callable[[dict, str, Path], str] | None" = None,
) -> Path:
    """Copy a run's best checkpoint into ``weights/`` as ``NAME.safetensors``, with its own card.

    Args:
        source: a run folder (its ``best.safetensors``) or a checkpoint file.
        name: the new name (see :func:`validate_checkpoint_name`).
        weights_dir: destination (default: the settings' weights folder).
        make_default: point ``default.txt`` at the new checkpoint.
        overwrite: replace an existing checkpoint of that name (and its card).
            Without it an existing name is refused, shipped or promoted.
        protect_shipped: refuse shipped checkpoints' names even with
            ``overwrite`` (the web UI sets it).
        card_text: ``(meta, checkpoint_name, source) -> markdown`` of the card written beside it
            (the CLI and the Train page pass :func:`fracture.assess.card.promotion_card`, the full
            card); default :func:`short_card`. Passed in because the card reads evaluation reports
            that sit above this layer.

    Returns:
        The checkpoint written.

    Raises:
        CheckpointError: the source is not a valid checkpoint, the name is
            not valid, or the name exists and ``overwrite`` was not given (or
            it is shipped and ``protect_shipped`` is set).
    """
    from fracture.checkpoints.format import read_checkpoint_meta

    stem = validate_checkpoint_name(name)
    source = Path(source)
    if source.is_dir():
        source = source / "best.safetensors"
    read_checkpoint_meta(source)  # refuse a bad source before touching weights/
    weights_dir = Path(weights_dir or get_settings().weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / f"{stem}{CHECKPOINT_SUFFIX}"
    with _promotion_lock(weights_dir):
        clash = _existing(weights_dir, stem)
        if clash is not None:
            shipped = clash.name[: -len(CHECKPOINT_SUFFIX)] not in promoted_names(weights_dir)
            kind = "shipped" if shipped else "promoted"
            if shipped and protect_shipped:
                raise CheckpointError(
                    f"{clash}: {stem!r} is the name of a shipped checkpoint, which cannot be replaced from "
                    "here; choose another name"
                )
            if not overwrite:
                raise CheckpointError(
                    f"{clash}: a {kind} checkpoint named {stem!r} already exists; choose another name or "
                    "confirm overwriting it (--overwrite on the command line)"
                )
            target = clash  # same name, other case: replace that file, never keep two
        card = card_path(weights_dir, target.name[: -len(CHECKPOINT_SUFFIX)])
        if card.exists() and not overwrite and card.name != SHIPPED_CARD:
            raise CheckpointError(
                f"{card}: a model card of that name already exists (for another checkpoint); choose another name"
            )
        tmp = atomic_temp_path(target)
        try:
            _copy_regular(source, tmp)
            meta = read_checkpoint_meta(tmp)  # what is installed is what was checked
            _install(tmp, target, overwrite=overwrite)
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_text(card, (card_text or short_card)(meta, target.name, source))
        _register(weights_dir, target.name[: -len(CHECKPOINT_SUFFIX)], source)
        if make_default:
            atomic_write_text(weights_dir / DEFAULT_POINTER, target.name + "\n")
    log.info("promoted %s to %s%s", source, target, " (default)" if make_default else "")
    return target


# ------------------------------------------------------------------ helpers


def _checkpoint_files(weights_dir: Path) -> list[Path]:
    if not weights_dir.is_dir():
        return []
    return sorted(p for p in weights_dir.iterdir() if p.name.lower().endswith(CHECKPOINT_SUFFIX))


def _existing(weights_dir: Path, stem: str) -> Path | None:
    """The checkpoint file named ``stem`` ignoring case (two names differing in case are one
    file on macOS and Windows), or None."""
    wanted = f"{stem}{CHECKPOINT_SUFFIX}".lower()
    for path in _checkpoint_files(weights_dir):
        if path.name.lower() == wanted and (path.exists() or path.is_symlink()):
            return path
    return None


def _card_names(card: Path) -> str | None:
    """The checkpoint file a card's first line names (``# Model card: `NAME` ``), or None."""
    try:
        first = read_bytes_bounded(card, 1024 * 1024).decode("utf-8", "replace").split("\n", 1)[0]
    except FileNotFoundError:
        return None
    except (OSError, NotRegularFileError, FileTooLargeError) as exc:
        log.warning("%s: unreadable model card (%s)", card, exc)
        return None
    match = re.fullmatch(r"# Model card: `([^`]+)`\s*", first)
    return match.group(1) if match else None


def _copy_regular(source: Path, dest: Path) -> None:
    try:
        with open_regular(source) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
    except NotRegularFileError as exc:
        raise CheckpointError(f"checkpoint {exc}") from exc
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dest, 0o666 & ~umask)


def _install(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move ``tmp`` onto ``target``; without ``overwrite``, atomically refuse an existing target."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if target exists: no window for a second writer
    except FileExistsError as exc:
        raise CheckpointError(f"{target}: appeared while promoting; choose another name or overwrite") from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists() or target.is_symlink():  # no hard links here; the lock keeps other promotions out
            raise CheckpointError(f"{target}: already exists; choose another name or overwrite") from exc
        os.replace(tmp, target)


class _promotion_lock:
    """One promotion into a weights folder at a time (threads of this process and other processes)."""

    def __init__(self, weights_dir: Path) -> None:
        self.path = weights_dir / _LOCK_NAME

    def __enter__(self) -> None:
        _thread_lock.acquire()
        try:
            acquire_pid_lock(self.path)
        except LockHeldError as exc:
            _thread_lock.release()
            raise CheckpointError(f"another promotion into {self.path.parent} is running ({exc}); try again") from exc

    def __exit__(self, *exc_info) -> None:
        try:
            release_pid_lock(self.path)
        finally:
            _thread_lock.release()


def _register(weights_dir: Path, stem: str, source: Path) -> None:
    path = weights_dir / REGISTRY_NAME
    try:
        data = parse_json(read_bytes_bounded(path, 4 * 1024 * 1024), source=path)
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError, NotRegularFileError, JsonFileError) as exc:
        log.warning("%s unreadable (%s); starting it again", path, exc)
        data = {}
    entries = data.get("promoted") if isinstance(data, dict) else None
    entries = entries if isinstance(entries, dict) else {}
    entries[stem] = {
        "source": str(source),
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path, {"promoted": entries})


def short_card(meta: dict, checkpoint_name: str, source: Path) -> str:
    """A short true card for a checkpoint: what it is, its validation AUC, and how to compute its test metrics."""
    val = ((meta.get("metrics") or {}).get("val") or {})
    auc = val.get("roc_auc") if isinstance(val, dict) else None
    stem = checkpoint_name[: -len(CHECKPOINT_SUFFIX)]
    lines = [
        f"# Model card: `{checkpoint_name}`",
        "",
        f"{meta['architecture']} ({meta['in_chans']}-channel input, {meta['image_size']} px) predicting "
        f"**{meta['class_names'][1]}** vs {meta['class_names'][0]}, promoted from `{source}`.",
        "",
        "No test metrics are stored in this checkpoint yet, so none are shown. "
        + (f"Validation ROC AUC (image level, used to choose the checkpoint, so optimistic): {auc:.3f}. "
           if isinstance(auc, (int, float)) and auc == auc else "")
        + "Compute them with:",
        "",
        "```",
        f"python -m fracture evaluate --checkpoint weights/{checkpoint_name} --data DATA --split test "
        f"--write-meta --card weights/{stem}.md",
        "```",
        "",
        "Not a medical device: a teaching and research model.",
        "",
    ]
    return "\n".join(lines)
