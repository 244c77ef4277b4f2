"""A small synthetic radiograph dataset in the MURA-v1.1 layout.

Fracture Lab has to run (tests, the demo page, a first training run) without
downloading MURA, so :func:`make_demo_dataset` draws a few hundred
radiograph-like images procedurally: bones rendered as projected hollow
cylinders (bright cortex, darker medulla, cancellous ends), a blurred soft
tissue envelope, exposure, blur and noise variation, an L/R side marker, random
framing. Abnormal studies show a thin, jagged, slightly displaced fracture or
orthopaedic hardware (a plate with screws) in at least one view; normal studies
never do. Everything that could betray the label without looking at a bone
(image size, PNG mode, marker, brightness) is drawn independently of it.

Layout written into ``out_dir`` (which plays the role of the ``MURA-v1.1``
folder)::

    out_dir/train/XR_WRIST/patient00001/study1_positive/image1.png
    out_dir/train_image_paths.csv      MURA-v1.1/train/XR_WRIST/.../image1.png
    out_dir/train_labeled_studies.csv  MURA-v1.1/train/XR_WRIST/.../study1_positive/,1
    out_dir/valid_image_paths.csv, out_dir/valid_labeled_studies.csv
    out_dir/DEMO.txt                   marker: synthetic, seed, generator version
    out_dir/fracture_locations.csv     where each drawn lesion is (see below)

``fracture_locations.csv`` has a header row and one row per image that shows a
lesion: ``path`` (relative to ``out_dir``, e.g. ``train/XR_WRIST/...png``),
``bone`` (index of the bone in that body part's bone list), ``x``, ``y`` (the
break or plate centre in pixels of the written image), ``angle`` (degrees of
the break line, or of the implant's long axis, counter-clockwise from the image
x axis, in [0, 180)), ``displacement`` (fragment shift in pixels, 0 for
hardware), ``kind`` (``fracture`` or ``hardware``: a plate with screws, an
intramedullary nail or lag screws) and ``bone_name``. Images of abnormal
studies that do not show the lesion (about 1 in 10 views beyond the first) have no row.

A normal image is pixel for pixel its abnormal twin without the lesion: framing,
exposure, marker and noise never depend on the label.

How hard a split is belongs to the generator, not to the seed (:func:`_plan`): for
every seed each split has the same studies per body part, abnormal studies per part,
views per (part, label), hardware studies and images, unshown lesion views, and the
same spread of lesion strength (each parameter of :data:`LESION_QUANTILES` takes the
middles of equal strata). The seed decides which patient, pose and exposure carries
which. What is left between seeds is the draw of poses, sites and exposures within
those strata, and the run's own noise: the quick recipe's test image AUC on seeds 0-4
spans 0.859-0.943 (``python -m fracture.bench.quick_demo``, README).

A lesion is as likely anywhere on the drawn skeleton (a bone's chance is its area), the
neighbouring finger of a finger study never carries it, and metal is whiter than bone.

Every image is drawn from its own ``numpy.random.Generator`` seeded by
``(seed, study, view)``, so a rerun writes identical bytes.
"""
from __future__ import annotations

import csv
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from fracture.errors import DatasetError

__all__ = [
    "BODY_PARTS",
    "DEFAULT_STUDIES",
    "DEMO_MARKER",
    "GENERATOR_VERSION",
    "LOCATIONS_FILE",
    "LOCATION_COLUMNS",
    "make_demo_dataset",
    "read_demo_marker",
    "read_fracture_locations",
    "render_demo_image",
]

log = logging.getLogger(__name__)

#: Bumped whenever the drawing changes, so a stored demo set says what drew it.
GENERATOR_VERSION = "4"
#: The seven MURA body parts, lower case (folder names are ``XR_<UPPER>``).
BODY_PARTS: tuple[str, ...] = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder",
                               "wrist")
DEMO_MARKER = "DEMO.txt"
LOCATIONS_FILE = "fracture_locations.csv"
LOCATION_COLUMNS: tuple[str, ...] = ("path", "bone", "x", "y", "angle", "displacement", "kind",
                                     "bone_name")
_MURA_PREFIX = "MURA-v1.1"
DEFAULT_STUDIES = 320
"""The app's demo set (about 800 images, about 10 s to draw on 2 cores): a test split of 64 studies,
163 images (66 abnormal) for every seed, and about 65 validation images carved from train by the
reader; a quick run (``fracture/recipes/quick_demo.json``) is judged on that test split."""
SHOWN_FRACTION = 0.9
"""Share of an abnormal study's views that show its lesion (at least one always does): the
other views carry the study's label without a visible cause, as in MURA."""
_SPLIT_DIRS = ("train", "valid")


# --------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _Bone:
    """A long bone as a hollow cylinder from ``p0`` to ``p1`` (canonical units)."""

    name: str
    p0: tuple[float, float]
    p1: tuple[float, float]
    r0: float
    r1: float
    flare0: float = 0.3  # relative widening of the end at p0 (epiphysis)
    flare1: float = 0.3
    cortex: float = 0.35  # cortical thickness as a fraction of the shaft radius
    density: float = 1.0
    fracturable: bool = True


@dataclass(frozen=True)
class _Blob:
    """A rounded bone (carpal, humeral head) as a hollow ellipsoid."""

    name: str
    c: tuple[float, float]
    rx: float
    ry: float
    angle: float = 0.0  # degrees
    density: float = 1.0


