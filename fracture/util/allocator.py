"""Keep freed tensor memory in the process during CPU training (glibc only).

A CPU training step allocates and frees the same few hundred megabytes of
activations and gradients every step. glibc's defaults hand blocks above its
mmap threshold straight back to the kernel on free, so the next step maps
them again and takes a page fault for every 4 KiB it touches: on this
project's 2-core reference machine that was a quarter of the training
process's CPU time spent in the kernel, and 20-40% of its images/s
(``python -m fracture.bench`` measures it; see the README's benchmark notes).
Serving large blocks from the heap and never trimming it makes a step reuse
the pages it used before.

The price is that the process keeps its peak heap until it exits, which is
right for a training process or a benchmark and wrong for a long-lived app,
so only those call :func:`keep_freed_memory`. ``FRACTURE_MALLOC_TUNING=0``
turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

#: Environment variable that turns the tuning off when set to 0/false/no/off.
ENV_SWITCH = "FRACTURE_MALLOC_TUNING"
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")
#: Extra heap asked of the kernel each time the heap grows (virtual until touched).
TOP_PAD_BYTES = 256 * 1024 * 1024
#: Free memory at the top of the heap kept instead of returned (all of it, in practice).
TRIM_THRESHOLD_BYTES = 2**31 - 1

_tuned = False


def is_tuned() -> bool:
    """Whether :func:`keep_freed_memory` tuned this process (benchmarks record it)."""
    return _tuned


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it, for this process.

    Returns:
        True when the allocator was tuned; False when it was not (not glibc,
        turned off by ``FRACTURE_MALLOC_TUNING=0``, or glibc refused), with
        the reason logged. Never raises: the tuning is a speed-up only.
    """
    switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if switch in _OFF:
        logger.info("allocator tuning off (%s=%s)", ENV_SWITCH, os.environ[ENV_SWITCH])
        return False
    if switch not in _ON:
        logger.warning("%s=%r is not one of %s or %s; tuning the allocator as by default",
                       ENV_SWITCH, os.environ[ENV_SWITCH], "/".join(_ON[1:]), "/".join(_OFF))
    if not sys.platform.startswith("linux"):
        logger.info("allocator tuning skipped: %s is not Linux/glibc", sys.platform)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:  # musl and others have no mallopt
        logger.info("allocator tuning skipped: no glibc mallopt (%s)", exc)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = {
        "M_MMAP_MAX": (_M_MMAP_MAX, 0),
        "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        "M_TOP_PAD": (_M_TOP_PAD, TOP_PAD_BYTES),
    }
    refused = [name for name, (param, value) in settings.items() if mallopt(param, value) != 1]
    if refused:
        logger.warning("glibc refused mallopt %s; training runs with the default allocator", ", ".join(refused))
        return False
    global _tuned
    _tuned = True
    logger.info("allocator tuned: large blocks from the heap, heap never trimmed")
    return True
