"""Benchmarks of the data path: ``python -m fracture.bench`` (``make bench``).

Each benchmark times a figure and its floor in the same run (interleaved,
warm-up excluded, medians over repeats) and reports their ratio:

- ``cache_build``: first-time image-cache build vs bare decoding (:mod:`.cache_build`);
- ``train_loop``: the trainer's whole loop vs the model step alone (:mod:`.train_loop`);
- ``input_pipeline``: cache read + augmentation vs the model step (:mod:`.pipeline`);
- ``frozen_epoch``: a frozen-mode epoch on cached features (:mod:`.frozen`);
- ``predict``: one-image prediction vs a bare forward, Grad-CAM vs none (:mod:`.predict_latency`);
- ``cuda_train``: EfficientNet-B0 with bf16 on CUDA, skipped without a GPU (:mod:`.cuda`).

The data layer (dataset scan, image loading) has its own benchmark,
``python -m fracture.bench.data_bench``, on the same timing helpers (:mod:`.timing`).

:func:`run_suite` runs them all and writes one JSON file whose top level holds
``train_loop_vs_step``, ``predict_vs_forward``, ``gradcam_vs_predict`` and
``cache_build_vs_decode``.
"""
from __future__ import annotations

from fracture.bench.suite import FULL, HEADLINE_RATIOS, QUICK, BenchSettings, format_table, run_suite

__all__ = ["FULL", "HEADLINE_RATIOS", "QUICK", "BenchSettings", "format_table", "run_suite"]
