"""``python -m fracture scan ROOT`` (alias ``stats``): what is in a dataset folder.

Reads the folder into a manifest, then its image headers (parallel, cached by
path + size + mtime) and a seeded sample of decoded images, and prints the
layout, the counts, sizes / modes / bit depths, grey levels, and every
problem and unreadable file. ``--json OUT`` writes the full result (per-file
tables included); ``--json`` alone prints it instead of the summary.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from fracture.data.detect import open_dataset
from fracture.util.csvsafe import frame_csv_text
from fracture.util.files import atomic_write_text
from fracture.data.header_cache import HeaderCache
from fracture.data.manifest import SPLITS, Manifest
from fracture.data.stats import INTENSITY_SAMPLE, DatasetStats, dataset_stats

STDOUT = "-"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``scan`` command (``stats`` is the same command)."""
    scan = subparsers.add_parser(
        "scan", aliases=["stats"],
        help="dataset counts, image sizes/modes/bit depths, grey levels and unreadable files",
        description="Scan a dataset folder: counts per split, body part and label, image headers "
                    "(cached), grey levels of a decoded sample, problems and unreadable files.",
    )
    scan.add_argument("root", type=Path, help="dataset folder (MURA-v1.1, FracAtlas, class folders, demo)")
    scan.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="OUT", type=str,
                      help="write the full result as JSON to OUT (no OUT: print it instead of the summary)")
    scan.add_argument("--out", type=Path, default=None, help="write the manifest to this CSV file")
    scan.add_argument("--seed", type=_seed, default=0, help="split and sample seed (default 0)")
    scan.add_argument("--sample", type=_count, default=None, metavar="N",
                      help="read at most N image headers (default: all)")
    scan.add_argument("--intensity-sample", type=_count, default=INTENSITY_SAMPLE, metavar="N",
                      help=f"decode at most N images for grey levels (default {INTENSITY_SAMPLE}; 0: none)")
    scan.add_argument("--workers", type=int, default=None, metavar="N",
                      help="reader threads (default: 2 per CPU, at most 8)")
    scan.add_argument("--processes", type=int, default=0, metavar="N",
                      help="read headers in N worker processes instead of threads (for a big first "
                           "scan on a many-core machine; default 0)")
    scan.add_argument("--no-cache", action="store_true", help="read every file; do not use the header cache")
    scan.add_argument("--problems", type=_count, default=20, metavar="N",
                      help="how many problems and unreadable files to list (default 20)")
    scan.set_defaults(func=run_scan)


def _seed(text: str) -> int:
    """``--seed``: a whole number numpy's generators take (0..2**32-1); argparse names the option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value}: use a whole number in 0..{2**32 - 1}")
    return value


def _count(text: str) -> int:
    """A count option (``--sample``, ``--problems``...): a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: use 0 or more")
    return value


def run_scan(args: argparse.Namespace) -> int:
    manifest = open_dataset(args.root, seed=args.seed)
    cache: HeaderCache | bool = not args.no_cache
    stats = dataset_stats(
        manifest, sample=args.sample, seed=args.seed, intensity_sample=args.intensity_sample,
        cache=cache, workers=args.workers, processes=args.processes,
    )
    result = scan_json(manifest, stats)
    if args.json == STDOUT:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_summary(manifest, stats, limit=args.problems)
    if args.json not in (None, STDOUT):
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        print(f"\nfull result written to {out}")
    if args.out is not None:
        atomic_write_text(args.out, frame_csv_text(manifest.frame))  # spreadsheet-safe cells, never half a file
        stream = sys.stderr if args.json == STDOUT else sys.stdout
        print(f"manifest written to {args.out}", file=stream)
    return 0


def scan_json(manifest: Manifest, stats: DatasetStats) -> dict:
    """``scan --json``: the statistics plus every problem the text summary lists, as ``{path, reason}``."""
    result = stats.to_dict(per_file=True)
    result["problems"] = [{"path": str(p.path), "reason": str(p.reason)} for p in manifest.problems]
    return result


