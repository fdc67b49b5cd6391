"""Keep freed host memory in the process instead of handing it back to the kernel (glibc).

A forward pass allocates and frees dozens of activations of 5-50 MB per tile. With glibc's
defaults, blocks above the *dynamic* mmap threshold are mapped fresh and unmapped on free, and
free memory at the top of the heap is trimmed: the next tile page-faults the same memory in
again, zero-filled by the kernel. How often that happens depends on the process's history, so
the same frame ran in two speeds: with 512 px tiles a 512 px frame took 0.34 s or 0.42 s from
one run to the next (docs/benchmarks.md). Fixing both thresholds keeps the memory in the
process for reuse; the price is that the process keeps its peak heap (reused every frame).

Only glibc on Linux is tuned; elsewhere (Windows, macOS, musl) nothing changes and
:func:`retain_freed_memory` returns False. ``TCAN_LIVE_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

ENV = "TCAN_LIVE_MALLOC_TUNING"
M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # blocks up to 64 MiB from the heap (a 512 px, 48-channel map: 48 MiB)
TRIM_THRESHOLD = 1 << 30  # give heap top back to the kernel only beyond 1 GiB free

_state: dict[str, bool] = {}


def retain_freed_memory() -> bool:
    """Apply the two ``mallopt`` settings once per process; True if they are in force."""
    if "applied" not in _state:
        _state["applied"] = _apply()
    return _state["applied"]


def supported() -> bool:
    """True where the tuning applies: glibc on Linux."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _apply() -> bool:
    if os.environ.get(ENV, "1").strip() == "0":
        log.debug("malloc tuning off (%s=0)", ENV)
        return False
    if not supported():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
              and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError) as err:
        log.debug("malloc tuning unavailable: %s", err)
        return False
    log.debug("glibc malloc: mmap threshold %d MiB, trim threshold %d MiB: %s",
              MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20, "applied" if ok else "refused")
    return ok
