"""The typed checkpoint: ``CheckpointMeta``, parsed and validated once where a checkpoint is opened.

Why: prediction, batch, Compare, evaluation and ONNX all read the same few
fields (pipeline, normalisation, threshold, calibration, operating points, OOD,
heatmap choice). Read raw from a dict, each reader had its own idea of a
missing or damaged block (a bias of 50 labelled every image fractured; an OOD
mean of NaN turned the warning off; an unknown method fell back with only a
log line). Here every block is checked for type, range, shape and known
method, and a bad one is a :class:`~fracture.errors.CheckpointError` naming the
file, the block and the fix -- never silently degraded.

Pure: json-typed checks only (no torch, no numpy arrays); the OOD arrays'
shapes come from the safetensors header, their values are checked by
:func:`check_ood_arrays` where the tensors are loaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fracture.errors import CheckpointError
from fracture.explain.names import LAYER_PRESETS, METHODS as CAM_METHODS

#: Calibration methods a checkpoint may name (fracture/evaluate/calibration.py fits them).
CALIBRATION_METHODS = ("temperature+bias", "temperature")
#: Temperatures accepted: the fitting search range (calibration.T_BOUNDS).
TEMPERATURE_RANGE = (0.05, 20.0)
#: Logit biases accepted: the fitting bounds.
BIAS_RANGE = (-20.0, 20.0)
#: The one OOD method (fracture/gate/ood.py).
OOD_METHOD = "mahalanobis-ppca"
OOD_TENSORS = ("ood.mean", "ood.components", "ood.variances")
MAX_OPERATING_POINTS = 32
MAX_FEATURE_DIM = 65536

FIX_CALIBRATE = "run `python -m fracture calibrate --checkpoint FILE --data DATA` to fit it again"
FIX_EXPLAIN = "run `python -m fracture explain-select` again, or remove the block"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(where: str, block: str, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(f"{where}: metadata block {block!r} {problem}; {fix}")


def _finite_in(value: Any, lo: float, hi: float) -> bool:
    return _is_number(value) and math.isfinite(value) and lo <= value <= hi


# ------------------------------------------------------------------ blocks
@dataclass(frozen=True)
class Calibration:
    """``p' = sigmoid(logit(p) / temperature + bias)`` of the flip-averaged probability (strictly increasing)."""

    method: str
    temperature: float
    bias: float = 0.0

    RULE = "calibrated = sigmoid(logit(p) / temperature + bias), p = the (flip-averaged) probability"

    def apply(self, probs: Any):
        from fracture.evaluate.calibration import apply_temperature

        return apply_temperature(probs, self.temperature, self.bias)

    def threshold(self, raw: float) -> float:
        """A stored (uncalibrated) threshold on the calibrated scale; 0 and 1 stay put."""
        if raw <= 0.0 or raw >= 1.0:
            return float(raw)
        return float(self.apply([raw])[0])


@dataclass(frozen=True)
class OperatingPoint:
    """A named threshold, stored on the uncalibrated scale (``threshold``), with its validation figures."""

    name: str
    label: str
    threshold: float
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OodBlock:
    """The small part of the OOD detector; its arrays are the ``ood.*`` tensors beside the weights."""

    method: str
    feature_dim: int
    components: int
    threshold: float
    val_flag_rate: float | None


