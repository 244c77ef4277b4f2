"""The built-in demo dataset, generated once per machine on the first start.

Several browser sessions (or several server processes) may open the app at the
same moment; a file lock makes exactly one of them generate the set while the
others wait, and a flag file written last marks a complete set, so a start
that was killed half-way is redone instead of being read as a dataset.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from fracture.data.demo import GENERATOR_VERSION, read_demo_marker
from fracture.util.files import exclusive_lock

log = logging.getLogger(__name__)

#: Written after generation finished; its absence means "generate (again)".
READY_FLAG = ".fracture-demo-complete"


def demo_studies() -> int:
    """How many studies the demo set gets (``FRACTURE_DEMO_STUDIES``, default
    ``fracture.data.demo.DEFAULT_STUDIES``).

    Parsed by :mod:`fracture.settings` like every limit: a bad value is a ConfigError naming the
    variable, shown once by the app, which then runs on the default. Tests set a small number so
    that the whole app starts in seconds.
    """
    from fracture.settings import get_settings

    return get_settings().demo_studies


def demo_ready(demo_dir: str | Path) -> bool:
    """True when a complete demo set of the current generator lies in ``demo_dir``.

    A set drawn by an older generator (``DEMO.txt``'s ``generator_version``) is
    redrawn: the quick training recipe is tuned to the current one.
    """
    if not (Path(demo_dir) / READY_FLAG).is_file():
        return False
    marker = read_demo_marker(demo_dir) or {}
    return marker.get("generator_version") == GENERATOR_VERSION


def ensure_demo_dataset(demo_dir: str | Path, *, studies: int | None = None, seed: int = 0) -> Path:
    """Generate the demo dataset into ``demo_dir`` unless a complete one is there.

    Args:
        demo_dir: where the set lives (``Settings.demo_dir``).
        studies: number of studies (default :func:`demo_studies`).
        seed: generator seed; the same seed gives the same images.

    Returns:
        ``demo_dir``, holding a complete dataset that ``open_dataset`` reads.
    """
    from fracture.data.demo import make_demo_dataset

    demo_dir = Path(demo_dir)
    if demo_ready(demo_dir):
        return demo_dir
    demo_dir.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(demo_dir.parent / f".{demo_dir.name}.lock"):  # another session may be generating now
        if demo_ready(demo_dir):
            return demo_dir
        studies = demo_studies() if studies is None else studies
        partial = demo_dir.with_name(f".{demo_dir.name}.partial")
        if partial.exists():
            shutil.rmtree(partial)  # left by a start that was killed half-way
        log.info("generating the demo dataset (%d studies) in %s", studies, demo_dir)
        make_demo_dataset(partial, seed=seed, studies=studies)
        (partial / READY_FLAG).write_text(f"studies={studies} seed={seed}\n")
        if demo_dir.exists():
            shutil.rmtree(demo_dir)  # an incomplete set without the flag
        os.replace(partial, demo_dir)
    return demo_dir


_builds: dict[str, threading.Thread] = {}
_builds_lock = threading.Lock()


def start_demo_build(demo_dir: str | Path, *, studies: int | None = None) -> bool:
    """Generate the demo set in a background thread unless it is ready or already being built.

    Why: Home and the real-X-ray gallery need no demo set, so the first page a
    person opens must not wait ~15 s for it; a page that reads the dataset
    calls :func:`ensure_demo_dataset`, which waits for this build (file lock).

    Returns:
        True while a build is running (or was just started), False when the set is ready.
    """
    if demo_ready(demo_dir):
        return False
    key = str(Path(demo_dir).resolve())
    with _builds_lock:
        thread = _builds.get(key)
        if thread is None or not thread.is_alive():
            def build() -> None:
                try:
                    ensure_demo_dataset(demo_dir, studies=studies)
                except Exception:  # noqa: BLE001 - a page that needs the set retries and shows the error
                    log.exception("background demo generation in %s failed", demo_dir)

            thread = threading.Thread(target=build, name="fracture-demo-build", daemon=True)
            _builds[key] = thread
            thread.start()
    return True
