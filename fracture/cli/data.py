"""``python -m fracture scan ROOT`` and ``python -m fracture stats ROOT``.

``scan`` reads a dataset folder into a manifest and prints what it found and
what is wrong with it; ``stats`` adds image sizes and modes from the headers.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from fracture.data.detect import open_dataset
from fracture.data.manifest import SPLITS, Manifest
from fracture.data.stats import dataset_stats


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``scan`` and ``stats`` commands."""
    scan = subparsers.add_parser("scan", help="read a dataset folder and report its manifest and problems")
    scan.add_argument("root", type=Path, help="dataset folder (MURA-v1.1, FracAtlas, class folders, demo)")
    scan.add_argument("--out", type=Path, default=None, help="write the manifest to this CSV file")
    scan.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    scan.add_argument("--problems", type=int, default=20, metavar="N", help="how many problems to list (default 20)")
    scan.set_defaults(func=run_scan)

    stats = subparsers.add_parser("stats", help="dataset counts plus image sizes and modes from file headers")
    stats.add_argument("root", type=Path, help="dataset folder")
    stats.add_argument("--seed", type=int, default=0, help="split and sample seed (default 0)")
    stats.add_argument("--sample", type=int, default=None, metavar="N",
                       help="read at most N image headers (default: all)")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=run_stats)


def run_scan(args: argparse.Namespace) -> int:
    manifest = open_dataset(args.root, seed=args.seed)
    print(f"root:        {manifest.root}")
    print(f"layout:      {manifest.layout} (source: {', '.join(sorted(manifest.frame['source'].unique()))})")
    print(f"classes:     0 = {manifest.class_names[0]}, 1 = {manifest.class_names[1]}")
    print(f"images:      {len(manifest)}")
    print(f"fingerprint: {manifest.fingerprint()}")
    print()
    print(_count_table(manifest).to_string())
    print()
    print(_body_part_table(manifest).to_string())
    _print_problems(manifest, args.problems)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        manifest.frame.to_csv(args.out, index=False)
        print(f"\nmanifest written to {args.out}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    manifest = open_dataset(args.root, seed=args.seed)
    stats = dataset_stats(manifest, sample=args.sample, seed=args.seed)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
        return 0
    overall = stats.overall
    print(f"root:     {overall['root']}  ({overall['layout']})")
    print(f"images:   {overall['images']}   studies: {overall['studies']}   patients: {overall['patients']}")
    print(f"positive: {overall['positives']} images ({overall['positive_rate']:.1%}), "
          f"{overall['positive_studies']} studies")
    print(f"problems: {overall['problems']} (run `scan` to list them)")
    print("\nby split:")
    print(stats.by_split.to_string(index=False))
    print("\nby body part:")
    print(stats.by_body_part.to_string(index=False))
    print(f"\nimage headers read: {stats.headers_read} of {stats.headers_total}")
    print(stats.sizes.round(2).to_string())
    print("\nformats and modes:")
    print(stats.modes.to_string(index=False))
    if len(stats.unreadable):
        print(f"\nunreadable ({len(stats.unreadable)}):")
        print(stats.unreadable.to_string(index=False))
    return 0


def _count_table(manifest: Manifest) -> pd.DataFrame:
    """Images per split (rows) and class (columns), with totals."""
    frame = manifest.frame
    table = pd.crosstab(frame["split"], frame["label"], margins=True, margins_name="total")
    rows = [*[s for s in SPLITS if s in table.index], "total"]
    table = table.reindex(index=rows, columns=[0, 1, "total"], fill_value=0)
    table.columns = [manifest.class_names[0], manifest.class_names[1], "total"]
    table.index.name = "split"
    return table


def _body_part_table(manifest: Manifest) -> pd.DataFrame:
    """Images per body part (rows) and split (columns)."""
    frame = manifest.frame
    table = pd.crosstab(frame["body_part"], frame["split"], margins=True, margins_name="total")
    columns = [s for s in SPLITS if s in table.columns] + ["total"]
    return table.reindex(columns=columns, fill_value=0)


def _print_problems(manifest: Manifest, limit: int) -> None:
    problems = manifest.problems
    print(f"\nproblems: {len(problems)}")
    for problem in problems[: max(0, limit)]:
        print(f"  {problem.path}: {problem.reason}")
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit} more (use --problems N, or --out to save the manifest)")
