"""Typed errors of the core.

Every failure a user can cause (a bad file, an unknown model name, a folder that
is no dataset) raises a subclass of :class:`FractureError` whose message names
the offending thing and, where there is one, the fix. Pages catch
``FractureError`` and show it with ``st.error``; the CLI prints it and exits 2.
"""
from __future__ import annotations

from pathlib import Path


class FractureError(Exception):
    """Base class of every error the core raises on purpose."""


class ImageLoadError(FractureError):
    """An image file could not be turned into a uint8 grayscale array.

    Attributes:
        path: the file (or upload name) that failed.
        reason: a short machine-readable reason: ``empty``, ``not_an_image``,
            ``truncated`` (data cut short), ``invalid`` (a header value is
            invalid, or the decoder failed on the file), ``too_many_pixels``,
            ``too_large`` (file bytes), ``unsupported`` (valid, but not a kind
            this loader decodes), ``no_pixels``, ``unreadable`` (also a FIFO,
            device or folder: only regular files are opened).
    """

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"{self.path}: {reason.replace('_', ' ')}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class DatasetError(FractureError):
    """A folder is not a dataset layout we know, or its metadata is broken."""


class PreprocessError(FractureError):
    """An unknown preprocessing step or a bad parameter in a pipeline spec."""


class ModelError(FractureError):
    """An unknown architecture name or an impossible model option."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for but are not available offline."""


class CheckpointError(FractureError):
    """A file is not a valid checkpoint, or does not match the model it names."""


class ConfigError(FractureError):
    """A training configuration value is missing or invalid."""


class TrainingError(FractureError):
    """Training could not start or had to stop (the run's events say why)."""


class CacheError(FractureError):
    """The preprocessed-image or feature cache is unusable."""


class PerturbationError(FractureError):
    """An unknown shortcut-lab perturbation name (the message names it and lists the valid ones)."""
