"""Build the shipped gallery from FracAtlas's test split, reproducibly.

    python -m fracture.gallery.build [--data ../shared/data/fracatlas] [--out fracture/gallery]

Picks at most 40 images from the project's own **test** split (``split_seed``
0, the split the shipped model was trained with, so the model never saw
them): half fractured, half not, spread as evenly over the body regions as the
split allows, one image per duplicate group, seeded. Each is downscaled to a
longest side of 384 px and re-encoded as 8-bit grayscale JPEG (quality 85),
and its boxes (``annotations/YOLO``, normalised) go into ``gallery.json``
beside the attribution README. The same data and options give the same bytes.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from fracture.util.files import atomic_write_bytes, atomic_write_text
from fracture.util.jsonio import atomic_write_json
from fracture.data import load_image, open_dataset
from fracture.data.gallery import FORMAT_VERSION, GALLERY_DIR, INDEX_NAME, load_gallery
from fracture.errors import DatasetError

logger = logging.getLogger(__name__)

MAX_ITEMS = 40
MAX_TOTAL_BYTES = 3 * 1024 * 1024
DEFAULT_DATA = "../shared/data/fracatlas"
DEFAULT_MAX_SIDE = 384
DEFAULT_QUALITY = 85
SPLIT = "test"
SPLIT_SEED = 0
"""The split seed the shipped model was trained with (its train_config's split_seed)."""


def allocate(total: int, available: dict[str, int]) -> dict[str, int]:
    """Share ``total`` over strata as evenly as their sizes allow (water filling).

    A stratum with fewer images than its fair share gives all it has and the
    rest is shared among the others; ties go to the alphabetically first.
    """
    quota = {name: 0 for name in available}
    left = min(total, sum(available.values()))
    open_ = sorted(name for name, n in available.items() if n > 0)
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for rank, name in enumerate(open_):
            take = min(share + (1 if rank < extra else 0), available[name] - quota[name])
            quota[name] += take
            left -= take
        open_ = [name for name in open_ if quota[name] < available[name]]
    return quota


def select_items(frame: pd.DataFrame, *, n: int = MAX_ITEMS, seed: int = 0) -> pd.DataFrame:
    """The gallery's rows: test split, label-balanced, spread over body parts, seeded.

    Rows whose label and boxes disagree (a fractured image without a box, or
    a box on a non-fractured one) are left out, and so is every image but the
    first of a duplicate group.
    """
    rows = frame[frame["split"] == SPLIT].copy()
    has_boxes = rows["boxes"].map(len) > 0
    rows = rows[(rows["label"] == 1) == has_boxes]
    rows = rows.sort_values("path", kind="stable").drop_duplicates("patient_id", keep="first")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in (1, 0):
        by_part = {part: group for part, group in rows[rows["label"] == label].groupby("body_part", sort=True)}
        quota = allocate(n // 2 if label == 1 else n - n // 2, {p: len(g) for p, g in by_part.items()})
        for part, group in by_part.items():
            if quota[part]:
                picks = np.sort(rng.choice(len(group), size=quota[part], replace=False))
                chosen.append(group.iloc[picks])
    if not chosen:
        raise DatasetError(f"no {SPLIT}-split images to choose from")
    return pd.concat(chosen).sort_values(["label", "body_part", "path"], ascending=[False, True, True])


def encode_jpeg(image: np.ndarray, *, max_side: int, quality: int) -> bytes:
    """Downscale (never up) to ``max_side`` with area averaging; 8-bit grayscale JPEG."""
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def build_gallery(data: str | os.PathLike[str], out: str | os.PathLike[str], *, n: int = MAX_ITEMS,
                  max_side: int = DEFAULT_MAX_SIDE, quality: int = DEFAULT_QUALITY, seed: int = 0) -> Path:
    """Write ``out/images/*.jpg``, ``out/gallery.json`` and ``out/README.md``.

    Raises:
        DatasetError: ``data`` is not FracAtlas, or the result would exceed
            :data:`MAX_ITEMS` images or :data:`MAX_TOTAL_BYTES`.
    """
    if n > MAX_ITEMS:
        raise DatasetError(f"--n {n}: the gallery holds at most {MAX_ITEMS} images")
    manifest = open_dataset(data, seed=SPLIT_SEED)
    if manifest.layout != "fracatlas":
        raise DatasetError(f"{data}: the gallery is built from FracAtlas, this is {manifest.layout}")
    rows = select_items(manifest.frame, n=n, seed=seed)
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    names = {Path(p).name for p in rows["path"]}
    for stale in images_dir.glob("*.jpg"):
        if stale.name not in names:
            stale.unlink()
    items, total = [], 0
    for row in rows.itertuples(index=False):
        name = Path(row.path).name
        jpeg = encode_jpeg(load_image(row.path), max_side=max_side, quality=quality)
        atomic_write_bytes(images_dir / name, jpeg)
        total += len(jpeg)
        items.append({"file": f"images/{name}", "source_id": name, "label": int(row.label),
                      "body_part": str(row.body_part), "boxes": [list(box) for box in row.boxes]})
    if total > MAX_TOTAL_BYTES:
        raise DatasetError(f"gallery images take {total:,} bytes, over the {MAX_TOTAL_BYTES:,} limit; "
                           "lower --max-side or --quality")
    atomic_write_json(out / INDEX_NAME, {
        "format": FORMAT_VERSION, "dataset": "fracatlas", "split": SPLIT, "split_seed": SPLIT_SEED,
        "selection_seed": seed, "max_side": max_side, "jpeg_quality": quality,
        "built_by": "python -m fracture.gallery.build", "items": items,
    })
    atomic_write_text(out / "README.md", readme_text(items, total, max_side=max_side, quality=quality))
    load_gallery(out)  # what we wrote must read back
    logger.info("gallery: %d images, %.2f MB in %s", len(items), total / 1e6, out)
    return out


def readme_text(items: list[dict], total_bytes: int, *, max_side: int, quality: int) -> str:
    """The attribution README (CC BY 4.0 asks for the source, the licence and the changes)."""
    counts = pd.DataFrame(items).groupby(["body_part", "label"]).size().unstack(fill_value=0)
    table = ["| body part | fractured | not fractured |", "| --- | --- | --- |"]
    for part, row in counts.iterrows():
        table.append(f"| {part} | {row.get(1, 0)} | {row.get(0, 0)} |")
    files = ", ".join(f"`{item['source_id']}`" for item in items)
    return f"""# Gallery: real radiographs from FracAtlas

These {len(items)} images ({total_bytes / 1e6:.2f} MB) let a fresh installation of Fracture Lab show
real X-rays on the Home, Predict and Preprocessing Lab pages. They are **not** for training
or for judging a model: a model should be measured on a whole test split.

**Source:** FracAtlas — Abedeen, I., Rahman, M. A., Prottyasha, F. Z., Ahmed, T.,
Chowdhury, T. M. & Shatabda, S. "FracAtlas: A Dataset for Fracture Classification,
Localization and Segmentation of Musculoskeletal Radiographs." *Scientific Data* 10, 521
(2023). https://doi.org/10.1038/s41597-023-02432-4 — data record:
https://doi.org/10.6084/m9.figshare.22363012

**Licence:** Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/ . The images here are modified (below); the
original authors do not endorse this project.

## Changes made

- **Selection:** {len(items)} images from the test split that Fracture Lab's FracAtlas reader
  makes with split seed {SPLIT_SEED} (the split the shipped model was trained with, so it never
  saw these), half fractured and half not, spread over the body regions as evenly as the split
  allows, one image per group of duplicate pictures, chosen with a fixed seed.
- **Downscaling:** longest side at most {max_side} px (area averaging), aspect ratio kept.
- **Re-encoding:** 8-bit grayscale JPEG, quality {quality}. The copy they were taken from was
  itself downscaled to 512 px and converted to grayscale (its ATTRIBUTION.md says how).
- **Boxes:** `gallery.json` holds each fractured image's boxes from the release's
  `annotations/YOLO` files, as `[x_min, y_min, x_max, y_max]` normalised to the image, so they
  hold at any size. File names are the originals.

{chr(10).join(table)}

Files: {files}.

Rebuild (same data, same bytes): `python -m fracture.gallery.build --data ../shared/data/fracatlas`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fracture.gallery.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="the FracAtlas folder (default: %(default)s)")
    parser.add_argument("--out", default=str(GALLERY_DIR), help="gallery folder (default: the shipped one)")
    parser.add_argument("--n", type=int, default=MAX_ITEMS, help="images (at most %(default)s)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE)
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    parser.add_argument("--seed", type=int, default=0, help="selection seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        build_gallery(args.data, args.out, n=args.n, max_side=args.max_side, quality=args.quality, seed=args.seed)
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
