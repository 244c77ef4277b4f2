"""The benchmark suite: run every benchmark, print a table, write the figures as JSON.

Order matters for honesty: the cache-build benchmark runs first, into fresh
cache folders under a temporary ``FRACTURE_CACHE_DIR``, so every build it
times is really first-time; the training benchmarks then share one image
cache (as runs do), the frozen benchmark computes its features once (cold)
and times epochs with them loaded from disk (warm).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from fracture.util.jsonio import atomic_write_json

logger = logging.getLogger(__name__)

RESULT_VERSION = 1
#: Top-level ratios every result file has (numbers, not nested).
HEADLINE_RATIOS = ("train_loop_vs_step", "predict_vs_forward", "gradcam_vs_predict", "cache_build_vs_decode")


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of one suite run (see :data:`FULL` and :data:`QUICK`)."""

    quick: bool
    repeats: int
    max_images: int
    demo_studies: int
    demo_size_range: tuple[int, int]
    cache_workers: int | None
    model: str
    image_size: int
    batch_size: int
    train_steps: int
    pipeline_batches: int
    frozen_epoch_images: int
    predict_iters: int
    cam_iters: int
    cuda_model: str
    cuda_image_size: int
    cuda_batch_size: int
    cuda_steps: int
    cuda_pipeline_batches: int
    torch_threads: int | None = None  # None: torch's default (one per core)


#: The issue's configuration: EfficientNet-Lite0 at 224 px on the CPU, B0 on CUDA.
FULL = BenchSettings(
    quick=False, repeats=3, max_images=320, demo_studies=130, demo_size_range=(200, 512),
    cache_workers=None, model="efficientnet_lite0", image_size=224, batch_size=32, train_steps=6,
    pipeline_batches=4, frozen_epoch_images=2880, predict_iters=30, cam_iters=8,
    cuda_model="efficientnet_b0", cuda_image_size=224, cuda_batch_size=256, cuda_steps=20,
    cuda_pipeline_batches=20,
)
#: Tiny sizes for the smoke test: every code path, a few seconds.
QUICK = BenchSettings(
    quick=True, repeats=2, max_images=40, demo_studies=16, demo_size_range=(64, 128),
    cache_workers=0, model="small_cnn", image_size=64, batch_size=8, train_steps=3,
    pipeline_batches=3, frozen_epoch_images=64, predict_iters=10, cam_iters=3,
    cuda_model="small_cnn", cuda_image_size=64, cuda_batch_size=16, cuda_steps=3,
    cuda_pipeline_batches=3,
    # Tiny models are all synchronisation with several threads, and on a busy
    # machine a descheduled OpenMP thread stalls every op of the others.
    torch_threads=1,
)


def default_output_path() -> Path:
    """``$FRACTURE_HOME/bench/bench-<UTC time>.json`` (outside the source tree)."""
    from fracture.settings import get_settings

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return get_settings().home / "bench" / f"bench-{stamp}.json"


