"""``python -m fracture shortcuts``: how much does a checkpoint rely on markers, text, borders and artefacts?

Examples::

    python -m fracture shortcuts --checkpoint weights/fracatlas_lite0_v4.safetensors \\
        --data ../shared/data/fracatlas --limit 200
    python -m fracture shortcuts --checkpoint RUN_DIR --data DATA --json out.json --write-meta

Alters each image of a split one way at a time (:mod:`fracture.assess.shortcuts`:
``lead_marker``, ``text_label``, ``ruler``, ``border``, ``crop``, ``rotation``,
``inversion``, ``noise``, ``blur``, ``jpeg``) and reports per alteration the mean |dP|, the label-flip rate and,
for pasted things, how often the heatmap maximum lands on them. ``--write-meta``
stores the figures in the checkpoint (``meta["shortcuts"]``) for its model card.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fracture.util.jsonio import json_default

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "shortcuts", help="measure reliance on lead markers, text, borders and artefacts (shortcut lab)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint or a run directory")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"))
    parser.add_argument("--limit", type=int, default=None, help="at most this many images (a seeded sample)")
    parser.add_argument("--perturbations", nargs="+", metavar="NAME",
                        help="which alterations, e.g. lead_marker text_label (default: all; an unknown name "
                             "lists the valid ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", dest="json_out", help="write the report (with per-image dP) as JSON here")
    parser.add_argument("--write-meta", action="store_true",
                        help="store the figures in the checkpoint's metadata (meta['shortcuts']) for its card")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fracture.assess.shortcuts import PERTURBATIONS, measure_shortcuts, perturbation_name, summary_lines
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.checkpoints.meta import split_seed
    from fracture.data import load_image, open_dataset
    from fracture.errors import DatasetError
    from fracture.serve.predictor import Predictor

    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.safetensors"
    chosen = [perturbation_name(p) for p in args.perturbations or PERTURBATIONS]  # PerturbationError: exit 2
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be 1 or more, got {args.limit}")
    meta = read_checkpoint_meta(checkpoint)
    manifest = open_dataset(args.data, seed=split_seed(meta))
    rows = manifest.subset(args.split).reset_index(drop=True)
    if rows.empty:
        raise DatasetError(f"{args.data}: the {args.split} split is empty")
    if args.limit is not None and len(rows) > args.limit:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(rows), args.limit, replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    images = [load_image(p) for p in rows["path"]]
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device)
    report = measure_shortcuts(predictor, images, names=[Path(p).name for p in rows["path"]], perturbations=chosen,
                               seed=args.seed, batch_size=args.batch_size,
                               progress=lambda done, total: log.info("shortcuts: %d/%d perturbations", done, total))
    report.update({"split": args.split, "data": str(args.data), "dataset_fingerprint": manifest.fingerprint(),
                   "checkpoint": str(checkpoint),
                   "command": f"python -m fracture shortcuts --checkpoint {checkpoint} --data {args.data} "
                              f"--split {args.split}" + (f" --limit {args.limit}" if args.limit else "")
                              + (f" --seed {args.seed}" if args.seed else "")})
    print(f"shortcut lab: {checkpoint.name} on {report['n']} {args.split}-split images (threshold "
          f"{report['threshold']:.3f}, heatmap {report['heatmap']})")
    for line in summary_lines(report):
        print("  " + line)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=json_default))
        print(f"wrote {args.json_out}")
    if args.write_meta:
        from fracture.checkpoints.format import update_checkpoint_meta

        stored = {key: value for key, value in report.items() if key != "per_image"}
        meta = read_checkpoint_meta(checkpoint)
        meta["shortcuts"] = stored
        update_checkpoint_meta(checkpoint, meta)
        print(f"stored meta['shortcuts'] in {checkpoint}")
    return 0
