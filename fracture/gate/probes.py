"""Images that are not musculoskeletal radiographs: to fit the radiograph gate and to measure it.

Made here or shipped by packages, never downloaded: scikit-image's sample
photos (its ``data`` folder is inside the wheel), text documents and
screen shots drawn with PIL, synthetic noise, CT/MR-like cross-sections
(a round body outline with organ-like blobs, bone rings, ring or noise
texture), and altered radiographs (upside down, inverted, turned sideways).
All are uint8 grayscale, the longer side at most ``max_side`` pixels so
tests stay light.

Two disjoint halves: :func:`fit_probe_sets` (the photos in
:data:`FIT_PHOTOS`, generator seeds from :data:`FIT_SEED`) is what the gate
of :mod:`fracture.gate.radiograph` is fitted on; :func:`probe_sets` (the
photos in :data:`HELD_OUT_PHOTOS`, other seeds) is what it and the OOD
score are measured on, so the reported rates are on images the fit never saw.
"""
from __future__ import annotations

import numpy as np

FIT_PHOTOS = (
    "camera", "coffee", "coins", "clock", "moon", "brick", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "horse", "text", "cell", "checkerboard", "retina", "microaneurysms", "binary_blobs",
)
"""scikit-image samples the radiograph gate is fitted on (each in several random crops)."""
HELD_OUT_PHOTOS = ("astronaut", "chelsea", "rocket", "motorcycle", "page", "colorwheel", "logo")
"""scikit-image samples kept out of every fit: the gate and the OOD score are measured on them."""
NATURAL_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "clock", "moon", "brick", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "motorcycle",
)
"""The OOD tests' photo set (the OOD score is never fitted on photos, so it may overlap :data:`FIT_PHOTOS`)."""
FIT_SEED = 0
HELD_OUT_SEED = 1000
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


