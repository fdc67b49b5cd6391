"""The glibc malloc tuning keeps freed memory in the process (and can be turned off)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tcan_live.sr.hostmem import supported

pytestmark = pytest.mark.skipif(not supported(), reason="the tuning applies to glibc on Linux only")

PROBE = """
import os
import numpy as np
from tcan_live.sr.hostmem import retain_freed_memory

applied = retain_freed_memory()

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

a = np.ones((48 << 20) // 8)  # 48 MiB, every page touched
held = rss()
del a
print(applied, (held - rss()) >> 20)
"""


def _probe(tuning: str) -> tuple[bool, int]:
    env = {**os.environ, "TCAN_LIVE_MALLOC_TUNING": tuning}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_block_stays_in_the_process_when_tuned() -> None:
    applied, released_mib = _probe("1")
    assert applied and released_mib < 8  # kept for the next tile


def test_glibc_defaults_return_it_when_turned_off() -> None:
    applied, released_mib = _probe("0")
    assert not applied and released_mib > 40  # unmapped: the next tile page-faults it back
