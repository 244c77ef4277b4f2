"""``cli_predict``: one cold ``python -m fracture predict IMAGE --json`` per backend, wall time and peak RSS.

Why: a person (or a script) predicting one image pays for the whole process:
interpreter, imports, model load, one forward. The onnxruntime path should not
import torch at all (goal: <= 400 MB peak and <= 2 s on the reference CPU).
Each run is a fresh process; the ONNX export is made once beforehand (it is
cached per checkpoint, as in real use), so "cold" means a new process, not a
new export. Peak RSS is the child's own ``VmHWM`` (printed by a wrapper; ``ru_maxrss``
would carry the parent's peak across ``exec``).

``python -m fracture.bench.cli_predict [--checkpoint C] [--image I] [--repeats N]`` runs this case alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fracture.bench.timing import children_cpu_s

GOAL_RSS_MB = 400.0
GOAL_SECONDS = 2.0
BACKENDS = ("torch", "onnxruntime")

# VmHWM (peak RSS of this process image): ru_maxrss would carry the parent's peak across exec.
_WRAPPER = (
    "import re, sys\n"
    "from fracture.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "print('BENCH_RSS_KB', peak, 'TORCH', 'torch' in sys.modules, file=sys.stderr)\n"
    "raise SystemExit(rc)\n"
)


def _one(checkpoint: Path, image: Path, backend: str, env: dict[str, str]) -> dict[str, Any]:
    args = ["predict", str(image), "--checkpoint", str(checkpoint), "--json", "--backend", backend]
    started, cpu_before = time.perf_counter(), children_cpu_s()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *args], env=env, capture_output=True, text=True,
                          timeout=600)
    seconds, cpu_seconds = time.perf_counter() - started, children_cpu_s() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"predict --backend {backend} failed: {done.stderr[-500:]}")
    tail = [line for line in done.stderr.splitlines() if line.startswith("BENCH_RSS_KB")][-1].split()
    probability = json.loads(done.stdout)["images"][0]["probability"]
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": int(tail[1]) / 1024, "torch_imported": tail[3] == "True",
            "probability": probability}


def bench_cli_predict(checkpoint: str | Path, image: str | Path, cache_dir: str | Path, *,
                      repeats: int = 1) -> dict[str, Any]:
    """Median wall time and peak RSS of ``repeats`` fresh ``predict`` processes per backend."""
    from fracture.serve.scorer import Scorer

    checkpoint, image = Path(checkpoint), Path(image)
    env = {**os.environ, "FRACTURE_CACHE_DIR": str(cache_dir)}
    previous = os.environ.get("FRACTURE_CACHE_DIR")
    os.environ["FRACTURE_CACHE_DIR"] = str(cache_dir)
    try:
        Scorer.from_checkpoint(checkpoint, backend="onnx")  # the export, once (cached as in real use)
    finally:
        if previous is None:
            os.environ.pop("FRACTURE_CACHE_DIR", None)
        else:
            os.environ["FRACTURE_CACHE_DIR"] = previous
    out: dict[str, Any] = {"checkpoint": checkpoint.name, "image": image.name, "repeats": repeats}
    for backend in BACKENDS:
        runs = [_one(checkpoint, image, backend, env) for _ in range(max(1, repeats))]
        runs.sort(key=lambda r: r["seconds"])
        out[backend] = {**runs[len(runs) // 2], "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    onnx = out["onnxruntime"]
    out["goal"] = f"onnxruntime <= {GOAL_RSS_MB:.0f} MB and <= {GOAL_SECONDS:.0f} s"
    out["goal_met"] = bool(onnx["max_peak_rss_mb"] <= GOAL_RSS_MB and onnx["seconds"] <= GOAL_SECONDS
                           and not onnx["torch_imported"])
    out["ratio"] = onnx["seconds"] / out["torch"]["seconds"]
    out["max_abs_prob_diff"] = abs(onnx["probability"] - out["torch"]["probability"])
    return out


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from fracture.serve.predictor import default_checkpoint

    parser = argparse.ArgumentParser(prog="python -m fracture.bench.cli_predict", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped default model")
    parser.add_argument("--image", default=None, help="default: the first gallery image")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint or default_checkpoint())
    image = Path(args.image or sorted((Path(__file__).resolve().parents[1] / "gallery" / "images").glob("*.jpg"))[0])
    with tempfile.TemporaryDirectory(prefix="fracture-bench-cli-") as cache:
        result = bench_cli_predict(checkpoint, image, cache, repeats=args.repeats)
    for backend in BACKENDS:
        r = result[backend]
        print(f"predict --backend {backend:<11} {r['seconds']:6.2f} s wall, {r['cpu_seconds']:5.2f} s CPU  peak RSS {r['max_peak_rss_mb']:7.1f} MB  "
              f"torch imported: {r['torch_imported']}  p={r['probability']:.6f}")
    print(f"goal ({result['goal']}): {'met' if result['goal_met'] else 'not met'}; "
          f"|p difference| {result['max_abs_prob_diff']:.1e}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
