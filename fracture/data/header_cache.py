"""Parallel, cached reads of image headers and per-image intensity figures.

Inspecting a dataset means reading tens of thousands of image headers (MURA
has 40,561 images) and decoding a sample of them. Both results depend only
on the file's bytes, so they are cached on disk by (absolute path, size,
``mtime_ns``): a second scan only calls ``stat`` on every file and looks the
rows up, which takes about a second for 40k files; a file that changed (new size
or modification time) misses and is read again. Failures are cached too
(an unchanged broken file stays broken), with the loader's ``reason`` and
detail.

The cache is one SQLite file, ``<cache_dir>/headers/headers-v<N>.sqlite``
(``cache_dir`` from :func:`fracture.settings.get_settings`). Every batch of
rows is written in one transaction, so a killed scan never leaves a
half-written row, and several processes (the app and the CLI) can share it.
A corrupt file is deleted and rebuilt (it holds nothing that cannot be read
again). Bump :data:`CACHE_VERSION` when :func:`read_image_header` or
:func:`load_image` change what they return: old rows are then dropped.

Reads run in a thread pool. Decoding parallelises well (Pillow's decoders
release the GIL); header reads overlap their disk waits, which is what counts
on a network or cold disk, but Pillow parses headers in Python under the GIL,
so with files already in the page cache threads gain little (see
``python -m fracture.bench.data_bench``). ``processes=N`` reads headers in N
worker processes instead: worth it for a big cold scan on a many-core
machine, not on two cores (starting a worker re-imports the package, about a
second).
"""
from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fracture.util.files import NO_STAMP, file_stamp
from fracture.util.workers import usable_cpus, worker_context
from fracture.data.imageio import load_image, read_image_header
from fracture.errors import CacheError, ImageLoadError

logger = logging.getLogger(__name__)

#: Bump when the stored rows change meaning; rows of an older version are dropped.
#: 2: JPEGs cut short behind an end marker became ``truncated``.
CACHE_VERSION = 2
CACHE_SUBDIR = "headers"
DB_NAME = f"headers-v{CACHE_VERSION}.sqlite"

