"""Where things live and what a shared server allows, from environment variables.

Defaults keep everything outside the source tree except the shipped weights:

- ``FRACTURE_HOME`` (default ``~/.cache/fracture-lab``): demo dataset, caches.
- ``FRACTURE_RUNS_DIR`` (default ``$FRACTURE_HOME/runs``): training runs.
- ``FRACTURE_DATA_ROOTS``: ``os.pathsep``-separated folders under which the app
  accepts dataset paths (default: the demo folder, ``./datasets`` and
  ``../shared/data`` beside the checkout).
- ``FRACTURE_MAX_TRAINING_JOBS`` (default 1): training processes at once.
- ``FRACTURE_MAX_UPLOAD_MB`` (default 50).
- ``FRACTURE_WEIGHTS_DIR`` (default ``weights/`` in the checkout): shipped and
  promoted checkpoints.

Limits that bound the memory one request can take (a 30 KB upload can
otherwise decode to gigabytes):

- ``FRACTURE_MAX_IMAGE_MEGAPIXELS`` (default 8): pixels an uploaded or predicted
  image is kept at; a larger one is reduced by a whole factor while it is
  decoded (with a note). Files over 64 megapixels are refused outright.
- ``FRACTURE_MAX_UPLOAD_MEGAPIXELS`` (default 64): decoded pixels one upload
  (all its files together) may hold; files past it are reported, not decoded.
- ``FRACTURE_MAX_UPLOAD_FILES`` (default 64): files one upload may have.
- ``FRACTURE_PREDICTION_CACHE_MB`` (default 512): memory the app's prediction
  cache may hold (images and Grad-CAM maps); least recently used go first.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from fracture.errors import ConfigError, DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = REPO_ROOT / "weights"
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    home: Path
    runs_dir: Path
    demo_dir: Path
    cache_dir: Path
    data_roots: tuple[Path, ...]
    max_training_jobs: int
    max_upload_mb: int
    weights_dir: Path = field(default=WEIGHTS_DIR)
    max_image_megapixels: float = 8.0
    max_upload_megapixels: float = 64.0
    max_upload_files: int = 64
    prediction_cache_mb: float = 512.0

    @property
    def max_image_pixels(self) -> int:
        """Pixels an uploaded or predicted image is kept at (larger ones are reduced)."""
        return int(self.max_image_megapixels * 1_000_000)

    @property
    def max_upload_pixels(self) -> int:
        """Decoded pixels one upload may hold, all files together."""
        return int(self.max_upload_megapixels * 1_000_000)


def get_settings() -> Settings:
    """Read the settings now (environment variables may change between tests)."""
    home = _env_path("FRACTURE_HOME", Path.home() / ".cache" / "fracture-lab")
    demo_dir = home / "demo"
    roots_env = os.environ.get("FRACTURE_DATA_ROOTS")
    if roots_env:
        roots = tuple(Path(p).expanduser() for p in roots_env.split(os.pathsep) if p)
    else:
        roots = (demo_dir, REPO_ROOT / "datasets", REPO_ROOT.parent / "shared" / "data")
    return Settings(
        home=home,
        runs_dir=_env_path("FRACTURE_RUNS_DIR", home / "runs"),
        demo_dir=demo_dir,
        cache_dir=_env_path("FRACTURE_CACHE_DIR", home / "cache"),
        data_roots=tuple(roots),
        max_training_jobs=int(os.environ.get("FRACTURE_MAX_TRAINING_JOBS", "1")),
        max_upload_mb=int(os.environ.get("FRACTURE_MAX_UPLOAD_MB", "50")),
        weights_dir=_env_path("FRACTURE_WEIGHTS_DIR", WEIGHTS_DIR),
        max_image_megapixels=_env_number("FRACTURE_MAX_IMAGE_MEGAPIXELS", 8.0, minimum=0.01),
        max_upload_megapixels=_env_number("FRACTURE_MAX_UPLOAD_MEGAPIXELS", 64.0, minimum=0.01),
        max_upload_files=int(_env_number("FRACTURE_MAX_UPLOAD_FILES", 64, minimum=1, integer=True)),
        prediction_cache_mb=_env_number("FRACTURE_PREDICTION_CACHE_MB", 512.0, minimum=0),
    )


def _env_number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    """A numeric limit from the environment; a value that is not a number (or is below
    ``minimum``) names the variable instead of failing deep inside a page."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={raw!r}: must be {kind} (default {default:g})") from None
    if not (math.isfinite(value) and value >= minimum):  # NaN and inf too
        raise ConfigError(f"{name}={raw!r}: must be a finite number of at least {minimum:g} (default {default:g})")
    return value


def check_data_path(path: str | Path, settings: Settings | None = None) -> Path:
    """Resolve a user-given dataset folder and refuse one outside the allowed roots.

    Raises:
        DatasetError: the folder is outside every configured data root (the
            message lists them and names ``FRACTURE_DATA_ROOTS``), or missing.
    """
    settings = settings or get_settings()
    try:  # every symbolic link resolved: a link inside a root that points outside it is outside
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        raise DatasetError(f"{path}: cannot be resolved ({exc}); give the real folder") from exc
    for root in settings.data_roots:
        try:
            root = root.expanduser().resolve()
        except (OSError, RuntimeError):
            continue
        if resolved == root or root in resolved.parents:
            if not resolved.is_dir():
                raise DatasetError(f"{resolved}: folder does not exist")
            return resolved
    allowed = ", ".join(str(r) for r in settings.data_roots)
    raise DatasetError(
        f"{resolved}: outside the allowed data folders ({allowed}); move the dataset "
        "under one of them or add its parent to FRACTURE_DATA_ROOTS"
    )