@dataclass(frozen=True)
class _Soft:
    """A soft-tissue capsule (solid, low attenuation)."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    r0: float
    r1: float


@dataclass
class _Anatomy:
    bones: list[_Bone] = field(default_factory=list)
    blobs: list[_Blob] = field(default_factory=list)
    soft: list[_Soft] = field(default_factory=list)


def _rot(p: tuple[float, float], about: tuple[float, float], deg: float) -> tuple[float, float]:
    a = math.radians(deg)
    x, y = p[0] - about[0], p[1] - about[1]
    return (about[0] + x * math.cos(a) - y * math.sin(a),
            about[1] + x * math.sin(a) + y * math.cos(a))


def _chain(an: _Anatomy, prefix: str, start: tuple[float, float], direction_deg: float,
           lengths: Sequence[float], radii: Sequence[float], bends: Sequence[float],
           gap: float, density: float, tuft: bool = True,
           fracturable: bool = True) -> tuple[float, float]:
    """Append a chain of phalanges; angles in degrees from 'up' (negative y)."""
    x, y = start
    angle = direction_deg
    for i, (length, radius) in enumerate(zip(lengths, radii)):
        angle += bends[i]
        a = math.radians(angle)
        dx, dy = math.sin(a), -math.cos(a)
        p0 = (x + dx * gap, y + dy * gap)
        p1 = (p0[0] + dx * length, p0[1] + dy * length)
        last = i == len(lengths) - 1
        an.bones.append(_Bone(f"{prefix} phalanx {i + 1}", p0, p1, radius, radius * 0.85,
                              flare0=0.45, flare1=0.35 if (last and tuft) else 0.3,
                              cortex=0.4, density=density, fracturable=fracturable))
        x, y = p1
    return x, y


# Carpal bones of a right wrist seen palm down, distal up: name, x, y, rx, ry, angle.
_CARPALS = (
    ("scaphoid", -11.0, 1.5, 6.2, 3.4, 58.0),
    ("lunate", -3.0, 3.0, 4.2, 3.9, 10.0),
    ("triquetrum", 4.5, 1.5, 3.8, 3.3, -25.0),
    ("pisiform", 7.0, 3.5, 2.6, 2.5, 0.0),
    ("trapezium", -14.0, -8.0, 4.0, 3.5, 30.0),
    ("trapezoid", -7.2, -8.5, 3.3, 3.1, 10.0),
    ("capitate", -0.5, -7.5, 3.8, 5.2, 0.0),
    ("hamate", 6.5, -6.5, 4.0, 4.6, -15.0),
)


def _carpals(an: _Anatomy, rng: np.random.Generator, centre: tuple[float, float], scale: float,
             density: float) -> None:
    """Append the eight carpal bones: overlapping ellipsoids of different shapes."""
    for name, x, y, rx, ry, angle in _CARPALS:
        jitter = rng.normal(0, 0.4, 2)
        size = rng.uniform(0.92, 1.08)
        an.blobs.append(_Blob(name, (centre[0] + scale * (x + jitter[0]),
                                     centre[1] + scale * (y + jitter[1])),
                              scale * rx * size, scale * ry * size,
                              angle + rng.normal(0, 6), density=density))


def _hand(rng: np.random.Generator, vrng: np.random.Generator) -> _Anatomy:
    an = _Anatomy()
    dens = 1.5
    spread = vrng.uniform(0.85, 1.25)
    # Distal forearm (bottom of the image).
    an.bones.append(_Bone("radius", (-6, 44), (-8, 85), 5.5, 5.0, flare0=0.7, flare1=0.0,
                          density=dens * 0.8))
    an.bones.append(_Bone("ulna", (8.5, 46), (9.5, 85), 3.4, 3.6, flare0=0.3, flare1=0.0,
                          density=dens * 0.8))
    _carpals(an, rng, centre=(0.0, 33.0), scale=0.72, density=dens * 0.9)
    finger_len = rng.uniform(0.9, 1.1)
    scale = (0.95, 1.05, 1.0, 0.8)  # index, middle, ring, little
    for f, base_x in enumerate((-8.5, -2.8, 2.8, 8.5)):
        head = (base_x * 1.55 * spread, -5 - 2 * (f in (1, 2)))
        base = (base_x, 25.0)
        an.bones.append(_Bone(f"metacarpal {f + 2}", base, head, 2.7, 2.3, flare0=0.35,
                              flare1=0.55, density=dens))
        direction = math.degrees(math.atan2(head[0] - base[0], base[1] - head[1]))
        bends = [vrng.normal(0, 3) * spread, vrng.normal(0, 3), vrng.normal(0, 3)]
        _chain(an, f"finger {f + 2}", head, direction,
               [13 * scale[f] * finger_len, 8.5 * scale[f] * finger_len,
                6 * scale[f] * finger_len], [2.2, 1.85, 1.55], bends, 2.6, dens)
        an.soft.append(_Soft(head, _rot((head[0], head[1] - 30 * scale[f]), head, direction),
                             4.2, 3.4))
    thumb_dir = -48 * spread
    t_base = (-12.5, 27.0)
    a = math.radians(thumb_dir)
    t_head = (t_base[0] + math.sin(a) * 12, t_base[1] - math.cos(a) * 12)
    an.bones.append(_Bone("metacarpal 1", t_base, t_head, 2.9, 2.5, flare0=0.4, flare1=0.5,
                          density=dens))
    tip = _chain(an, "thumb", t_head, thumb_dir, [9.5, 7.0], [2.4, 2.0],
                 [vrng.normal(8, 4), vrng.normal(0, 4)], 2.6, dens)
    an.soft.append(_Soft(t_base, tip, 6.0, 4.0))
    an.soft.append(_Soft((0, 34), (0, 2), 16.0, 17.0))
    an.soft.append(_Soft((0, 40), (0, 90), 15.0, 17.0))
    return an


def _finger(rng: np.random.Generator, vrng: np.random.Generator) -> _Anatomy:
    an = _Anatomy()
    dens = 1.0
    length = rng.uniform(0.9, 1.1)
    for k, offset in enumerate((0.0, rng.choice((-24.0, 24.0)))):
        side = "" if k == 0 else "neighbouring "
        r_scale = 1.0 if k == 0 else 0.9
        base = (offset, 80.0)
        head = (offset * 1.15, 30.0)
        # The study is of one finger: its neighbour, half in the frame, never carries the lesion.
        an.bones.append(_Bone(f"{side}metacarpal", base, head, 6.2 * r_scale, 5.5 * r_scale,
                              flare0=0.0, flare1=0.5, density=dens, fracturable=k == 0))
        direction = math.degrees(math.atan2(head[0] - base[0], base[1] - head[1]))
        flex = vrng.uniform(0, 12)
        tip = _chain(an, f"{side}finger", head, direction,
                     [30 * length, 19 * length, 13 * length],
                     [5.0 * r_scale, 4.2 * r_scale, 3.6 * r_scale],
                     [vrng.normal(0, 3), flex, flex * 0.6], 5.0, dens, fracturable=k == 0)
        an.soft.append(_Soft((base[0], 90.0), head, 13.0, 10.0))
        an.soft.append(_Soft(head, tip, 9.5, 8.0))
    return an


def _forearm(rng: np.random.Generator, vrng: np.random.Generator) -> _Anatomy:
    an = _Anatomy()
    sep = rng.uniform(7.5, 10.0)
    an.bones.append(_Bone("radius", (-sep, -64), (-sep * 0.9 - 1, 64), 4.9, 4.2, flare0=0.8,
                          flare1=0.35, cortex=0.38))
    an.bones.append(_Bone("ulna", (sep, -62), (sep * 0.55, 66), 3.3, 4.8, flare0=0.3,
                          flare1=0.8, cortex=0.38))
    _carpals(an, rng, centre=(0.0, -77.0), scale=0.9, density=1.0)  # mostly out of frame
    an.soft.append(_Soft((0, -80), (0, 80), 17.0, 21.0))
    return an


def _humerus(rng: np.random.Generator, vrng: np.random.Generator) -> _Anatomy:
    an = _Anatomy()
    r = rng.uniform(5.0, 6.2)
    an.bones.append(_Bone("humerus", (1, -40), (-1, 50), r, r * 1.05, flare0=0.5, flare1=0.8,
                          cortex=0.42))
    an.blobs.append(_Blob("humeral head", (3, -47), 11.5, 10.5, 0))
    an.blobs.append(_Blob("greater tubercle", (-6.5, -44), 5.0, 6.0, 0, density=0.8))
    an.blobs.append(_Blob("capitulum", (-3, 53), 5.0, 4.0, 0, density=0.9))
    an.blobs.append(_Blob("trochlea", (4, 53.5), 5.5, 3.6, 0, density=0.9))
    an.bones.append(_Bone("glenoid", (17, -58), (18, -38), 4.0, 3.0, flare0=0.3, flare1=0.3,
                          fracturable=False))
    an.bones.append(_Bone("ulna", (2, 62), (4, 110), 4.0, 3.2, flare0=0.8, flare1=0.0))
    an.soft.append(_Soft((0, -70), (0, 75), 25.0, 20.0))
    return an


def _shoulder(rng: np.random.Generator, vrng: np.random.Generator) -> _Anatomy:
    an = _Anatomy()
    an.bones.append(_Bone("humerus", (10, 12), (17, 85), 6.5, 6.8, flare0=0.5, flare1=0.0,
                          cortex=0.42))
    an.blobs.append(_Blob("humeral head", (5, 1), 15.5, 14.5, 20))
    an.bones.append(_Bone("clavicle", (-60, -36), (24, -29 + rng.normal(0, 2)), 4.2, 3.8,
                          flare0=0.0, flare1=0.5, cortex=0.4))
    an.bones.append(_Bone("acromion", (-22, -21), (17, -20), 3.4, 3.0, flare0=0.2, flare1=0.4,
                          fracturable=False))
    an.bones.append(_Bone("glenoid", (-13, -13), (-15, 14), 4.2, 3.8, flare0=0.3, flare1=0.3,
                          fracturable=False))
    an.bones.append(_Bone("scapula", (-24, 2), (-46, 60), 9.0, 4.0, flare0=0.0, flare1=0.0,
                          cortex=0.1, density=0.3, fracturable=False))
    an.bones.append(_Bone("scapular border", (-14, 8), (-36, 70), 2.4, 2.0, flare0=0.0,
                          flare1=0.0, density=0.9, fracturable=False))
    for k in range(3):  # ribs in the corner
        y = 25 + 22 * k + rng.normal(0, 2)
        an.bones.append(_Bone(f"rib {k + 1}", (-75, y), (-30, y + 18), 2.4, 2.4, flare0=0.0,
                              flare1=0.0, density=0.5, fracturable=False))
    an.soft.append(_Soft((-40, 10), (35, 30), 42.0, 40.0))
    return an


def _elbow(rng: np.random.Generator, vrng: np.random.Generator, lateral: bool) -> _Anatomy:
    an = _Anatomy()
    flex = vrng.uniform(70, 100) if lateral else vrng.uniform(-4, 8)
    an.bones.append(_Bone("humerus", (0, -70), (0, -7), 5.6, 5.4, flare0=0.0, flare1=1.1,
                          cortex=0.4))
    an.blobs.append(_Blob("trochlea", (0, -4.5), 9.0, 4.2, 0))
    pivot = (0.0, 0.0)
    ulna = _Bone("ulna", _rot((3, 2), pivot, flex), _rot((6, 75), pivot, flex), 4.3, 3.4,
                 flare0=0.9, flare1=0.0, cortex=0.38)
    radius = _Bone("radius", _rot((-7.5, 3), pivot, flex), _rot((-10, 75), pivot, flex), 3.3,
                   3.8, flare0=0.55, flare1=0.0, cortex=0.38)
    an.bones += [ulna, radius]
    an.soft.append(_Soft((0, -80), (0, 0), 19.0, 21.0))
    an.soft.append(_Soft((0, 0), _rot((0, 80), pivot, flex), 20.0, 17.0))
    return an


def _wrist(rng: np.random.Generator, vrng: np.random.Generator) -> _Anatomy:
    an = _Anatomy()
    an.bones.append(_Bone("radius", (-6, 9), (-8, 80), 6.6, 5.2, flare0=0.75, flare1=0.0,
                          cortex=0.36))
    an.bones.append(_Bone("ulna", (10, 13), (11, 80), 3.9, 3.7, flare0=0.35, flare1=0.0,
                          cortex=0.36))
    _carpals(an, rng, centre=(0.0, -3.0), scale=1.0, density=1.0)
    for m, x in enumerate((-13.0, -6.5, 0.0, 6.5, 13.0)):
        an.bones.append(_Bone(f"metacarpal {m + 1}", (x, -16), (x * 1.35, -85), 3.1, 2.7,
                              flare0=0.4, flare1=0.0, cortex=0.4))
    an.soft.append(_Soft((0, -90), (0, 90), 23.0, 21.0))
    return an


def _build_anatomy(part: str, study_key: Sequence[int], vrng: np.random.Generator,
                   lateral: bool) -> _Anatomy:
    """Anatomy of one view: study-level shape from ``study_key``, pose from ``vrng``.

    The bone list has the same order in every view of a study, so a lesion's
    bone index means the same bone in each view.
    """
    rng = np.random.default_rng([*study_key, 7])
    if part == "hand":
        return _hand(rng, vrng)
    if part == "finger":
        return _finger(rng, vrng)
    if part == "forearm":
        return _forearm(rng, vrng)
    if part == "humerus":
        return _humerus(rng, vrng)
    if part == "shoulder":
        return _shoulder(rng, vrng)
    if part == "elbow":
        return _elbow(rng, vrng, lateral)
    if part == "wrist":
        return _wrist(rng, vrng)
    raise DatasetError(f"unknown demo body part {part!r}; known: {', '.join(BODY_PARTS)}")


# --------------------------------------------------------------------------- lesions


@dataclass(frozen=True)
class _Lesion:
    """A study-level abnormality; geometry in units of the bone and in pixels."""

    kind: str  # "fracture" or "hardware"
    bone_choice: float  # in [0, 1): picks among the fracturable bones
    t: float  # position along the bone, 0..1
    angle_offset: float  # degrees between break line and the bone's perpendicular
    gap: float  # break width in pixels at 300 px long side
    displacement: float  # fragment shift in pixels at 300 px long side
    jag_amp: float
    along_shift: float  # fraction of the shift along the bone axis (impaction/distraction)
    tilt: float  # small fragment rotation, degrees
    moving_side: int  # which fragment moves: +1 or -1
    plate_side: int  # which side of the bone the plate (or screw heads) lies on
    screws: int
    device: str  # hardware only: "plate", "nail" or "screws"


FRACTURE_SHARE = 0.75
"""Share of lesions that are fractures; the rest is hardware."""
OBLIQUE_SHARE = 0.4
"""Share of fractures whose break line runs 25-50 degrees off the bone's perpendicular."""
_DEVICES = ("plate", "plate", "plate", "nail", "screws")
GAP_RANGE = (3.0, 5.0)
"""Width of the break in pixels of a 300 px long side (uniform over the range)."""
SHIFT_RANGE = (3.5, 8.0)
"""Fragment shift (the step in the cortex) in pixels of a 300 px long side."""
LESION_QUANTILES: tuple[str, ...] = ("kind", "bone", "t", "angle", "gap", "displacement", "jag",
                                     "along_shift", "device")
