"""onnxruntime vs torch on the CPU, and Compare's evaluation vs the bare forward pass.

``ort_vs_torch``: images per second of :func:`fracture.serve.onnx_backend.predict_batches`
over those of :func:`fracture.serve.inference.predict_batches` on the same
preprocessed images, the same checkpoint, batch size and thread count (above
1 means onnxruntime is faster).

``compare_eval_vs_forward``: the wall time of what the Compare page runs for
one model -- :func:`fracture.assess.compare.evaluate_checkpoint` (prediction on the
default backend, metrics with bootstrap intervals), predictions not cached --
over the bare torch forward pass of the same images (preprocessed uint8 images
in memory, flip TTA when the checkpoint has it, no decoding or disk reads). Its goal is <= 1.3. The
image cache and the ONNX export are warm (both are made once per dataset or
checkpoint, not per evaluation); the first, cold evaluation is reported beside
it, with the one-time export time.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracture.bench.timing import interleaved, ratio, summarize, time_call

logger = logging.getLogger(__name__)

COMPARE_GOAL = 1.3


def _prepared_images(checkpoint: Path, paths: list[str], cache_root: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The checkpoint's preprocessed uint8 images (from the image cache), readable ones only."""
    from fracture.cache import ImageCache
    from fracture.checkpoints.format import read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)
    cache = ImageCache.open_or_build(paths, meta["preprocess"], cache_root / "images")
    valid = np.flatnonzero(np.asarray(cache.valid_mask, dtype=bool))
    return cache.get_batch(valid), meta


def bench_ort_vs_torch(checkpoint: Path, paths: list[str], cache_root: Path, *, repeats: int,
                       batch_size: int) -> dict[str, Any]:
    """Throughput of both backends' ``predict_batches`` on the same images and threads."""
    from fracture.serve import inference, onnx_backend, onnx_cache
    from fracture.checkpoints.format import load_checkpoint
    from fracture.serve.inference import InputSpec

    images, meta = _prepared_images(checkpoint, paths, cache_root)
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    threads = torch.get_num_threads()
    started = time.perf_counter()
    session = onnx_cache.load_onnx_model(checkpoint, cache_dir=cache_root, threads=threads)
    export_s = time.perf_counter() - started
    spec = InputSpec.from_meta(meta)
    tta = bool(meta.get("tta_hflip"))
    fetch = lambda p: images[p]  # noqa: E731
    cpu = torch.device("cpu")
    outputs: dict[str, np.ndarray] = {}

    def run_torch() -> None:
        outputs["torch"], _ = inference.predict_batches(model, fetch, len(images), spec, device=cpu,
                                                        batch_size=batch_size, tta_hflip=tta)

    def run_onnx() -> None:
        outputs["onnx"], _ = onnx_backend.predict_batches(session, fetch, len(images), spec,
                                                         batch_size=batch_size, tta_hflip=tta)

    samples = interleaved({"torch": run_torch, "onnx": run_onnx}, repeats=repeats, warmup=1)
    torch_s, onnx_s = summarize(samples["torch"], items=len(images)), summarize(samples["onnx"], items=len(images))
    return {
        "model": meta["architecture"], "image_size": int(meta["image_size"]), "tta_hflip": tta,
        "images": len(images), "batch_size": batch_size, "threads": threads,
        "torch": torch_s, "onnx": onnx_s,
        "ratio": ratio(onnx_s["items_per_s"], torch_s["items_per_s"]),
        "ratio_means": "onnxruntime images/s / torch images/s, same images, batch, threads (above 1: onnx faster)",
        "max_abs_prob_diff": float(np.max(np.abs(outputs["torch"] - outputs["onnx"]))) if len(images) else None,
        "onnx_export_s": export_s,
    }


def bench_compare_eval(checkpoint: Path, data_root: Path, split: str, cache_root: Path, *,
                       repeats: int, batch_size: int = 32, n_boot: int = 1000) -> dict[str, Any]:
    """Compare's evaluation of one model on a split vs the bare forward pass of its images.

    ``n_boot``: bootstrap resamples of the AUC interval (Compare's default is 1000).
    """
    from fracture.checkpoints.format import load_checkpoint
    from fracture.assess.compare import evaluate_checkpoint
    from fracture.serve.inference import InputSpec, forward_probs, prepare_batch
    from fracture.serve.onnx_backend import select_backend

    predictions = cache_root / "predictions"

    def evaluate() -> None:
        shutil.rmtree(predictions, ignore_errors=True)  # never a cached prediction
        evaluate_checkpoint(checkpoint, data_root, split, cache_dir=cache_root, n_boot=n_boot)

    cold_s = time_call(evaluate)  # builds the image cache and the ONNX export: the first time ever
    result = evaluate_checkpoint(checkpoint, data_root, split, cache_dir=cache_root, n_boot=0)
    paths = result.predictions["path"].tolist()
    images, meta = _prepared_images(checkpoint, paths, cache_root)
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    spec = InputSpec.from_meta(meta)
    tta = bool(meta.get("tta_hflip"))
    cpu = torch.device("cpu")
    starts = range(0, len(images), batch_size)

    def forward() -> None:
        # uint8 -> normalised tensor per batch (about 1% of a batch's forward): 517 ready float
        # batches at 288 px would hold half a gigabyte on a machine that may not have it.
        with torch.no_grad():
            for i in starts:
                forward_probs(model, prepare_batch(images[i:i + batch_size], spec, cpu), tta_hflip=tta)

    samples = interleaved({"evaluate": evaluate, "forward": forward}, repeats=repeats, warmup=0)
    evaluate_s, forward_s = summarize(samples["evaluate"], items=len(images)), summarize(samples["forward"], items=len(images))
    value = ratio(evaluate_s["median_s"], forward_s["median_s"])
    return {
        "model": meta["architecture"], "checkpoint": checkpoint.name, "image_size": int(meta["image_size"]),
        "tta_hflip": tta, "split": split, "images": len(images), "backend": select_backend(device="cpu"),
        "threads": torch.get_num_threads(),
        "evaluate": evaluate_s, "forward": forward_s,
        "ratio": value,
        "ratio_means": "evaluate_checkpoint wall time (predictions not cached; image cache and ONNX export warm) "
                       "/ bare torch forward of the same images",
        "goal": f"<= {COMPARE_GOAL}", "goal_met": bool(value <= COMPARE_GOAL),
        "first_evaluation_s": cold_s,
        "first_evaluation_means": "the very first evaluation: image cache built and ONNX exported in it",
    }


def compare_target(bench_data, bench_checkpoint: Path) -> tuple[Path, Path, str]:
    """(checkpoint, data root, split): the shipped model on FracAtlas's test split when both are here,
    else the benchmark checkpoint on the benchmark subset."""
    from fracture.serve.predictor import default_checkpoint

    shipped = default_checkpoint()
    if bench_data.source == "fracatlas" and shipped is not None:
        return Path(shipped), Path(bench_data.origin), "test"
    return bench_checkpoint, Path(bench_data.root), "test"
