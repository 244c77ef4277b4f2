"""``python -m fracture predict``: one study (one or more image files) through a checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="predict a study from image files (PNG, JPEG, DICOM)")
    parser.add_argument("images", nargs="+", help="image files of one study")
    parser.add_argument("--checkpoint", help="checkpoint (default: the shipped default model)")
    parser.add_argument("--body-part", help="known body part (multi-task models)")
    parser.add_argument("--preprocess", help="extra steps before the model's own pipeline: a preset name "
                        "(clahe, canny_overlay, diffusion, ...) or a JSON list of steps")
    parser.add_argument("--clahe", action="store_true", help="shorthand for --preprocess clahe")
    parser.add_argument("--cam", help="write the Grad-CAM overlay PNG here (several images: NAME_i.png)")
    parser.add_argument("--cam-out", help="folder for one Grad-CAM overlay PNG per image")
    parser.add_argument("--cam-method", help="heatmap method, e.g. gradcam, layercam, hirescam, gradcam++, eigencam "
                        "(default: the one the checkpoint stores, chosen on its validation split)")
    parser.add_argument("--cam-layer", help="heatmap layer: final, stride16, stride8 or fused (default: the stored one)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx", "onnxruntime"),
                        help="inference backend (default: $FRACTURE_INFERENCE_BACKEND, else auto: onnxruntime on a "
                        "CPU, torch with --cam/--cam-out or on CUDA)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import cv2

    from fracture.data.imageio import decode_image
    from fracture.errors import CheckpointError
    from fracture.serve.predictor import Predictor, default_checkpoint
    from fracture.settings import get_settings

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise CheckpointError("no --checkpoint given and no default model in weights/")
    # images first: a bad one (a FIFO, a cut JPEG) fails at once, before the model loads;
    # each is kept within FRACTURE_MAX_IMAGE_MEGAPIXELS (reduced while decoding, with a note)
    budget = get_settings().max_image_pixels
    decoded = [decode_image(p, pixel_budget=budget) for p in args.images]
    for item in decoded:
        for note in item.notes:
            print(f"note: {note}", file=sys.stderr)
    images = [item.image for item in decoded]
    from fracture.gate.radiograph import SourceFacts

    sources = [SourceFacts.of(item) for item in decoded]  # DICOM modality, colour, bit depth for the gate
    del decoded
    want_cam = bool(args.cam or args.cam_out)
    backend = args.backend or ("torch" if want_cam else None)  # None: the environment, else auto
    predictor = Predictor.from_checkpoint(checkpoint, backend=backend, need_heatmaps=want_cam)
    extra = None
    if args.preprocess:
        from fracture.preprocess.pipeline import Pipeline

        extra = Pipeline.from_spec(args.preprocess).to_spec()
    elif args.clahe:
        extra = [{"op": "clahe"}]
    result = predictor.predict(images, names=[Path(p).name for p in args.images], body_part=args.body_part,
                               extra_steps=extra, with_cam=want_cam, cam_method=args.cam_method,
                               cam_layer=args.cam_layer, sources=sources)
    if want_cam:
        from fracture.explain.gradcam import overlay_heatmap

        targets = []
        if args.cam:
            cam = Path(args.cam)
            cam.parent.mkdir(parents=True, exist_ok=True)
            targets = [cam] if len(result.images) == 1 else [
                cam.with_name(f"{cam.stem}_{i + 1}{cam.suffix or '.png'}") for i in range(len(result.images))]
        else:
            out = Path(args.cam_out)
            out.mkdir(parents=True, exist_ok=True)
            targets = [out / f"{Path(p.name).stem}_gradcam.png" for p in result.images]
        for pred, target in zip(result.images, targets):
            overlay = overlay_heatmap(pred.image, pred.heatmap)
            cv2.imwrite(str(target), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            print(f"Grad-CAM overlay: {target}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    from fracture.gate.ood import unfamiliar_warning
    from fracture.gate.radiograph import NOT_RADIOGRAPH

    for pred in result.images:
        if not pred.is_radiograph:
            print(f"{pred.name}: {NOT_RADIOGRAPH.format(reason=pred.gate['reason'])}")
            continue
        print(f"{pred.name}: p={pred.prob:.3f} -> {pred.label}")
        if (pred.gate or {}).get("unfamiliar"):
            print(f"  note: {unfamiliar_warning(pred.gate['differences'])}")
    if result.study_prob is None:
        print(f"study: no prediction, none of the images is a radiograph (model {result.checkpoint})")
        return 0
    print(f"study: p={result.study_prob:.3f} -> {result.study_label} (threshold {result.threshold:.3f}, "
          f"model {result.checkpoint})")
    if result.body_part:
        print(f"body part: {result.body_part} ({result.body_part_source})")
    return 0
