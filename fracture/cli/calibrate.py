"""``python -m fracture calibrate``: temperature, operating points and the OOD score for a checkpoint.

Fits, on the checkpoint's own training dataset, everything
:func:`fracture.assess.calibration.fit_calibration` stores: the temperature
and operating points on the validation split, the out-of-distribution
statistics on a seeded subsample of the training split with their threshold on
the validation split. The checkpoint is rewritten atomically with everything
else in it kept (or written to ``--out``). A dataset other than the one the
checkpoint was trained on (different fingerprint) is refused unless ``--force``:
its validation split may hold the model's training images.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from fracture.util.jsonio import json_default

log = logging.getLogger(__name__)

DEFAULT_TRAIN_IMAGES = 1000
PROBE_RADIOGRAPHS = 40  # test radiographs turned upside down, inverted, sideways and mirrored for the OOD probes


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="fit temperature scaling, operating points and the out-of-distribution warning",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint or a run directory")
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--out", help="write the calibrated checkpoint here instead of rewriting --checkpoint")
    parser.add_argument("--force", action="store_true",
                        help="calibrate on a dataset whose fingerprint differs from the checkpoint's")
    parser.add_argument("--train-images", type=int, default=DEFAULT_TRAIN_IMAGES,
                        help="training images (seeded subsample) for the OOD statistics; 0 = use the val split")
    parser.add_argument("--components", type=int, default=None,
                        help="principal components of the OOD score (default 64, fewer with few images)")
    parser.add_argument("--method", default="temperature+bias", choices=("temperature+bias", "temperature"),
                        help="temperature+bias also corrects the shift class-weighted training puts on every score")
    parser.add_argument("--target-sensitivity", type=float, default=0.9,
                        help="sensitivity of the screening operating point, chosen on the val split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training subsample")
    parser.add_argument("--no-measure", dest="measure", action="store_false",
                        help="skip measuring the OOD warning on the test split and on probe images "
                             "(photos, documents, noise, altered radiographs) for the model card")
    parser.add_argument("--json", dest="json_out", help="write the summary as JSON here")
    parser.set_defaults(func=run)


def check_dataset(meta: dict, manifest, data: str, *, force: bool) -> None:
    """Refuse a dataset the checkpoint was not trained on, unless forced.

    Raises:
        DatasetError: fingerprints differ (or the checkpoint records none) and not ``force``.
    """
    from fracture.errors import DatasetError

    expected = meta.get("dataset_fingerprint")
    actual = manifest.fingerprint()
    if expected == actual:
        return
    if expected is None:
        problem = f"the checkpoint records no dataset fingerprint, so {data} cannot be checked against its training data"
    else:
        problem = (f"{data} has dataset fingerprint {actual[:12]}, the checkpoint was trained on {expected[:12]} "
                   "(another dataset, copy or split)")
    if not force:
        raise DatasetError(f"{problem}; calibrate on the checkpoint's own dataset, or pass --force "
                           "(its val split may then hold training images, and the fit will be optimistic)")
    log.warning("%s; going on because of --force", problem)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fracture.util.allocator import keep_freed_memory
    from fracture.cache import ImageCache
    from fracture.checkpoints.format import load_checkpoint, read_checkpoint_meta
    from fracture.checkpoints.meta import split_seed
    from fracture.data import open_dataset
    from fracture.errors import DatasetError
    from fracture.assess.calibration import SplitSource, fit_calibration
    from fracture.serve.inference import body_part_indices, resolve_device
    from fracture.settings import get_settings

    keep_freed_memory()
    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "best.safetensors"
    if args.train_images < 0:
        raise ValueError(f"--train-images must be 0 or more, got {args.train_images}")
    meta = read_checkpoint_meta(checkpoint)
    manifest = open_dataset(args.data, seed=split_seed(meta))
    check_dataset(meta, manifest, args.data, force=args.force)
    frame = manifest.frame.reset_index(drop=True)
    splits = frame["split"].to_numpy()
    val_rows = np.flatnonzero(splits == "val")
    if len(val_rows) == 0:
        raise DatasetError(f"{args.data}: the val split is empty; calibration is fitted on validation images")
    train_rows = np.flatnonzero(splits == "train")
    if args.train_images and len(train_rows) > args.train_images:
        train_rows = np.sort(np.random.default_rng(args.seed).choice(train_rows, args.train_images, replace=False))
    elif not args.train_images:
        train_rows = train_rows[:0]
    # The whole dataset, as the trainer caches it, so a machine that trained the model reuses its cache.
    cache = ImageCache.open_or_build(frame["path"].tolist(), meta["preprocess"], get_settings().cache_dir / "images")
    valid = np.asarray(cache.valid_mask, dtype=bool)
    skipped = int((~valid[val_rows]).sum() + (~valid[train_rows]).sum())
    if skipped:
        log.warning("%d image(s) could not be read and are left out: %s", skipped,
                    "; ".join(f.message for f in cache.failures[:5]))
    val_rows, train_rows = val_rows[valid[val_rows]], train_rows[valid[train_rows]]
    test_rows = np.flatnonzero((splits == "test") & valid) if args.measure else np.zeros(0, dtype=np.int64)
    parts = list(meta.get("body_parts") or [])

    def source(rows: np.ndarray, labels: bool) -> SplitSource:
        body = body_part_indices(frame["body_part"].iloc[rows].tolist(), parts) if meta.get("multitask") else None
        return SplitSource(fetch=lambda p: cache.get_batch(rows[p]), n=len(rows),
                           labels=frame["label"].to_numpy()[rows] if labels else None, body_parts=body)

    device = resolve_device(args.device)
    model, meta = load_checkpoint(checkpoint, map_location=device)
    target = checkpoint
    if args.out:
        target = Path(args.out)
        if target.resolve() != checkpoint.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint, target)  # a failed fit leaves a plain copy, never a half-written file
    last = {}

    def progress(what: str, done: int, total: int) -> None:
        if done == total or done - last.get(what, 0) >= 256:
            last[what] = done
            log.info("%s: %d/%d", what, done, total)

    probes = None
    if args.measure:
        from fracture.data import load_image
        from fracture.gate.probes import probe_sets

        picked = test_rows if len(test_rows) else val_rows
        picked = np.sort(np.random.default_rng(args.seed).choice(picked, min(PROBE_RADIOGRAPHS, len(picked)), replace=False))
        probes = probe_sets({Path(frame["path"].iloc[i]).name: load_image(frame["path"].iloc[i]) for i in picked})
    summary = fit_calibration(
        target, model, meta, val=source(val_rows, True), train=source(train_rows, False) if len(train_rows) else None,
        device=device, target_sensitivity=args.target_sensitivity, method=args.method, ood_components=args.components,
        batch_size=args.batch_size, progress=progress,
        test=source(test_rows, False) if len(test_rows) else None, probes=probes,
    )
    summary["data"] = str(args.data)
    summary["dataset_fingerprint"] = manifest.fingerprint()
    print(f"calibrated {target}")
    print(f"  {summary['method']}: T {summary['temperature']:.3f}, bias {summary['bias']:+.3f}: val ECE "
          f"{summary['val_ece_uncalibrated']:.3f} -> {summary['val_ece']:.3f}, Brier "
          f"{summary['val_brier_uncalibrated']:.4f} -> {summary['val_brier']:.4f} (temperature alone: T "
          f"{summary['temperature_alone']['temperature']:.3f}, val ECE {summary['temperature_alone']['val_ece']:.3f})")
    for point in summary["operating_points"]:
        print(f"  operating point {point['name']}: threshold {point['threshold']:.3f} (uncalibrated scale), "
              f"val sensitivity {_pct(point['sensitivity'])}, specificity {_pct(point['specificity'])}, "
              f"PPV {_pct(point['ppv'])}, NPV {_pct(point['npv'])}")
    ood = summary["ood"]
    print(f"  OOD: {ood['method']} with {ood['components']} components fitted on {ood['n_fit']} {ood['fitted_on']} "
          f"images; threshold {ood['threshold']:.3f} flags {_pct(ood['val_flag_rate'])} of the val split")
    measured = ood.get("measured") or {}
    if "test_flag_rate" in measured:
        print(f"  OOD flags {_pct(measured['test_flag_rate'])} of the test split ({measured['n_test']} images)")
    for group, result in (measured.get("probes") or {}).items():
        print(f"  OOD probes, {group}: {result['flagged']}/{result['n']} flagged")
    gate = summary.get("radiograph_gate")
    if gate:
        print(f"  radiograph gate (level a): logistic regression on {gate['n_radiographs']} train radiographs vs "
              f"{gate['n_other']} generated non-radiographs; threshold {gate['threshold']:.3f} refuses "
              f"{_pct(gate['val_gated_rate'])} of the val split")
        gate_measured = gate.get("measured") or {}
        if gate_measured.get("test"):
            test = gate_measured["test"]
            print(f"  radiograph gate refuses {test['gated']}/{test['n']} of the test split ({_pct(test['rate'])})")
        for group, result in (gate_measured.get("probes") or {}).items():
            files = (f"; as colour files {result['gated_as_files']}/{result['n']}" if "gated_as_files" in result
                     else "")
            print(f"  radiograph gate, held-out {group}: {result['gated']}/{result['n']} refused{files}")
    else:
        print("  radiograph gate: not fitted (see the warning above); the DICOM and colour checks still apply")
    print("  test-split figures: python -m fracture evaluate --checkpoint "
          f"{target} --data {args.data} --split test --write-meta")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=json_default))
        print(f"wrote {args.json_out}")
    return 0


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
