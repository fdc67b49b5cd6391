"""kill -9 in the middle of a run, restart: every frame saved exactly once. Memory stays bounded
with a subscriber that never reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zmq
from conftest import rss_mb, wait_for

from tcan_live.frame import Frame, FrameIndex
from tcan_live.sim.timelapse import TimelapseSpec, write_timelapse


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _journal(out: Path) -> list[dict[str, object]]:
    path = out / ".tcan-live" / "journal.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
            rows.append(json.loads(line))
    return rows




@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_kill_9_then_restart_saves_every_frame_once(tiny_model: Path, tmp_path: Path,
                                                    fmt: str) -> None:
    n = 40
    acq, out = tmp_path / "acq", tmp_path / "out"
    write_timelapse(acq, TimelapseSpec(frames=n, size=256, name="cells", seed=2))
    cmd = [sys.executable, "-m", "tcan_live._cli", "watch", str(acq), "--output", str(out),
           "--model", str(tiny_model), "--endpoint", f"tcp://127.0.0.1:{_free_port()}",
           "--settle", "0.2", "--no-panel", "--device", "cpu", "--format", fmt]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(_journal(out)) >= 5, 120), "daemon never got going"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    done_at_kill = len(_journal(out))
    assert 5 <= done_at_kill < n, f"kill was not mid-run ({done_at_kill} of {n})"
    assert not (out / "cells_tcan.ome.tif").exists() or done_at_kill < n

    second = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: len(_journal(out)) >= n, 120)
        time.sleep(0.5)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    finally:
        if second.poll() is None:
            second.kill()
    rows = _journal(out)
    keys = [r["index"]["t"] for r in rows]  # type: ignore[index]
    assert sorted(keys) == list(range(n)), "a frame is missing or saved twice"
    if fmt == "ome-tiff":
        saved = tifffile.imread(out / "cells_tcan.ome.tif")
    else:
        import zarr

        from tcan_live.export.omezarr import validate

        validate(out / "cells_tcan.ome.zarr")
        saved = np.asarray(zarr.open_group(str(out / "cells_tcan.ome.zarr"), mode="r")["p0"])
        saved = saved[:, 0, 0]
    assert saved.shape == (n, 256, 256) and np.isfinite(saved).all()
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(tiny_model, warmup=False)
    for t in (0, done_at_kill - 1, done_at_kill, n - 1):
        raw = tifffile.imread(acq / f"cells_t{t:04d}.tif")
        np.testing.assert_allclose(saved[t], enh.enhance(raw, 0.05).image, rtol=1e-4, atol=1e-3)




@pytest.mark.slow
def test_memory_stays_bounded_with_a_stalled_subscriber(tiny_model: Path,
                                                        tmp_path: Path) -> None:
    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings

    acq = tmp_path / "acq"
    acq.mkdir()
    d = Daemon(Settings(folder=acq, output=tmp_path / "out", model=str(tiny_model),
                        endpoint="tcp://127.0.0.1:*", flush_idle_s=3600))
    d.start()
    stalled = zmq.Context.instance().socket(zmq.SUB)
    try:
        assert wait_for(lambda: d.publisher is not None, 10)
        stalled.setsockopt(zmq.RCVHWM, 1)
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(d.publisher.endpoint)
        frame = np.random.default_rng(0).random((512, 512)).astype(np.float32)

        def push(start: int, count: int) -> None:
            for t in range(start, start + count):
                d.submit(Frame(frame, FrameIndex(t=t), pixel_size_um=0.05, stream="s",
                               source="s"))
            assert wait_for(lambda: d.stats.frames_done >= start + count, 300)

        push(0, 20)  # warm: allocator pools, caches
        before = rss_mb()
        push(20, 150)  # 150 x (1 MB raw + 1 MB enhanced) offered to a reader that never reads
        grown = rss_mb() - before
        assert grown < 120, f"RSS grew by {grown:.0f} MB"
    finally:
        stalled.close(linger=0)
        d.stop()