@dataclass(frozen=True)
class ExplainChoice:
    """The heatmap chosen for this checkpoint on validation boxes (``explain-select``)."""

    method: str
    layer: str | tuple[str, ...]


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class CheckpointMeta:
    """What prediction needs from a checkpoint, typed; ``raw`` keeps the whole metadata dict for display."""

    architecture: str
    in_chans: int
    num_body_parts: int
    preprocess: tuple[Mapping[str, Any], ...]
    normalization: Normalization
    class_names: tuple[str, str]
    body_parts: tuple[str, ...]
    multitask: bool
    threshold: float
    threshold_rule: str | None
    tta_hflip: bool
    calibration: Calibration | None
    operating_points: tuple[OperatingPoint, ...]
    ood: OodBlock | None
    explain: ExplainChoice | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def image_size(self) -> int:
        """The network's input side: the size of the pipeline's last resize step (stored once, there)."""
        return input_size(self.preprocess)

    @property
    def resize_mode(self) -> str:
        return str([s for s in self.preprocess if s.get("op") == "resize"][-1].get("mode", "letterbox"))

    # -- the decision scale -------------------------------------------------
    def calibrate(self, probs: Any):
        """Probabilities as shown to people: calibrated when the checkpoint has a calibration."""
        import numpy as np

        p = np.asarray(probs, dtype=np.float64)
        return p.copy() if self.calibration is None else self.calibration.apply(p)

    def shown_threshold(self, raw: float | None = None) -> float:
        """A stored threshold (default: the checkpoint's) on the scale probabilities are shown on."""
        raw = self.threshold if raw is None else float(raw)
        return raw if self.calibration is None else self.calibration.threshold(raw)

    def operating_point_choices(self) -> list[dict[str, Any]]:
        """The operating points a page offers, thresholds on the shown (calibrated) scale; the default first."""
        return offered_points(self.operating_points, self.calibration, self.threshold, self.threshold_rule)

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], *, where: str = "checkpoint",
                  tensor_shapes: Mapping[str, Sequence[int]] | None = None) -> "CheckpointMeta":
        """Parse metadata that :func:`fracture.checkpoints.format.validate_meta` accepted.

        Raises:
            CheckpointError: a bad ``calibration``, ``operating_points``, ``ood`` or ``explain`` block.
        """
        blocks = validate_blocks(meta, where=where, tensor_shapes=tensor_shapes)
        norm = meta["normalization"]
        as_tuple = lambda v: tuple(float(x) for x in (v if isinstance(v, list) else [v]))  # noqa: E731
        return cls(
            architecture=str(meta["architecture"]), in_chans=int(meta.get("in_chans", 3)),
            num_body_parts=int(meta.get("num_body_parts", len(meta["body_parts"]) if meta["multitask"] else 0)),
            preprocess=tuple(dict(step) for step in meta["preprocess"]),
            normalization=Normalization(as_tuple(norm["mean"]), as_tuple(norm["std"])),
            class_names=(str(meta["class_names"][0]), str(meta["class_names"][1])),
            body_parts=tuple(meta.get("body_parts") or ()), multitask=bool(meta["multitask"]),
            threshold=float(meta["threshold"]), threshold_rule=meta.get("threshold_rule"),
            tta_hflip=bool(meta.get("tta_hflip")), raw=meta, **blocks,
        )


def split_seed(meta: Mapping[str, Any]) -> int:
    """The seed the checkpoint's dataset was split with (its train config's ``split_seed``, 0 when not
    recorded): the dataset reopened with it has the train/val/test the model was trained and chosen on."""
    return int((meta.get("train_config") or {}).get("split_seed", 0))


def input_size(preprocess: Sequence[Mapping[str, Any]]) -> int:
    """The network's input side of a validated pipeline spec: its last resize step's size (stored once, there;
    :func:`fracture.checkpoints.format.read_checkpoint_meta` hands it to readers as ``image_size``)."""
    return int([step for step in preprocess if step.get("op") == "resize"][-1]["size"])


def offered_points(points: Sequence[OperatingPoint], calibration: Calibration | None, threshold: float,
                   threshold_rule: str | None) -> list[dict[str, Any]]:
    """Operating points as offered to people: ``name, label, threshold`` (shown scale),
    ``threshold_uncalibrated`` and the stored validation figures; the stored default first."""
    shown = (lambda t: float(t)) if calibration is None else calibration.threshold  # noqa: E731
    choices = [{**dict(p.figures), "name": p.name, "label": p.label, "threshold": shown(p.threshold),
                "threshold_uncalibrated": p.threshold} for p in points]
    if not any(c["name"] == "default" for c in choices):
        rule = threshold_rule or "stored"
        choices.insert(0, {"name": "default", "label": f"default ({rule}, stored in the checkpoint)",
                           "threshold": shown(threshold), "threshold_uncalibrated": float(threshold)})
    choices.sort(key=lambda c: c["name"] != "default")
    return choices


