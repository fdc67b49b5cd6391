"""Output store cost over a long acquisition: write amplification and per-frame save time.

``python -m benchmarks.storage [--frames 1000] [--size 512] [--write-docs]``

Drives the daemon's :class:`OutputStore` as the daemon does (``add`` each enhanced frame, then
``flush(idle_s=3)`` between frames, ``flush()`` at shutdown) for a time-lapse at one frame every
5 s, on a simulated clock (an hour of acquisition runs in seconds; the disk work is real). For
each output format it reports the bytes this process handed to ``write()`` (Linux
``/proc/self/io`` ``wchar``: plane chunks, journal, metadata, OME-TIFF) divided by the bytes of
the finished output, and the wall time of each frame's ``add`` + ``flush``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import parse_script
from benchmarks.report import emit, machine, table
from tcan_live.export.store import OutputStore
from tcan_live.frame import Frame, FrameIndex


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io (Linux only)")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def run(fmt: str, frames: int, size: int, folder: Path, interval_s: float = 5.0,
        idle_s: float = 3.0) -> dict[str, object]:
    rng = np.random.default_rng(0)
    pool = [rng.random((size, size), dtype=np.float32) for _ in range(4)]
    clock = _Clock()
    store = OutputStore(folder / fmt, fmt=fmt, clock=clock)
    times, tiff_writes = [], 0
    start = _wchar()
    for t in range(frames):
        clock.now = t * interval_s
        frame = Frame(pool[t % 4], FrameIndex(t=t), stream="cells", source="cells.nd2",
                      time_s=t * interval_s)
        t0 = time.perf_counter()
        store.add(frame, frame.data, 0.05)
        clock.now += 1.0  # the daemon's idle loop between frames
        written = store.flush(idle_s=idle_s)
        clock.now += interval_s - 1.0 - 0.01
        written += store.flush(idle_s=idle_s)
        times.append(time.perf_counter() - t0)
        tiff_writes += sum(w.name.endswith(".ome.tif") for w in written)
    t0 = time.perf_counter()
    out = store.flush()  # shutdown
    final_s = time.perf_counter() - t0
    total = _wchar() - start
    store.close()
    out_bytes = _size(out[0])
    ms = np.array(times) * 1000
    k = min(100, frames)
    return {
        "format": fmt, "frames": frames, "frame": f"{size} x {size} float32",
        "output (MB)": out_bytes / 1e6, "written (MB)": total / 1e6,
        "write amplification": total / out_bytes,
        f"save ms, frames 1-{k} (median)": float(np.median(ms[:k])),
        f"save ms, last {k} (median)": float(np.median(ms[-k:])),
        "save ms, max": float(ms.max()),
        "OME-TIFF writes during the run": tiff_writes,
        "final flush (s)": final_s,
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_script('storage', argv, __doc__)
    rows = []
    for fmt in ("ome-tiff", "ome-zarr"):
        with tempfile.TemporaryDirectory(dir=a.folder) as tmp:
            rows.append(run(fmt, a.frames, a.size, Path(tmp)))
    body = (f"Output store over a {a.frames}-frame time-lapse (one frame per 5 s on a simulated "
            f"clock, flush with idle 3 s between frames as the daemon does; `python -m "
            f"benchmarks.storage --frames {a.frames} --size {a.size}`); {machine()}.\n\n"
            + table(rows))
    emit("storage", body, a.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
