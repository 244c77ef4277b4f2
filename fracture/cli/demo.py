"""``python -m fracture demo-data --out DIR``: write the synthetic demo dataset.

Examples::

    python -m fracture demo-data --out demo_data
    python -m fracture demo-data --out /tmp/demo --seed 3 --studies 400
"""
from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

from fracture.data.demo import DEFAULT_STUDIES, LOCATIONS_FILE, make_demo_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo-data`` command."""
    parser = subparsers.add_parser(
        "demo-data", help="write the synthetic demo dataset (MURA-v1.1 layout)",
        description="Draw a small synthetic radiograph dataset in the MURA-v1.1 layout, with "
                    "the four CSVs, a DEMO.txt marker and fracture_locations.csv.")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to write (created; an earlier demo set there is replaced)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--studies", type=int, default=DEFAULT_STUDIES,
                        help=f"number of studies (default {DEFAULT_STUDIES}, as the app's; about 2.5 images each)")
    parser.add_argument("--min-size", type=int, default=200, help="smallest image side (px)")
    parser.add_argument("--max-size", type=int, default=512, help="largest image side (px)")
    parser.set_defaults(func=run_demo_data)


def _image_counts(root: Path) -> Counter:
    """(split, body part, label) -> images, from the CSVs just written."""
    counts: Counter = Counter()
    for split in ("train", "valid"):
        with open(root / f"{split}_image_paths.csv", newline="") as handle:
            for (path,) in csv.reader(handle):
                _, _, part_dir, _, study, _ = path.split("/")
                label = "abnormal" if study.endswith("_positive") else "normal"
                counts[(split, part_dir[3:].lower(), label)] += 1
    return counts


def run_demo_data(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    root = make_demo_dataset(args.out, seed=args.seed, studies=args.studies,
                             size_range=(args.min_size, args.max_size))
    elapsed = time.perf_counter() - start
    counts = _image_counts(root)
    with open(root / LOCATIONS_FILE, newline="") as handle:
        kinds = Counter(row["kind"] for row in csv.DictReader(handle))
    print(f"wrote synthetic demo dataset to {root} in {elapsed:.1f} s "
          f"(seed {args.seed}, {args.studies} studies, {sum(counts.values())} images)")
    print(f"{'split':<6} {'body part':<9} {'normal':>7} {'abnormal':>9}")
    for split in ("train", "valid"):
        parts = sorted({part for (s, part, _) in counts if s == split})
        for part in parts:
            print(f"{split:<6} {part:<9} {counts[(split, part, 'normal')]:>7} "
                  f"{counts[(split, part, 'abnormal')]:>9}")
        normal = sum(n for (s, _, lab), n in counts.items() if s == split and lab == "normal")
        abnormal = sum(n for (s, _, lab), n in counts.items() if s == split and lab == "abnormal")
        print(f"{split:<6} {'(all)':<9} {normal:>7} {abnormal:>9}")
    print(f"lesion views in {LOCATIONS_FILE}: {kinds.get('fracture', 0)} fracture, "
          f"{kinds.get('hardware', 0)} hardware")
    return 0
