"""``python -m fracture runs`` and ``promote``: list training runs, ship one's checkpoint."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="list training runs with status and best metric")
    parser.add_argument("--dir", help="runs directory (default: FRACTURE_RUNS_DIR)")
    parser.set_defaults(func=run_list)
    promote = subparsers.add_parser("promote", help="copy a run's best checkpoint into weights/")
    promote.add_argument("run", help="run directory or checkpoint file")
    promote.add_argument("--name", required=True, help="file name in weights/ (without .safetensors)")
    promote.add_argument("--default", action="store_true", help="make it the app's default model")
    promote.add_argument("--overwrite", action="store_true",
                         help="replace an existing checkpoint of that name (and its model card)")
    promote.set_defaults(func=run_promote)


def run_list(args: argparse.Namespace) -> int:
    from fracture.settings import get_settings
    from fracture.train.launcher import list_runs

    runs_dir = args.dir or get_settings().runs_dir
    runs = list_runs(runs_dir)
    if not runs:
        print(f"no runs in {runs_dir}")
        return 0
    for status in runs:
        best = "n/a" if status.best_metric is None else f"{status.best_metric:.4f}"
        print(f"{status.run_dir.name:40s} {status.state:10s} {status.model:20s} epoch {status.epoch}/{status.epochs}  "
              f"best {status.monitor or 'metric'} {best}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from fracture.assess.card import promotion_card
    from fracture.checkpoints.promote import promote_checkpoint

    target = promote_checkpoint(args.run, args.name, make_default=args.default, overwrite=args.overwrite,
                                card_text=promotion_card)
    print(f"promoted to {target}" + (" (default model)" if args.default else ""))
    return 0