@contextmanager
def _temporary_env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _environment() -> dict[str, Any]:
    import numpy as np
    import torch

    from fracture.util.allocator import is_tuned
    from fracture.util.workers import usable_cpus

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "allocator_tuned": is_tuned(),
    }
    try:
        import cv2

        env["opencv"] = cv2.__version__
        env["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        pass
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def _finite(value: Any) -> Any:
    """NaN and infinities become None so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_suite(
    settings: BenchSettings,
    *,
    data: str | None = None,
    out: Path | None = None,
    work_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run every benchmark and write the results.

    Args:
        settings: :data:`FULL`, :data:`QUICK` or a variant.
        data: dataset root, ``"demo"``, or None (FracAtlas beside the checkout, else demo).
        out: the JSON file to write (default :func:`default_output_path`).
        work_dir: scratch folder (default: a new temporary folder, removed afterwards).
        progress: called with a line before each benchmark.

    Returns:
        ``(results, path of the JSON file)``.

    Raises:
        FractureError: unreadable data or an impossible configuration.
    """
    import torch

    say = progress or (lambda line: None)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_output_path()
    threads = torch.get_num_threads()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            results = _run_in(settings, data, Path(work_dir), say)
        else:
            with tempfile.TemporaryDirectory(prefix="fracture-bench-") as tmp:
                results = _run_in(settings, data, Path(tmp), say)
    finally:
        torch.set_num_threads(threads)
    results["seconds"] = time.perf_counter() - started
    results = _finite(results)
    atomic_write_json(out, results)
    return results, out


def _run_in(settings: BenchSettings, data: str | None, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from fracture.bench.cache_build import bench_cache_build
    from fracture.bench.cuda import bench_cuda_training, cuda_skip_reason
    from fracture.bench.data import prepare_bench_data
    from fracture.bench.frozen import bench_frozen_epoch
    from fracture.bench.harness import build_trainer, warm_image_cache
    from fracture.bench.pipeline import bench_input_pipeline
    from fracture.bench.backends import bench_compare_eval, bench_ort_vs_torch, compare_target
    from fracture.bench.predict_latency import bench_predict, make_bench_checkpoint
    from fracture.bench.train_loop import bench_train_loop
    from fracture.data.imageio import load_image
    from fracture.preprocess.pipeline import Pipeline
    from fracture.recipes.config import TrainConfig

    s = settings
    cache_dir = work / "cache"
    phase_seconds: dict[str, float] = {}
    phase: list[Any] = [None, time.perf_counter()]

    def start(name: str, line: str) -> None:
        """Announce a phase and close the previous one's clock."""
        now = time.perf_counter()
        if phase[0] is not None:
            phase_seconds[phase[0]] = round(now - phase[1], 3)
        phase[:] = [name, now]
        say(line)

    with _temporary_env("FRACTURE_CACHE_DIR", str(cache_dir)):
        start("data", "preparing data")
        bench_data = prepare_bench_data(
            work, data=data, max_images=s.max_images, demo_studies=s.demo_studies,
            demo_size_range=s.demo_size_range,
        )
        spec = Pipeline.from_spec([]).with_resize(s.image_size, "letterbox").to_spec()
        benchmarks: dict[str, Any] = {}

        start("cache_build", f"cache build vs decode ({len(bench_data.paths)} images, {s.repeats} repeats)")
        benchmarks["cache_build"] = bench_cache_build(
            bench_data.paths, spec, work, repeats=s.repeats, workers=s.cache_workers
        )

        config = TrainConfig(
            data=str(bench_data.root), model=s.model, pretrained=False, image_size=s.image_size,
            batch_size=s.batch_size, epochs=1, scheduler="none", balancing="class_weights",
            cache_dir=str(cache_dir), device="cpu", seed=0,
        )
        start("train_loop", f"training loop vs model step ({s.model}, {s.image_size} px, batch {s.batch_size}, cpu)")
        warm_image_cache(config, workers=s.cache_workers)
        trainer = build_trainer(config, work / "finetune-run")
        if trainer.data.cache.built:  # still a valid benchmark, only slower to set up
            logger.warning("the trainer built its own image cache; warm_image_cache no longer matches it")
        benchmarks["train_loop"] = bench_train_loop(trainer, steps=s.train_steps, repeats=s.repeats)
        step_rate = benchmarks["train_loop"]["step"]["items_per_s"]

        start("input_pipeline", "input pipeline vs model step")
        benchmarks["input_pipeline"] = bench_input_pipeline(
            trainer, batches=s.pipeline_batches, repeats=s.repeats, step_images_per_s=step_rate
        )
        del trainer

        start("frozen_epoch", "frozen-mode epoch with a warm feature cache")
        benchmarks["frozen_epoch"] = bench_frozen_epoch(
            _frozen_config(config), work, repeats=s.repeats,
            epoch_images=s.frozen_epoch_images,
        )

        start("predict", f"predict latency ({s.predict_iters} predictions, {s.cam_iters} with Grad-CAM)")
        checkpoint = make_bench_checkpoint(work / "bench-model.safetensors", s.model, s.image_size)
        image = load_image(bench_data.paths[0])
        benchmarks["predict"] = bench_predict(checkpoint, image, iters=s.predict_iters, cam_iters=s.cam_iters)

        backend_paths = bench_data.paths[: max(32, s.max_images // 2)]
        start("ort_vs_torch", f"onnxruntime vs torch ({len(backend_paths)} images, {s.model}, batch {s.batch_size})")
        benchmarks["ort_vs_torch"] = bench_ort_vs_torch(checkpoint, backend_paths, cache_dir, repeats=s.repeats,
                                                        batch_size=s.batch_size)
        from fracture.bench.cli_predict import bench_cli_predict

        start("cli_predict", "cold CLI predict of one image, torch vs onnxruntime (fresh processes)")
        benchmarks["cli_predict"] = bench_cli_predict(checkpoint, bench_data.paths[0], cache_dir,
                                                      repeats=1 if s.quick else s.repeats)
        target, target_root, target_split = compare_target(bench_data, checkpoint)
        start("compare_eval", f"Compare evaluation vs bare forward ({target.name}, {target_split} split)")
        benchmarks["compare_eval"] = bench_compare_eval(target, target_root, target_split, cache_dir,
                                                        repeats=s.repeats)

        reason = cuda_skip_reason()
        if reason is None:
            start("cuda_train", f"CUDA training ({s.cuda_model}, {s.cuda_image_size} px, batch {s.cuda_batch_size}, bf16)")
        else:
            start("cuda_train", f"skipping the CUDA benchmark: {reason}")
        benchmarks["cuda_train"] = bench_cuda_training(
            config, work, model=s.cuda_model, image_size=s.cuda_image_size, batch_size=s.cuda_batch_size,
            steps=s.cuda_steps, repeats=s.repeats, pipeline_batches=s.cuda_pipeline_batches,
        )

    start("done", "writing results")
    cuda = benchmarks["cuda_train"]
    return {
        "suite": "fracture.bench",
        "result_version": RESULT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": s.quick,
        "train_loop_vs_step": benchmarks["train_loop"]["ratio"],
        "predict_vs_forward": benchmarks["predict"]["predict_vs_forward"],
        "gradcam_vs_predict": benchmarks["predict"]["gradcam_vs_predict"],
        "cache_build_vs_decode": benchmarks["cache_build"]["ratio"],
        "pipeline_vs_step": benchmarks["input_pipeline"]["ratio"],
        "frozen_epoch_vs_head_steps": benchmarks["frozen_epoch"]["ratio"],
        "cuda_train_images_per_s": None if cuda["skipped"] else cuda["end_to_end_images_per_s"],
        "cuda_train_loop_vs_step": None if cuda["skipped"] else cuda["ratio"],
        "ort_vs_torch": benchmarks["ort_vs_torch"]["ratio"],
        "cli_predict_ort_vs_torch": benchmarks["cli_predict"]["ratio"],
        "compare_eval_vs_forward": benchmarks["compare_eval"]["ratio"],
        "goals": {
            "train_loop_vs_step": benchmarks["train_loop"]["goal"],
            "predict_vs_forward": benchmarks["predict"]["goal"],
            "cache_build_vs_decode": benchmarks["cache_build"]["goal"],
            "pipeline_vs_step": benchmarks["input_pipeline"]["goal"],
            "cuda_train_images_per_s": cuda.get("goal", "needs CUDA"),
            "compare_eval_vs_forward": benchmarks["compare_eval"]["goal"],
        },
        "environment": _environment(),
        "data": {
            "source": bench_data.source, "origin": str(bench_data.origin), "images": len(bench_data.paths),
        },
        "settings": dataclasses.asdict(s),
        "benchmarks": benchmarks,
        "phase_seconds": phase_seconds,
    }


# ---------------------------------------------------------------- the table


def _rate(summary: dict[str, Any], unit: str = "img/s") -> str:
    return f"{summary['items_per_s']:.1f} {unit} ({summary['median_s']:.3f} s)"


def _status(met: Any) -> str:
    return {True: "ok", False: "MISSED"}.get(met, "-")


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(results: dict[str, Any]) -> str:
    """The results as a fixed-width text table (one row per comparison)."""
    b = results["benchmarks"]
    cb, tl, ip, fe, pr = b["cache_build"], b["train_loop"], b["input_pipeline"], b["frozen_epoch"], b["predict"]
    rows = [
        ("cache build vs bare decode", f"{cb['images']} imgs, {cb['workers']} workers",
         _rate(cb["build"]), _rate(cb["decode"]), _fmt(cb["ratio"]), cb["goal"], _status(cb["goal_met"])),
        ("train loop vs model step", f"{tl['model']} {tl['image_size']}px b{tl['batch_size']} {tl['device']}",
         _rate(tl["loop"]), _rate(tl["step"]), _fmt(tl["ratio"]), tl["goal"], _status(tl["goal_met"])),
        ("input pipeline vs model step", f"serial, no prefetch, {ip['device']}",
         _rate(ip["pipeline"]), f"{_fmt(ip['step_images_per_s'], '.1f')} img/s", _fmt(ip["ratio"]), ip["goal"],
         _status(ip["goal_met"])),
        ("frozen epoch (warm features)", f"{fe['epoch_images']} imgs, heads only",
         f"{fe['epoch']['median_s'] * 1000:.1f} ms/epoch", f"{fe['head_steps']['median_s'] * 1000:.1f} ms",
         _fmt(fe["ratio"]), "-", "-"),
        ("predict vs bare forward", f"{pr['model']} raw {pr['raw_image_shape'][0]}x{pr['raw_image_shape'][1]}",
         f"p50 {pr['predict']['p50_ms']:.1f} / p95 {pr['predict']['p95_ms']:.1f} ms",
         f"p50 {pr['forward']['p50_ms']:.1f} / p95 {pr['forward']['p95_ms']:.1f} ms",
         _fmt(pr["predict_vs_forward"]), pr["goal"], _status(pr["goal_met"])),
        ("predict with Grad-CAM vs without", "",
         f"p50 {pr['predict_with_cam']['p50_ms']:.1f} / p95 {pr['predict_with_cam']['p95_ms']:.1f} ms",
         f"p50 {pr['predict_without_cam']['p50_ms']:.1f} ms", _fmt(pr["gradcam_vs_predict"]), "-", "-"),
    ]
    ov, ce = b["ort_vs_torch"], b["compare_eval"]
    cp_ = b.get("cli_predict")
    if cp_ is not None:
        rows.append(("CLI predict, one image, cold", f"{cp_['checkpoint']}, fresh process",
                     f"{cp_['onnxruntime']['seconds']:.2f} s, {cp_['onnxruntime']['max_peak_rss_mb']:.0f} MB (ort)",
                     f"{cp_['torch']['seconds']:.2f} s, {cp_['torch']['max_peak_rss_mb']:.0f} MB (torch)",
                     _fmt(cp_["ratio"]), cp_["goal"], _status(cp_["goal_met"])))
    rows += [
        ("onnxruntime vs torch (throughput)", f"{ov['model']} {ov['image_size']}px b{ov['batch_size']} "
         f"{ov['threads']} threads", _rate(ov["onnx"]), _rate(ov["torch"]), _fmt(ov["ratio"]), "-", "-"),
        ("Compare evaluation vs bare forward", f"{ce['checkpoint']} {ce['split']} ({ce['images']} imgs, {ce['backend']})",
         f"{ce['evaluate']['median_s']:.1f} s", f"{ce['forward']['median_s']:.1f} s (torch)", _fmt(ce["ratio"]),
         ce["goal"], _status(ce["goal_met"])),
    ]
    cuda = b["cuda_train"]
    if cuda["skipped"]:
        rows.append(("CUDA train loop vs step", "skipped", cuda["reason"], "", "", "", "-"))
    else:
        ct = cuda["train"]
        rows.append((
            "CUDA train loop vs step", f"{ct['model']} {ct['image_size']}px b{ct['batch_size']} {cuda['device_name']}",
            _rate(ct["loop"]), _rate(ct["step"]), _fmt(cuda["ratio"]), cuda["goal"], _status(cuda["goal_met"]),
        ))
        cp = cuda["pipeline"]
        rows.append(("CUDA input pipeline vs step", "serial, GPU augment", _rate(cp["pipeline"]),
                     f"{_fmt(cp['step_images_per_s'], '.1f')} img/s", _fmt(cp["ratio"]), cp["goal"],
                     _status(cp["goal_met"])))
    header = ("benchmark", "setting", "measured (median)", "floor (median)", "ratio", "goal", "")
    table = [header, *rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    env = results["environment"]
    lines.append("")
    lines.append(
        f"{results['data']['images']} {results['data']['source']} images; {results['settings']['repeats']} repeats; "
        f"{env['usable_cpus']} CPUs, torch {env['torch']} with {env['torch_threads']} threads; "
        f"{results.get('seconds', 0):.0f} s"
    )
    return "\n".join(lines)


def print_progress(line: str) -> None:
    """Progress lines go to stderr so stdout holds only the table and the path."""
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def _frozen_config(config):
    """The frozen-mode config: frozen features need pretrained weights (TrainConfig refuses random
    ones), so a model without offline weights is replaced by EfficientNet-Lite0, whose are shipped."""
    from fracture.models import list_models

    offline = {info.name for info in list_models() if info.offline_weights}
    model = config.model if config.model in offline else "efficientnet_lite0"
    return dataclasses.replace(config, model=model, mode="frozen", pretrained=True)