"""The lesion parameters that set how hard a lesion is to see. Each is drawn as a quantile in
[0, 1) and mapped through its distribution, so the dataset plan can hand every split the same
spread of quantiles (:func:`_plan`) and a seed changes which study gets which lesion, not how
hard the split is."""


def _draw_lesion(rng: np.random.Generator,
                 quantiles: Mapping[str, float] | None = None) -> _Lesion:
    """A study's lesion: each of :data:`LESION_QUANTILES` from ``quantiles`` or, missing there, ``rng``.

    ``rng`` is consumed the same way either way, so what follows it in the study's stream
    does not depend on whether a plan fixed the quantiles.
    """
    u = {name: float(rng.random()) for name in LESION_QUANTILES}
    for name, value in (quantiles or {}).items():
        if name not in u or not 0.0 <= value < 1.0:
            raise DatasetError(f"lesion quantile {name}={value!r}: known names are "
                               f"{', '.join(LESION_QUANTILES)}, values in [0, 1)")
        u[name] = float(value)
    sign = int(rng.choice((-1, 1)))
    tilt = float(rng.normal(0, 3.0))
    moving_side, plate_side = int(rng.choice((-1, 1))), int(rng.choice((-1, 1)))
    screws = int(rng.integers(3, 7))
    if u["angle"] < OBLIQUE_SHARE:
        angle_offset = sign * (25.0 + 25.0 * u["angle"] / OBLIQUE_SHARE)
    else:  # near the perpendicular: normal, sd 10 degrees
        angle_offset = 10.0 * NormalDist().inv_cdf(
            min(max((u["angle"] - OBLIQUE_SHARE) / (1 - OBLIQUE_SHARE), 0.005), 0.995))
    return _Lesion(
        kind="fracture" if u["kind"] < FRACTURE_SHARE else "hardware",
        bone_choice=u["bone"],
        t=0.25 + 0.5 * u["t"],
        angle_offset=angle_offset,
        # Sized so that a break survives the downscale to a quick run's input (224-320 px):
        # a gap of 2-4 input pixels and a step in the cortex of 3-8, still thin against the bone.
        gap=GAP_RANGE[0] + (GAP_RANGE[1] - GAP_RANGE[0]) * u["gap"],
        displacement=SHIFT_RANGE[0] + (SHIFT_RANGE[1] - SHIFT_RANGE[0]) * u["displacement"],
        jag_amp=0.5 + 0.7 * u["jag"],
        along_shift=-0.5 + 0.9 * u["along_shift"],
        tilt=tilt,
        moving_side=moving_side,
        plate_side=plate_side,
        screws=screws,
        device=_DEVICES[min(int(u["device"] * len(_DEVICES)), len(_DEVICES) - 1)],
    )


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _View:
    height: int
    width: int
    matrix: np.ndarray  # 2x3, canonical units -> pixels
    scale: float  # pixels per unit


