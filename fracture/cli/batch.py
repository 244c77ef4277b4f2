"""``python -m fracture batch FOLDER --out DIR``: every image in a folder -> predictions.csv + report.html."""
from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="predict every image under a folder; write predictions.csv and a self-contained report.html",
    )
    parser.add_argument("folder", help="folder of images (searched recursively; PNG, JPEG, DICOM, ...)")
    parser.add_argument("--out", required=True, help="folder for predictions.csv and report.html")
    parser.add_argument("--checkpoint", help="checkpoint (default: the shipped default model)")
    parser.add_argument("--cam", action="store_true", help="Grad-CAM heatmaps in the report (torch; slower)")
    parser.add_argument("--studies", action="store_true",
                        help="group images by folder (MURA: patient/study) and write studies.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"),
                        help="inference backend (default: $FRACTURE_INFERENCE_BACKEND, else auto)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.set_defaults(func=run)


class ProgressBar:
    """A text progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr  # the current one (tests swap it)
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last_decile = -1

    def __call__(self, event) -> None:
        filled = int(self.width * event.fraction)
        text = f"[{'#' * filled}{'.' * (self.width - filled)}] {event.line()}"
        if self.tty:
            end = "\n" if event.done >= event.total else ""
            print(f"\r{text}", end=end, file=self.stream, flush=True)
            return
        decile = int(10 * event.fraction)
        if decile != self.last_decile or event.done >= event.total:
            self.last_decile = decile
            print(text, file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    from fracture.serve.batch import check_output_dir, predict_folder, write_report
    from fracture.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: give 1 or more")
    logging.captureWarnings(True)  # Pillow/pydicom warnings about a bad file: log lines, not raw stderr
    check_output_dir(args.out, studies=args.studies, overwrite=args.overwrite)  # before any work
    result = predict_folder(args.folder, args.checkpoint, cam=args.cam, studies=args.studies, backend=args.backend,
                            device=args.device, batch_size=args.batch_size, progress=ProgressBar())
    written = write_report(result, args.out, overwrite=args.overwrite)
    counts = result.counts()
    print(f"{counts['files']} files: {counts['predicted']} predicted ({counts['positive']} {result.class_names[1]}, "
          f"{counts['negative']} {result.class_names[0]}), {counts['unreadable']} unreadable, "
          f"{counts['not_radiograph']} not radiographs (no label; the CSV's not_radiograph column says why) "
          f"(threshold {result.threshold:.3f}, {result.seconds:.1f} s on {result.backend})")
    if result.skipped:
        print(f"{len(result.skipped)} file(s) that are not images skipped (e.g. {result.skipped[0]})")
    if result.hidden:
        print(f"{len(result.hidden)} hidden file(s)/folder(s) not read (names starting with '.', e.g. "
              f"{result.hidden[0]})")
    for path in written:
        print(f"wrote {path}")
    return 0
