"""Shortcut lab: does the model read the bone, or the lead marker, the text and the border?

Networks learn whatever predicts the label; in radiographs that is often
not the fracture but a hospital's marker style, a burnt-in label, a ruler or
the film border (Zech et al. 2018). Here each test image is altered in one
way at a time and predicted again with its heatmap, and three figures are
kept per alteration:

* ``mean_abs_dp``: mean |P(altered) - P(original)| (calibrated probabilities),
* ``flip_rate``: how often the label at the stored threshold changes,
* ``heatmap_on_stamp`` (marker, text, ruler): how often the heatmap maximum
  lands on what was pasted (its box widened by :data:`STAMP_MARGIN` of the
  image's longer side), beside ``heatmap_on_stamp_before``, the same box on
  the unaltered image's heatmap (chance for this image and box), and
  ``box_share``, the widened box's share of the image.

Every perturbation is a pure function of a uint8 grayscale image and a
seeded generator, so the page (:mod:`pages.7_Shortcut_Lab`) and the CLI
(``python -m fracture shortcuts``) alter images the same way. The stamps are
those of training's burn-in augmentation (:mod:`fracture.preprocess.markers`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from fracture.errors import PerturbationError
from fracture.preprocess.markers import paste_stamp, render_stamp, stamp_bank

log = logging.getLogger(__name__)

STAMP_MARGIN = 0.03
"""A heatmap maximum this share of the longer side outside a stamp's box still counts as on it (maps are coarse)."""
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Perturbed:
    """An altered image and, for pasted things, their box ``(x0, y0, x1, y1)`` in its pixels."""

    image: np.ndarray
    box: Box | None = None


def _corner(image: np.ndarray, w: int, h: int, rng: np.random.Generator, top: bool | None = None) -> tuple[int, int]:
    ih, iw = image.shape
    margin = int(0.04 * min(ih, iw))
    top = bool(rng.random() < 0.7) if top is None else top  # lead markers sit mostly in an upper corner
    left = bool(rng.random() < 0.5)
    x = margin if left else max(0, iw - margin - w)
    y = margin if top else max(0, ih - margin - h)
    return x, y


def _stamp(image: np.ndarray, rng: np.random.Generator, kind: str, height_share: float, text: str | None) -> Perturbed:
    bank = stamp_bank(kind)
    stamp = render_stamp(text) if text else bank[int(rng.integers(len(bank)))]
    height = max(10, int(height_share * min(image.shape)))
    width = max(1, round(stamp.mask.shape[1] * height / stamp.mask.shape[0]))
    x, y = _corner(image, width, height, rng, top=None if kind == "marker" else bool(rng.random() < 0.5))
    out, box = paste_stamp(image, stamp, height=height, x=x, y=y, value=255)
    return Perturbed(out, box)


def lead_marker(image: np.ndarray, rng: np.random.Generator, text: str | None = None) -> Perturbed:
    """A bright L/R lead marker (~9% of the shorter side tall) in a corner."""
    return _stamp(image, rng, "marker", 0.09, text)


def text_label(image: np.ndarray, rng: np.random.Generator, text: str | None = None) -> Perturbed:
    """A burnt-in label ("AP", "PORTABLE", initials...) along the top or bottom edge."""
    return _stamp(image, rng, "text", 0.06, text)


def ruler(image: np.ndarray, rng: np.random.Generator) -> Perturbed:
    """A bright measuring ruler with ticks along the left or right edge."""
    out = image.copy()
    ih, iw = image.shape
    width = max(4, int(0.03 * iw))
    x0 = int(0.02 * iw) if rng.random() < 0.5 else iw - int(0.02 * iw) - width
    y0, y1 = int(0.1 * ih), int(0.9 * ih)
    out[y0:y1, x0:x0 + width] = 230
    step = max(3, (y1 - y0) // 20)
    for k, y in enumerate(range(y0, y1, step)):
        tick = width // 2 if k % 5 else width
        out[y: y + max(1, step // 6), x0: x0 + tick] = 60
    return Perturbed(out, (x0, y0, x0 + width, y1))


def border(image: np.ndarray, rng: np.random.Generator) -> Perturbed:
    """A white film border (6% of the longer side) around the image, as on a scanned film."""
    pad = max(2, int(0.06 * max(image.shape)))
    return Perturbed(cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255))


def crop(image: np.ndarray, rng: np.random.Generator) -> Perturbed:
    """12% cut from every side (a tighter collimation)."""
    ih, iw = image.shape
    dy, dx = int(0.12 * ih), int(0.12 * iw)
    return Perturbed(np.ascontiguousarray(image[dy: ih - dy, dx: iw - dx]))


def rotation(image: np.ndarray, rng: np.random.Generator, degrees: float = 15.0) -> Perturbed:
    """Turned by 15 degrees (either way), corners filled black like air."""
    ih, iw = image.shape
    angle = degrees if rng.random() < 0.5 else -degrees
    matrix = cv2.getRotationMatrix2D((iw / 2, ih / 2), angle, 1.0)
    return Perturbed(cv2.warpAffine(image, matrix, (iw, ih), flags=cv2.INTER_LINEAR, borderValue=0))


def inversion(image: np.ndarray, rng: np.random.Generator) -> Perturbed:
    """The negative (bone dark), as a MONOCHROME1 file read without its flag would look."""
    return Perturbed(255 - image)


def noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 12.0) -> Perturbed:
    """Gaussian noise, sigma 12 grey levels."""
    return Perturbed(np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8))