def _to_px(view: _View, p: tuple[float, float]) -> np.ndarray:
    return view.matrix[:, :2] @ np.asarray(p, dtype=np.float64) + view.matrix[:, 2]


def _grid(shape: tuple[int, int], lo: np.ndarray, hi: np.ndarray):
    """Pixel-centre coordinates of the clipped bounding box ``[lo, hi]``."""
    h, w = shape
    x0, y0 = max(0, int(math.floor(lo[0]))), max(0, int(math.floor(lo[1])))
    x1, y1 = min(w, int(math.ceil(hi[0])) + 1), min(h, int(math.ceil(hi[1])) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def _tube(shape: tuple[int, int], p0: np.ndarray, p1: np.ndarray, r0: float, r1: float,
          flare0: float = 0.0, flare1: float = 0.0, cortex: float = 0.35, hollow: bool = True,
          pad: float = 0.0):
    """Projected path length through a (hollow) cylinder with flared, rounded ends.

    Returns ``(slices, xs, ys, mu)`` over the bone's bounding box (``pad``
    extra pixels around it), or None when it lies outside the image. For a
    hollow bone ``mu`` is the cortical path plus a fraction of the medullary
    path: the outline of a long bone on a radiograph is brighter than its
    middle because X-rays graze more cortex there.
    """
    rmax = max(r0 * (1 + flare0), r1 * (1 + flare1)) + 2 + pad
    lo = np.minimum(p0, p1) - rmax
    hi = np.maximum(p0, p1) + rmax
    grid = _grid(shape, lo, hi)
    if grid is None:
        return None
    slices, xs, ys = grid
    axis = p1 - p0
    length = float(np.hypot(*axis))
    ux, uy = axis / max(length, 1e-6)
    dx, dy = xs - np.float32(p0[0]), ys - np.float32(p0[1])
    along = dx * np.float32(ux) + dy * np.float32(uy)
    lateral = dy * np.float32(ux) - dx * np.float32(uy)
    t = along / np.float32(max(length, 1e-6))
    tc = np.clip(t, 0.0, 1.0)
    shaft = np.float32(r0) + np.float32(r1 - r0) * tc
    # Metaphyseal flare: a smooth widening over about three radii from each end.
    e0 = np.exp(-np.square(tc * np.float32(length / (3.2 * r0 + 1e-6))))
    e1 = np.exp(-np.square((1 - tc) * np.float32(length / (3.2 * r1 + 1e-6))))
    ends = np.float32(flare0) * e0 + np.float32(flare1) * e1
    radius = shaft * (1 + ends)
    # Flattened end caps (articular surfaces are wider than they are deep).
    over = np.where(t < 0, along, np.where(t > 1, along - np.float32(length), 0.0)) * 1.7
    d2 = lateral * lateral + over * over
    outer = 2 * np.sqrt(np.maximum(radius * radius - d2, 0))
    if not hollow:
        return slices, xs, ys, outer
    inner_r = radius - np.float32(cortex) * shaft * shaft / radius  # thin cortex at the ends
    inner = 2 * np.sqrt(np.maximum(inner_r * inner_r - d2, 0))
    cancellous = 0.14 + 0.4 * np.clip(ends / (max(flare0, flare1, 0.3)), 0, 1)
    return slices, xs, ys, (outer - inner) + cancellous * inner


def _ellipsoid(shape: tuple[int, int], c: np.ndarray, rx: float, ry: float, angle: float):
    grid = _grid(shape, c - max(rx, ry) - 2, c + max(rx, ry) + 2)
    if grid is None:
        return None
    slices, xs, ys = grid
    a = math.radians(angle)
    dx, dy = xs - np.float32(c[0]), ys - np.float32(c[1])
    u = dx * np.float32(math.cos(a)) + dy * np.float32(math.sin(a))
    v = dy * np.float32(math.cos(a)) - dx * np.float32(math.sin(a))
    depth = min(rx, ry)
    shell = 0.22 * depth
    outer = 2 * depth * np.sqrt(np.maximum(1 - (u / rx) ** 2 - (v / ry) ** 2, 0))
    ix, iy, idepth = rx - shell, ry - shell, depth - shell
    inner = 2 * idepth * np.sqrt(np.maximum(1 - (u / ix) ** 2 - (v / iy) ** 2, 0))
    return slices, (outer - inner) + 0.45 * inner


def _break_bone(patch: np.ndarray, xs: np.ndarray, ys: np.ndarray, centre: np.ndarray,
                axis_u: np.ndarray, lesion: _Lesion, px: float, rng: np.random.Generator,
                radius_px: float) -> tuple[np.ndarray, float, float]:
    """Cut ``patch`` along a jagged line through ``centre`` and shift one fragment.

    Returns the broken patch, the break-line angle (degrees, image x axis,
    counter-clockwise) and the fragment displacement in pixels.
    """
    normal = np.array([-axis_u[1], axis_u[0]])
    a = math.radians(lesion.angle_offset)
    line = normal * math.cos(a) + axis_u * math.sin(a)  # direction of the break line
    across = np.array([-line[1], line[0]])  # its normal, roughly along the bone
    dx, dy = xs - np.float32(centre[0]), ys - np.float32(centre[1])
    along_line = dx * np.float32(line[0]) + dy * np.float32(line[1])
    side = dx * np.float32(across[0]) + dy * np.float32(across[1])
    reach = 2.5 * radius_px / max(abs(math.cos(a)), 0.3) + 4
    spacing = 3.5 * px  # jag slope stays below ~0.4, so the gap never breaks into dots
    knots = np.arange(-reach, reach + spacing, spacing)
    jag = rng.normal(0, lesion.jag_amp * px, knots.size).astype(np.float32)
    jag += np.float32(rng.normal(0, 0.06)) * knots.astype(np.float32)  # slight overall bend
    side = side - np.interp(along_line, knots, jag).astype(np.float32)
    half_gap = np.float32(max(lesion.gap * px, 1.3) / 2)
    fixed = np.where(side < -half_gap, patch, 0).astype(np.float32)
    moving = np.where(side > half_gap, patch, 0).astype(np.float32)
    gap = np.where(np.abs(side) <= half_gap, patch * np.float32(0.15), 0).astype(np.float32)
    if lesion.moving_side < 0:
        fixed, moving = moving, fixed
    shift_len = lesion.displacement * px
    direction = line + lesion.along_shift * across
    direction = direction / np.hypot(*direction)
    shift = direction * shift_len
    local_c = (float(centre[0] - xs[0, 0]), float(centre[1] - ys[0, 0]))
    warp = cv2.getRotationMatrix2D(local_c, lesion.tilt, 1.0)
    warp[:, 2] += shift
    moved = cv2.warpAffine(moving, warp, (patch.shape[1], patch.shape[0]),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    angle = math.degrees(math.atan2(-line[1], line[0])) % 180.0
    return fixed + moved + gap, angle, shift_len


_SUB = 4  # fixed-point bits for sub-pixel, anti-aliased OpenCV drawing


def _fixed(p: np.ndarray) -> tuple[int, int]:
    q = np.round(np.asarray(p) * (1 << _SUB)).astype(int)
    return int(q[0]), int(q[1])


def _screw(canvas: np.ndarray, head: np.ndarray, tip: np.ndarray, width: float,
           head_radius: float) -> None:
    """A threaded screw: a bright shaft with a tooth pattern and a round head."""
    thick = max(1, int(round(width)))
    cv2.line(canvas, _fixed(head), _fixed(tip), 110, thick, cv2.LINE_AA, _SUB)
    length = float(np.hypot(*(tip - head)))
    direction = (tip - head) / max(length, 1e-6)
    normal = np.array([-direction[1], direction[0]])
    pitch = max(2.0, 1.2 * width)
    for k in np.arange(head_radius + pitch, length - 0.5 * pitch, pitch):  # thread teeth
        at = head + direction * k
        cv2.line(canvas, _fixed(at - normal * (0.5 * width + 1)),
                 _fixed(at + normal * (0.5 * width + 1)), 70, 1, cv2.LINE_AA, _SUB)
    cv2.circle(canvas, _fixed(head), int(round(head_radius * (1 << _SUB))), 90, -1,
               cv2.LINE_AA, _SUB)


def _hardware(shape: tuple[int, int], centre: np.ndarray, axis_u: np.ndarray, length_px: float,
              radius_px: float, lesion: _Lesion) -> tuple[np.ndarray, float]:
    """Metal attenuation map of a plate with screws, a nail or loose screws.

    Returns the full-size float map and the device's long-axis angle (degrees).
    """
    plate = np.zeros(shape, dtype=np.uint8)
    screws = np.zeros(shape, dtype=np.uint8)
    normal = np.array([-axis_u[1], axis_u[0]])
    side = lesion.plate_side
    screw_w = max(1.0, 0.22 * radius_px)
    angle = math.degrees(math.atan2(-axis_u[1], axis_u[0])) % 180.0
    if lesion.device == "plate":
        c = centre + normal * side * 0.85 * radius_px  # lies on the cortex
        half_len = min(0.55 * length_px, max(5.0 * radius_px, 0.3 * length_px)) / 2
        half_wid = max(1.0, 0.2 * radius_px)
        corners = [c + axis_u * sx * half_len + normal * sy * half_wid
                   for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        cv2.fillPoly(plate, [np.array([_fixed(p) for p in corners], np.int32)], 140,
                     cv2.LINE_AA, _SUB)
        for k in range(lesion.screws):
            pos = -half_len * 0.85 + 1.7 * half_len * k / max(lesion.screws - 1, 1)
            head = c + axis_u * pos
            tip = centre + axis_u * pos - normal * side * 1.1 * radius_px
            _screw(screws, head, tip, screw_w, 0.9 * half_wid)
    elif lesion.device == "nail":
        half_len = 0.4 * length_px
        ends = [centre - axis_u * half_len, centre + axis_u * half_len]
        cv2.line(plate, _fixed(ends[0]), _fixed(ends[1]), 120,
                 max(1, int(round(0.5 * radius_px))), cv2.LINE_AA, _SUB)
        for end in ends:  # locking screws near both ends of the nail
            at = centre + (end - centre) * 0.85
            _screw(screws, at + normal * side * 1.3 * radius_px,
                   at - normal * side * 1.1 * radius_px, screw_w, 0.3 * radius_px)
    else:  # two or three lag screws across the bone, slightly oblique
        count = 2 + lesion.screws % 2
        for k in range(count):
            pos = (k - (count - 1) / 2) * 1.4 * radius_px
            tilt = axis_u * (0.35 * radius_px * (1 if k % 2 else -1))
            head = centre + axis_u * pos + normal * side * 1.2 * radius_px + tilt
            tip = centre + axis_u * pos - normal * side * 1.0 * radius_px - tilt
            _screw(screws, head, tip, screw_w, 0.3 * radius_px)
        angle = (angle + 90.0) % 180.0  # the screws' direction
    return (plate.astype(np.float32) + screws.astype(np.float32)) / 45.0, angle


def _place_view(rng: np.random.Generator, size_range: tuple[int, int], compress: float,
                mirror: bool) -> _View:
    lo, hi = size_range
    long_side = int(rng.integers(lo, hi + 1))
    aspect = 1.0 if rng.random() < 0.3 else rng.uniform(0.68, 0.95)
    short_side = max(lo, int(round(long_side * aspect)))
    portrait = rng.random() < 0.75
    height, width = (long_side, short_side) if portrait else (short_side, long_side)
    zoom = rng.uniform(0.9, 1.3)
    scale = long_side / 110.0 * zoom
    angle = rng.normal(0, 12) + (0 if portrait else 90) + (180 if rng.random() < 0.15 else 0)
    a = math.radians(angle)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    squash = np.diag([compress * (-1 if mirror else 1), 1.0])
    linear = scale * rotation @ squash
    centre = np.array([width / 2 + rng.normal(0, 0.06) * width,
                       height / 2 + rng.normal(0, 0.06) * height])
    matrix = np.hstack([linear, centre[:, None]])
    return _View(height, width, matrix, scale)


def _low_frequency(rng: np.random.Generator, shape: tuple[int, int], cells: int = 5) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _frame_lesion_site(anatomy: _Anatomy, lesion: _Lesion, vw: _View) -> tuple[int, _View]:
    """Pick the lesion's bone and shift the view so the lesion site is in the frame.

    Returns the bone index and the (possibly shifted) view.
    """
    candidates = [i for i, b in enumerate(anatomy.bones) if b.fracturable]
    if lesion.kind == "hardware":  # implants go on the larger bones
        widest = max(anatomy.bones[i].r0 + anatomy.bones[i].r1 for i in candidates)
        candidates = [i for i in candidates
                      if anatomy.bones[i].r0 + anatomy.bones[i].r1 >= 0.7 * widest]
    # A lesion is as likely anywhere on the drawn skeleton: a bone's chance is its area
    # (length x width), so a hand's tiny tufts do not take as many lesions as its radius.
    area = np.array([math.dist(anatomy.bones[i].p0, anatomy.bones[i].p1)
                     * (anatomy.bones[i].r0 + anatomy.bones[i].r1) for i in candidates])
    pick = int(np.searchsorted(np.cumsum(area) / area.sum(), lesion.bone_choice, side="right"))
    target = candidates[min(pick, len(candidates) - 1)]
    bone = anatomy.bones[target]
    point = np.array(bone.p0) + lesion.t * (np.array(bone.p1) - np.array(bone.p0))
    at = _to_px(vw, tuple(point))
    size = np.array([vw.width, vw.height])
    nudge = np.clip(at, 0.12 * size, 0.88 * size) - at
    if np.any(nudge != 0):
        matrix = vw.matrix.copy()
        matrix[:, 2] += nudge
        vw = replace(vw, matrix=matrix)
    return target, vw


def render_demo_image(part: str, *, seed: int = 0, study: int = 0, view: int = 0,
                      abnormal: bool = False, show_lesion: bool = True,
                      size_range: tuple[int, int] = (200, 512),
                      lesion_quantiles: Mapping[str, float] | None = None,
                      ) -> tuple[np.ndarray, dict | None]:
    """Draw one synthetic radiograph (also used by the demo page and tests).

    Args:
        part: one of :data:`BODY_PARTS`.
        seed, study, view: together seed the image's random generator; views
            of one study share the anatomy and the lesion.
        abnormal: the study has a lesion (fracture or hardware).
        show_lesion: draw it in this view (ignored when not ``abnormal``).
        size_range: smallest and largest image side in pixels.
        lesion_quantiles: quantiles in [0, 1) for some of :data:`LESION_QUANTILES`
            (how hard the lesion is to see), as the dataset plan hands them out;
            the others come from the study's seed.

    Returns:
        ``(image, location)``: uint8 ``(H, W)`` grayscale, and a dict with the
        keys of :data:`LOCATION_COLUMNS` (without ``path``) when a lesion is
        drawn, else None.

    Raises:
        DatasetError: an unknown body part, a bad size range or lesion quantile.
    """
    if part not in BODY_PARTS:
        raise DatasetError(f"unknown demo body part {part!r}; known: {', '.join(BODY_PARTS)}")
    lo, hi = size_range
    if not 64 <= lo <= hi <= 4096:
        raise DatasetError(f"size_range {size_range!r} must satisfy 64 <= low <= high <= 4096")
    study_key = (int(seed), 1, int(study))
    srng = np.random.default_rng(study_key)
    # Every study gets a lesion plan, drawn only when abnormal: the framing below keeps
    # the planned site in view for normal studies too, so framing cannot leak the label,
    # and a normal image is exactly its abnormal twin without the lesion.
    lesion = _draw_lesion(srng, lesion_quantiles)
    side_left = bool(srng.random() < 0.5)
    rng = np.random.default_rng((int(seed), 2, int(study), int(view)))

    lateral = rng.random() < 0.45
    compress = rng.uniform(0.4, 0.65) if lateral and part not in ("shoulder",) else \
        rng.uniform(0.8, 1.0)
    anatomy = _build_anatomy(part, study_key, rng, lateral)
    vw = _place_view(rng, (lo, hi), compress, mirror=side_left)
    shape = (vw.height, vw.width)
    px = max(vw.height, vw.width) / 300.0  # lesion sizes are given at a 300 px long side

    draw = abnormal and show_lesion
    # The lesion has its own generator and the framing does not depend on whether it
    # is drawn, so a view with and without its lesion differ only at the lesion.
    lesion_rng = np.random.default_rng((int(seed), 5, int(study), int(view)))
    target, vw = _frame_lesion_site(anatomy, lesion, vw)

    soft = np.zeros(shape, dtype=np.float32)
    for tissue in anatomy.soft:
        res = _tube(shape, _to_px(vw, tissue.p0), _to_px(vw, tissue.p1), tissue.r0 * vw.scale,
                    tissue.r1 * vw.scale, hollow=False)
        if res is not None:
            sl, _, _, mu = res
            np.maximum(soft[sl], mu, out=soft[sl])
    soft = cv2.GaussianBlur(soft, (0, 0), 1.5 * vw.scale)

    bones = np.zeros(shape, dtype=np.float32)
    metal = np.zeros(shape, dtype=np.float32)
    location = None
    for index, b in enumerate(anatomy.bones):
        p0, p1 = _to_px(vw, b.p0), _to_px(vw, b.p1)
        r0, r1 = b.r0 * vw.scale, b.r1 * vw.scale
        broken = draw and index == target and lesion.kind == "fracture"
        pad = (lesion.displacement + 3) * px if broken else 0.0
        res = _tube(shape, p0, p1, r0, r1, b.flare0, b.flare1, b.cortex, pad=pad)
        if res is None:
            continue
        sl, xs, ys, mu = res
        if draw and index == target:
            axis = p1 - p0
            axis_u = axis / max(np.hypot(*axis), 1e-6)
            centre = p0 + lesion.t * axis
            radius_px = r0 + lesion.t * (r1 - r0)
            if lesion.kind == "fracture":
                mu, angle, moved = _break_bone(mu, xs, ys, centre, axis_u, lesion, px,
                                               lesion_rng, radius_px)
            else:
                metal, angle = _hardware(shape, centre, axis_u, float(np.hypot(*axis)),
                                         radius_px, lesion)
                moved = 0.0
            location = {"bone": index, "x": round(float(centre[0]), 1),
                        "y": round(float(centre[1]), 1), "angle": round(angle, 1),
                        "displacement": round(moved, 2), "kind": lesion.kind,
                        "bone_name": b.name}
        bones[sl] += mu * np.float32(b.density)
    for blob in anatomy.blobs:
        res = _ellipsoid(shape, _to_px(vw, blob.c), blob.rx * vw.scale * max(compress, 0.75),
                         blob.ry * vw.scale, blob.angle)
        if res is not None:
            sl, mu = res
            bones[sl] += mu * np.float32(blob.density)

    image = _expose(soft, bones, metal, vw.scale, rng)
    _draw_marker(image, "L" if side_left else "R", rng)
    return image, location


def _expose(soft: np.ndarray, bones: np.ndarray, metal: np.ndarray, scale: float,
            rng: np.random.Generator) -> np.ndarray:
    """Turn path lengths into a uint8 radiograph with varied exposure, blur and noise.

    Brightness is ``1 - exp(-attenuation)`` between a dark background and a
    bright peak; a heel-effect ramp, a low-frequency field, focal-spot blur and
    Gaussian noise vary per image. Metal is whiter than any bone (it stops nearly
    every photon): it pulls the pixel towards 255 instead of adding to the bone's
    attenuation, where a plate on a thick humerus would vanish in the saturation.
    """
    shape = soft.shape
    texture = 1 + 0.3 * cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32),
                                         (0, 0), 1.2)  # trabecular mottle
    mu_soft = rng.uniform(0.010, 0.016)
    mu_bone = rng.uniform(0.16, 0.22)
    # Path lengths are in pixels: dividing by the scale makes contrast resolution-free.
    attenuation = (soft * mu_soft + bones * mu_bone * texture) / np.float32(scale)
    background = rng.uniform(8, 45)
    peak = rng.uniform(190, 250)
    image = background + (peak - background) * (1 - np.exp(-attenuation))
    image *= 1 + 0.06 * _low_frequency(rng, shape)
    image += rng.uniform(-12, 12) * np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :]
    image += (np.float32(255) - image) * (1 - np.exp(-metal))
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.0))
    image += rng.standard_normal(shape).astype(np.float32) * np.float32(rng.uniform(1.5, 5.0))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _draw_marker(image: np.ndarray, letter: str, rng: np.random.Generator) -> None:
    """Burn an L/R side marker into a random corner (in place, on our own array)."""
    h, w = image.shape
    font = cv2.FONT_HERSHEY_DUPLEX if rng.random() < 0.5 else cv2.FONT_HERSHEY_SIMPLEX
    scale = min(h, w) / 260.0 * rng.uniform(0.7, 1.1)
    thick = max(1, int(round(scale * 1.6)))
    (tw, th), _ = cv2.getTextSize(letter, font, scale, thick)
    pad = int(0.04 * min(h, w)) + 2
    corner = int(rng.integers(4))
    x = pad if corner in (0, 2) else w - pad - tw
    y = pad + th if corner in (0, 1) else h - pad
    colour = int(rng.integers(200, 256))
    if rng.random() < 0.4:
        cv2.rectangle(image, (x - 3, y - th - 3), (x + tw + 3, y + 4), colour, 1, cv2.LINE_AA)
    cv2.putText(image, letter, (x, y), font, scale, colour, thick, cv2.LINE_AA)