def natural_photos(max_side: int = 256, names: tuple[str, ...] = NATURAL_PHOTOS) -> dict[str, np.ndarray]:
    """scikit-image's bundled sample photos (people, animals, objects, textures, sky, microscopy, a page)."""
    import skimage.data

    out = {}
    for name in names:
        if name == "motorcycle":
            image, _, _ = skimage.data.stereo_motorcycle()
        else:
            image = getattr(skimage.data, name)()
        if image.ndim == 3 and image.shape[-1] == 4:  # RGBA logo: onto white, as a screen shows it
            alpha = image[..., 3:4].astype(np.float64) / 255
            image = (image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
        out[name] = _gray(image, max_side)
    return out


def photo_colourfulness(names: tuple[str, ...] = HELD_OUT_PHOTOS) -> dict[str, float]:
    """Each sample photo's colourfulness as its file has it (before the gray conversion the probes get)."""
    import skimage.data

    from fracture.data.imageio import colourfulness

    out = {}
    for name in names:
        image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        out[name] = colourfulness(image) if image.ndim == 3 else 0.0
    return out


def photo_crops(names: tuple[str, ...] = FIT_PHOTOS, per_photo: int = 4, max_side: int = 256,
                seed: int = FIT_SEED) -> dict[str, np.ndarray]:
    """Each photo whole and in ``per_photo - 1`` random crops (40-90% of each side), some mirrored or gamma-changed."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, image in natural_photos(max_side * 2, names).items():
        out[name] = _gray(image, max_side)
        h, w = image.shape
        for k in range(per_photo - 1):
            ch, cw = int(h * rng.uniform(0.4, 0.9)), int(w * rng.uniform(0.4, 0.9))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = image[y: y + ch, x: x + cw].astype(np.float64)
            crop = 255 * (crop / 255) ** rng.uniform(0.6, 1.6)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[f"{name}_crop{k}"] = _gray(np.clip(crop, 0, 255).astype(np.uint8), max_side)
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
        if i % 2:  # an app screen shot with a picture in it (an X-ray-like blob on a dark panel)
            panel = np.zeros((int(rng.integers(120, 200)), int(rng.integers(120, 220))), np.uint8)
            yy, xx = np.mgrid[: panel.shape[0], : panel.shape[1]]
            cy, cx = panel.shape[0] / 2, panel.shape[1] / 2
            blob = np.exp(-(((yy - cy) / (0.35 * panel.shape[0])) ** 2 + ((xx - cx) / (0.12 * panel.shape[1])) ** 2))
            panel = (200 * blob).astype(np.uint8)
            shot.paste(Image.fromarray(panel), (int(rng.integers(0, 480 - panel.shape[1])), 40))
            draw = ImageDraw.Draw(shot)
            draw.text((10, 300), f"P(fractured) 0.{int(rng.integers(10, 99))}", fill=0)
        out[f"screenshot_{i}"] = _gray(np.array(shot), max_side)
    return out


def cross_sections(n: int = 8, size: int = 192, seed: int = FIT_SEED) -> dict[str, np.ndarray]:
    """CT- and MR-like axial slices: a round body outline, organ-like blobs, bone rings, and their texture.

    Even ``i`` look like CT (bright bone, grey soft tissue, a table line, ring
    artefacts); odd ``i`` like MR (dark cortical bone, bright fat, a smooth
    intensity bias and Rician-like background noise).
    """
    import cv2

    rng = np.random.default_rng(seed)
    out = {}
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    for i in range(n):
        ct = i % 2 == 0
        img = np.zeros((size, size), np.float64)
        cy, cx = size * rng.uniform(0.45, 0.55), size * rng.uniform(0.45, 0.55)
        ry, rx = size * rng.uniform(0.28, 0.4), size * rng.uniform(0.35, 0.46)
        body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        fat = ((yy - cy) / (ry * 0.9)) ** 2 + ((xx - cx) / (rx * 0.9)) ** 2 <= 1
        img[body] = 110 if ct else 210  # skin and subcutaneous fat
        img[fat] = 125 if ct else 120
        for _ in range(int(rng.integers(3, 7))):  # organs
            oy, ox = cy + ry * rng.uniform(-0.5, 0.5), cx + rx * rng.uniform(-0.5, 0.5)
            a, b = ry * rng.uniform(0.1, 0.35), rx * rng.uniform(0.1, 0.35)
            organ = ((yy - oy) / a) ** 2 + ((xx - ox) / b) ** 2 <= 1
            img[organ & fat] = rng.uniform(60, 160) if ct else rng.uniform(40, 240)
        for _ in range(int(rng.integers(1, 4))):  # bones: a ring of cortex around marrow
            by, bx = cy + ry * rng.uniform(-0.4, 0.6), cx + rx * rng.uniform(-0.6, 0.6)
            r = size * rng.uniform(0.03, 0.07)
            d = np.hypot(yy - by, xx - bx)
            img[(d <= r) & fat] = 170 if ct else 150
            img[(d > 0.7 * r) & (d <= r) & fat] = 250 if ct else 15
        if ct:
            img[int(cy + ry + size * 0.05): int(cy + ry + size * 0.07)] = 90  # the table
            img += 6 * np.sin(np.hypot(yy - size / 2, xx - size / 2) * rng.uniform(0.8, 1.6))  # ring artefacts
            img += rng.normal(0, rng.uniform(4, 12), img.shape)
        else:
            bias = 0.7 + 0.5 * (xx / size) * rng.uniform(0.3, 1) + 0.2 * (yy / size)
            img = img * bias
            img = np.hypot(img + rng.normal(0, 8, img.shape), rng.normal(0, 8, img.shape))  # Rician-like
        img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), rng.uniform(0.6, 1.5))
        out[f"{'ct' if ct else 'mr'}_slice_{i}"] = img
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
    out["flat_grey"] = np.full((size, size), 128 if seed == 0 else int(rng.integers(20, 236)), np.uint8)
    angle = 0.0 if seed == 0 else float(rng.uniform(0, 2 * np.pi))  # seed 0: the left-to-right ramp
    yy, xx = np.mgrid[:size, :size] / max(1, size - 1)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    out["gradient"] = (255 * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9) + 0.5).astype(np.uint8)
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


NOT_RADIOGRAPH_GROUPS = ("natural photos", "documents and screen shots", "synthetic noise", "CT/MR-like slices")
"""Probe groups that are not radiographs at all: the gate should refuse every one of them."""


def probe_sets(radiographs: dict[str, np.ndarray] | None = None, *, max_side: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """The held-out probe groups by name (never fitted on): photos, documents and screen shots, noise,
    CT/MR-like slices (scikit-image's Shepp-Logan phantom among them), and altered radiographs."""
    import skimage.data

    slices = cross_sections(seed=HELD_OUT_SEED)
    slices["shepp_logan_phantom"] = _gray(skimage.data.shepp_logan_phantom(), max_side)
    groups = {
        "natural photos": natural_photos(max_side, HELD_OUT_PHOTOS),
        "documents and screen shots": documents(max_side=max_side, seed=HELD_OUT_SEED),
        "synthetic noise": noise(seed=HELD_OUT_SEED),
        "CT/MR-like slices": slices,
    }
    if radiographs:
        groups.update(altered_radiographs(radiographs))
    return groups


def fit_probe_sets(*, max_side: int = 256, scale: int = 1) -> dict[str, np.ndarray]:
    """The non-radiographs the gate is fitted on, one flat dict (disjoint from :func:`probe_sets`).

    ``scale`` multiplies how many of each are made (documents, noise and slices
    by seed, photos by crops); ``1`` gives about 180 images.
    """
    images: dict[str, np.ndarray] = {}
    images.update(photo_crops(per_photo=4 * scale, max_side=max_side, seed=FIT_SEED))
    images.update(documents(n=12 * scale, max_side=max_side, seed=FIT_SEED))
    images.update(noise(n=6 * scale, seed=FIT_SEED))
    images.update(cross_sections(n=36 * scale, seed=FIT_SEED))
    return images
