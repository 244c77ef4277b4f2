"""``python -m fracture predict``: one study (one or more image files) through a checkpoint."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="predict a study from image files (PNG, JPEG, DICOM)")
    parser.add_argument("images", nargs="+", help="image files of one study")
    parser.add_argument("--checkpoint", help="checkpoint (default: the shipped default model)")
    parser.add_argument("--body-part", help="known body part (multi-task models)")
    parser.add_argument("--clahe", action="store_true", help="apply CLAHE before the model's own pipeline")
    parser.add_argument("--cam-out", help="folder for Grad-CAM overlay PNGs")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import cv2

    from fracture.data import load_image
    from fracture.errors import CheckpointError
    from fracture.predict import Predictor, default_checkpoint

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise CheckpointError("no --checkpoint given and no default model in weights/")
    predictor = Predictor.from_checkpoint(checkpoint)
    images = [load_image(p) for p in args.images]
    extra = [{"op": "clahe"}] if args.clahe else None
    result = predictor.predict(images, names=[Path(p).name for p in args.images], body_part=args.body_part,
                               extra_steps=extra, with_cam=bool(args.cam_out))
    if args.cam_out:
        from fracture.explain.gradcam import overlay_heatmap

        out = Path(args.cam_out)
        out.mkdir(parents=True, exist_ok=True)
        for pred in result.images:
            overlay = overlay_heatmap(pred.image, pred.heatmap)
            cv2.imwrite(str(out / f"{Path(pred.name).stem}_gradcam.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    for pred in result.images:
        print(f"{pred.name}: p={pred.prob:.3f} -> {pred.label}")
    print(f"study: p={result.study_prob:.3f} -> {result.study_label} (threshold {result.threshold:.3f}, "
          f"model {result.checkpoint})")
    if result.body_part:
        print(f"body part: {result.body_part} ({result.body_part_source})")
    return 0
