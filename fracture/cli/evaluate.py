"""``python -m fracture evaluate``: metrics of checkpoints (and their ensemble) on a split."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fracture.util.jsonio import json_default


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="image- and study-level metrics of checkpoints on a dataset split",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a .safetensors checkpoint or a run directory; repeat for an ensemble")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="all = every image of the dataset (an external test set)")
    parser.add_argument("--threshold", type=float, help="override the checkpoint's decision threshold "
                        "(on the scale of the probabilities shown: calibrated when the checkpoint is)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the AUC interval")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"),
                        help="inference backend (default: $FRACTURE_INFERENCE_BACKEND, else auto = onnxruntime on a CPU)")
    parser.add_argument("--json", dest="json_out", help="write the full report(s) as JSON here")
    parser.add_argument("--write-meta", action="store_true",
                        help="store the metrics in the checkpoint's metadata (one checkpoint, test split)")
    parser.add_argument("--card", help="write a Markdown model card here (one checkpoint)")
    parser.set_defaults(func=run)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p / "best.safetensors" if p.is_dir() else p


def run(args: argparse.Namespace) -> int:
    from fracture.util.allocator import keep_freed_memory
    from fracture.assess.compare import evaluate_checkpoint, evaluate_ensemble
    from fracture.evaluate.report import format_report_markdown, metrics_table

    keep_freed_memory()  # a batch job: reuse freed activations (fracture/util/allocator.py)

    checkpoints = [_resolve(c) for c in args.checkpoint]
    results = [
        evaluate_checkpoint(c, args.data, args.split, threshold=args.threshold, n_boot=args.n_boot, device=args.device,
                            backend=args.backend)
        for c in checkpoints
    ]
    reports = {r.name: r.report for r in results}
    if len(checkpoints) > 1:
        ens = evaluate_ensemble(checkpoints, args.data, args.split, n_boot=args.n_boot, device=args.device,
                                backend=args.backend)
        reports["ensemble"] = ens.report
    for level in ("image", "study"):
        print(f"\n{args.split} split, {level} level")
        print(metrics_table(reports, level=level).to_string())
    for name, report in reports.items():
        block = report["image"].get("calibration")
        if block:
            print(f"\n{name}: calibration (image level, 15 bins): ECE {block['ece_uncalibrated']:.3f} uncalibrated, "
                  f"{block['ece']:.3f} as shown; Brier {block['brier_uncalibrated']:.4f}, {block['brier']:.4f}"
                  + ("" if block.get("temperature") is not None or name == "ensemble" else
                     " (no calibration stored: python -m fracture calibrate)"))
    for result in results:
        if result.problems:
            print(f"\n{result.name}: {len(result.problems)} image(s) could not be read and were not evaluated:")
            for problem in result.problems[:20]:
                print(f"  {problem['message']}")
    for result in results:  # heatmap vs annotated boxes, where the split's positives have boxes
        if result.report["image"].get("localisation"):
            from fracture.evaluate.localisation import format_localisation

            print(f"\n{result.name}, {args.split} split: {format_localisation(result.report['image']['localisation'])}")
    if args.json_out:
        from fracture.assess.compare import summarize_report

        names = [r.name for r in results]
        main_report = reports["ensemble"] if len(results) > 1 else results[0].report
        summary = summarize_report(main_report, split=args.split, checkpoints=args.checkpoint)
        summary["ensemble"] = len(results) > 1
        if len(results) > 1:
            summary["members"] = {
                name: summarize_report(r.report, split=args.split, checkpoints=[c])
                for name, r, c in zip(names, results, args.checkpoint)
            }
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=json_default))
        print(f"\nwrote {args.json_out}")
    if args.write_meta or args.card:
        if len(results) != 1:
            print("error: --write-meta and --card take exactly one checkpoint")
            return 2
        result = results[0]
        if args.write_meta:
            from fracture.checkpoints.format import read_checkpoint_meta, update_checkpoint_meta

            meta = read_checkpoint_meta(checkpoints[0])
            metrics = dict(meta.get("metrics") or {})
            report = dict(result.report)
            report["command"] = "python -m fracture evaluate " + " ".join(
                f"--checkpoint {c}" for c in args.checkpoint) + f" --data {args.data} --split {args.split}"
            metrics[args.split] = report
            meta["metrics"] = metrics
            update_checkpoint_meta(checkpoints[0], meta)
            print(f"stored {args.split} metrics in {checkpoints[0]}")
        if args.card:
            from fracture.assess.card import write_model_card

            write_model_card(checkpoints[0], result, args.card, data_root=args.data)
            print(f"wrote {args.card}")
    return 0

