"""Cached loaders: every expensive call a page makes goes through here.

Streamlit re-runs a page script on every click; these wrappers make the
second run of the same work free. Keys are chosen so that a cache entry goes
stale when its input changes on disk (a folder's or a file's modification
time), and the core modules are imported inside the functions so that opening
the home page or the Dataset Explorer does not import torch.

``st.cache_resource`` holds objects that are shared read-only between sessions
(a scanned manifest, a loaded model); ``st.cache_data`` holds values that are
copied per call (statistics, thumbnails, evaluation tables).
"""
from __future__ import annotations

import hashlib
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import streamlit as st

from fracture.ui.demo import ensure_demo_dataset

if TYPE_CHECKING:
    from fracture.data.manifest import Manifest

THUMBNAIL_SIZE = 256


def path_signature(path: str | Path) -> int:
    """Modification time in ns of a file or folder (0 when missing), for cache keys."""
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def _folder_signature(root: Path) -> str:
    """A cheap fingerprint of a dataset folder: mtimes of the root and its direct entries.

    Label CSVs and split folders sit at the top of every supported layout, so a
    changed dataset changes this without walking 40k files.
    """
    parts = [str(path_signature(root))]
    try:
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            parts.append(f"{entry.name}:{entry.stat().st_mtime_ns}")
    except FileNotFoundError:
        pass
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


@st.cache_resource(show_spinner="Generating the built-in demo dataset (first start only)…")
def demo_dataset_root(demo_dir: str, studies: int) -> str:
    """The demo dataset folder, generated on the first call (see :mod:`fracture.ui.demo`)."""
    return str(ensure_demo_dataset(demo_dir, studies=studies))


@st.cache_data(ttl=60, show_spinner=False)
def found_datasets(roots: tuple[str, ...], demo_dir: str) -> list[Any]:
    """Dataset folders under the allowed roots (the demo folder left out), re-listed once a minute."""
    from fracture.data.discover import find_datasets

    return find_datasets([Path(r) for r in roots], skip=[Path(demo_dir)])


@st.cache_resource(show_spinner="Scanning the dataset…", max_entries=4)
def _open_dataset(root: str, signature: str) -> "Manifest":
    from fracture.data import open_dataset

    return open_dataset(root)


def load_manifest(root: str | Path) -> "Manifest":
    """Scan a dataset root once per change of its top-level files.

    Raises:
        DatasetError: the folder is not a layout the core knows.
    """
    root = Path(root)
    return _open_dataset(str(root), _folder_signature(root))


@st.cache_data(show_spinner="Reading image headers…", max_entries=4)
def load_dataset_stats(root: str, fingerprint: str, _manifest: "Manifest") -> Any:
    """Dataset statistics from image headers (no pixel decoding), once per manifest."""
    from fracture.data.stats import dataset_stats

    return dataset_stats(_manifest)


INTENSITY_SAMPLE = 120


@st.cache_data(show_spinner="Decoding a sample of images for the intensity histogram…", max_entries=4)
def load_intensity_histogram(root: str, fingerprint: str, _manifest: "Manifest",
                             n_sample: int = INTENSITY_SAMPLE) -> Any:
    """Mean grey-level histogram per class over a seeded sample (decodes only that sample)."""
    from fracture.data.stats import intensity_histogram

    return intensity_histogram(_manifest, n_sample=n_sample)


@st.cache_data(max_entries=512, show_spinner=False)
def load_thumbnail(path: str, signature: int, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """A decoded image scaled so its longer side is ``size`` (for galleries).

    Raises:
        ImageLoadError: the file is not a readable image.
    """
    import cv2

    from fracture.data.imageio import load_image

    image = load_image(path)
    scale = size / max(image.shape)
    if scale < 1:
        new = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, new, interpolation=cv2.INTER_AREA)
    return image


@st.cache_data(max_entries=32, show_spinner=False)
def load_full_image(path: str, signature: int) -> np.ndarray:
    """A decoded dataset image at full size (the full-size view, the Preprocessing Lab)."""
    from fracture.data.imageio import load_image

    return load_image(path)


def forget_dataset_caches() -> None:
    """Drop cached scans, statistics and images (after files changed on disk)."""
    for cached in (_open_dataset, load_dataset_stats, load_intensity_histogram, load_thumbnail,
                   load_full_image):
        cached.clear()


