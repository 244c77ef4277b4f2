"""A preprocessed-image cache: decode, preprocess and resize each image once.

Training and evaluation read the same images epoch after epoch; decoding a
radiograph and running CLAHE or diffusion on it costs far more than reading
the result back. :class:`ImageCache` stores the pipeline's output for an
ordered list of files as one uint8 array ``(N, S, S, C)`` in a ``.npy`` file
that is memory-mapped, so a batch is a slice of the page cache.

A store is identified by a key: the sha256 of the cache format version, the
canonical pipeline spec and, for every path in order, its absolute path, size
and ``mtime_ns``. Any change to a file, to the list or to the spec gives a new
key and so a new store; stale stores are only removed by :func:`clear_cache`
(``python -m fracture cache clear``).

Layout under the cache root (default :func:`default_cache_root`,
``$FRACTURE_CACHE_DIR/images``)::

    <key>/images.npy    uint8 (N, S, S, C), zeros where an image failed
    <key>/index.json    paths, key, spec, shape, failures, build time,
                        a blake2b digest of every image's pixels
    <key>.tmp-<pid>-<hex>/   a build in progress (never read)

A build writes into its own temporary directory and renames it into place
only when finished, so a killed build never leaves a store that looks
complete. Leftover temporary directories (their process is gone, or they saw
no progress for an hour) are removed by the next build or by
:func:`clear_cache`.

Opening a store checks its index against the array and the pixel digests of
a random sample of images (:data:`VERIFY_SAMPLE`, a few MB of reading), so
garbage in the pixel file -- even of the right size -- is found and the
store rebuilt with a warning; :meth:`ImageCache.verify` checks every image.

Disk use is ``N * S * S * C`` bytes plus a small index: 40,000 images at
320 px and one channel take 4.1 GB; FracAtlas (4,083 images) at 224 px takes
205 MB. The free space is checked before a build starts.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fracture.util.files import file_stamps, open_regular, pid_alive
from fracture.util.jsonio import atomic_write_json
from fracture.util.workers import usable_cpus, worker_context
from fracture.errors import CacheError, ImageLoadError, PreprocessError

logger = logging.getLogger(__name__)

#: Bump when the stored bytes or the index layout change; old stores then miss.
CACHE_FORMAT_VERSION = 2  # 2: per-image pixel digests in the index
ARRAY_NAME = "images.npy"
INDEX_NAME = "index.json"
#: A temporary build directory untouched for this long is treated as abandoned.
STALE_BUILD_SECONDS = 3600.0
#: Free space kept beyond the array itself when checking the disk.
_DISK_MARGIN_BYTES = 64 * 1024 * 1024
_MAX_CHUNK = 64
#: Images whose pixel digest is checked on every open (plus the first and the last).
VERIFY_SAMPLE = 16
#: An index larger than this is not a store of ours (paths, failures and digests of 1M images fit).
_MAX_INDEX_BYTES = 512 * 1024 * 1024
_LOG_EVERY_SECONDS = 10.0

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_TMP_RE = re.compile(r"^(?P<key>[0-9a-f]{64})\.(?:tmp|trash)-(?P<pid>\d+)-[0-9a-f]+$")


def default_cache_root() -> Path:
    """``<settings cache_dir>/images``: ``$FRACTURE_CACHE_DIR/images``, else
    ``$FRACTURE_HOME/cache/images`` (``~/.cache/fracture-lab/cache/images``).

    The trainer and evaluation use the same folder, so ``python -m fracture
    cache build`` warms the stores they open.
    """
    from fracture.settings import get_settings

    return get_settings().cache_dir / "images"


@dataclass(frozen=True)
class ImageFailure:
    """One image that could not be cached; its slot in the array holds zeros.

    Attributes:
        path: the file as stored in the cache (absolute).
        reason: ``ImageLoadError.reason`` (``truncated``, ``not_an_image`` ...)
            or ``preprocess`` for a :class:`PreprocessError`.
        message: the error's full message.
        index: its position in the cached path list.
    """

    path: str
    reason: str
    message: str
    index: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------
# The per-image work. Imports of the loader and the pipeline happen at call
# time so that ``import fracture.cache`` stays cheap and tests can patch them.


def _make_pipeline(spec: list[dict]):
    from fracture.preprocess.pipeline import Pipeline

    return Pipeline.from_spec(spec)


def _load_image(path: str) -> np.ndarray:
    from fracture.data.imageio import load_image

    return load_image(path)


def _process_one(path: str, pipeline, slot_shape: tuple[int, int, int]) -> np.ndarray:
    """Decode and preprocess one file into a ``slot_shape`` uint8 array.

    Raises:
        ImageLoadError, PreprocessError: the image itself is bad (recorded).
        CacheError: the pipeline produced another shape than every other image
            will have; the spec is wrong, so the whole build stops.
    """
    out = pipeline(_load_image(path))
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape != slot_shape or out.dtype != np.uint8:
        raise CacheError(
            f"{path}: the pipeline returned {out.dtype} {out.shape}, the cache expects "
            f"uint8 {slot_shape}; the spec's last step must be a square resize"
        )
    return out


def _pixel_digest(slot: np.ndarray) -> str:
    """blake2b (128 bit) of one image slot's bytes, as stored."""
    return hashlib.blake2b(np.ascontiguousarray(slot), digest_size=16).hexdigest()