# ------------------------------------------------------------------ validation
def validate_blocks(meta: Mapping[str, Any], *, where: str = "checkpoint",
                    tensor_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Check the optional blocks (absent or null is fine) and return them typed.

    Args:
        tensor_shapes: the ``ood.*`` tensor shapes from the file's header (None: not checked here).

    Raises:
        CheckpointError: ``<where>: metadata block '<name>' <problem>; <fix>``.
    """
    if "tta_hflip" in meta and not isinstance(meta["tta_hflip"], bool):
        raise _bad(where, "tta_hflip", f"must be true or false, got {_show(meta['tta_hflip'])}",
                   "re-save the checkpoint with valid metadata")
    return {
        "calibration": _calibration(meta.get("calibration"), where),
        "operating_points": _operating_points(meta.get("operating_points"), where),
        "ood": _ood(meta.get("ood"), where, tensor_shapes),
        "explain": _explain(meta.get("explain"), where),
    }


def _calibration(block: Any, where: str) -> Calibration | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise _bad(where, "calibration", f"must be an object, got {_show(block)}", FIX_CALIBRATE)
    method = block.get("method", "temperature+bias")
    if method not in CALIBRATION_METHODS:
        raise _bad(where, "calibration", f"names unknown method {_show(method)} (known: "
                   f"{', '.join(CALIBRATION_METHODS)})", FIX_CALIBRATE)
    temperature, bias = block.get("temperature"), block.get("bias", 0.0)
    if bias is None:
        bias = 0.0
    lo, hi = TEMPERATURE_RANGE
    if not _finite_in(temperature, lo, hi):
        raise _bad(where, "calibration", f"temperature must be a finite number in [{lo}, {hi}], got "
                   f"{_show(temperature)}", FIX_CALIBRATE)
    lo, hi = BIAS_RANGE
    if not _finite_in(bias, lo, hi):
        raise _bad(where, "calibration", f"bias must be a finite number in [{lo}, {hi}], got {_show(bias)}",
                   FIX_CALIBRATE)
    if method == "temperature" and bias != 0:
        raise _bad(where, "calibration", f"method 'temperature' has no bias, got bias {_show(bias)}", FIX_CALIBRATE)
    return Calibration(method=str(method), temperature=float(temperature), bias=float(bias))


def _operating_points(points: Any, where: str) -> tuple[OperatingPoint, ...]:
    if points is None:
        return ()
    if not isinstance(points, list) or len(points) > MAX_OPERATING_POINTS:
        raise _bad(where, "operating_points", f"must be a list of at most {MAX_OPERATING_POINTS} objects "
                   f"{{name, threshold, ...}}, got {_show(points)}", FIX_CALIBRATE)
    out, names = [], set()
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            raise _bad(where, "operating_points", f"item {i} must be an object {{name, threshold, ...}}, got "
                       f"{_show(point)}", FIX_CALIBRATE)
        name, threshold = point.get("name"), point.get("threshold")
        if not isinstance(name, str) or not name or len(name) > 64 or name in names:
            raise _bad(where, "operating_points", f"item {i} needs a unique name (text), got {_show(name)}",
                       FIX_CALIBRATE)
        names.add(name)
        if not _finite_in(threshold, 0.0, 1.0):
            raise _bad(where, "operating_points", f"item {i} ({name}): threshold must be a finite number in [0, 1] "
                       f"on the uncalibrated scale, got {_show(threshold)}", FIX_CALIBRATE)
        label = point.get("label") or name
        if not isinstance(label, str):
            raise _bad(where, "operating_points", f"item {i} ({name}): label must be text, got {_show(label)}",
                       FIX_CALIBRATE)
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            value = point.get(key)
            if value is not None and not (_is_number(value) and (math.isnan(value) or 0.0 <= value <= 1.0)):
                raise _bad(where, "operating_points", f"item {i} ({name}): {key} must be a number in [0, 1] or "
                           f"null, got {_show(value)}", FIX_CALIBRATE)
        figures = {k: v for k, v in point.items() if k not in ("name", "label", "threshold")}
        out.append(OperatingPoint(name=name, label=label, threshold=float(threshold), figures=figures))
    return tuple(out)


def _ood(block: Any, where: str, shapes: Mapping[str, Sequence[int]] | None) -> OodBlock | None:
    if block is None:
        if shapes and any(name in shapes for name in OOD_TENSORS):
            raise _bad(where, "ood", "is missing but the file holds ood.* tensors", FIX_CALIBRATE)
        return None
    if not isinstance(block, dict):
        raise _bad(where, "ood", f"must be an object, got {_show(block)}", FIX_CALIBRATE)
    method = block.get("method")
    if method != OOD_METHOD:
        raise _bad(where, "ood", f"names unknown method {_show(method)} (known: {OOD_METHOD})", FIX_CALIBRATE)
    dim, k, threshold = block.get("feature_dim"), block.get("components"), block.get("threshold")
    if not _is_int(dim) or not 2 <= dim <= MAX_FEATURE_DIM:
        raise _bad(where, "ood", f"feature_dim must be an integer 2..{MAX_FEATURE_DIM}, got {_show(dim)}",
                   FIX_CALIBRATE)
    if not _is_int(k) or not 1 <= k < dim:
        raise _bad(where, "ood", f"components must be an integer 1..{dim - 1}, got {_show(k)}", FIX_CALIBRATE)
    if not (_is_number(threshold) and math.isfinite(threshold) and threshold > 0):
        raise _bad(where, "ood", f"threshold must be a finite number above 0, got {_show(threshold)}", FIX_CALIBRATE)
    rate = block.get("val_flag_rate")
    if rate is not None and not _finite_in(rate, 0.0, 1.0):
        raise _bad(where, "ood", f"val_flag_rate must be in [0, 1] or null, got {_show(rate)}", FIX_CALIBRATE)
    if shapes is not None:
        expected = {"ood.mean": [dim], "ood.components": [k, dim], "ood.variances": [k + 1]}
        for name, shape in expected.items():
            found = shapes.get(name)
            if found is None:
                raise _bad(where, "ood", f"needs tensor {name} {tuple(shape)} in the file, which lacks it",
                           FIX_CALIBRATE)
            if list(found) != shape:
                raise _bad(where, "ood", f"tensor {name} has shape {tuple(found)}, the block's feature_dim {dim} and "
                           f"components {k} need {tuple(shape)}", FIX_CALIBRATE)
    return OodBlock(method=OOD_METHOD, feature_dim=dim, components=k, threshold=float(threshold),
                    val_flag_rate=None if rate is None else float(rate))


def check_ood_arrays(mean: Any, components: Any, variances: Any, *, where: str = "checkpoint") -> None:
    """The OOD statistics' values: finite everywhere, variances above 0 (shapes: :func:`validate_blocks`).

    Raises:
        CheckpointError: NaN/inf in a tensor or a variance <= 0 (the warning would silently switch off).
    """
    import numpy as np

    for name, array in zip(OOD_TENSORS, (mean, components, variances)):
        if not np.isfinite(np.asarray(array, dtype=np.float64)).all():
            raise _bad(where, "ood", f"tensor {name} holds NaN or infinite values", FIX_CALIBRATE)
    if not (np.asarray(variances, dtype=np.float64) > 0).all():
        raise _bad(where, "ood", "tensor ood.variances must be above 0 everywhere", FIX_CALIBRATE)


def _explain(block: Any, where: str) -> ExplainChoice | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise _bad(where, "explain", f"must be an object {{method, layer}}, got {_show(block)}", FIX_EXPLAIN)
    method, layer = block.get("method"), block.get("layer")
    if method not in CAM_METHODS:
        raise _bad(where, "explain", f"names unknown heatmap method {_show(method)} (known: "
                   f"{', '.join(CAM_METHODS)})", FIX_EXPLAIN)
    if isinstance(layer, list) and layer and all(isinstance(x, str) and x for x in layer):
        layer = tuple(layer)
    elif not (isinstance(layer, str) and layer and len(layer) <= 200):
        raise _bad(where, "explain", f"layer must be a preset ({', '.join(LAYER_PRESETS)}) or layer name(s), got "
                   f"{_show(layer)}", FIX_EXPLAIN)
    return ExplainChoice(method=method, layer=layer)
