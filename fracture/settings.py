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
- ``FRACTURE_DEMO_STUDIES`` (default 320, at least 2): studies in the built-in
  demo set the app generates on first use (tests set a small number).

Every numeric limit is parsed here (:data:`LIMITS`) and nowhere else. A value
that is not a finite number in range is a :class:`ConfigError` naming the
variable; :func:`get_settings` then runs on that limit's default (logged once)
and :func:`settings_problems` lists the refusals for the app to show.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from fracture.errors import ConfigError, DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ``fracture.data.demo.DEFAULT_STUDIES``, not imported (settings stay free of OpenCV); a test keeps them equal.
DEMO_STUDIES_DEFAULT = 320
WEIGHTS_DIR = REPO_ROOT / "weights"
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
logger = logging.getLogger(__name__)


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
    demo_studies: int = DEMO_STUDIES_DEFAULT

    @property
    def max_image_pixels(self) -> int:
        """Pixels an uploaded or predicted image is kept at (larger ones are reduced)."""
        return int(self.max_image_megapixels * 1_000_000)

    @property
    def max_upload_pixels(self) -> int:
        """Decoded pixels one upload may hold, all files together."""
        return int(self.max_upload_megapixels * 1_000_000)


@dataclass(frozen=True)
class _Limit:
    """One numeric setting: its variable, default, lower bound and whether it must be whole."""

    attr: str
    variable: str
    default: float
    minimum: float
    integer: bool = False


#: Every numeric limit, parsed here and nowhere else.
LIMITS = (
    _Limit("max_training_jobs", "FRACTURE_MAX_TRAINING_JOBS", 1, 0, integer=True),
    _Limit("max_upload_mb", "FRACTURE_MAX_UPLOAD_MB", 50, 1, integer=True),
    _Limit("max_image_megapixels", "FRACTURE_MAX_IMAGE_MEGAPIXELS", 8.0, 0.01),
    _Limit("max_upload_megapixels", "FRACTURE_MAX_UPLOAD_MEGAPIXELS", 64.0, 0.01),
    _Limit("max_upload_files", "FRACTURE_MAX_UPLOAD_FILES", 64, 1, integer=True),
    _Limit("prediction_cache_mb", "FRACTURE_PREDICTION_CACHE_MB", 512.0, 0),
    _Limit("demo_studies", "FRACTURE_DEMO_STUDIES", DEMO_STUDIES_DEFAULT, 2, integer=True),
)
_reported: set[str] = set()


def read_settings() -> tuple[Settings, list[ConfigError]]:
    """The settings now, and one :class:`ConfigError` per bad variable (that value replaced by its default).

    Why both: a typo in one variable (``FRACTURE_MAX_UPLOAD_MB=abc``) must not take
    every page down; the app runs on the default and shows the problem once.
    """
    home = _env_path("FRACTURE_HOME", Path.home() / ".cache" / "fracture-lab")
    demo_dir = home / "demo"
    roots_env = os.environ.get("FRACTURE_DATA_ROOTS")
    if roots_env:
        roots = tuple(Path(p).expanduser() for p in roots_env.split(os.pathsep) if p)
    else:
        roots = (demo_dir, REPO_ROOT / "datasets", REPO_ROOT.parent / "shared" / "data")
    problems: list[ConfigError] = []
    limits: dict[str, float] = {}
    for limit in LIMITS:
        try:
            value = _env_number(limit.variable, limit.default, minimum=limit.minimum, integer=limit.integer)
        except ConfigError as exc:
            problems.append(exc)
            value = limit.default
        limits[limit.attr] = int(value) if limit.integer else float(value)
    settings = Settings(
        home=home,
        runs_dir=_env_path("FRACTURE_RUNS_DIR", home / "runs"),
        demo_dir=demo_dir,
        cache_dir=_env_path("FRACTURE_CACHE_DIR", home / "cache"),
        data_roots=tuple(roots),
        weights_dir=_env_path("FRACTURE_WEIGHTS_DIR", WEIGHTS_DIR),
        **limits,  # type: ignore[arg-type]
    )
    return settings, problems


def get_settings(*, strict: bool = False) -> Settings:
    """Read the settings now (environment variables may change between tests).

    A bad value is replaced by its default and logged once (see
    :func:`settings_problems` for what the app shows); with ``strict`` it is
    raised instead.

    Raises:
        ConfigError: only with ``strict``: the first bad variable, named with its value and the fix.
    """
    settings, problems = read_settings()
    if problems and strict:
        raise problems[0]
    for problem in problems:
        if str(problem) not in _reported:
            _reported.add(str(problem))
            logger.warning("%s; using the default", problem)
    return settings


def settings_problems() -> list[ConfigError]:
    """One typed error per environment variable whose value was refused (empty when all are fine)."""
    return read_settings()[1]


def _env_number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    """A numeric limit from the environment; a value that is not a number (or is below
    ``minimum``) names the variable instead of failing deep inside a page."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    kind = "whole number" if integer else "number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be a {kind} (default {default:g}); fix or unset it") from None
    if not (math.isfinite(value) and value >= minimum):  # NaN and inf too
        raise ConfigError(f"{name}={raw!r}: must be a finite {kind} of at least {minimum:g} (default {default:g}); "
                          "fix or unset it")
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