def _fill_slots(
    images: np.ndarray, pipeline, items: Iterable[tuple[int, str]]
) -> tuple[list[ImageFailure], list[tuple[int, str]]]:
    """Write each ``(index, path)`` into ``images[index]``; failures get zeros.

    Returns the failures and ``(index, pixel digest)`` of every slot written
    (hashed in the workers, where the pixels are already in memory).
    """
    failures: list[ImageFailure] = []
    digests: list[tuple[int, str]] = []
    slot_shape = tuple(images.shape[1:])
    for index, path in items:
        try:
            images[index] = _process_one(path, pipeline, slot_shape)
        except ImageLoadError as exc:
            images[index] = 0
            failures.append(ImageFailure(path, exc.reason, str(exc), index))
        except PreprocessError as exc:
            images[index] = 0
            failures.append(ImageFailure(path, "preprocess", f"{path}: {exc}", index))
        digests.append((index, _pixel_digest(images[index])))
    return failures, digests


# Worker-process state, set once per process by _init_worker.
_worker_state: dict[str, Any] = {}


def _init_worker(spec: list[dict], array_path: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool already uses every core; threads would oversubscribe
    _worker_state["pipeline"] = _make_pipeline(spec)
    _worker_state["images"] = np.load(array_path, mmap_mode="r+")


def _work_chunk(items: list[tuple[int, str]]) -> tuple[int, list[ImageFailure], list[tuple[int, str]]]:
    images = _worker_state["images"]
    failures, digests = _fill_slots(images, _worker_state["pipeline"], items)
    images.flush()
    return len(items), failures, digests


# --------------------------------------------------------------------------
# Keys and the build.


def _normalise_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
    return [os.path.abspath(os.fspath(p)) for p in paths]


def _file_stamps(paths: list[str]) -> list[tuple[int, int]]:
    """``(size, mtime_ns)`` per file; ``(-1, -1)`` when it cannot be stat'ed or is not a
    regular file: loading it then fails and is recorded with the reason."""
    return file_stamps(paths)


def _canonical_spec(spec: Any) -> tuple[list[dict], int, int]:
    """The pipeline's own spelling of ``spec``, its output size and channels.

    Raises:
        PreprocessError: an unknown op or bad parameter.
        CacheError: the spec does not end with a resize to a fixed size.
    """
    pipeline = _make_pipeline(spec)
    if pipeline.image_size is None:
        raise CacheError(
            f"cannot cache images for spec {pipeline.to_json()}: its last step must be "
            '{"op": "resize", "size": S, ...} so that every image gets the same shape'
        )
    return pipeline.to_spec(), int(pipeline.image_size), int(pipeline.out_channels)


def _key_for(paths: list[str], stamps: list[tuple[int, int]], spec: list[dict]) -> str:
    payload = {
        "format_version": CACHE_FORMAT_VERSION,
        "spec": spec,
        "files": [[p, size, mtime] for p, (size, mtime) in zip(paths, stamps)],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def compute_cache_key(paths: Sequence[str | os.PathLike], spec: list[dict]) -> str:
    """The key a store for ``paths`` and ``spec`` has, without building it.

    Args:
        paths: image files, in the order the cache would hold them.
        spec: a preprocessing pipeline spec ending with a resize step.

    Returns:
        64 hex digits; the store lives in ``cache_root / key``.

    Raises:
        PreprocessError: the spec is invalid.
        CacheError: the spec does not end with a resize step.
    """
    norm = _normalise_paths(paths)
    canonical, _, _ = _canonical_spec(spec)
    return _key_for(norm, _file_stamps(norm), canonical)


def _chunks(n: int, workers: int) -> list[range]:
    """Contiguous index ranges: several per worker for balance, at most _MAX_CHUNK."""
    size = max(1, min(_MAX_CHUNK, math.ceil(n / (max(workers, 1) * 4))))
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


class _ProgressLog:
    """Calls the user's callback after every chunk and logs a line every few seconds."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback
        self.started = time.monotonic()
        self.last_log = self.started

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last_log >= _LOG_EVERY_SECONDS or self.done == self.total:
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            logger.info(
                "caching images: %d/%d (%.0f%%), %.1f images/s, %.0f s left",
                self.done, self.total, 100.0 * self.done / self.total, rate, eta,
            )
        if self.callback is not None:
            self.callback(self.done, self.total)


def _remove_tree(path: Path) -> None:
    """``rmtree`` that tolerates another process removing the same tree."""

    def onexc(func, name, exc):
        if not isinstance(exc, FileNotFoundError):
            raise exc

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onexc)
    else:
        shutil.rmtree(path, onerror=lambda func, name, exc_info: onexc(func, name, exc_info[1]))


def _is_abandoned(path: Path, now: float) -> bool:
    match = _TMP_RE.match(path.name)
    if match is None:
        return False
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_BUILD_SECONDS or not pid_alive(int(match["pid"]))


def _remove_abandoned_builds(cache_root: Path) -> list[Path]:
    """Delete temporary build directories whose process died or stalled."""
    removed = []
    now = time.time()
    for entry in cache_root.iterdir():
        if entry.is_dir() and _is_abandoned(entry, now):
            logger.info("removing abandoned image-cache build %s", entry)
            _remove_tree(entry)
            removed.append(entry)
    return removed


def _check_free_space(cache_root: Path, nbytes: int) -> None:
    free = shutil.disk_usage(cache_root).free
    if free < nbytes + _DISK_MARGIN_BYTES:
        raise CacheError(
            f"the image cache needs {nbytes / 1e9:.2f} GB but {cache_root} has "
            f"{free / 1e9:.2f} GB free; free space with `python -m fracture cache clear` "
            "or point FRACTURE_CACHE_DIR at a larger disk"
        )


def _build_store(
    directory: Path,
    paths: list[str],
    stamps: list[tuple[int, int]],
    spec: list[dict],
    key: str,
    shape: tuple[int, int, int, int],
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Fill ``directory`` with the array and, last, the index."""
    started = time.monotonic()
    array_path = directory / ARRAY_NAME
    images = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=shape)
    n = shape[0]
    chunks = _chunks(n, workers)
    report = _ProgressLog(n, progress)
    failures: list[ImageFailure] = []
    digests: list[str] = [""] * n
    logger.info(
        "building image cache %s: %d images -> uint8 %s (%.1f MB), %s",
        key[:12], n, shape[1:], images.nbytes / 1e6,
        f"{min(workers, len(chunks))} worker processes" if workers else "in process",
    )
    if workers == 0:
        pipeline = _make_pipeline(spec)
        for chunk in chunks:
            chunk_failures, chunk_digests = _fill_slots(images, pipeline, ((i, paths[i]) for i in chunk))
            failures += chunk_failures
            for i, digest in chunk_digests:
                digests[i] = digest
            report.advance(len(chunk))
            os.utime(directory)  # shows the build is alive
        images.flush()
        del images
    else:
        images.flush()
        del images  # workers map the file themselves
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(chunks)),
            mp_context=worker_context(),
            initializer=_init_worker,
            initargs=(spec, str(array_path)),
        )
        try:
            futures = [
                pool.submit(_work_chunk, [(i, paths[i]) for i in chunk]) for chunk in chunks
            ]
            for future in concurrent.futures.as_completed(futures):
                count, chunk_failures, chunk_digests = future.result()
                failures += chunk_failures
                for i, digest in chunk_digests:
                    digests[i] = digest
                report.advance(count)
                os.utime(directory)
        except BrokenProcessPool as exc:
            raise CacheError(
                f"a worker process died while caching {n} images: out of memory, a decoder "
                "crash, or a calling script without an `if __name__ == \"__main__\":` guard "
                "(workers re-import it); rerun with workers=0 (--workers 0) to see which"
            ) from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    failures.sort(key=lambda f: f.index)
    index = {
        "format_version": CACHE_FORMAT_VERSION,
        "key": key,
        "spec": spec,
        "shape": list(shape),
        "dtype": "uint8",
        "paths": paths,
        "files": [list(s) for s in stamps],
        "failures": [f.to_dict() for f in failures],
        "pixel_digests": digests,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 3),
        "workers": workers,
    }
    atomic_write_json(directory / INDEX_NAME, index, indent=None)
    if failures:
        logger.warning(
            "image cache %s: %d of %d images could not be loaded (zeros, valid_mask False); "
            "first: %s", key[:12], len(failures), n, failures[0].message,
        )


