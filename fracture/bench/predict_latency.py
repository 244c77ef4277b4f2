"""Single-image prediction latency vs a bare forward pass; Grad-CAM vs none.

:meth:`Predictor.predict` starts from a raw uint8 radiograph, so it pays for
the checkpoint's preprocessing and resize, the tensor conversion, the
forward pass and building the result. The floor is the same model's forward
pass on a tensor that is already preprocessed, normalised and on the device.
The checkpoint is written here from an untrained network of the benchmarked
architecture (the timing does not depend on the weights) without flip TTA,
so both sides run one forward pass. With a heatmap, the prediction's own
forward pass yields it (:func:`fracture.explain.forward.forward_with_cam`:
gradients only above the target layer), so ``gradcam_vs_predict`` measures
the partial backward pass, the map and its resize onto the original image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracture.bench.timing import interleaved, percentile, ratio
from fracture.explain.layers import available_layers

GOAL = 1.3  # predict p50 at most 1.3x the bare forward p50
GRADCAM_GOAL = 1.5  # predict with heatmap p50 at most 1.5x predict without (issue 10)
FINE_CAM = ("layercam", "fused")  # what explain-select chose for the shipped v3 model


def make_bench_checkpoint(path: Path, model_name: str, image_size: int, *, in_chans: int = 3) -> Path:
    """Save an untrained ``model_name`` as a complete checkpoint (letterbox resize, no TTA).

    Returns:
        ``path``.
    """
    from fracture.checkpoints.format import save_checkpoint
    from fracture.models.network import model_normalization
    from fracture.models import create_model
    from fracture.preprocess.pipeline import Pipeline

    model = create_model(model_name, pretrained=False, in_chans=in_chans)
    mean, std = model_normalization(model)
    meta = {
        "image_size": image_size,
        "preprocess": Pipeline.from_spec([]).with_resize(image_size, "letterbox").to_spec(),
        "normalization": {"mean": list(mean), "std": list(std)},
        "class_names": ["not fractured", "fractured"],
        "body_parts": [],
        "multitask": False,
        "threshold": 0.5,
        "tta_hflip": False,
        "notes": "untrained weights written by the benchmark (timing only)",
    }
    return save_checkpoint(path, model, meta)


def _latency(samples: list[float]) -> dict[str, Any]:
    ms = [s * 1000.0 for s in samples]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "min_ms": float(min(ms)),
        "samples": len(ms),
    }


def bench_predict(checkpoint: Path, image: np.ndarray, *, iters: int, cam_iters: int) -> dict[str, Any]:
    """Latency of one-image predictions with and without Grad-CAM, and of a bare forward.

    Args:
        checkpoint: a checkpoint file (e.g. from :func:`make_bench_checkpoint`).
        image: a raw uint8 grayscale radiograph as ``load_image`` returns it.
        iters: timed predictions and forwards (interleaved).
        cam_iters: timed predictions with Grad-CAM and without (interleaved).

    Returns:
        p50/p95 latencies (ms), ``predict_vs_forward`` and ``gradcam_vs_predict``.
    """
    from fracture.serve.inference import prepare_batch
    from fracture.serve.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    ready = prepare_batch(predictor.pipeline(image)[None], predictor.input_spec, predictor.device)

    def forward() -> None:
        with torch.no_grad():
            predictor.model(ready)

    def predict() -> None:
        predictor.predict([image], with_cam=False)

    def predict_cam() -> None:
        predictor.predict([image], with_cam=True)

    def predict_cam_fine() -> None:  # the finer layers explain-select tends to choose (backward through more)
        predictor.predict([image], with_cam=True, cam_method=FINE_CAM[0], cam_layer=FINE_CAM[1])

    plain = interleaved({"predict": predict, "forward": forward}, repeats=iters, warmup=3, device=predictor.device)
    cam_runs = {"predict_cam": predict_cam, "predict": predict}
    if FINE_CAM[1] in available_layers(predictor.model):
        cam_runs["predict_cam_fine"] = predict_cam_fine
    cam = interleaved(cam_runs, repeats=cam_iters, warmup=1, device=predictor.device)
    predict_lat, forward_lat = _latency(plain["predict"]), _latency(plain["forward"])
    cam_lat, cam_base = _latency(cam["predict_cam"]), _latency(cam["predict"])
    predict_vs_forward = ratio(predict_lat["p50_ms"], forward_lat["p50_ms"])
    return {
        "model": predictor.meta["architecture"],
        "image_size": int(predictor.meta["image_size"]),
        "raw_image_shape": list(image.shape),
        "device": str(predictor.device),
        "torch_threads": torch.get_num_threads(),
        "predict": predict_lat,
        "forward": forward_lat,
        "predict_vs_forward": predict_vs_forward,
        "predict_vs_forward_means": "Predictor.predict(with_cam=False) p50 on a raw image / bare forward p50",
        "goal": f"<= {GOAL}",
        "goal_met": bool(predict_vs_forward <= GOAL),
        "predict_with_cam": cam_lat,
        "predict_without_cam": cam_base,
        "gradcam_vs_predict": ratio(cam_lat["p50_ms"], cam_base["p50_ms"]),
        "gradcam_vs_predict_means": "Predictor.predict(with_cam=True) p50 / with_cam=False p50",
        "gradcam_layer": predictor.cam_choice.label(),
        "gradcam_goal": f"<= {GRADCAM_GOAL}",
        "gradcam_goal_met": bool(ratio(cam_lat["p50_ms"], cam_base["p50_ms"]) <= GRADCAM_GOAL),
        **_fine_figures(cam, cam_base),
    }


def _fine_figures(cam: dict[str, list[float]], base: dict[str, Any]) -> dict[str, Any]:
    if "predict_cam_fine" not in cam:
        return {}
    fine = _latency(cam["predict_cam_fine"])
    return {
        "predict_with_cam_fine": fine,
        "gradcam_fine_vs_predict": ratio(fine["p50_ms"], base["p50_ms"]),
        "gradcam_fine_means": f"{FINE_CAM[0]} on the {FINE_CAM[1]} layers (stride 16 + last block), "
                              "with heatmap p50 / without p50",
    }
