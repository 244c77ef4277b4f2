"""``python -m fracture import``: a state dict trained elsewhere becomes a project checkpoint."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import", help="turn a trained EfficientNet/timm state dict (.pth/.safetensors) into a checkpoint",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--weights", required=True, help="state dict in timm or EfficientNet-PyTorch layout")
    parser.add_argument("--model", required=True, help="registered architecture name (python -m fracture models)")
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--num-classes", type=int, choices=(1, 2), help="outputs of the file's classifier (checked)")
    parser.add_argument("--positive-index", type=int, default=1, choices=(0, 1),
                        help="which softmax output is the fracture/abnormal class")
    parser.add_argument("--image-size", type=int, help="input size (default: the architecture's)")
    parser.add_argument("--resize-mode", default="letterbox", choices=("letterbox", "stretch"))
    parser.add_argument("--class-names", default="normal,abnormal", help="negative,positive")
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold (re-choose on validation data)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fracture.checkpoints.importer import import_state_dict

    names = tuple(n.strip() for n in args.class_names.split(","))
    if len(names) != 2:
        raise ValueError(f"--class-names {args.class_names!r}: give two names, negative first")
    path = import_state_dict(
        args.weights, args.model, args.out, num_classes=args.num_classes, positive_index=args.positive_index,
        image_size=args.image_size, resize_mode=args.resize_mode, class_names=names, threshold=args.threshold,
    )
    print(f"wrote {path}; evaluate it with: python -m fracture evaluate --checkpoint {path} --data ROOT --split test")
    return 0