def _checkpoint_signature(weights_dir: Path, runs_dir: Path) -> str:
    """Names and mtimes of every checkpoint file: changes when one is added, replaced or removed."""
    parts = []
    for pattern_root, pattern in ((weights_dir, "*.safetensors"), (runs_dir, "*/best.safetensors")):
        if pattern_root.is_dir():
            parts += [f"{p}:{path_signature(p)}" for p in sorted(pattern_root.glob(pattern))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


@st.cache_data(show_spinner=False, max_entries=8)
def _checkpoints(weights_dir: str, runs_dir: str, signature: str) -> list[Any]:
    from fracture.serve.predictor import list_checkpoints

    return list_checkpoints(weights_dir, runs_dir)


def list_checkpoint_entries(weights_dir: str | Path, runs_dir: str | Path) -> list[Any]:
    """Shipped checkpoints and runs' best checkpoints, re-read whenever a file changes."""
    weights_dir, runs_dir = Path(weights_dir), Path(runs_dir)
    return _checkpoints(str(weights_dir), str(runs_dir), _checkpoint_signature(weights_dir, runs_dir))


def refresh_checkpoints() -> None:
    """Forget the checkpoint list (after a promotion or a finished run)."""
    _checkpoints.clear()


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _predictor(path: str, signature: int) -> Any:
    from fracture.serve.predictor import Predictor

    predictor = Predictor.from_checkpoint(path)
    freeze_long_lived("model")  # torch, timm and the model: ~350k objects no collection needs to visit again
    return predictor


_frozen_for: set[str] = set()


def freeze_long_lived(reason: str | None = None) -> bool:
    """Collect garbage, then hide every object alive now from the cyclic collector (``gc.freeze``).

    Why: Streamlit runs a full collection after every script run (``runner.postScriptGC``). With torch
    and timm imported the server holds ~480k objects and each collection took ~0.2 s with the GIL
    held: a class of 30 clicking queued behind one another's collections (the reader study's answers
    took seconds). After the freeze a collection visits only what the runs made since. Objects alive
    now (modules, models, caches) live as long as the server anyway; garbage they later become is
    still freed by reference counting.

    Args:
        reason: freeze once per process for this reason (``"model"``: the first model loaded;
            ``"reader"``: the first reader's page); None freezes now whatever was done before.

    Returns:
        Whether it froze now.
    """
    import gc

    if reason is not None:
        if reason in _frozen_for:
            return False
        _frozen_for.add(reason)
    gc.collect()
    gc.freeze()
    return True


def load_predictor(path: str | Path) -> Any:
    """A :class:`fracture.serve.predictor.Predictor`, loaded once per checkpoint file version.

    Raises:
        CheckpointError: the file is not a valid checkpoint.
    """
    return _predictor(str(path), path_signature(path))


def image_digest(image: np.ndarray) -> str:
    """A short content hash of an array, so cached predictions key on pixels."""
    digest = hashlib.sha1(np.ascontiguousarray(image).tobytes())
    digest.update(str(image.shape).encode())
    return digest.hexdigest()[:16]


@st.cache_resource(show_spinner=False)
def _prediction_cache(max_bytes: int) -> Any:
    """One prediction cache per server, bounded in bytes (``FRACTURE_PREDICTION_CACHE_MB``):
    a prediction holds its images and Grad-CAM maps, so counting entries bounds nothing.
    Single flight: sessions asking for a prediction already being computed wait for it
    (:class:`fracture.ui.shared_results.SharedResults`)."""
    from fracture.ui.shared_results import SharedResults

    return SharedResults(max_bytes)


def shared_predictions() -> Any:
    """This server's shared prediction results, sized by ``FRACTURE_PREDICTION_CACHE_MB``."""
    from fracture.settings import get_settings

    return _prediction_cache(int(get_settings().prediction_cache_mb * 1024 * 1024))


#: Model forwards at once (the CPU's threads serve one forward best) and predictions allowed in line.
MODEL_SLOTS, MODEL_MAX_WAITING = 1, 64
#: Threads a forward of the app may use: all cores but one, so that the pages of everyone else (one
#: core's worth of Python) are never starved by a prediction.
MODEL_THREADS = max(1, (os.cpu_count() or 1) - 1)


@contextmanager
def model_threads(n: int = MODEL_THREADS) -> Iterator[None]:
    """Run the ``with`` body's torch work on at most ``n`` threads (this thread only; restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@st.cache_resource(show_spinner=False)
def model_queue(slots: int = MODEL_SLOTS, max_waiting: int = MODEL_MAX_WAITING) -> Any:
    """The server's one line for model forwards (:class:`fracture.ui.shared_results.ModelQueue`):
    a class's predictions take turns instead of all competing for the CPU at once, so the cheap
    reruns of everyone else (a reader's answer) are not starved."""
    from fracture.ui.shared_results import ModelQueue

    return ModelQueue(slots, max_waiting)


_digests: dict[tuple[str, int, int], str] = {}


def checkpoint_digest(path: str | Path) -> str:
    """The sha256 of a checkpoint file, read once per file version (path, size, mtime); a
    missing file keys on its path (the model load then raises the real error)."""
    from fracture.util.files import file_sha256

    try:
        stat = os.stat(path)
    except OSError:
        return f"missing:{path}"
    version = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _digests.get(version)
    if digest is None:
        digest = file_sha256(path)
        if len(_digests) > 64:
            _digests.clear()
        _digests[version] = digest
    return digest


def prediction_nbytes(prediction: Any) -> int:
    """Memory a :class:`~fracture.serve.predictor.StudyPrediction` holds (its arrays, plus a little)."""
    total = 4096
    for item in prediction.images:
        total += item.image.nbytes + (item.heatmap.nbytes if item.heatmap is not None else 0) + 1024
    return total


def _named(prediction: Any, names: Sequence[str]) -> Any:
    """``prediction`` with its images named ``names`` (a shared result keys on pixels, not names)."""
    import dataclasses

    if [getattr(item, "name", None) for item in prediction.images] == list(names) \
            or not dataclasses.is_dataclass(prediction):
        return prediction
    images = [dataclasses.replace(item, name=name) for item, name in zip(prediction.images, names)]
    return dataclasses.replace(prediction, images=images)


def predict_study(
    checkpoint: str | Path,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    body_part: str | None = None,
    extra_steps: list[dict[str, Any]] | None = None,
    with_cam: bool = True,
    cam_method: str | None = None,
    sources: Sequence[Any] | None = None,
) -> Any:
    """Predict one study with the checkpoint's predictor, shared by every session of the server.

    Keyed by the checkpoint's digest, the images' pixel digests and the options (heatmap method,
    body part, extra steps, what the files said), not by the images' names: fifteen students
    predicting the same gallery X-ray (or a reader's reveal of it) run the model once, and those
    who ask while it runs wait for that result. The model runs in :func:`model_queue`'s turn.

    ``sources``: per image what its file said (``LoadedUpload.source``: DICOM modality,
    colour, bit depth) for the radiograph gate; None for gallery and dataset samples.

    ``cam_method`` None uses the heatmap stored in the checkpoint (explain-select).

    The result is shared between sessions, so its arrays are made read-only.

    Returns:
        A :class:`fracture.serve.predictor.StudyPrediction`.

    Raises:
        ModelBusyError: too many predictions are waiting for the model on this server.
        FractureError: a bad preprocessing step, or a model that cannot run.
    """
    path, signature = str(checkpoint), path_signature(checkpoint)
    key = prediction_key(path, images, body_part=body_part, extra_steps=extra_steps, with_cam=with_cam,
                         cam_method=cam_method, sources=sources)
    shared = shared_predictions()

    def compute() -> Any:
        predictor = _predictor(path, signature)
        start_gallery_warmup(path, predictor)
        with model_queue().turn(), model_threads():
            return _run_model(predictor, images, names, body_part=body_part, extra_steps=extra_steps,
                              with_cam=with_cam, cam_method=cam_method, sources=sources)

    prediction = shared.get(key)
    if prediction is None:
        queue = model_queue()
        ahead = queue.waiting + (1 if shared.in_flight() else 0)
        with st.spinner("Running the model…" + (f" ({ahead} other prediction(s) first)" if ahead else "")):
            prediction = shared.get_or_compute(key, compute, prediction_nbytes)
    return _named(prediction, names)


def prediction_key(checkpoint: str | Path, images: Sequence[np.ndarray], *, body_part: str | None = None,
                   extra_steps: list[dict[str, Any]] | None = None, with_cam: bool = True,
                   cam_method: str | None = None, sources: Sequence[Any] | None = None) -> tuple:
    """What makes two predictions the same: the checkpoint's bytes, the pixels, the options (not names)."""
    import json

    return (checkpoint_digest(checkpoint), tuple(image_digest(img) for img in images), body_part,
            json.dumps(extra_steps or [], sort_keys=True), with_cam, cam_method, tuple(sources or ()))


def _run_model(predictor: Any, images: Sequence[np.ndarray], names: Sequence[str], *, body_part, extra_steps,
               with_cam, cam_method, sources) -> Any:
    """One forward of ``predictor``; the result's arrays made read-only (it is shared between sessions)."""
    prediction = predictor.predict(
        list(images), names=list(names), body_part=body_part,
        extra_steps=extra_steps or None, with_cam=with_cam, cam_method=cam_method,
        sources=list(sources) if sources else None,
    )
    for item in prediction.images:  # read-only views; the caller's own arrays keep their flags
        item.image = item.image.view()
        item.image.setflags(write=False)
        if item.heatmap is not None:
            item.heatmap = item.heatmap.view()
            item.heatmap.setflags(write=False)
    return prediction


#: Gallery X-rays predicted ahead per checkpoint (the shipped gallery has 40).
WARM_MAX_ITEMS = 64
_warmups: dict[str, threading.Thread] = {}
_warmups_lock = threading.Lock()


def start_gallery_warmup(checkpoint: str | Path, predictor: Any, *, stop: threading.Event | None = None
                         ) -> threading.Thread | None:
    """Predict every shipped gallery X-ray with ``checkpoint`` in a background thread, as Predict would
    (default options), one at a time and only while nobody waits for the model
    (:meth:`~fracture.ui.shared_results.ModelQueue.idle_turn`): the first prediction of a class warms the
    rest, so a student who picks any gallery X-ray later gets it at once. Once per checkpoint version
    and server; skipped when the gallery would take more than half the prediction budget.

    Only checkpoints in the weights folder (shipped or promoted: what a class uses) are warmed, not runs.

    Returns:
        The thread started now, or None (already warming or warmed, not a weights-folder checkpoint).
    """
    from fracture.settings import get_settings

    try:
        if Path(get_settings().weights_dir).resolve() not in Path(checkpoint).resolve().parents:
            return None
    except OSError:
        return None
    digest = checkpoint_digest(checkpoint)
    with _warmups_lock:
        if digest in _warmups or len(_warmups) >= 8:
            return None
        thread = threading.Thread(target=_warm_gallery, args=(str(checkpoint), predictor, stop),
                                  name="fracture-gallery-warmup", daemon=True)
        _warmups[digest] = thread
    thread.start()
    return thread


def _warm_gallery(checkpoint: str, predictor: Any, stop: threading.Event | None) -> None:
    import logging

    from fracture.data.gallery import load_gallery
    from fracture.data.imageio import load_image
    from fracture.errors import FractureError

    log = logging.getLogger(__name__)
    shared, queue = shared_predictions(), model_queue()
    try:
        items = load_gallery()[:WARM_MAX_ITEMS]
    except FractureError as exc:
        log.info("gallery warm-up skipped: %s", exc)
        return
    done = 0
    for item in items:
        if stop is not None and stop.is_set():
            break
        try:
            image = load_image(item.path)  # the pixels Predict's gallery picker decodes
        except FractureError as exc:
            log.info("gallery warm-up: %s", exc)
            continue
        if done == 0 and 2 * len(items) * (image.nbytes * 5 + 8192) > shared.cache.max_bytes:
            log.info("gallery warm-up skipped: %d X-rays would take over half the prediction budget", len(items))
            return
        key = prediction_key(checkpoint, [image])

        def compute(image=image, item=item) -> Any:
            with queue.idle_turn(stop) as took:
                if not took:
                    raise _WarmupStopped
                with model_threads():
                    return _run_model(predictor, [image], [item.source_id], body_part=None, extra_steps=None,
                                      with_cam=True, cam_method=None, sources=None)

        try:
            shared.get_or_compute(key, compute, prediction_nbytes)
        except _WarmupStopped:
            break
        except FractureError as exc:
            log.info("gallery warm-up: %s: %s", item.source_id, exc)
        done += 1
    log.info("gallery warm-up with %s: %d of %d X-rays ready", checkpoint, done, len(items))


class _WarmupStopped(Exception):
    """The warm-up was asked to stop while waiting for an idle turn."""


@st.cache_data(max_entries=64, show_spinner=False)
def evaluate_one(checkpoint: str, signature: int, data_root: str, split: str, fingerprint: str) -> Any:
    """One checkpoint's ``EvaluationResult`` on a split (the core also caches its predictions on disk)."""
    from fracture.assess.compare import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, data_root, split)


@st.cache_data(max_entries=32, show_spinner=False)
def evaluate_ensemble(checkpoints: tuple[str, ...], signatures: tuple[int, ...], data_root: str, split: str,
                      fingerprint: str) -> Any:
    """The mean-probability ensemble of two or more checkpoints on a split."""
    from fracture.assess.compare import evaluate_ensemble as ensemble

    return ensemble(list(checkpoints), data_root, split)