def blur(image: np.ndarray, rng: np.random.Generator) -> Perturbed:
    """Gaussian blur, sigma 0.4% of the longer side (2 px on a 500-px image)."""
    return Perturbed(cv2.GaussianBlur(image, (0, 0), max(0.5, 0.004 * max(image.shape))))


def jpeg(image: np.ndarray, rng: np.random.Generator, quality: int = 10) -> Perturbed:
    """Re-saved as a JPEG at quality 10 (blocking artefacts)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return Perturbed(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if ok else image.copy())


PERTURBATIONS: dict[str, Callable[..., Perturbed]] = {
    "lead_marker": lead_marker, "text_label": text_label, "ruler": ruler, "border": border, "crop": crop,
    "rotation": rotation, "inversion": inversion, "noise": noise, "blur": blur, "jpeg": jpeg,
}
"""Every perturbation by name (identifiers without spaces: CLI arguments, report keys), in report order."""
LABELS: dict[str, str] = {
    "lead_marker": "lead marker", "text_label": "text label", "ruler": "ruler", "border": "film border",
    "crop": "crop", "rotation": "rotation", "inversion": "inversion", "noise": "noise", "blur": "blur",
    "jpeg": "JPEG artefacts",
}
"""What a person reads for each name (pages, the CLI's table)."""
STAMPED = ("lead_marker", "text_label", "ruler")
"""Perturbations that paste something with a box, for the heatmap question."""
_FORMER_NAMES = {"lead marker": "lead_marker", "text label": "text_label"}
"""Names stored before they became identifiers (e.g. v5's ``meta["shortcuts"]``), mapped on read."""


def perturbation_name(name: str) -> str:
    """The identifier for ``name`` (a former name with a space is accepted and mapped).

    Raises:
        PerturbationError: an unknown name; the message names it and lists the valid ones.
    """
    name = _FORMER_NAMES.get(name, name)
    if name not in PERTURBATIONS:
        raise PerturbationError(f"unknown perturbation {name!r}; valid: {', '.join(PERTURBATIONS)}")
    return name


def perturbation_label(name: str) -> str:
    """How a perturbation (identifier or former name) is shown to a person: ``lead_marker`` -> "lead marker"."""
    return LABELS[perturbation_name(name)]


def read_stored_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """A stored shortcut report (``meta["shortcuts"]`` or a ``--json`` file) with today's names: blocks written
    under a former name (``"lead marker"``) are keyed by its identifier; unknown names are kept as they are."""
    out = dict(report)
    figures = report.get("perturbations")
    if isinstance(figures, Mapping):
        out["perturbations"] = {_FORMER_NAMES.get(k, k): v for k, v in figures.items()}
    rows = report.get("per_image")
    if isinstance(rows, list):
        out["per_image"] = [{_FORMER_NAMES.get(k, k): v for k, v in row.items()} if isinstance(row, Mapping)
                            else row for row in rows]
    return out


def perturb(image: np.ndarray, name: str, *, seed: int = 0, **options: Any) -> Perturbed:
    """Apply one named perturbation to a uint8 grayscale image (seeded: the same seed, the same result).

    Raises:
        PerturbationError: an unknown name (the message lists the valid ones).
    """
    name = perturbation_name(name)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 2:
        raise ValueError(f"perturbations take a grayscale (H, W) image, got shape {image.shape}")
    return PERTURBATIONS[name](image, np.random.default_rng(seed), **options)


def max_on_box(heatmap: np.ndarray | None, box: Box | None, margin: float = STAMP_MARGIN) -> bool | None:
    """Whether the heatmap's maximum lies in ``box`` widened by ``margin`` of the longer side (None: no map/box)."""
    if heatmap is None or box is None:
        return None
    h, w = heatmap.shape[:2]
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape[:2])
    pad = margin * max(h, w)
    x0, y0, x1, y1 = box
    return bool(x0 - pad <= x < x1 + pad and y0 - pad <= y < y1 + pad)


