"""Data-layer benchmark: dataset scan (cold and cached) and image loading throughput.

Two questions, each answered by medians of repeated runs against a baseline
measured in the same run (:mod:`fracture.bench.timing`):

* **Scan.** How long ``python -m fracture scan`` takes (manifest, every
  header, grey levels of a 500-image sample; printing excluded) on a
  generated 10,000-image class-folder tree of tiny PNGs, with an empty header
  cache (``cold``: a fresh cache file per run; the files themselves are in
  the OS page cache after the first run, so this measures our work, not the
  disk) and with a warm one (``cached``). The ratio is the cache's speed-up.
* **Loading.** Images per second on one core of :func:`fracture.data.load_image`
  alone and followed by a letterbox resize to 224 px (the training
  pipeline's last step), against a bare Pillow decode
  (``np.asarray(Image.open(p).convert("L"))``) of the same real-size files:
  FracAtlas from ``../shared/data/fracatlas`` when present, else the
  generated demo set. Single-threaded (OpenCV limited to one thread), so
  images/s is per core.

``python -m fracture.bench.data_bench [--quick] [--repeats N] [--json OUT]``;
``--quick`` scans 500 files and loads 100.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fracture.bench.timing import interleaved, median, ratio, summarize

logger = logging.getLogger(__name__)

SCAN_IMAGES = 10_000
LOAD_IMAGES = 300
QUICK_SCAN_IMAGES = 500
QUICK_LOAD_IMAGES = 100
RESIZE_SPEC = [{"op": "resize", "size": 224, "mode": "letterbox"}]
_SPLIT_SHARES = (("train", 0.7), ("val", 0.15), ("test", 0.15))
_CLASS_FOLDERS = ("not fractured", "fractured")


def run(quick: bool = False, repeats: int = 3) -> dict:
    """Run both benchmarks, print a table and return the figures.

    Args:
        quick: 500 scanned files and 100 loaded images instead of 10,000 and 300.
        repeats: timed runs of each contender (medians are reported); one
            untimed warm-up run of each comes first.

    Returns:
        ``{"machine", "scan": {...}, "load": {...}}``; each timed contender
        is :func:`fracture.bench.timing.summarize` output, with the ratios
        beside them.
    """
    n_scan = QUICK_SCAN_IMAGES if quick else SCAN_IMAGES
    n_load = QUICK_LOAD_IMAGES if quick else LOAD_IMAGES
    result = {"machine": _machine(), "quick": quick, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="fracture-data-bench-") as tmp:
        work = Path(tmp)
        result["scan"] = bench_scan(work / "scan", n_scan, repeats=repeats)
        result["load"] = bench_load(work / "load", n_load, repeats=repeats)
    print_table(result)
    return result


# ---------------------------------------------------------------------- scan


def make_scan_tree(root: Path, n_images: int, *, seed: int = 0) -> Path:
    """Write ``n_images`` tiny PNGs as ``root/<split>/<class>/NNNNN.png``.

    A few dozen variants (32-64 px, 8-bit gray, some RGB, some 16-bit) are
    encoded once with OpenCV and their bytes written, so 10,000 files take
    about a second to write.
    """
    import cv2

    rng = np.random.default_rng(seed)
    variants = []
    for i in range(48):
        height, width = (int(v) for v in rng.integers(32, 65, size=2))
        pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
        if i % 8 == 7:
            pixels = np.dstack([pixels, pixels // 2, pixels])  # RGB
        elif i % 8 == 6:
            pixels = pixels.astype(np.uint16) * 257  # 16-bit
        ok, encoded = cv2.imencode(".png", pixels)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} PNG")
        variants.append(encoded.tobytes())
    folders = []
    for split, share in _SPLIT_SHARES:
        for label_folder in _CLASS_FOLDERS:
            folder = root / split / label_folder
            folder.mkdir(parents=True, exist_ok=True)
            folders.append((folder, share / len(_CLASS_FOLDERS)))
    counts = [int(round(n_images * share)) for _, share in folders]
    counts[0] += n_images - sum(counts)
    index = 0
    for (folder, _), count in zip(folders, counts):
        for _ in range(count):
            (folder / f"{index:05d}.png").write_bytes(variants[index % len(variants)])
            index += 1
    return root


def bench_scan(work: Path, n_images: int, *, repeats: int = 3) -> dict:
    """Time a full scan of a generated tree with an empty and a warm header cache.

    Also times the header reads alone (no cache) on one thread, on the
    default threads and in worker processes (one per CPU, at least 2;
    start-up included), to show what parallel reading buys on this machine.

    Returns:
        ``{"images", "generate_s", "cold", "cached", "cached_speedup",
        "header_stage_cold_s", "header_stage_cached_s", "intensity_sample",
        "header_reads_uncached"}``.
    """
    from fracture.data import dataset_stats, open_dataset
    from fracture.util.workers import usable_cpus
    from fracture.data.header_cache import HeaderCache, default_workers, scan_headers

    started = time.perf_counter()
    root = make_scan_tree(work / "tree", n_images)
    generate_s = time.perf_counter() - started
    cache_root = work / "caches"
    fresh = itertools.count()
    stages: dict[str, list[dict]] = {"cold": [], "cached": []}

    def scan(kind: str, db: Callable[[], Path]) -> Callable[[], None]:
        def call() -> None:
            manifest = open_dataset(root)
            with HeaderCache(db()) as cache:
                stats = dataset_stats(manifest, cache=cache)
            stages[kind].append(stats.scan)
        return call

    samples = interleaved(
        {
            "cold": scan("cold", lambda: cache_root / f"cold-{next(fresh)}.sqlite"),
            "cached": scan("cached", lambda: cache_root / "warm.sqlite"),
        },
        repeats=repeats,
    )
    timed_cold, timed_cached = stages["cold"][1:], stages["cached"][1:]  # the warm-up call is first
    if any(s["headers_read_now"] != n_images for s in timed_cold) or any(
        s["headers_read_now"] != 0 for s in timed_cached
    ):
        raise RuntimeError(f"the cache did not behave: cold {timed_cold}, cached {timed_cached}")
    shutil.rmtree(cache_root, ignore_errors=True)
    cold, cached = summarize(samples["cold"], items=n_images), summarize(samples["cached"], items=n_images)
    paths = sorted(open_dataset(root).frame["path"].astype(str))
    n_processes = max(2, usable_cpus())
    header_reads = interleaved(
        {
            "one_thread": lambda: scan_headers(paths, workers=1),
            "threads": lambda: scan_headers(paths),
            "processes": lambda: scan_headers(paths, processes=n_processes),
        },
        repeats=repeats,
    )
    readers = {name: summarize(values, items=n_images) for name, values in header_reads.items()}
    return {
        "images": n_images,
        "tree": "class folders, PNG 32-64 px (8-bit L, RGB, 16-bit)",
        "generate_s": round(generate_s, 3),
        "intensity_sample": timed_cold[0]["intensities_decoded_now"] if timed_cold else 0,
        "cold": cold,
        "cached": cached,
        "cached_speedup": ratio(cold["median_s"], cached["median_s"]),
        "header_stage_cold_s": median([s["header_seconds"] for s in timed_cold]),
        "header_stage_cached_s": median([s["header_seconds"] for s in timed_cached]),
        "header_reads_uncached": {
            **readers,
            "threads_used": default_workers(),
            "processes_used": n_processes,
            "threads_speedup": ratio(readers["one_thread"]["median_s"], readers["threads"]["median_s"]),
            "processes_speedup": ratio(readers["one_thread"]["median_s"], readers["processes"]["median_s"]),
        },
    }


# ---------------------------------------------------------------------- load


def pick_load_images(work: Path, n_images: int, *, seed: int = 0) -> tuple[str, list[str]]:
    """(source name, ``n_images`` real-size image paths): FracAtlas when present, else the demo set."""
    from fracture.data import open_dataset
    from fracture.settings import REPO_ROOT

    fracatlas = REPO_ROOT.parent / "shared" / "data" / "fracatlas"
    if (fracatlas / "dataset.csv").is_file():
        source, root = "fracatlas", fracatlas
    else:
        from fracture.data.demo import make_demo_dataset

        source = "demo"
        root = make_demo_dataset(work / "demo", seed=seed, studies=max(8, n_images // 2))
    paths = sorted(open_dataset(root, seed=seed).frame["path"].astype(str))
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(paths), size=min(n_images, len(paths)), replace=False))
    return source, [paths[i] for i in picked]


def bench_load(work: Path, n_images: int, *, repeats: int = 3) -> dict:
    """Images/s on one core: bare PIL decode vs ``load_image`` vs ``load_image`` + resize 224.

    Returns:
        ``{"source", "images", "mean_megapixels", "pil_decode", "load_image",
        "load_image_resize224", "load_vs_pil", "load_resize_vs_pil"}``; the
        ratios are throughput ratios (1.0 = as fast as the bare decode).
    """
    import cv2
    from PIL import Image

    from fracture.data import load_image
    from fracture.preprocess.pipeline import Pipeline

    source, paths = pick_load_images(work, n_images)
    pipeline = Pipeline.from_spec(RESIZE_SPEC)

    def pil_decode() -> None:
        for path in paths:
            with Image.open(path) as img:
                np.asarray(img.convert("L"))

    def loader() -> None:
        for path in paths:
            load_image(path)

    def loader_resize() -> None:
        for path in paths:
            pipeline(load_image(path))

    sizes = [Image.open(p).size for p in paths]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        samples = interleaved(
            {"pil_decode": pil_decode, "load_image": loader, "load_image_resize224": loader_resize},
            repeats=repeats,
        )
    finally:
        cv2.setNumThreads(threads)
    figures = {name: summarize(values, items=len(paths)) for name, values in samples.items()}
    base = figures["pil_decode"]["items_per_s"]
    return {
        "source": source,
        "images": len(paths),
        "mean_megapixels": round(float(np.mean([w * h for w, h in sizes])) / 1e6, 4),
        **figures,
        "load_vs_pil": ratio(figures["load_image"]["items_per_s"], base),
        "load_resize_vs_pil": ratio(figures["load_image_resize224"]["items_per_s"], base),
    }


# --------------------------------------------------------------------- report


def print_table(result: dict) -> None:
    """The benchmark's figures as a plain-text table (medians over the repeats)."""
    scan, load = result["scan"], result["load"]
    machine = result["machine"]
    print(f"data benchmark: {result['repeats']} repeats (medians), {machine['cpus']} CPUs, "
          f"load average {machine['load_average_1m']}, Python {machine['python']}")
    print(f"\nscan of a generated {scan['images']:,}-image tree ({scan['tree']}; "
          f"open_dataset + headers + grey levels of {scan['intensity_sample']} images)")
    print(f"  {'':24}{'median s':>10}{'min s':>9}{'max s':>9}{'images/s':>12}")
    for name in ("cold", "cached"):
        row = scan[name]
        print(f"  {name + ' header cache':24}{row['median_s']:>10.3f}{row['min_s']:>9.3f}"
              f"{row['max_s']:>9.3f}{row['items_per_s']:>12,.0f}")
    print(f"  cached speed-up: {scan['cached_speedup']:.1f}x   header stage: "
          f"{scan['header_stage_cold_s']:.3f} s cold, {scan['header_stage_cached_s']:.3f} s cached")
    reads = scan["header_reads_uncached"]
    print(f"  header reads alone, no cache: one thread {reads['one_thread']['median_s']:.3f} s, "
          f"{reads['threads_used']} threads {reads['threads']['median_s']:.3f} s "
          f"({reads['threads_speedup']:.2f}x), {reads['processes_used']} processes "
          f"{reads['processes']['median_s']:.3f} s ({reads['processes_speedup']:.2f}x)")
    print(f"\nloading {load['images']} {load['source']} images "
          f"(mean {load['mean_megapixels']:.3f} MP), one core")
    print(f"  {'':28}{'median s':>10}{'images/s':>11}{'vs PIL':>9}")
    for name, label in (("pil_decode", "bare PIL decode"), ("load_image", "load_image"),
                        ("load_image_resize224", "load_image + resize 224")):
        row = load[name]
        print(f"  {label:28}{row['median_s']:>10.3f}{row['items_per_s']:>11.1f}"
              f"{ratio(row['items_per_s'], load['pil_decode']['items_per_s']):>8.2f}x")


def _machine() -> dict:
    import cv2
    import PIL

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(load, 2),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fracture.bench.data_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 scanned files and 100 loaded images")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender (default 3)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(quick=args.quick, repeats=args.repeats)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
