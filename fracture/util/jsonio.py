"""JSON in and out: one fallback for what the core writes, one guarded reader for what it reads.

Every JSON file the app reads (checkpoint headers, predictions caches, the
cached ONNX file's metadata, run folders, reader-study files) can be hostile:
100,000 nested brackets overflow ``json.loads``'s stack (``RecursionError``), a
5,000-digit integer trips Python's int-digit limit (a ``ValueError`` that is no
``JSONDecodeError``), ``1e999`` becomes ``inf`` and ``NaN`` slips through every
``0 <= x <= 1`` check. :func:`parse_json` / :func:`read_json` bound the size,
the depth (measured without recursion, before parsing) and the length of every
number, apply a NaN/inf policy, and raise one typed error naming the file.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Literal

from fracture.errors import FractureError
from fracture.util.files import atomic_write_text, read_bytes_bounded

MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64
#: Longest number token accepted. Everything the core writes is far shorter
#: (``repr`` of a float is at most 24 characters); Python itself refuses ints
#: over 4,300 digits with a ``ValueError``.
MAX_NUMBER_CHARS = 100

NonFinite = Literal["reject", "allow"]


class JsonFileError(FractureError):
    """A JSON file (or text) is too large, too deep, not valid JSON, or holds a number we refuse.

    Attributes:
        source: the file (or a description of the text) that failed.
        problem: what is wrong with it.
    """

    def __init__(self, message: str, *, source: str = "", problem: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.problem = problem


def json_default(value: Any) -> Any:
    """Make numpy scalars/arrays, torch tensors and paths JSON-able; anything else is a caller error."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: linear, fast on MB-long strings


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text, brackets inside strings ignored.

    Computed without recursion (strings removed by a regular expression, then a
    running sum), so a hostile 200,000-level document costs milliseconds and
    can be refused before ``json.loads`` would overflow the stack.
    """
    import numpy as np

    if text.count("[") + text.count("{") <= 1:
        return text.count("[") + text.count("{")
    skeleton = _JSON_STRING.sub("", text).encode("ascii", "ignore")
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = (np.isin(codes, (0x5B, 0x7B)).astype(np.int64) - np.isin(codes, (0x5D, 0x7D)).astype(np.int64))
    return int(np.cumsum(steps).max(initial=0))


def _size(n: int) -> str:
    """Bytes in words: ``2.0 MB``, ``64 KB``, ``100 bytes``."""
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB".replace(".0 MB", " MB")
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


class _Refused(ValueError):
    """Raised from inside the decoder's number hooks; turned into the caller's error."""


def parse_json(
    text: str | bytes,
    *,
    source: str | os.PathLike[str],
    what: str = "",
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    max_number_chars: int = MAX_NUMBER_CHARS,
    nonfinite: NonFinite = "reject",
    error: Callable[[str], FractureError] | None = None,
) -> Any:
    """Parse JSON text that came from a file we do not trust.

    Args:
        text: the JSON (bytes are decoded as UTF-8).
        source: the file it came from, named in every error.
        what: which part of the file it is (e.g. "the 'fracture' metadata"), for the message.
        max_bytes / max_depth / max_number_chars: the bounds, checked before parsing
            (numbers: while parsing, before Python converts them).
        nonfinite: ``"reject"`` refuses ``NaN``, ``Infinity`` and numbers that
            overflow to infinity (``1e999``); ``"allow"`` keeps them (checkpoint
            metrics may be NaN; the fields that matter are validated later).
        error: the typed error to raise (a ``FractureError`` subclass taking
            the message; default :class:`JsonFileError`).

    Raises:
        the ``error`` type: ``<source>: <what> ...`` saying which bound was
        crossed or where the JSON is invalid, and that the file should be
        rebuilt or removed.
    """
    src = os.fspath(source)
    label = f"{src}: {what + ' ' if what else ''}"

    def fail(problem: str) -> FractureError:
        message = f"{label}{problem}"
        if error is None:
            return JsonFileError(message, source=src, problem=problem)
        return error(message)

    size = len(text)
    if size > max_bytes:
        raise fail(f"is {_size(size)}, over the {_size(max_bytes)} limit for this file")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise fail(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise fail(f"is nested {depth} levels deep, over the limit of {max_depth}; not a file Fracture Lab wrote")

    def parse_int(token: str) -> int:
        if len(token) > max_number_chars:
            raise _Refused(f"has a {len(token)}-digit number, over the limit of {max_number_chars} characters")
        return int(token)

    def parse_float(token: str) -> float:
        if len(token) > max_number_chars:
            raise _Refused(f"has a {len(token)}-character number, over the limit of {max_number_chars}")
        value = float(token)
        if nonfinite == "reject" and not math.isfinite(value):
            raise _Refused(f"has the number {token[:40]}, which is too large to be finite")
        return value

    def parse_constant(token: str) -> float:
        if nonfinite == "reject":
            raise _Refused(f"has {token}, which is not a finite number")
        return float(token)

    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except _Refused as exc:
        raise fail(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise fail(f"is not valid JSON ({exc})") from None
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:  # int-digit limit, deep stacks
        raise fail(f"cannot be read as JSON ({type(exc).__name__}: {exc})") from None


def read_json(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    max_number_chars: int = MAX_NUMBER_CHARS,
    nonfinite: NonFinite = "reject",
    error: Callable[[str], FractureError] | None = None,
    what: str = "",
) -> Any:
    """Read and parse a JSON file with :func:`parse_json`'s bounds, from a regular file only.

    Raises:
        FileNotFoundError: the file does not exist (callers often treat that as "none yet").
        the ``error`` type (default :class:`JsonFileError`): not a regular file
        (a FIFO, a device), unreadable, too large, or anything :func:`parse_json` refuses.
    """

    src = os.fspath(path)
    try:
        data = read_bytes_bounded(path, max_bytes)
    except FileNotFoundError:
        raise
    except FractureError as exc:  # not a regular file, too large
        raise (JsonFileError(str(exc), source=src, problem=str(exc)) if error is None else error(str(exc))) from None
    except OSError as exc:
        message = f"{src}: cannot be read ({exc.strerror or exc})"
        raise (JsonFileError(message, source=src, problem=message) if error is None else error(message)) from None
    return parse_json(
        data, source=src, what=what, max_bytes=max_bytes, max_depth=max_depth,
        max_number_chars=max_number_chars, nonfinite=nonfinite, error=error,
    )

def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """``data`` as JSON (numpy and paths made JSON-able), written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=json_default))
