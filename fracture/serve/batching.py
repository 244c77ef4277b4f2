"""Batches fetched one ahead on a thread: shared by the torch and onnxruntime paths, no torch import.

Why here: the onnxruntime path must run without importing torch (serving
without torch), and both paths use the same prefetching loop.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import numpy as np


def iterate_batches(
    order: np.ndarray,
    batch_size: int,
    fetch: Callable[[np.ndarray], Any],
    *,
    prefetch: bool = True,
) -> Iterator[Any]:
    """Yield ``fetch(batch_positions)`` for consecutive slices of ``order``.

    With ``prefetch`` the next batch is fetched on a background thread while
    the caller works on the current one. Callers keep torch kernels off that
    thread: on a CPU a second thread's kernels start a second OpenMP team that
    fights the step's threads for the same cores.
    """
    slices = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if not prefetch or len(slices) < 2:
        for positions in slices:
            yield fetch(positions)
        return
    results: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def producer() -> None:
        try:
            for positions in slices:
                if stop.is_set():
                    return
                results.put(("ok", fetch(positions)))
            results.put(("done", None))
        except BaseException as exc:  # re-raised in the consumer thread
            results.put(("error", exc))

    thread = threading.Thread(target=producer, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                results.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