#: Sorted paths per range lookup, and per worker task.
_LOOKUP_CHUNK = 1024
_TASK_CHUNK = 128
#: Rows buffered before one write transaction (so a killed cold scan keeps most work).
_WRITE_EVERY = 2048
_NO_STAMP = NO_STAMP

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS headers (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        width INTEGER, height INTEGER, mode TEXT, format TEXT, bit_depth INTEGER,
        reason TEXT, detail TEXT) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS intensities (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        width INTEGER, height INTEGER, min REAL, max REAL, mean REAL, std REAL,
        histogram BLOB, reason TEXT, detail TEXT) WITHOUT ROWID""",
)


class HeaderRecord(NamedTuple):
    """What one file's header says, or why it could not be read.

    ``reason``/``detail`` are :class:`~fracture.errors.ImageLoadError`'s when
    the read failed (then the size fields are ``None``). A named tuple, not a
    dataclass: a cached scan builds tens of thousands of them.
    """

    path: str
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    bit_depth: int | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def message(self) -> str:
        """The error message the loader gave ('' when the read worked)."""
        return str(ImageLoadError(self.path, self.reason, self.detail)) if self.reason else ""


class IntensityRecord(NamedTuple):
    """Grey-level figures of one decoded image (the uint8 output of ``load_image``).

    ``histogram`` holds 256 pixel counts. On failure ``reason``/``detail`` say
    why and the figures are ``None``.
    """

    path: str
    width: int | None = None
    height: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    histogram: np.ndarray | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def message(self) -> str:
        return str(ImageLoadError(self.path, self.reason, self.detail)) if self.reason else ""


class ScanCounts(NamedTuple):
    """How a cached scan was served: ``cached`` rows hit, ``read`` files read now."""

    cached: int
    read: int


def default_header_cache_path() -> Path:
    """``<settings cache_dir>/headers/headers-v<N>.sqlite`` (``$FRACTURE_CACHE_DIR``,
    else ``$FRACTURE_HOME/cache``)."""
    from fracture.settings import get_settings

    return get_settings().cache_dir / CACHE_SUBDIR / DB_NAME


class HeaderCache:
    """The on-disk cache of header and intensity rows (one SQLite file).

    Use it from one thread (the scan functions below only touch it from the
    calling thread); open one per process. A context manager closes it.

    Args:
        db_path: the SQLite file; ``None`` for :func:`default_header_cache_path`.

    Raises:
        CacheError: the folder cannot be created or the file cannot be opened
            (the message names it and says how to move or disable the cache).
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(db_path) if db_path is not None else default_header_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the header cache folder {self.path.parent}: {exc}; set "
                "FRACTURE_CACHE_DIR to a writable folder or scan with --no-cache"
            ) from exc
        try:
            self._conn = self._connect()
        except sqlite3.OperationalError as exc:  # locked by another process, read-only, ...: keep the file
            raise CacheError(
                f"cannot open the header cache {self.path}: {exc}; try again, set FRACTURE_CACHE_DIR "
                "to a writable folder or scan with --no-cache"
            ) from exc
        except sqlite3.DatabaseError as exc:  # not a database / malformed: nothing to lose
            logger.warning("header cache %s is unusable (%s); deleting and rebuilding it", self.path, exc)
            self._delete_files()
            try:
                self._conn = self._connect()
            except sqlite3.Error as exc2:
                raise CacheError(
                    f"cannot open the header cache {self.path}: {exc2}; delete the file, set "
                    "FRACTURE_CACHE_DIR to a writable folder or scan with --no-cache"
                ) from exc2

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, CACHE_VERSION):
                conn.executescript("DROP TABLE IF EXISTS headers; DROP TABLE IF EXISTS intensities;")
            # WAL lets a reader (the app) and a writer (the CLI) work at once;
            # a file system without shared memory keeps the default journal.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={CACHE_VERSION}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _delete_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "HeaderCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HeaderCache({str(self.path)!r})"

    # ------------------------------------------------------------- headers

    def get_headers(self, paths: Sequence[str], stamps: Sequence[tuple[int, int]]) -> dict[str, HeaderRecord]:
        """Cached header rows whose size and mtime still match, by path."""
        found = {}
        for path, row in self._lookup("headers", paths, stamps):
            width, height, mode, fmt, bit_depth, reason, detail = row
            found[path] = HeaderRecord(path, width, height, mode, fmt, bit_depth, reason, detail or "")
        return found

    def put_headers(self, records: Sequence[tuple[HeaderRecord, tuple[int, int]]]) -> None:
        """Store (record, (size, mtime_ns)) pairs in one transaction."""
        rows = [
            (r.path, size, mtime, r.width, r.height, r.mode, r.format, r.bit_depth, r.reason, r.detail)
            for r, (size, mtime) in records if (size, mtime) != _NO_STAMP and _cacheable(r.path)
        ]
        self._write("INSERT OR REPLACE INTO headers VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    # --------------------------------------------------------- intensities

    def get_intensities(self, paths: Sequence[str], stamps: Sequence[tuple[int, int]]) -> dict[str, IntensityRecord]:
        """Cached intensity rows whose size and mtime still match, by path."""
        found = {}
        for path, row in self._lookup("intensities", paths, stamps):
            width, height, low, high, mean, std, blob, reason, detail = row
            histogram = np.frombuffer(blob, dtype="<u4").astype(np.int64) if blob is not None else None
            found[path] = IntensityRecord(path, width, height, low, high, mean, std, histogram, reason, detail or "")
        return found

    def put_intensities(self, records: Sequence[tuple[IntensityRecord, tuple[int, int]]]) -> None:
        """Store (record, (size, mtime_ns)) pairs in one transaction."""
        rows = []
        for r, (size, mtime) in records:
            if (size, mtime) == _NO_STAMP or not _cacheable(r.path):
                continue
            blob = r.histogram.astype("<u4").tobytes() if r.histogram is not None else None
            rows.append((r.path, size, mtime, r.width, r.height, r.min, r.max, r.mean, r.std, blob,
                         r.reason, r.detail))
        self._write("INSERT OR REPLACE INTO intensities VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def clear(self) -> None:
        """Forget every row."""
        self._write_script("DELETE FROM headers; DELETE FROM intensities;")

    def __len__(self) -> int:
        """Header rows stored."""
        return int(self._conn.execute("SELECT COUNT(*) FROM headers").fetchone()[0])

    # ------------------------------------------------------------ internals

    def _lookup(self, table: str, paths: Sequence[str], stamps: Sequence[tuple[int, int]]) -> Iterator[tuple[str, tuple]]:
        """Rows of ``table`` whose (size, mtime_ns) match, by range scans over the sorted paths.

        A range scan of a ``WITHOUT ROWID`` table reads neighbouring rows in
        order, faster than one index probe per path; rows in a range that
        were not asked for are skipped.
        """
        wanted = {p: s for p, s in zip(paths, stamps) if s != _NO_STAMP and _cacheable(p)}
        keys = sorted(wanted)  # Python's str order = SQLite's BINARY order of UTF-8
        columns = ("width, height, mode, format, bit_depth, reason, detail" if table == "headers"
                   else "width, height, min, max, mean, std, histogram, reason, detail")
        query = f"SELECT path, size, mtime_ns, {columns} FROM {table} WHERE path >= ? AND path <= ?"
        try:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start:start + _LOOKUP_CHUNK]
                for path, size, mtime, *row in self._conn.execute(query, (chunk[0], chunk[-1])):
                    if wanted.get(path) == (size, mtime):
                        yield path, tuple(row)
        except sqlite3.Error as exc:
            raise CacheError(f"cannot read the header cache {self.path}: {exc}; delete the file to rebuild it") from exc

    def _write(self, statement: str, rows: list[tuple]) -> None:
        if not rows:
            return
        try:
            with self._conn:
                self._conn.executemany(statement, rows)
        except sqlite3.Error as exc:
            raise CacheError(
                f"cannot write the header cache {self.path}: {exc}; check free space and permissions, "
                "or scan with --no-cache"
            ) from exc

    def _write_script(self, script: str) -> None:
        try:
            with self._conn:
                self._conn.executescript(script)
        except sqlite3.Error as exc:
            raise CacheError(f"cannot clear the header cache {self.path}: {exc}") from exc


# ------------------------------------------------------------------ scanning


def default_workers() -> int:
    """Reader threads: two per usable CPU, at most 8 (enough to overlap disk waits;
    more only contend for the GIL)."""
    return max(1, min(8, 2 * usable_cpus()))


def file_stamps(paths: Sequence[str], *, workers: int | None = None) -> list[tuple[int, int]]:
    """``(size, mtime_ns)`` of each file (following links); ``(-1, -1)`` when it
    cannot be stat'ed (missing, no permission) or is not a regular file (a FIFO,
    a device) -- reading it then reports why."""
    return _map_threads(_stamp_chunk, list(paths), workers or default_workers())


def scan_headers(
    paths: Sequence[str | os.PathLike[str]],
    *,
    cache: HeaderCache | None = None,
    workers: int | None = None,
    processes: int | None = None,
) -> tuple[list[HeaderRecord], ScanCounts]:
    """Read the headers of many files in parallel, from the cache where it is fresh.

    Args:
        paths: image files; made absolute (the cache key).
        cache: where to look rows up and store new ones; ``None`` reads every file.
        workers: threads for the stat calls and the reads (default :func:`default_workers`).
        processes: read the headers in this many worker processes instead of
            threads (0 or None: threads); see the module notes for when it pays.

    Returns:
        One :class:`HeaderRecord` per path, in the given order, and how many
        came from the cache and how many were read now.

    Raises:
        CacheError: the cache cannot be read or written.
    """
    return _cached_scan(paths, _header_chunk, cache, "headers", workers, processes)


def scan_intensities(
    paths: Sequence[str | os.PathLike[str]],
    *,
    cache: HeaderCache | None = None,
    workers: int | None = None,
) -> tuple[list[IntensityRecord], ScanCounts]:
    """Decode files with :func:`load_image` (in parallel, cached) and measure their grey levels.

    Decoding runs in threads: Pillow's decoders release the GIL.

    Args:
        paths: image files; made absolute (the cache key).
        cache: where to look rows up and store new ones; ``None`` decodes every file.
        workers: threads (default :func:`default_workers`).

    Returns:
        One :class:`IntensityRecord` per path, in the given order, and the
        cache hit/read counts.

    Raises:
        CacheError: the cache cannot be read or written.
    """
    return _cached_scan(paths, _intensity_chunk, cache, "intensities", workers, 0)


def _cached_scan(paths, read_chunk: Callable[[list[str]], list], cache: HeaderCache | None, table: str,
                 workers: int | None, processes: int | None):
    workers = workers or default_workers()
    processes = processes or 0
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    stamps = file_stamps(paths, workers=workers) if cache is not None else [_NO_STAMP] * len(paths)
    hits: dict = {}
    if cache is not None:
        hits = cache.get_headers(paths, stamps) if table == "headers" else cache.get_intensities(paths, stamps)
    missing = [i for i, p in enumerate(paths) if p not in hits]
    results = dict(hits)
    if missing:
        how = f"{processes} processes" if processes > 0 else f"{workers} threads"
        logger.info("%s: %d from cache, reading %d with %s", table, len(hits), len(missing), how)
    put = None if cache is None else (cache.put_headers if table == "headers" else cache.put_intensities)
    pool = None
    if processes > 0 and len(missing) > _TASK_CHUNK:
        pool = ProcessPoolExecutor(max_workers=processes, mp_context=worker_context())
    try:
        for start in range(0, len(missing), _WRITE_EVERY):
            block = missing[start:start + _WRITE_EVERY]
            block_paths = [paths[i] for i in block]
            records = None
            if pool is not None:
                chunk = max(_TASK_CHUNK, len(block_paths) // (4 * processes))
                try:
                    records = _map_pool(pool, read_chunk, block_paths, chunk)
                except BrokenProcessPool as exc:  # a worker died or could not start: redo with threads
                    logger.warning("worker processes failed (%s); reading the rest with threads", exc)
                    pool.shutdown(cancel_futures=True)
                    pool = None
            if records is None:
                records = _map_threads(read_chunk, block_paths, workers)
            for i, record in zip(block, records):
                results[paths[i]] = record
            if put is not None:
                put([(record, stamps[i]) for i, record in zip(block, records)])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return [results[p] for p in paths], ScanCounts(cached=len(hits), read=len(missing))


def _map_pool(pool: ProcessPoolExecutor, fn: Callable[[list], list], items: list, chunk: int) -> list:
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    return [result for part in pool.map(fn, chunks) for result in part]


def _map_threads(fn: Callable[[list], list], items: list, workers: int) -> list:
    """``fn`` over chunks of ``items`` in a thread pool, results flattened in order."""
    if not items:
        return []
    chunks = [items[i:i + _TASK_CHUNK] for i in range(0, len(items), _TASK_CHUNK)]
    if workers <= 1 or len(chunks) == 1:
        return [result for chunk in chunks for result in fn(chunk)]
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks)), thread_name_prefix="scan") as pool:
        return [result for part in pool.map(fn, chunks) for result in part]


