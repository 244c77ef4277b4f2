"""The one home of the worker-process helpers: how many CPUs we may use, and how workers start.

Image-cache builds and header scans both fan out over processes; they must
agree on the CPU count (taskset/cgroup affinity, not the machine's total) and
on a start method that is safe from a process already running threads.
"""
from __future__ import annotations

import multiprocessing
import os
import sys


def usable_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_context():
    """Fresh worker processes that do not inherit the caller's threads.

    ``fork`` from a process that already runs torch, OpenCV or Streamlit
    threads can deadlock in the child, so workers come from ``forkserver``
    (a clean helper process). Like ``spawn``, it re-imports the caller's main
    script in each worker: scripts must guard their top level with
    ``if __name__ == "__main__":`` (``python -m fracture ...`` is fine). A main
    script that cannot be re-imported at all (code piped to ``python -``)
    gets ``fork`` instead.
    """
    methods = multiprocessing.get_all_start_methods()
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not os.path.isfile(main_file) and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