def box_share(shape: tuple[int, int], box: Box, margin: float = STAMP_MARGIN) -> float:
    """The widened box's share of the image (what a random maximum would hit)."""
    h, w = shape[:2]
    pad = margin * max(h, w)
    x0, y0, x1, y1 = box
    width = min(w, x1 + pad) - max(0, x0 - pad)
    height = min(h, y1 + pad) - max(0, y0 - pad)
    return float(max(0.0, width) * max(0.0, height) / (h * w))


def measure_shortcuts(
    predictor: Any,
    images: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    perturbations: Sequence[str] = tuple(PERTURBATIONS),
    seed: int = 0,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Per perturbation: mean |dP|, label-flip rate and (stamps) heatmap-on-stamp rate over ``images``.

    Args:
        predictor: a :class:`fracture.serve.predictor.Predictor` (probabilities as shown, its threshold,
            its stored heatmap choice).
        images: uint8 grayscale radiographs (e.g. a test split).
        perturbations: names from :data:`PERTURBATIONS` (a former name is mapped; an unknown one raises
            :class:`~fracture.errors.PerturbationError` before anything runs).
        seed: image ``i`` under perturbation ``k`` uses seed ``seed + 1000 * k + i``.

    Returns:
        ``{"n", "threshold", "heatmap", "perturbations": {name: {...figures}}, "per_image": [...]}``.
    """
    perturbations = [perturbation_name(p) for p in perturbations]  # an unknown name fails before any work
    images = [np.ascontiguousarray(img, dtype=np.uint8) for img in images]
    if not images:
        raise ValueError("measure_shortcuts needs at least one image")
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    threshold = float(predictor.threshold)

    def run(batch: list[np.ndarray]) -> list[Any]:
        out = []
        for start in range(0, len(batch), batch_size):
            out.extend(predictor.predict(batch[start: start + batch_size], with_cam=True).images)
        return out

    base = run(images)
    total = len(perturbations)
    results: dict[str, Any] = {}
    per_image = [{"name": n, "probability": float(b.prob)} for n, b in zip(names, base)]
    for k, name in enumerate(perturbations):
        altered = [perturb(img, name, seed=seed + 1000 * k + i) for i, img in enumerate(images)]
        after = run([a.image for a in altered])
        dp = np.array([a.prob - b.prob for a, b in zip(after, base)])
        flips = np.array([(a.prob >= threshold) != (b.prob >= threshold) for a, b in zip(after, base)])
        figures: dict[str, Any] = {"n": len(images), "mean_abs_dp": float(np.abs(dp).mean()),
                                   "mean_dp": float(dp.mean()), "flip_rate": float(flips.mean()),
                                   "flips": int(flips.sum())}
        if name in STAMPED:
            on = [max_on_box(a.heatmap, p.box) for a, p in zip(after, altered)]
            before = [max_on_box(b.heatmap, p.box) if b.heatmap is not None and b.heatmap.shape == p.image.shape
                      else None for b, p in zip(base, altered)]
            kept = [v for v in on if v is not None]
            kept_before = [v for v in before if v is not None]
            figures["heatmap_on_stamp"] = float(np.mean(kept)) if kept else None
            figures["heatmap_on_stamp_before"] = float(np.mean(kept_before)) if kept_before else None
            figures["box_share"] = float(np.mean([box_share(p.image.shape, p.box) for p in altered]))
        results[name] = figures
        for row, a, b in zip(per_image, after, base):
            row[name] = float(a.prob - b.prob)
        if progress:
            progress(k + 1, total)
    choice = getattr(predictor, "cam_choice", None)
    return {"n": len(images), "threshold": threshold, "heatmap": None if choice is None else choice.label(),
            "seed": int(seed), "perturbations": results, "per_image": per_image}


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The report as a fixed-width table, one line per perturbation (CLI and card)."""
    lines = [f"{'perturbation':<14} {'mean |dP|':>9} {'flips':>11} {'heatmap on stamp':>17} {'(before)':>9} {'box':>6}"]
    for name, f in report["perturbations"].items():
        on = "" if f.get("heatmap_on_stamp") is None else f"{100 * f['heatmap_on_stamp']:.1f}%"
        before = "" if f.get("heatmap_on_stamp_before") is None else f"{100 * f['heatmap_on_stamp_before']:.1f}%"
        share = "" if f.get("box_share") is None else f"{100 * f['box_share']:.1f}%"
        lines.append(f"{name:<14} {f['mean_abs_dp']:>9.3f} {100 * f['flip_rate']:>6.1f}% ({f['flips']:>2}) "
                     f"{on:>17} {before:>9} {share:>6}")
    return lines
