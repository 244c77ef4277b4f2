"""``python -m fracture models``: the architectures that can be trained.

Examples::

    python -m fracture models
    python -m fracture models --json

Parameters are counted on torch's meta device (no memory, a few seconds for
all). "Offline weights" says whether pretrained weights ship with an installed
package; every model also accepts ``--weights PATH`` (a timm state dict) when
training.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model architectures and their offline weights",
        description="List registered architectures: timm name, default input size, "
        "parameters and whether pretrained weights are available offline.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fracture.models import list_models

    infos = list_models(count_params=True)
    if args.json:
        print(json.dumps([asdict(info) for info in infos], indent=2))
        return 0
    rows = [
        (
            info.name,
            info.timm_name or "-",
            str(info.default_image_size),
            f"{info.num_params / 1e6:.2f}",
            f"yes ({info.weights_source})" if info.offline_weights else "no",
        )
        for info in infos
    ]
    header = ("name", "timm name", "size", "params (M)", "offline weights")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * width for width in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