# --------------------------------------------------------------------------- dataset


_VIEW_SHARES = (0.15, 0.35, 0.35, 0.15)
"""Share of studies with 1, 2, 3 and 4 views."""
_PAIRED_SHARE = 0.35
"""Chance that a patient has a second study of the same body part."""


@dataclass(frozen=True)
class _Study:
    index: int
    split: str  # "train" or "valid"
    part: str
    patient: int
    number: int  # study1, study2 within the patient
    abnormal: bool
    views: int
    quantiles: dict[str, float] = field(default_factory=dict)  # the study's lesion plan
    shown: tuple[bool, ...] = ()  # which views show the lesion (abnormal studies)

    @property
    def folder(self) -> str:
        label = "positive" if self.abnormal else "negative"
        return (f"{self.split}/XR_{self.part.upper()}/patient{self.patient:05d}/"
                f"study{self.number}_{label}")


def _apportion(total: int, weights: Sequence[float], first: int = 0) -> list[int]:
    """``total`` split into whole counts proportional to ``weights``: the same counts for every seed.

    Largest remainder; ties go round from index ``first``, so successive calls can hand
    their odd units to different body parts (none is short of abnormal studies in every
    split, which would tie the label to the part's look).
    """
    w = np.asarray(weights, dtype=np.float64)
    exact = w / w.sum() * total if w.sum() > 0 else np.zeros_like(w)
    counts = np.floor(exact + 1e-9).astype(int)
    order = sorted(range(len(w)),
                   key=lambda i: (-round(exact[i] - counts[i], 9), (i - first) % len(w)))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def _spread(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` quantiles at the middles of ``n`` equal strata, in random order.

    A seed only shuffles who gets which: the set of values, and so how many
    lesions are faint or plain, is the same for every seed.
    """
    return (rng.permutation(n) + 0.5) / max(n, 1)


def _views_at(u: float) -> int:
    return 1 + int(np.searchsorted(np.cumsum(_VIEW_SHARES), u, side="right"))


def _lesion_plans(rng: np.random.Generator, members: list[dict]) -> None:
    """Give each study of one split and label its lesion quantiles (in place).

    Hardware goes to a fixed :data:`FRACTURE_SHARE` complement, picked systematically over the
    studies sorted by number of views and body part, so the hardware *images* are a fixed
    share too; fracture strength (gap, displacement, jag, angle, shift) is spread over the
    fractures, the device over the hardware, the site along the bone over all, and the bone
    over the studies of each body part. Normal studies get a plan too: it frames the image
    (the site stays in view) exactly as it would an abnormal one, and is never drawn.
    """
    if not members:
        return
    keys = rng.random(len(members))
    ranked = sorted(range(len(members)),
                    key=lambda i: (members[i]["views"], BODY_PARTS.index(members[i]["part"]), keys[i]))
    share = 1.0 - FRACTURE_SHARE
    hardware = [i for rank, i in enumerate(ranked)
                if math.floor(0.5 + (rank + 1) * share) > math.floor(0.5 + rank * share)]
    fractures = sorted(set(range(len(members))) - set(hardware))
    for member in members:
        member["quantiles"] = {}
    for u, i in zip(_spread(rng, len(fractures)), fractures):
        members[i]["quantiles"]["kind"] = FRACTURE_SHARE * u
    for u, i in zip(_spread(rng, len(hardware)), hardware):
        members[i]["quantiles"]["kind"] = FRACTURE_SHARE + share * u
    for u, i in zip(_spread(rng, len(hardware)), hardware):
        members[i]["quantiles"]["device"] = float(u)
    for name in ("gap", "displacement", "jag", "angle", "along_shift"):
        for u, i in zip(_spread(rng, len(fractures)), fractures):
            members[i]["quantiles"][name] = float(u)
    for u, member in zip(_spread(rng, len(members)), members):
        member["quantiles"]["t"] = float(u)
    for part in BODY_PARTS:
        same = [i for i, m in enumerate(members) if m["part"] == part]
        for u, i in zip(_spread(rng, len(same)), same):
            members[i]["quantiles"]["bone"] = float(u)


def _plan(seed: int, studies: int, valid_fraction: float,
          abnormal_fraction: float) -> list[_Study]:
    """Studies, patients and lesions with a difficulty that is the generator's, not the seed's.

    Every split gets a fixed number of studies per body part, of abnormal studies per
    part, of views per (part, label), of hardware, of lesion views left unshown, and the
    same spread of lesion strength (:func:`_lesion_plans`); the seed decides which
    patient, pose and exposure carries which. Patients hold 1-2 studies of one body part
    and never straddle splits.
    """
    rng = np.random.default_rng((int(seed), 0))
    n_valid = min(studies - 1, max(1, round(valid_fraction * studies)))
    drafts: list[dict] = []
    odd = 0  # where the next apportioning starts handing out odd units
    for split, n in (("train", studies - n_valid), ("valid", n_valid)):
        per_part = _apportion(n, [1.0] * len(BODY_PARTS), odd)
        odd += n % len(BODY_PARTS)
        n_abnormal = int(rng.random() < abnormal_fraction) if n == 1 else \
            min(n - 1, max(1, round(abnormal_fraction * n)))
        abnormal_per_part = _apportion(n_abnormal, per_part, odd)
        odd += n_abnormal - sum(math.floor(n_abnormal * c / n + 1e-9) for c in per_part)
        members = []
        for part, count, abnormal in zip(BODY_PARTS, per_part, abnormal_per_part):
            for label, m in ((True, abnormal), (False, count - abnormal)):
                for u in _spread(rng, m):
                    members.append({"split": split, "part": part, "abnormal": label,
                                    "views": _views_at(float(u))})
        for label in (True, False):
            _lesion_plans(rng, [m for m in members if m["abnormal"] == label])
        # A fixed share of the fracture views and of the hardware views beyond the one that
        # always shows the lesion stays unshown.
        extras: dict[bool, list] = {True: [], False: []}
        for m in members:
            m["shown"] = [True] * m["views"]
            if m["abnormal"]:
                first = int(rng.integers(m["views"]))
                extras[m["quantiles"]["kind"] < FRACTURE_SHARE] += [
                    (m, v) for v in range(m["views"]) if v != first]
        for group in extras.values():
            for k in rng.permutation(len(group))[:round((1 - SHOWN_FRACTION) * len(group))]:
                m, v = group[int(k)]
                m["shown"][v] = False
        drafts += members
    plan: list[_Study] = []
    patient_id = 0
    for split in _SPLIT_DIRS:  # patients numbered train first, then valid, as in MURA
        patients: list[list[dict]] = []
        for part in BODY_PARTS:
            group = [m for m in drafts if m["split"] == split and m["part"] == part]
            group = [group[int(k)] for k in rng.permutation(len(group))]
            while group:
                take = 2 if len(group) >= 2 and rng.random() < _PAIRED_SHARE else 1
                patients.append(group[:take])
                group = group[take:]
        for k in rng.permutation(len(patients)):
            patient_id += 1
            for number, m in enumerate(patients[int(k)], start=1):
                plan.append(_Study(len(plan), split, m["part"], patient_id, number, m["abnormal"],
                                   m["views"], m["quantiles"], tuple(m["shown"])))
    return plan


def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; refuse a non-empty folder that is not an earlier demo set."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            raise DatasetError(f"{out} is not empty and holds no {DEMO_MARKER}; refusing to write "
                               f"the demo set into it (choose an empty or new folder)")
        for name in _SPLIT_DIRS:  # an earlier demo set: replace it, leave nothing stale
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)


def make_demo_dataset(out_dir: str | Path, *, seed: int = 0, studies: int = DEFAULT_STUDIES,
                      size_range: tuple[int, int] = (200, 512), valid_fraction: float = 0.2,
                      abnormal_fraction: float = 0.4) -> Path:
    """Write the synthetic demo dataset in the MURA-v1.1 layout.

    About ``valid_fraction`` of the studies go to ``valid`` (whole patients),
    patients have 1-2 studies, studies 1-4 views, about ``abnormal_fraction``
    of studies are abnormal (75% fractures, 25% hardware). The same arguments
    always write the same bytes.

    Args:
        out_dir: folder to write into (the ``MURA-v1.1`` folder); created if
            missing; an earlier demo set there is replaced.
        seed: random seed.
        studies: number of studies (at least 2).
        size_range: smallest and largest image side in pixels.
        valid_fraction: share of studies in the validation split.
        abnormal_fraction: share of abnormal studies in each split.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DatasetError: ``out_dir`` is a non-empty folder that is not a demo set,
            or an argument is out of range.
    """
    if studies < 2:
        raise DatasetError(f"studies={studies}: the demo set needs at least 2 studies")
    if not 0 < valid_fraction < 1 or not 0 < abnormal_fraction < 1:
        raise DatasetError(f"valid_fraction={valid_fraction} and abnormal_fraction="
                           f"{abnormal_fraction} must both lie strictly between 0 and 1")
    lo, hi = size_range
    if not 64 <= lo <= hi <= 4096:
        raise DatasetError(f"size_range {size_range!r} must satisfy 64 <= low <= high <= 4096")
    out = Path(out_dir)
    _prepare_out_dir(out)
    plan = _plan(seed, studies, valid_fraction, abnormal_fraction)
    image_rows: dict[str, list[str]] = {s: [] for s in _SPLIT_DIRS}
    study_rows: dict[str, list[str]] = {s: [] for s in _SPLIT_DIRS}
    locations: list[dict] = []
    for study in plan:
        folder = out / study.folder
        folder.mkdir(parents=True, exist_ok=True)
        for view in range(study.views):
            image, location = render_demo_image(
                study.part, seed=seed, study=study.index, view=view, abnormal=study.abnormal,
                show_lesion=study.shown[view], size_range=size_range,
                lesion_quantiles=study.quantiles)
            rel = f"{study.folder}/image{view + 1}.png"
            rgb_rng = np.random.default_rng((int(seed), 4, study.index, view))
            pixels = np.dstack([image] * 3) if rgb_rng.random() < 0.25 else image
            if not cv2.imwrite(str(out / rel), pixels):
                raise DatasetError(f"could not write {out / rel}; is the disk full or read-only?")
            image_rows[study.split].append(f"{_MURA_PREFIX}/{rel}")
            if location is not None:
                locations.append({"path": rel, **location})
        study_rows[study.split].append(f"{_MURA_PREFIX}/{study.folder}/,{int(study.abnormal)}")
    for split in _SPLIT_DIRS:
        (out / f"{split}_image_paths.csv").write_text("".join(r + "\n" for r in image_rows[split]))
        (out / f"{split}_labeled_studies.csv").write_text(
            "".join(r + "\n" for r in study_rows[split]))
    with open(out / LOCATIONS_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOCATION_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(locations)
    n_images = sum(len(v) for v in image_rows.values())
    (out / DEMO_MARKER).write_text(
        "Fracture Lab synthetic demo dataset (MURA-v1.1 layout).\n"
        "Procedurally drawn radiograph-like images: synthetic, not patient data, not for\n"
        "clinical use. Lesion positions are in fracture_locations.csv.\n"
        f"generator: fracture.data.demo\n"
        f"generator_version: {GENERATOR_VERSION}\n"
        f"seed: {seed}\n"
        f"studies: {len(plan)}\n"
        f"images: {n_images}\n"
        f"size_range: {lo}-{hi}\n")
    log.info("wrote demo dataset: %d studies, %d images, %d lesion views into %s",
             len(plan), n_images, len(locations), out)
    return out


def read_demo_marker(root: str | Path) -> dict[str, str] | None:
    """The ``key: value`` lines of ``DEMO.txt`` in ``root``, or None if it is absent."""
    marker = Path(root) / DEMO_MARKER
    if not marker.is_file():
        return None
    fields: dict[str, str] = {}
    for line in marker.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            fields[key.strip()] = value.strip()
    return fields


def read_fracture_locations(root: str | Path):
    """The lesion sidecar as a DataFrame with an absolute ``path`` column.

    Args:
        root: the demo dataset folder (``out_dir`` of :func:`make_demo_dataset`).

    Returns:
        ``pandas.DataFrame`` with :data:`LOCATION_COLUMNS`.

    Raises:
        DatasetError: the sidecar is missing or lacks columns.
    """
    import pandas as pd

    root = Path(root)
    sidecar = root / LOCATIONS_FILE
    if not sidecar.is_file():
        raise DatasetError(f"{sidecar} not found; only demo sets written by "
                           f"make_demo_dataset have lesion locations")
    frame = pd.read_csv(sidecar)
    missing = [c for c in LOCATION_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{sidecar} lacks column(s) {', '.join(missing)}; regenerate it with "
                           f"python -m fracture demo-data")
    frame["path"] = [str((root / p).resolve()) for p in frame["path"]]
    return frame