def _header_chunk(paths: list[str]) -> list[HeaderRecord]:
    return [_header_record(path) for path in paths]


def _intensity_chunk(paths: list[str]) -> list[IntensityRecord]:
    return [_intensity_record(path) for path in paths]


def _cacheable(path: str) -> bool:
    """SQLite stores UTF-8: a name with undecodable bytes (surrogate escapes) is read, not cached."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _stamp_chunk(paths: list[str]) -> list[tuple[int, int]]:
    # a FIFO, device or folder gets no stamp: never cached, read (and refused) each scan
    return [file_stamp(path) for path in paths]


def _header_record(path: str) -> HeaderRecord:
    try:
        header = read_image_header(path)
    except ImageLoadError as exc:
        return HeaderRecord(path, reason=exc.reason, detail=exc.detail)
    return HeaderRecord(path, header.width, header.height, header.mode, header.format, header.bit_depth)


def _intensity_record(path: str) -> IntensityRecord:
    try:
        image = load_image(path)
    except ImageLoadError as exc:
        return IntensityRecord(path, reason=exc.reason, detail=exc.detail)
    histogram = np.bincount(image.ravel(), minlength=256).astype(np.int64)
    levels = np.arange(256, dtype=np.float64)
    mean = float(histogram @ levels / image.size)
    std = float(np.sqrt(max(0.0, histogram @ (levels - mean) ** 2 / image.size)))
    nonzero = np.flatnonzero(histogram)
    return IntensityRecord(
        path, int(image.shape[1]), int(image.shape[0]),
        float(nonzero[0]), float(nonzero[-1]), mean, std, histogram,
    )