def _read_store(
    directory: Path, key: str, *, verify: int | None = VERIFY_SAMPLE
) -> tuple[dict | None, np.ndarray | None, str | None]:
    """``(index, images, None)`` for a usable store, else ``(None, None, why)``.

    ``verify``: how many images (besides the first and the last) have their
    pixel digest checked; ``None`` checks none, ``-1`` all of them.
    """
    try:
        with open_regular(directory / INDEX_NAME) as fh:
            if os.fstat(fh.fileno()).st_size > _MAX_INDEX_BYTES:
                return None, None, f"{INDEX_NAME} is over {_MAX_INDEX_BYTES // 2**20} MB"
            index = json.loads(fh.read())
        images = np.load(directory / ARRAY_NAME, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001 -- missing, not a regular file, bad JSON, .npy header or length
        return None, None, f"{type(exc).__name__}: {exc}"
    problem = _index_problem(index, images, key)
    if problem is None and verify is not None:
        problem = _pixel_problem(images, index["pixel_digests"], verify)
    if problem:
        return None, None, problem
    return index, images, None


def _pixel_problem(images: np.ndarray, digests: list[str], sample: int) -> str | None:
    """Why the pixels do not match their digests (the first mismatch found), or None."""
    n = len(digests)
    if sample < 0 or sample + 2 >= n:
        chosen = range(n)
    else:
        chosen = sorted({0, n - 1, *random.sample(range(1, n - 1), sample)})
    try:
        for i in chosen:
            if _pixel_digest(images[i]) != digests[i]:
                return f"pixels of image {i} do not match their digest (the array file was changed)"
    except (OSError, ValueError) as exc:  # e.g. the file was cut while mapped
        return f"pixels unreadable: {type(exc).__name__}: {exc}"
    return None


def _publish(tmp_dir: Path, final_dir: Path, key: str) -> bool:
    """Move a finished build into place; False when another process's store won.

    If another process published a usable store first, ours is dropped; a
    broken store in the way (e.g. a damaged index) is replaced.
    """
    for _ in range(3):
        try:
            os.replace(tmp_dir, final_dir)
            return True
        except OSError:  # the target exists and is not empty
            if not final_dir.is_dir():
                raise
        index, _images, problem = _read_store(final_dir, key)
        if index is not None:
            logger.info("another process finished image cache %s first; using it", key[:12])
            _remove_tree(tmp_dir)
            return False
        logger.warning("replacing unusable image cache %s (%s)", final_dir, problem)
        _remove_store(final_dir)
    raise CacheError(f"could not move the finished image cache {tmp_dir} to {final_dir}; "
                     "another process keeps replacing it")


def _remove_store(final_dir: Path) -> None:
    """Move a store aside (so no reader sees it half-deleted), then delete it."""
    trash = final_dir.with_name(f"{final_dir.name}.trash-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.replace(final_dir, trash)
    except FileNotFoundError:
        return
    _remove_tree(trash)


# --------------------------------------------------------------------------


class ImageCache:
    """A read-only, memory-mapped store of preprocessed images.

    Build or reuse one with :meth:`open_or_build`. Images that failed to load
    are listed in :attr:`failures` and are False in :attr:`valid_mask`; their
    slots hold zeros, so the caller must exclude them.

    The object pickles as its directory (the array is mapped again on
    unpickling), so it can be handed to DataLoader worker processes.
    """

    def __init__(self, directory: Path, index: dict, images: np.ndarray, *, built: bool) -> None:
        self.directory = Path(directory)
        self._index = index
        self._images = images
        self.built = built
        self.paths: list[str] = list(index["paths"])
        self.failures: list[ImageFailure] = [ImageFailure(**f) for f in index["failures"]]
        mask = np.ones(len(self.paths), dtype=bool)
        mask[[f.index for f in self.failures]] = False
        mask.flags.writeable = False
        self.valid_mask = mask
        self._position: dict[str, int] = {}
        for i, path in enumerate(self.paths):
            self._position.setdefault(path, i)

    # -- construction ------------------------------------------------------

    @classmethod
    def open_or_build(
        cls,
        paths: Sequence[str | os.PathLike],
        spec: list[dict],
        cache_root: Path | str | None = None,
        *,
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> "ImageCache":
        """Open the store for ``paths`` and ``spec``, building it if missing.

        Args:
            paths: image files; the cache keeps this order (index ``i`` is
                ``paths[i]``). Relative paths are made absolute.
            spec: the preprocessing pipeline spec, ending with
                ``{"op": "resize", "size": S, ...}``.
            cache_root: where stores live; default :func:`default_cache_root`.
            workers: build processes; ``None`` = one per usable CPU, ``0`` =
                in this process (also the way to debug a failing build).
            progress: called as ``progress(done, total)`` during a build.

        Returns:
            The opened cache (``cache.built`` tells whether this call built it).

        Raises:
            CacheError: no paths, a spec without a final resize, too little
                disk space, or a worker process died.
            PreprocessError: the spec is invalid.
        """
        norm = _normalise_paths(paths)
        if not norm:
            raise CacheError("no image paths given; there is nothing to cache")
        workers = usable_cpus() if workers is None else int(workers)
        if workers < 0:
            raise CacheError(f"workers must be 0 (in process) or more, got {workers}")
        canonical, size, channels = _canonical_spec(spec)
        stamps = _file_stamps(norm)
        key = _key_for(norm, stamps, canonical)
        root = Path(cache_root) if cache_root is not None else default_cache_root()
        root.mkdir(parents=True, exist_ok=True)
        final_dir = root / key

        cache = cls._try_open(final_dir, key)
        if cache is not None:
            logger.info(
                "image cache hit %s: %d images %s", key[:12], len(cache), cache.images.shape[1:]
            )
            return cache
        if final_dir.is_dir():  # unusable (warned): never let a later sample pass it
            _remove_store(final_dir)

        _remove_abandoned_builds(root)
        shape = (len(norm), size, size, channels)
        _check_free_space(root, int(np.prod(shape)))
        tmp_dir = root / f"{key}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp_dir.mkdir()
        try:
            _build_store(tmp_dir, norm, stamps, canonical, key, shape, workers, progress)
            published = _publish(tmp_dir, final_dir, key)
        except BaseException:
            _remove_tree(tmp_dir)
            raise
        cache = cls._try_open(final_dir, key)
        if cache is None:
            raise CacheError(f"the image cache just built in {final_dir} cannot be read back")
        cache.built = published
        return cache

    @classmethod
    def open(cls, directory: Path | str) -> "ImageCache":
        """Open an existing store directory (for inspection, or by key).

        Raises:
            CacheError: the directory holds no complete, readable store.
        """
        directory = Path(directory)
        cache = cls._try_open(directory, directory.name)
        if cache is None:
            raise CacheError(
                f"{directory} is not a complete image cache (missing or corrupt "
                f"{INDEX_NAME} / {ARRAY_NAME}); build it again with open_or_build"
            )
        return cache

    @classmethod
    def _try_open(cls, directory: Path, key: str) -> "ImageCache | None":
        """The store in ``directory``, or None when it is absent or unusable."""
        if not directory.is_dir():
            return None
        index, images, problem = _read_store(directory, key)
        if index is None:
            logger.warning("image cache %s is unusable (%s); it will be rebuilt", directory, problem)
            return None
        try:
            os.utime(directory)  # "last used", for clear_cache(older_than_days=...)
        except PermissionError:
            logger.debug("cannot mark %s as used (read-only cache)", directory)
        return cls(directory, index, images, built=False)

    # -- pickling ----------------------------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_images"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._images = np.load(self.directory / ARRAY_NAME, mmap_mode="r")

    # -- access ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Image ``i`` as a new ``(S, S, C)`` uint8 array (writable, not mapped)."""
        return np.array(self._images[i])

    def __repr__(self) -> str:
        return (
            f"ImageCache({len(self)} images {tuple(self._images.shape[1:])}, "
            f"{len(self.failures)} failed, key={self.key[:12]}, dir={self.directory})"
        )

    @property
    def images(self) -> np.ndarray:
        """The whole read-only memory-mapped ``(N, S, S, C)`` uint8 array."""
        return self._images

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images at ``indices`` as one ``(B, S, S, C)`` array, in the order asked.

        The file is read in ascending index order (fewer seeks on a cold cache).
        """
        idx = np.asarray(indices, dtype=np.intp).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"batch indices out of range for an image cache of {n} images")
        idx = np.where(idx < 0, idx + n, idx)
        order = np.argsort(idx, kind="stable")
        out = np.empty((idx.size, *self._images.shape[1:]), dtype=np.uint8)
        out[order] = self._images[idx[order]]
        return out

    def index_of(self, path: str | os.PathLike) -> int:
        """Position of ``path`` (first occurrence) in the cache.

        Raises:
            CacheError: the path is not in this cache.
        """
        norm = os.path.abspath(os.fspath(path))
        try:
            return self._position[norm]
        except KeyError:
            raise CacheError(
                f"{norm} is not in the image cache {self.directory}; open a cache built "
                "for the path list that contains it"
            ) from None

    @property
    def key(self) -> str:
        return self._index["key"]

    @property
    def spec(self) -> list[dict]:
        """The canonical pipeline spec the images went through."""
        return self._index["spec"]

    @property
    def image_size(self) -> int:
        return int(self._images.shape[1])

    @property
    def channels(self) -> int:
        return int(self._images.shape[3])

    @property
    def nbytes(self) -> int:
        """Bytes of image data (the array without its header)."""
        return int(self._images.nbytes)

    def verify(self) -> list[int]:
        """Indices of images whose pixels differ from the digests taken at build (reads every image;
        opening checks only a sample)."""
        digests = self._index["pixel_digests"]
        return [i for i in range(len(self)) if _pixel_digest(self._images[i]) != digests[i]]

    @property
    def build_seconds(self) -> float:
        return float(self._index["build_seconds"])

    @property
    def built_at(self) -> str:
        return self._index["built_at"]


def _index_problem(index: Any, images: np.ndarray, key: str) -> str | None:
    """Why an index and its array do not form a usable store, or None."""
    if not isinstance(index, dict):
        return "index is not a JSON object"
    if index.get("format_version") != CACHE_FORMAT_VERSION:
        return f"format version {index.get('format_version')} != {CACHE_FORMAT_VERSION}"
    if index.get("key") != key:
        return f"index key {index.get('key')} does not match the directory"
    if images.dtype != np.uint8 or images.ndim != 4 or list(images.shape) != index.get("shape"):
        return f"array {images.dtype} {images.shape} does not match index shape {index.get('shape')}"
    paths, failures = index.get("paths"), index.get("failures")
    if not isinstance(paths, list) or len(paths) != images.shape[0]:
        return "index path list does not match the array length"
    if not isinstance(failures, list) or any(
        not isinstance(f, dict) or set(f) != {"path", "reason", "message", "index"}
        or not isinstance(f["index"], int) or not 0 <= f["index"] < len(paths)
        for f in failures
    ):
        return "index failure list is malformed"
    if not isinstance(index.get("spec"), list) or not {"build_seconds", "built_at"} <= set(index):
        return "index lacks spec or build time"
    digests = index.get("pixel_digests")
    if not isinstance(digests, list) or len(digests) != len(paths) or not all(
        isinstance(d, str) and len(d) == 32 for d in digests
    ):
        return "index lacks the pixel digests"
    return None


# --------------------------------------------------------------------------
# Maintenance, for ``python -m fracture cache``.


def _dir_bytes(path: Path) -> int:
    total = 0
    for entry in path.iterdir():
        try:
            total += entry.stat().st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def cache_info(cache_root: Path | str | None = None) -> list[dict]:
    """Describe every store and build directory under the cache root.

    Args:
        cache_root: default :func:`default_cache_root`.

    Returns:
        One dict per entry, newest first: ``key``, ``directory``, ``status``
        (``ok``, ``corrupt``, ``building`` or ``abandoned``), ``disk_bytes``,
        ``last_used`` (ISO time) and for ``ok`` stores ``images``, ``shape``,
        ``failures``, ``spec``, ``built_at``, ``build_seconds``.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    if not root.is_dir():
        return []
    now = time.time()
    rows = []
    for entry in root.iterdir():
        if not entry.is_dir():
            continue
        tmp = _TMP_RE.match(entry.name)
        if not (_KEY_RE.match(entry.name) or tmp):
            continue
        try:
            mtime = entry.stat().st_mtime
            row: dict[str, Any] = {
                "key": tmp["key"] if tmp else entry.name,
                "directory": str(entry),
                "disk_bytes": _dir_bytes(entry),
                "last_used": datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds"),
                "_mtime": mtime,
            }
        except FileNotFoundError:  # removed while we looked
            continue
        if tmp:
            row["status"] = "abandoned" if _is_abandoned(entry, now) else "building"
        else:
            index, _images, problem = _read_store(entry, entry.name)
            if index is None:
                row.update(status="corrupt", problem=problem)
            else:
                row.update(
                    status="ok",
                    images=len(index["paths"]),
                    shape=index["shape"][1:],
                    failures=len(index["failures"]),
                    spec=index["spec"],
                    built_at=index["built_at"],
                    build_seconds=index["build_seconds"],
                )
        rows.append(row)
    rows.sort(key=lambda r: r["_mtime"], reverse=True)
    for row in rows:
        del row["_mtime"]
    return rows


def clear_cache(
    cache_root: Path | str | None = None, older_than_days: float | None = None
) -> list[Path]:
    """Delete stores (and abandoned builds) from the cache root.

    Only directories named like a store or a build are touched; other files
    under the root are left alone. Builds still in progress are kept.

    Args:
        cache_root: default :func:`default_cache_root`.
        older_than_days: only stores not used for this many days; None = all.

    Returns:
        The directories removed.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    if not root.is_dir():
        return []
    removed = _remove_abandoned_builds(root)
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400.0
    for entry in root.iterdir():
        if not (entry.is_dir() and _KEY_RE.match(entry.name)):
            continue
        try:
            if cutoff is not None and entry.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        _remove_store(entry)
        removed.append(entry)
    logger.info("removed %d image-cache directories from %s", len(removed), root)
    return removed
