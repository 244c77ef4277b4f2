"""First-time image-cache build vs bare decoding of the same files.

The floor is what any first epoch must pay anyway: :func:`load_image` on
every file, spread over the same number of worker processes the cache build
uses (pool start-up included on both sides, as a real first build pays it).
The build adds preprocessing, the resize, the write into the memory map and
the index; the ratio ``build time / decode time`` says what that costs. Every
timed build goes into a fresh cache folder, so each one really is first-time;
the files are read once beforehand so neither side pays for a cold disk.
"""
from __future__ import annotations

import concurrent.futures
import logging
import shutil
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Any

from fracture.bench.timing import interleaved, ratio, summarize

logger = logging.getLogger(__name__)

GOAL = 1.5  # build time at most 1.5x bare decode time


def _decode_paths(paths: Sequence[str]) -> int:
    """Decode each file and drop the pixels (a worker's share of the floor)."""
    from fracture.data.imageio import load_image

    for path in paths:
        load_image(path)
    return len(paths)


def decode_all(paths: Sequence[str], workers: int) -> int:
    """Decode every file: in this process (``workers=0``) or in a process pool
    made like the cache build's (same start method, same chunks)."""
    from fracture.util.workers import worker_context
    from fracture.cache.images import _chunks

    if workers == 0:
        return _decode_paths(paths)
    chunks = [[paths[i] for i in chunk] for chunk in _chunks(len(paths), workers)]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
        return sum(pool.map(_decode_paths, chunks))


def bench_cache_build(
    paths: Sequence[str],
    spec: list[dict],
    work_dir: Path,
    *,
    repeats: int,
    workers: int | None = None,
) -> dict[str, Any]:
    """Time first-time cache builds against bare decoding.

    Args:
        paths: image files.
        spec: the preprocessing spec the trainer would cache (ends with a resize).
        work_dir: scratch folder; every build gets a new cache root under it.
        repeats: timed builds and decodes (medians are reported).
        workers: build processes (None: one per usable CPU, as the trainer's
            default; 0: in this process).

    Returns:
        Timings, rates, the ratio and the goal.
    """
    from fracture.cache import ImageCache
    from fracture.util.workers import usable_cpus

    workers = usable_cpus() if workers is None else int(workers)
    for path in paths:  # page cache warm for both sides
        Path(path).read_bytes()
    roots = work_dir / "cache-build"
    serial = count()
    failures: list[int] = []

    def build() -> None:
        cache = ImageCache.open_or_build(paths, spec, roots / str(next(serial)), workers=workers)
        if not cache.built:
            raise RuntimeError(f"{cache.directory} was not built by this call; the benchmark needs a first-time build")
        failures.append(len(cache.failures))

    def decode() -> None:
        decode_all(paths, workers)

    try:
        samples = interleaved({"build": build, "decode": decode}, repeats=repeats, warmup=1)
    finally:
        shutil.rmtree(roots, ignore_errors=True)
    n = len(paths)
    build_s, decode_s = summarize(samples["build"], items=n), summarize(samples["decode"], items=n)
    value = ratio(build_s["median_s"], decode_s["median_s"])
    return {
        "images": n,
        "workers": workers,
        "image_size": int(spec[-1]["size"]),
        "failed_images": failures[-1] if failures else 0,
        "build": build_s,
        "decode": decode_s,
        "ratio": value,
        "ratio_means": "first-time cache build time / bare load_image time (lower is better)",
        "goal": f"<= {GOAL}",
        "goal_met": bool(value <= GOAL),
    }
