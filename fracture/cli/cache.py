"""``python -m fracture cache``: build, inspect and clear the preprocessed-image cache.

Examples::

    python -m fracture cache build --data /data/fracatlas --size 224 --preprocess clahe
    python -m fracture cache info
    python -m fracture cache clear --older-than-days 30

Stores live in ``<cache dir>/images``; the cache dir is ``--cache-dir``, else
``$FRACTURE_CACHE_DIR``, else ``~/.cache/fracture-lab/cache`` — the same
setting (and folder) that training's ``cache_dir`` and evaluation use. A store is reused only for the same ordered path list: ``--split all``
(the default) warms what ``python -m fracture train`` opens (the whole
manifest; not with ``max_train_images``), ``--split test`` what evaluating a
checkpoint on the test split opens. Give the same ``--seed`` as the run's
``split_seed``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fracture.errors import DatasetError

_SPLIT_CHOICES = ("all", "train", "val", "test")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="build, inspect or clear the preprocessed-image cache",
        description="Decode, preprocess and resize each image once into a memory-mapped store.",
    )
    actions = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="cache a dataset's images for one pipeline and size")
    build.add_argument("--data", required=True, type=Path, help="dataset root (any known layout)")
    build.add_argument("--size", required=True, type=int, help="output side in pixels, e.g. 224")
    build.add_argument(
        "--preprocess", default="none",
        help="preset name (none, clahe, canny_channel, ...) or a JSON list of steps; "
        "the resize to --size is added last",
    )
    build.add_argument("--mode", default="letterbox", choices=("letterbox", "stretch"),
                       help="how to make images square (never crops)")
    build.add_argument("--split", default="all", choices=_SPLIT_CHOICES,
                       help="which images to cache, in manifest order (default all)")
    build.add_argument("--seed", type=int, default=0, help="split seed of the dataset reader")
    build.add_argument("--workers", type=int, default=None,
                       help="build processes (default: CPU count; 0 = this process)")
    _add_cache_dir(build)
    build.set_defaults(func=_run_build)

    info = actions.add_parser("info", help="list the stores under the cache root")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_cache_dir(info)
    info.set_defaults(func=_run_info)

    clear = actions.add_parser("clear", help="delete stores (all, or those unused for a while)")
    clear.add_argument("--older-than-days", type=float, default=None,
                       help="only stores not used for this many days")
    _add_cache_dir(clear)
    clear.set_defaults(func=_run_clear)


def _add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder, like the training config's cache_dir; image stores "
                        "go to its images/ subfolder (default $FRACTURE_CACHE_DIR, else "
                        "~/.cache/fracture-lab/cache)")


def _resolve_root(args: argparse.Namespace) -> Path:
    from fracture.cache import default_cache_root

    return args.cache_dir / "images" if args.cache_dir is not None else default_cache_root()


def _run_build(args: argparse.Namespace) -> int:
    from fracture.cache import ImageCache
    from fracture.data import open_dataset
    from fracture.preprocess.pipeline import Pipeline

    pipeline = Pipeline.from_spec(args.preprocess).with_resize(args.size, args.mode)
    manifest = open_dataset(args.data, seed=args.seed)
    frame = manifest.frame if args.split == "all" else manifest.subset(args.split)
    paths = frame["path"].tolist()
    if not paths:
        raise DatasetError(f"{args.data}: the {args.split!r} split has no images")
    root = _resolve_root(args)
    print(f"caching {len(paths)} images ({args.split}) from {args.data}: {pipeline.describe()}")
    cache = ImageCache.open_or_build(paths, pipeline.to_spec(), root, workers=args.workers)
    state = f"built in {cache.build_seconds:.1f} s" if cache.built else "already cached"
    print(f"{state}: {len(cache)} images {tuple(cache.images.shape[1:])}, "
          f"{cache.nbytes / 1e6:.1f} MB in {cache.directory}")
    if cache.failures:
        print(f"{len(cache.failures)} images could not be loaded (their slots are zeros and "
              "valid_mask is False):")
        for failure in cache.failures[:20]:
            print(f"  [{failure.reason}] {failure.message}")
        if len(cache.failures) > 20:
            print(f"  ... and {len(cache.failures) - 20} more (see {cache.directory}/index.json)")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from fracture.cache import cache_info

    root = _resolve_root(args)
    rows = cache_info(root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no image caches under {root}")
        return 0
    total = sum(row["disk_bytes"] for row in rows)
    print(f"{len(rows)} entries under {root}, {total / 1e6:.1f} MB on disk")
    for row in rows:
        line = f"{row['key'][:12]}  {row['status']:<9}  {row['disk_bytes'] / 1e6:9.1f} MB  " \
               f"used {row['last_used']}"
        if row["status"] == "ok":
            shape = "x".join(str(v) for v in row["shape"])
            ops = " > ".join(step["op"] for step in row["spec"])
            line += f"  {row['images']} images {shape}  {row['failures']} failed  [{ops}]"
        elif row["status"] == "corrupt":
            line += f"  ({row['problem']})"
        print(line)
    return 0


def _run_clear(args: argparse.Namespace) -> int:
    from fracture.cache import clear_cache

    root = _resolve_root(args)
    removed = clear_cache(root, older_than_days=args.older_than_days)
    print(f"removed {len(removed)} image-cache directories from {root}")
    return 0
