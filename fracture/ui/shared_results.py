"""Model work shared by every browser session of one server: computed once, queued, bounded.

Why: in a class of 30, fifteen students open Predict on the same gallery
X-ray within seconds, and every one of them used to run the model on it; the
forwards, all at once on a few CPU cores, also starved the cheap reruns of
the students who were only answering a reader study (a click waited seconds
for its turn on the CPU). Two small parts fix that:

- :class:`SharedResults`: a result cache bounded in bytes (least recently
  used go first) with *single flight*: the first session that asks for a key
  computes it, sessions asking for the same key meanwhile wait for that one
  result instead of computing their own.
- :class:`ModelQueue`: at most ``slots`` model forwards at once, first come
  first served, at most ``max_waiting`` waiting; one more is refused at once
  with :class:`ModelBusyError` (said plainly on the page) instead of piling up
  threads and memory.

Pure Python (no streamlit): ``fracture.ui.loaders`` keeps one of each per
server. Thread-safe: Streamlit runs every session's script in its own thread.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from fracture.errors import FractureError
from fracture.ui.bytecache import ByteBudgetCache


class ModelBusyError(FractureError):
    """The model queue is full: too many predictions are waiting on this server; try again shortly."""


class ModelQueue:
    """First come, first served turns at the model: ``slots`` at once, ``max_waiting`` in line.

    Counters (``ran``, ``refused``, ``peak_waiting``) are for tests and the load test.
    """

    def __init__(self, slots: int = 1, max_waiting: int = 64) -> None:
        if slots < 1 or max_waiting < 0:
            raise ValueError(f"slots={slots} (>= 1), max_waiting={max_waiting} (>= 0)")
        self.slots, self.max_waiting = int(slots), int(max_waiting)
        self._cond = threading.Condition()
        self._line: deque[object] = deque()
        self._running = 0
        self.ran = 0
        self.refused = 0
        self.peak_waiting = 0
        self.peak_running = 0

    @property
    def waiting(self) -> int:
        """Turns waiting now (not those running)."""
        with self._cond:
            return len(self._line)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for a free slot (in order of arrival), hold it for the ``with`` body.

        Raises:
            ModelBusyError: ``max_waiting`` turns are already in line.
        """
        me = object()
        with self._cond:
            if len(self._line) >= self.max_waiting and self._running >= self.slots:
                self.refused += 1
                raise ModelBusyError(
                    f"the model is busy: {len(self._line)} predictions are already waiting on this server; "
                    "try again in a moment")
            self._line.append(me)
            self.peak_waiting = max(self.peak_waiting, len(self._line))
            try:
                while self._line[0] is not me or self._running >= self.slots:
                    self._cond.wait()
            except BaseException:  # interrupted while in line: leave it, let the next one go
                self._line.remove(me)
                self._cond.notify_all()
                raise
            self._line.popleft()
            self._running += 1
            self.peak_running = max(self.peak_running, self._running)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self.ran += 1
                self._cond.notify_all()


    @contextmanager
    def idle_turn(self, stop: threading.Event | None = None) -> Iterator[bool]:
        """A turn for background work: taken only when nobody is in line or running, so a person
        who asks next waits for at most this one forward. Yields False (no turn) once ``stop`` is set."""
        took = False
        with self._cond:
            while not (stop is not None and stop.is_set()):
                if not self._line and self._running < self.slots:
                    self._running += 1
                    self.peak_running = max(self.peak_running, self._running)
                    took = True
                    break
                self._cond.wait(0.5)  # woken by every change; the timeout only re-checks ``stop``
        if not took:
            yield False
            return
        try:
            yield True
        finally:
            with self._cond:
                self._running -= 1
                self.ran += 1
                self._cond.notify_all()


class _Flight:
    """One computation under way: those who wait for it, and its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SharedResults:
    """A byte-bounded LRU of results with single flight per key.

    Args:
        max_bytes: the most the kept results may take together (see :class:`ByteBudgetCache`;
            a result larger than that is handed to its callers but not kept).

    Counters: ``computed`` (times ``compute`` ran), ``hits`` (answered from the cache),
    ``joined`` (waited for another session's computation of the same key).
    """

    def __init__(self, max_bytes: int) -> None:
        self.cache = ByteBudgetCache(max_bytes)
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self.computed = 0
        self.hits = 0
        self.joined = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        return self.cache.get(key, default)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
        """The result under ``key``: from the cache, from a computation already under way, or computed now.

        A computation that raises hands the same error to every session waiting for it and keeps
        nothing, so the next request tries again.
        """
        with self._lock:
            value = self.cache.get(key, _MISSING)
            if value is not _MISSING:
                self.hits += 1
                return value
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
            else:
                self.joined += 1
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            self.cache.put(key, value, nbytes(value))
            return value
        finally:
            with self._lock:
                self.computed += 1
                self._flights.pop(key, None)
            flight.done.set()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._flights)

    def clear(self) -> None:
        self.cache.clear()

    @property
    def nbytes(self) -> int:
        """Bytes the kept results take together."""
        return self.cache.nbytes

    def __len__(self) -> int:
        return len(self.cache)


_MISSING = object()
