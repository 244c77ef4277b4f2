"""Images that are not musculoskeletal radiographs, to measure the out-of-distribution warning.

Made here or shipped by packages, never downloaded: scikit-image's sample
photos (its ``data`` folder is inside the wheel), text documents and
screen shots drawn with PIL, synthetic noise, and altered radiographs
(upside down, inverted, turned sideways). All are uint8 grayscale, the
longer side at most ``max_side`` pixels so tests stay light.
"""
from __future__ import annotations

import numpy as np

NATURAL_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "clock", "moon", "brick", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry",
)
WORDS = ("fracture", "the", "patient", "report", "of", "and", "clinical", "results", "method", "image",
         "with", "left", "right", "view", "normal", "findings", "date", "page")


def _gray(image: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        image = image.astype(np.float64)
        span = max(float(image.max() - image.min()), 1e-9)
        image = (255 * (image - image.min()) / span).astype(np.uint8)
    scale = max_side / max(image.shape)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def natural_photos(max_side: int = 256) -> dict[str, np.ndarray]:
    """scikit-image's bundled sample photos (people, animals, objects, textures, sky, microscopy)."""
    import skimage.data

    out = {}
    for name in NATURAL_PHOTOS:
        image = getattr(skimage.data, name)()
        out[name] = _gray(image, max_side)
    left, _, _ = skimage.data.stereo_motorcycle()
    out["motorcycle"] = _gray(left, max_side)
    return out


def documents(n: int = 6, max_side: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Rendered pages of text and screen shots of a made-up user interface."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        page = Image.new("L", (400, 520), 255)
        draw = ImageDraw.Draw(page)
        y = 20
        while y < 500:
            draw.text((20, y), " ".join(rng.choice(WORDS, int(rng.integers(4, 10)))), fill=0)
            y += int(rng.integers(14, 22))
        out[f"document_{i}"] = _gray(np.array(page), max_side)
        shot = Image.new("L", (480, 320), int(rng.integers(200, 256)))
        draw = ImageDraw.Draw(shot)
        draw.rectangle([0, 0, 480, 28], fill=int(rng.integers(40, 120)))
        draw.text((8, 8), "Fracture Lab - window", fill=255)
        for j in range(int(rng.integers(3, 7))):
            x0, y0 = int(rng.integers(0, 380)), int(rng.integers(30, 260))
            draw.rectangle([x0, y0, x0 + int(rng.integers(60, 200)), y0 + int(rng.integers(20, 80))],
                           outline=0, fill=int(rng.integers(150, 255)))
            draw.text((x0 + 5, y0 + 5), f"Button {j}", fill=0)
        out[f"screenshot_{i}"] = _gray(np.array(shot), max_side)
    return out


def noise(n: int = 4, size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Uniform, Gaussian and blurred noise, a flat grey, a gradient."""
    import cv2

    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        out[f"uniform_{i}"] = (rng.random((size, size)) * 255).astype(np.uint8)
        out[f"gaussian_{i}"] = np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8)
        out[f"blurred_{i}"] = cv2.GaussianBlur((rng.random((size, size)) * 255).astype(np.uint8), (0, 0), 3)
    out["flat_grey"] = np.full((size, size), 128, np.uint8)
    out["gradient"] = np.tile(np.linspace(0, 255, size).astype(np.uint8), (size, 1))
    return out


def altered_radiographs(images: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Each radiograph upside down, inverted (negative), turned a quarter, and mirrored left-right.

    Mirrored images are in distribution (training flips them), so a good
    detector does not flag them; they are measured to show that.
    """
    return {
        "upside down": {name: np.ascontiguousarray(img[::-1]) for name, img in images.items()},
        "inverted": {name: 255 - img for name, img in images.items()},
        "turned 90°": {name: np.ascontiguousarray(np.rot90(img)) for name, img in images.items()},
        "mirrored (in distribution)": {name: np.ascontiguousarray(img[:, ::-1]) for name, img in images.items()},
    }


def probe_sets(radiographs: dict[str, np.ndarray] | None = None, *, max_side: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """Every probe group by name: natural photos, documents and screen shots, noise, altered radiographs."""
    groups = {
        "natural photos": natural_photos(max_side),
        "documents and screen shots": documents(max_side=max_side),
        "synthetic noise": noise(),
    }
    if radiographs:
        groups.update(altered_radiographs(radiographs))
    return groups
