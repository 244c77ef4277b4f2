"""Named preprocessing pipelines built from a JSON-able spec.

A spec is a list of steps, each a dict with the op name and its parameters::

    [{"op": "clahe", "clip_limit": 2.0, "tile_grid": 8},
     {"op": "resize", "size": 224, "mode": "letterbox"}]

The same spec is stored in every checkpoint and applied again at prediction,
so :meth:`Pipeline.to_spec` always writes every parameter (defaults filled
in) and :meth:`Pipeline.from_spec` refuses anything it does not know instead
of guessing. :func:`list_ops` gives the parameter schema the UI builds its
sliders from. This module does not import torch.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fracture.errors import PreprocessError
from fracture.preprocess import ops
from fracture.preprocess.ops import OP_PARAMS, Param

__all__ = ["OPS", "PRESETS", "OpInfo", "Pipeline", "Step", "list_ops", "list_presets"]


@dataclass(frozen=True)
class OpInfo:
    """A registered preprocessing step.

    Attributes:
        name: the ``op`` value in a spec.
        func: the pure function from :mod:`fracture.preprocess.ops`.
        params: parameter table (name -> :class:`Param`), in signature order.
        label: short human name.
        help: one sentence on what it does and why.
        summary: format string over the parameters for :meth:`Pipeline.describe`.
        out_channels: 3 for a step that adds channels, ``None`` to keep them.
        accepts_channels: whether it can run after a channel-adding step.
    """

    name: str
    func: Callable[..., np.ndarray]
    params: Mapping[str, Param]
    label: str
    help: str
    summary: str
    out_channels: int | None = None
    accepts_channels: bool = False


def _op(name: str, func: Callable[..., np.ndarray], label: str, help: str, summary: str,
        **flags: Any) -> OpInfo:
    return OpInfo(name, func, OP_PARAMS[name], label, help, summary, **flags)


#: Registry of steps by name, in the order the UI lists them.
OPS: dict[str, OpInfo] = {
    info.name: info
    for info in (
        _op("clahe", ops.clahe, "CLAHE",
            "Contrast-limited adaptive histogram equalisation: raises local contrast.",
            "CLAHE (clip {clip_limit:g}, {tile_grid}x{tile_grid} tiles)"),
        _op("normalize", ops.normalize_intensity, "Percentile stretch",
            "Maps the low/high intensity percentiles to black/white: evens out exposure.",
            "percentile stretch ({low_pct:g}-{high_pct:g}%)"),
        _op("diffusion", ops.anisotropic_diffusion, "Anisotropic diffusion",
            "Perona-Malik diffusion: smooths noise inside regions, keeps strong edges.",
            "Perona-Malik diffusion ({iterations} steps, kappa {kappa:g}, gamma {gamma:g}, "
            "option {option})"),
        _op("canny", ops.canny_edges, "Canny edge map",
            "Replaces the image by its Canny edge map.",
            "Canny edge map ({low}/{high}, blur {blur})"),
        _op("canny_overlay", ops.canny_overlay, "Canny overlay",
            "Brightens Canny edges on the image (still one channel).",
            "Canny overlay ({low}/{high}, blur {blur}, alpha {alpha:g})"),
        _op("canny_channel", ops.canny_channel, "Canny edge channel",
            "Stacks [image, edges, image] so a 3-channel network sees edges as a channel.",
            "Canny edge channel ({low}/{high}, blur {blur})", out_channels=3),
        _op("resize", ops.resize_square, "Resize",
            "Square resize without cropping: letterbox (pad black) or stretch.",
            "resize to {size} px ({mode})", accepts_channels=True),
    )
}

#: Named pipelines for the Train page and the recipes (no resize: the
#: model's input size is added with :meth:`Pipeline.with_resize`).
PRESETS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "clahe": [{"op": "clahe", "clip_limit": 2.0, "tile_grid": 8}],
    "canny_overlay": [{"op": "canny_overlay", "low": 50, "high": 150, "blur": 3, "alpha": 0.5}],
    "canny_channel": [{"op": "canny_channel", "low": 50, "high": 150, "blur": 3}],
    "diffusion": [{"op": "diffusion", "iterations": 10, "kappa": 30.0, "gamma": 0.15,
                   "option": 1}],
    "clahe+diffusion": [
        {"op": "clahe", "clip_limit": 2.0, "tile_grid": 8},
        {"op": "diffusion", "iterations": 10, "kappa": 30.0, "gamma": 0.15, "option": 1},
    ],
}


def list_ops() -> dict[str, dict[str, Any]]:
    """The schema of every step, JSON-able, for building forms and sliders.

    Returns:
        ``{op: {"label", "help", "out_channels", "accepts_channels",
        "params": {name: {"type", "default", "min"?, "max"?, "choices"?,
        "step"?, "help"}}}}`` in registry order.
    """
    return {
        name: {
            "label": info.label,
            "help": info.help,
            "out_channels": info.out_channels,
            "accepts_channels": info.accepts_channels,
            "params": {p.name: p.to_schema() for p in info.params.values()},
        }
        for name, info in OPS.items()
    }


def list_presets() -> dict[str, list[dict[str, Any]]]:
    """Named preset specs, each with every parameter filled in."""
    return {name: Pipeline.from_spec(spec).to_spec() for name, spec in PRESETS.items()}


@dataclass(frozen=True)
class Step:
    """One validated step: an op name and all its parameters."""

    op: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> OpInfo:
        return OPS[self.op]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return self.info.func(img, **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.params}

    def describe(self) -> str:
        return self.info.summary.format(**self.params)


def _parse_step(index: int, raw: Any) -> Step:
    if not isinstance(raw, Mapping):
        raise PreprocessError(f"preprocessing step {index}: expected a dict like "
                              f"{{'op': 'clahe', ...}}, got {raw!r}")
    name = raw.get("op")
    if name not in OPS:
        known = ", ".join(OPS)
        raise PreprocessError(f"preprocessing step {index}: unknown op {name!r}; "
                              f"known ops: {known}")
    info = OPS[name]
    unknown = sorted(str(k) for k in raw if k != "op" and k not in info.params)
    if unknown:
        raise PreprocessError(f"preprocessing step {index} ({name!r}): unknown parameter(s) "
                              f"{', '.join(map(repr, unknown))}; allowed: "
                              f"{', '.join(info.params)}")
    params = {
        pname: param.validate(name, raw.get(pname, param.default))
        for pname, param in info.params.items()
    }
    if "low" in params and "high" in params and params["low"] > params["high"]:
        raise PreprocessError(f"preprocessing step {index} ({name!r}): parameter 'low' "
                              f"({params['low']}) must not exceed parameter 'high' "
                              f"({params['high']})")
    return Step(name, params)


class Pipeline:
    """An ordered, validated list of preprocessing steps; call it on an image.

    Build it with :meth:`from_spec`; it is immutable, and ``pipeline(img)``
    returns a new uint8 array, ``(H, W)`` or ``(H, W, 3)`` when a step adds
    channels (see :attr:`out_channels`).
    """

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._steps = tuple(steps)
        adding = None
        for index, step in enumerate(self._steps):
            if adding is not None and not step.info.accepts_channels:
                raise PreprocessError(
                    f"preprocessing step {index} ({step.op!r}) needs a grayscale image but "
                    f"comes after {adding!r}, which adds channels; move {adding!r} to the end "
                    f"(only 'resize' may follow it)")
            if step.info.out_channels is not None:
                adding = step.op

    @classmethod
    def from_spec(cls, spec: Any) -> Pipeline:
        """Validate a spec and build the pipeline, filling in defaults.

        Args:
            spec: a list of step dicts, ``None`` or ``[]`` (no steps), a
                :class:`Pipeline`, a preset name from :data:`PRESETS`, or a
                JSON string of a list.

        Returns:
            The pipeline.

        Raises:
            PreprocessError: not a list, an unknown op, an unknown parameter,
                a value of the wrong type or out of range, or a grayscale step
                after a channel-adding one; the message names the step and
                parameter.
        """
        if isinstance(spec, Pipeline):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, str):
            text = spec.strip()
            if text in PRESETS:
                spec = PRESETS[text]
            elif text.startswith("["):
                from fracture.util.jsonio import parse_json

                # the guarded reader (depth, size, numbers): a typed error, never a RecursionError
                spec = parse_json(text, source="preprocessing spec", max_bytes=1024 * 1024, error=PreprocessError)
            else:
                raise PreprocessError(f"unknown preprocessing preset {spec!r}; presets: "
                                      f"{', '.join(PRESETS)} (or give a JSON list of steps)")
        if isinstance(spec, Mapping) or not isinstance(spec, (list, tuple)):
            raise PreprocessError(f"a preprocessing spec must be a list of steps, got "
                                  f"{type(spec).__name__}: {spec!r}")
        return cls(_parse_step(index, raw) for index, raw in enumerate(spec))

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def to_spec(self) -> list[dict[str, Any]]:
        """The full spec, every parameter written out; survives ``json`` round trips."""
        return [step.to_dict() for step in self._steps]

    def to_json(self) -> str:
        return json.dumps(self.to_spec())

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Apply every step in order; the input is left untouched.

        Raises:
            PreprocessError: the image is not uint8 of a shape a step accepts.
        """
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            got = img.dtype if isinstance(img, np.ndarray) else type(img).__name__
            raise PreprocessError(f"preprocessing expects a uint8 numpy image, got {got}; "
                                  f"load images with fracture.data.load_image")
        out = img
        for step in self._steps:
            out = step(out)
        return out.copy() if out is img else out

    @property
    def out_channels(self) -> int:
        """3 when a step stacks channels (``canny_channel``), else 1."""
        for step in self._steps:
            if step.info.out_channels is not None:
                return step.info.out_channels
        return 1

    @property
    def image_size(self) -> int | None:
        """Output side in pixels when the pipeline ends with a resize, else None."""
        if self._steps and self._steps[-1].op == "resize":
            return int(self._steps[-1].params["size"])
        return None

    @property
    def resize_mode(self) -> str:
        """How the pipeline makes its square (``letterbox`` or ``stretch``); ``letterbox`` without a resize."""
        return next((step.params["mode"] for step in self._steps if step.op == "resize"), "letterbox")

    def describe(self) -> str:
        """One line for people, e.g. ``CLAHE (clip 2, 8x8 tiles) → resize to 224 px (letterbox)``."""
        if not self._steps:
            return "no preprocessing"
        return " → ".join(step.describe() for step in self._steps)

    def with_resize(self, size: int, mode: str = "letterbox") -> Pipeline:
        """A new pipeline with any resize removed and ``resize(size, mode)`` last.

        Raises:
            PreprocessError: ``size`` or ``mode`` out of range.
        """
        resize = _parse_step(len(self._steps), {"op": "resize", "size": size, "mode": mode})
        return Pipeline([*self.without_resize().steps, resize])

    def without_resize(self) -> Pipeline:
        """A new pipeline with every resize step removed (to show native resolution)."""
        return Pipeline(step for step in self._steps if step.op != "resize")

    def __len__(self) -> int:
        return len(self._steps)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Pipeline.from_spec({self.to_spec()!r})"
