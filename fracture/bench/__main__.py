"""``python -m fracture.bench [--quick] [--out PATH] [--data ROOT] [--repeats N]``.

Prints a table of the figures, their floors and ratios, then, as the last
line, the path of the JSON file holding every figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fracture.bench",
        description="Benchmark the data path (cache, training loop, prediction) against its floors.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (small_cnn, 64 px, demo-sized data, 2 repeats): a smoke test in seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file to write (default: $FRACTURE_HOME/bench/bench-<time>.json)")
    parser.add_argument("--data", default=None,
                        help="dataset root, or 'demo' for the generated set "
                             "(default: ../shared/data/fracatlas when present, else demo)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, one per core; quick: 1)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep scratch files (subset, caches, runs) here instead of a temporary folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the core does")
    return parser


def main(argv: list[str] | None = None) -> int:
    from fracture.util.allocator import keep_freed_memory
    from fracture.bench.suite import FULL, QUICK, format_table, print_progress, run_suite
    from fracture.errors import FractureError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()  # as `python -m fracture train` runs (fracture/util/allocator.py)
    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            print("error: --repeats must be at least 1", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, repeats=args.repeats)
    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be at least 1", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, torch_threads=args.threads)
    try:
        results, path = run_suite(settings, data=args.data, out=args.out, work_dir=args.work_dir,
                                  progress=print_progress)
    except FractureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
