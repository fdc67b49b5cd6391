"""Dask: a LocalCluster of 2 worker processes gives the single-process result, loads the model
once per worker, and survives a worker killed mid-run."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")

from tcan_live._cli import main
from tcan_live.distributed import connect, enhance_planes, worker_loads


@pytest.fixture
def stack_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    data = rng.integers(100, 2000, (5, 2, 96, 80), dtype=np.uint16)  # T, C
    path = tmp_path / "in" / "cells.ome.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.06, "PhysicalSizeXUnit": "µm",
        "Channel": {"Name": ["tubulin", "actin"]}, "TimeIncrement": 3.0,
        "TimeIncrementUnit": "s"})
    return path


@pytest.mark.slow
def test_local_cluster_matches_single_process(tiny_model: Path, tmp_path: Path,
                                              stack_file: Path) -> None:
    assert main(["enhance", str(stack_file), "-o", str(tmp_path / "single"),
                 "--model", str(tiny_model)]) == 0
    assert main(["enhance", str(stack_file), "-o", str(tmp_path / "dask"),
                 "--model", str(tiny_model), "--workers", "2"]) == 0
    with tifffile.TiffFile(tmp_path / "single" / "cells_tcan.ome.tif") as a, \
            tifffile.TiffFile(tmp_path / "dask" / "cells_tcan.ome.tif") as b:
        np.testing.assert_allclose(b.asarray(), a.asarray(), rtol=1e-5, atol=1e-4)
        uuid = re.compile(r"urn:uuid:[0-9a-f-]+")  # unique per file by design
        assert uuid.sub("", a.ome_metadata) == uuid.sub("", b.ome_metadata)  # same metadata
    with connect(None, 2, model=str(tiny_model), device="cpu", tile=None) as client:
        enhance_planes(client, stack_file, 10, pixel_size_um=None)
        loads = client.run(worker_loads)
    assert len(loads) == 2
    assert all(n == 1 for _, n in loads.values())  # one model load per worker, 10 planes


@pytest.mark.slow
def test_killed_worker_still_every_frame_exactly_once(tiny_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    data = rng.integers(100, 2000, (16, 512, 512), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    with connect(None, 2, model=str(tiny_model), device="cpu", tile=None) as client:
        pids = list(client.run(os.getpid).values())
        done: dict[str, object] = {}
        progress = [0]
        th = threading.Thread(target=lambda: done.update(res=enhance_planes(
            client, path, 16, pixel_size_um=0.05,
            progress=lambda n, total: progress.__setitem__(0, n))))
        th.start()
        deadline = time.monotonic() + 120
        while progress[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        at_kill = progress[0]
        os.kill(pids[0], signal.SIGKILL)  # a worker dies with planes in flight
        th.join(300)
    assert 2 <= at_kill < 16
    res = done["res"]
    assert isinstance(res, dict) and sorted(res) == list(range(16))  # each plane once
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(tiny_model, warmup=False)
    for k in (0, 7, 15):
        idx, img, _ = res[k]
        assert idx == (k,)
        np.testing.assert_allclose(img, enh.enhance(data[k], 0.05).image, rtol=1e-5, atol=1e-4)
