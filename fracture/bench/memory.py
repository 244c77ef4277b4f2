"""Peak memory of hostile images: ``python -m fracture.bench.memory [--cam] [--keep DIR] [--json PATH]``.

Tiny files can decode to gigabytes (a 10 KB 1-bit PNG of 64 megapixels, a
600 KB 16-bit PNG of the same size). This benchmark writes such files to a
temporary folder and prints the peak resident memory (max RSS) of

* ``loader``: a bare Python process that only decodes the file the way
  ``predict`` does (``decode_image`` with the ``FRACTURE_MAX_IMAGE_MEGAPIXELS``
  budget), so the image's own cost is visible;
* ``predict``: the full ``python -m fracture predict FILE`` (``--cam`` adds a
  Grad-CAM overlay, as the Predict page draws), against a ``baseline`` row of
  a small 512x410 image, since importing torch and loading the model is most
  of a predict process;
* ``upload``: ``read_uploads`` of all hostile files at once, as the Predict
  page receives them (the per-upload budget applies).

Peak RSS comes from ``/usr/bin/time -v`` when it exists, else from the
child's own ``rusage`` (``os.wait4``). Numbers are printed, never asserted:
they depend on the torch build (a CUDA wheel maps ~0.6 GB of libraries at
import) and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TIME_BIN = "/usr/bin/time"

LOADER_SNIPPET = (
    "import sys\n"
    "from fracture.data.imageio import decode_image\n"
    "from fracture.errors import ImageLoadError\n"
    "from fracture.settings import get_settings\n"
    "try:\n"
    "    d = decode_image(sys.argv[1], pixel_budget=get_settings().max_image_pixels)\n"
    "    print(f'{d.width}x{d.height} -> {d.image.shape[1]}x{d.image.shape[0]}')\n"
    "except ImageLoadError as exc:\n"
    "    print(f'refused: {exc.reason}')\n"
)

UPLOAD_SNIPPET = (
    "import sys\n"
    "from pathlib import Path\n"
    "from fracture.ui.uploads import read_uploads\n"
    "files = [(Path(p).name, Path(p).read_bytes()) for p in sys.argv[1:]]\n"
    "loaded, problems = read_uploads(files, max_mb=50)\n"
    "print(f'{len(loaded)} decoded ({sum(i.image.size for i in loaded) / 1e6:.1f} MP kept), '\n"
    "      f'{len(problems)} refused ({\", \".join(sorted({p.reason for p in problems}))})')\n"
)


def make_hostile_images(folder: Path) -> dict[str, Path]:
    """Write the hostile files (and a small baseline image); returns {label: path}."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    rng = np.random.default_rng(0)

    small = (np.add.outer(np.arange(512), np.arange(410)) % 256).astype(np.uint8)
    files["baseline 512x410 8-bit PNG"] = _save(Image.fromarray(small), folder / "baseline.png")

    side = 8000  # 64 megapixels: the loader's MAX_PIXELS
    ramp = ((np.arange(side, dtype=np.uint32)[None, :] * 7 + np.arange(side, dtype=np.uint32)[:, None] * 3)
            % 65536).astype(np.uint16)
    files["64 MP 16-bit PNG"] = _save(Image.fromarray(ramp), folder / "deep16.png", compress_level=9)
    del ramp

    bits = np.zeros((side - 1, side), dtype=bool)  # just under the pixel limit
    bits[::7] = True
    files["64 MP 1-bit PNG"] = _save(Image.fromarray(bits), folder / "bilevel.png", optimize=True)
    del bits

    rgba = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    files["64 MP RGBA PNG (transparent)"] = _save(rgba, folder / "alpha.png", compress_level=9)
    del rgba

    jpeg_side = 7900
    noise = rng.integers(0, 256, (jpeg_side // 16, jpeg_side // 16), dtype=np.uint8)
    smooth = Image.fromarray(noise).resize((jpeg_side, jpeg_side), Image.Resampling.BILINEAR)
    files["62 MP JPEG (complete)"] = _save(smooth, folder / "big.jpg", quality=85)
    del smooth

    data = files["62 MP JPEG (complete)"].read_bytes()
    files["62 MP JPEG cut at 40% + EOI"] = _write(folder / "cut.jpg", data[: int(len(data) * 0.4)] + b"\xff\xd9")
    return files


def _save(image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def measure(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> dict:
    """Run ``argv``; return its peak RSS (MB), wall time, exit code and last output lines.

    With ``/usr/bin/time -v`` the peak is what it reports; without it, the
    child is reaped with ``os.wait4``, whose ``rusage`` is that child's alone.
    """
    use_time = os.path.exists(TIME_BIN)
    command = [TIME_BIN, "-v", *argv] if use_time else argv
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=name, f=fh: streams.__setitem__(n, f.read()), daemon=True)
               for name, fh in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    wall = time.perf_counter() - start
    out = streams.get("out", b"").decode(errors="replace")
    err = streams.get("err", b"").decode(errors="replace")
    peak_kb: int | None = usage.ru_maxrss
    if use_time:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        peak_kb = int(found.group(1)) if found else None
        err = err.split("\tCommand being timed:")[0]  # time's report follows the program's own stderr
        err = "\n".join(line for line in err.splitlines() if not line.startswith("Command exited"))
    lines = [line.strip() for line in out.splitlines() + err.splitlines() if line.strip()]
    return {"peak_rss_mb": None if peak_kb is None else peak_kb / 1024, "wall_s": wall,
            "returncode": proc.returncode, "output": " | ".join(lines)[-160:]}


def run(files: dict[str, Path], *, cam: bool) -> list[dict]:
    """Measure every file (loader, predict [, predict --cam]) and one upload of all hostile files."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    python = sys.executable
    rows = []
    for label, path in files.items():
        size_kb = path.stat().st_size / 1024
        loader = measure([python, "-c", LOADER_SNIPPET, str(path)], env=env)
        rows.append({"image": label, "file_kb": size_kb, "run": "loader", **loader})
        _print_row(rows[-1])
        predict = measure([python, "-m", "fracture", "predict", str(path)], env=env)
        rows.append({"image": label, "file_kb": size_kb, "run": "predict", **predict})
        _print_row(rows[-1])
        if cam:
            with tempfile.TemporaryDirectory() as cam_dir:
                predict_cam = measure([python, "-m", "fracture", "predict", str(path), "--cam-out", cam_dir], env=env)
            rows.append({"image": label, "file_kb": size_kb, "run": "predict --cam", **predict_cam})
            _print_row(rows[-1])
    hostile = [p for label, p in files.items() if not label.startswith("baseline")]
    upload = measure([python, "-c", UPLOAD_SNIPPET, *map(str, hostile)], env=env)
    rows.append({"image": f"upload of the {len(hostile)} hostile files",
                 "file_kb": sum(p.stat().st_size for p in hostile) / 1024, "run": "upload", **upload})
    _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    peak = "?" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
    print(f"{row['image']:34}{row['file_kb']:>10.0f}  {row['run']:14}{peak:>9}{row['wall_s']:>8.1f}  "
          f"rc={row['returncode']}  {row['output']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fracture.bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--cam", action="store_true", help="also run predict with a Grad-CAM overlay")
    parser.add_argument("--keep", type=Path, default=None, help="write the hostile files here and keep them")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="fracture-memory-"))
    try:
        print(f"writing hostile images to {folder} ...", flush=True)
        files = make_hostile_images(folder)
        how = f"{TIME_BIN} -v" if os.path.exists(TIME_BIN) else "os.wait4 rusage of each child"
        print(f"peak RSS by {how}; python {sys.executable}")
        print(f"{'image':34}{'file KB':>10}  {'run':14}{'peak MB':>9}{'wall s':>8}")
        rows = run(files, cam=args.cam)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2))
            print(args.json)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