def print_summary(manifest: Manifest, stats: DatasetStats, *, limit: int = 20) -> None:
    """The human-readable report of a scan."""
    overall = stats.overall
    print(f"root:        {manifest.root}")
    print(f"layout:      {manifest.layout} (source: {', '.join(overall['sources'])})")
    print(f"classes:     0 = {manifest.class_names[0]}, 1 = {manifest.class_names[1]}")
    print(f"images:      {overall['images']}   studies: {overall['studies']}   patients: {overall['patients']}")
    print(f"positive:    {overall['positives']} images ({overall['positive_rate']:.1%}), "
          f"{overall['positive_studies']} studies")
    print(f"fingerprint: {overall['fingerprint']}")

    _section("images per split and class")
    print(_count_table(manifest).to_string())
    _section("studies and patients per split")
    print(stats.by_split.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _section("images per split x body part x class")
    print(_split_body_part_label_table(stats, manifest).to_string())
    _section(f"images per study (mean {overall['images_per_study_mean']:.2f}, "
             f"median {overall['images_per_study_median']:g}, max {overall['images_per_study_max']})")
    print(_images_per_study_table(stats).to_string())

    scan = stats.scan
    _section(f"image headers read: {stats.headers_read} of {stats.headers_total} "
             f"({scan['headers_from_cache']} from cache, {scan['headers_read_now']} read now, "
             f"{scan['header_seconds']:.2f} s)")
    if len(stats.headers):
        print(stats.sizes.round(2).to_string())
        print()
        print(stats.modes.to_string(index=False))
    else:
        print("no header could be read")

    _section(f"grey levels of {len(stats.intensities)} decoded images "
             f"(seeded sample of {stats.intensity_sampled}; {scan['intensities_from_cache']} from cache, "
             f"{scan['intensity_seconds']:.2f} s)")
    if len(stats.intensities):
        print(stats.intensity_summary.round(2).to_string())
    else:
        print("none decoded")

    problems = manifest.problems
    _section(f"problems: {len(problems)}")
    for problem in problems[: max(0, limit)]:
        print(f"  {problem.path}: {problem.reason}")
    _more(len(problems), limit)

    unreadable = stats.unreadable
    _section(f"unreadable files: {len(unreadable)}")
    for row in unreadable.head(max(0, limit)).itertuples(index=False):
        print(f"  [{row.stage}] {row.message}")
    _more(len(unreadable), limit)
    print(f"\n(header cache: {scan['cache'] or 'off'})")


def _section(title: str) -> None:
    print(f"\n{title}")


def _more(total: int, limit: int) -> None:
    if total > limit:
        print(f"  ... and {total - limit} more (use --problems N, or --json OUT for the full list)")


def _count_table(manifest: Manifest) -> pd.DataFrame:
    """Images per split (rows) and class (columns), with totals."""
    frame = manifest.frame
    table = pd.crosstab(frame["split"], frame["label"], margins=True, margins_name="total")
    rows = [*[s for s in SPLITS if s in table.index], "total"]
    table = table.reindex(index=rows, columns=[0, 1, "total"], fill_value=0)
    table.columns = [manifest.class_names[0], manifest.class_names[1], "total"]
    table.index.name = "split"
    return table


def _split_body_part_label_table(stats: DatasetStats, manifest: Manifest) -> pd.DataFrame:
    """Rows (split, body part), columns the two class names and the total."""
    long = stats.by_split_body_part
    names = list(manifest.class_names)
    if long.empty:
        return pd.DataFrame(columns=[*names, "total"])
    table = long.pivot_table(index=["split", "body_part"], columns="class_name", values="images",
                             aggfunc="sum", fill_value=0, sort=False)
    table = table.reindex(columns=names, fill_value=0)
    table["total"] = table.sum(axis=1)
    order = {split: i for i, split in enumerate(SPLITS)}
    return table.sort_index(key=lambda index: index.map(order) if index.name == "split" else index)


def _images_per_study_table(stats: DatasetStats) -> pd.DataFrame:
    """Studies with N images (rows) per split (columns)."""
    long = stats.images_per_study
    if long.empty:
        return pd.DataFrame()
    table = long.pivot_table(index="images_per_study", columns="split", values="studies",
                             aggfunc="sum", fill_value=0)
    columns = [s for s in SPLITS if s in table.columns] + ["all"]
    table = table.reindex(columns=columns, fill_value=0)
    table.columns.name = "studies"
    return table
