"""One JSON fallback for the values the core writes (events, metadata, reports)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def json_default(value: Any) -> Any:
    """Make numpy scalars/arrays, torch tensors and paths JSON-able; anything else is a caller error."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
