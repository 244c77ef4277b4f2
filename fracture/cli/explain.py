"""``python -m fracture explain-select``: choose a checkpoint's default heatmap on validation boxes.

Examples::

    python -m fracture explain-select --checkpoint weights/fracatlas_lite0.safetensors \\
        --data ../shared/data/fracatlas
    python -m fracture explain-select --checkpoint RUN_DIR --data DATA --methods gradcam hirescam --dry-run

Scores every method of :data:`fracture.explain.cam.METHODS` on every layer
preset (``final``, ``stride16``, ``stride8``, ``fused``) with the pointing game
on the validation split's fractured images with boxes, and stores the winner in
the checkpoint's metadata (``meta["explain"]``); predictions then use it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path



def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain-select", help="choose a checkpoint's heatmap method/layer by localisation on validation boxes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint or a run directory")
    parser.add_argument("--data", required=True, help="dataset root whose positives carry boxes")
    parser.add_argument("--split", default="val", choices=("val", "train"),
                        help="where to choose (never test: the test split reports the choice)")
    # No choices= here: they live in fracture.explain (torch), and every CLI command builds this parser.
    parser.add_argument("--methods", nargs="+",
                        help="methods to try (default: all of gradcam hirescam gradcam++ xgradcam layercam "
                             "gradcamelementwise eigengradcam eigencam)")
    parser.add_argument("--layers", nargs="+", help="layer presets to try (default: all of final stride16 stride8 fused)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dry-run", action="store_true", help="print the ranking, do not write the checkpoint")
    parser.add_argument("--json", dest="json_out", help="write the ranking as JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fracture.util.allocator import keep_freed_memory
    from fracture.assess.heatmap_select import select_heatmap, store_selection

    keep_freed_memory()  # a batch job (fracture/util/allocator.py)
    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.safetensors"
    selection = select_heatmap(checkpoint, args.data, split=args.split, methods=args.methods, layers=args.layers,
                               device=args.device, batch_size=args.batch_size)
    table = selection.table.copy()
    table["layer"] = table["layer"].map(lambda layer: layer if isinstance(layer, str) else "+".join(layer))
    print(f"{args.split} split, {selection.n_images} fractured images with boxes (best first):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    entry = selection.meta_entry()
    print(f"\nchosen: {selection.best.label()} (pointing hit {entry['val_pointing_hit']:.3f}, "
          f"mass in box {entry['val_mass_in_box']:.3f} vs box area {entry['val_box_area']:.3f})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"chosen": entry, "candidates": table.to_dict("records")}, indent=2))
        print(f"wrote {args.json_out}")
    if not args.dry_run:
        store_selection(checkpoint, selection)
        print(f"stored meta['explain'] in {checkpoint}; re-run `python -m fracture evaluate --write-meta --card` "
              "so the card's localisation uses it")
    return 0
