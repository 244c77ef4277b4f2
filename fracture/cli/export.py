"""``python -m fracture export``: a checkpoint as an ONNX file, checked against torch."""
from __future__ import annotations

import argparse

#: Most demo images a parity check draws: more adds nothing to the check, and a huge N would first
#: generate a demo set of N/2 studies (100,000 gave 850 MB in a temporary folder).
MAX_CHECK_IMAGES = 256


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a checkpoint as ONNX (dynamic batch, metadata carried, checked against torch)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", help="checkpoint (default: the shipped default model)")
    parser.add_argument("--out", required=True, help="the .onnx file to write (never a checkpoint; an existing "
                        "file only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--tta", choices=("checkpoint", "on", "off"), default="checkpoint",
                        help="average with the mirrored image inside the graph (checkpoint: as it was validated)")
    parser.add_argument("--check-images", type=int, default=16,
                        help="demo-set images on which onnxruntime must match torch (0: no check)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="allowed max |probability difference|")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fracture.errors import CheckpointError, ConfigError
    from fracture.serve.export import check_export_target, demo_images, export_checked, export_onnx
    from fracture.serve.predictor import default_checkpoint

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise CheckpointError("no --checkpoint given and no default model in weights/")
    if not 0 <= args.check_images <= MAX_CHECK_IMAGES:
        raise ConfigError(f"--check-images {args.check_images}: give 0 (no check) to {MAX_CHECK_IMAGES}")
    check_export_target(checkpoint, args.out, overwrite=args.overwrite)  # before any work
    tta = {"checkpoint": None, "on": True, "off": False}[args.tta]
    if args.check_images == 0:
        out = export_onnx(checkpoint, args.out, tta_hflip=tta, opset=args.opset, overwrite=args.overwrite)
        print(f"wrote {out} (not checked against torch)")
        return 0
    out, report = export_checked(checkpoint, args.out, demo_images(args.check_images), tta_hflip=tta,
                                 opset=args.opset, tolerance=args.tolerance, overwrite=args.overwrite)
    print(f"wrote {out}: onnxruntime vs torch on {report.n_images} demo images, "
          f"max |probability difference| {report.max_abs_diff:.2e} (allowed {report.tolerance:g})")
    return 0
