"""One pixel-size precedence at every entry point (issue 20): the user's value (flag / setting)
wins over the file's (or a pushed header's), which wins over the model's; the same expected
result for watch, ingest, enhance, export, a Dask task, and training pairs (units honoured)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import wait_for

from tcan_live._cli import main

FILE_PX, FLAG_PX = 0.1, 0.04


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    path = tmp_path / "acq" / "cells.ome.tif"
    path.parent.mkdir()
    data = np.random.default_rng(0).integers(0, 900, (3, 64, 64), dtype=np.uint16)
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": FILE_PX * 1000, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": FILE_PX * 1000, "PhysicalSizeYUnit": "nm"})  # in nm: units honoured
    return path


def _ome_px(path: Path) -> float:
    from ome_types import from_xml

    with tifffile.TiffFile(path) as tif:
        return float(from_xml(tif.ome_metadata).images[0].pixels.physical_size_x)


@pytest.mark.parametrize(("flag", "want"), [(None, FILE_PX), (FLAG_PX, FLAG_PX)])
def test_enhance_and_export(tiny_model: Path, tmp_path: Path, stack: Path, flag: float | None,
                            want: float) -> None:
    extra = [] if flag is None else ["--pixel-size-um", str(flag)]
    assert main(["enhance", str(stack), "-o", str(tmp_path / "e"), "--model", str(tiny_model),
                 *extra]) == 0
    assert _ome_px(tmp_path / "e" / "cells_tcan.ome.tif") == pytest.approx(want)
    assert main(["export", str(stack), "-o", str(tmp_path / "x.ome.tif"), "--model",
                 str(tiny_model), "--no-drift-correct", *extra]) == 0
    assert _ome_px(tmp_path / "x.ome.tif") == pytest.approx(want)


@pytest.mark.parametrize(("flag", "want"), [(None, FILE_PX), (FLAG_PX, FLAG_PX)])
def test_watch_and_ingest(make_daemon: Any, stack: Path, flag: float | None,
                          want: float) -> None:
    from tcan_live.transport.ingest import FrameForwarder

    d = make_daemon(folder=stack.parent, pixel_size_um=flag, ingest="tcp://127.0.0.1:*")
    ingest = next(s for s in d.sources if hasattr(s, "bound"))
    fwd = FrameForwarder(str(ingest.bound))
    try:
        time.sleep(0.3)
        assert fwd.send(np.zeros((64, 64), np.uint16) + 100,
                        {"stream": "pushed", "index": {"t": 0}, "pixel_size_um": FILE_PX})
        assert wait_for(lambda: len(d.store.streams) == 2 and all(
            s.planes for s in list(d.store.streams.values())), 60)
    finally:
        fwd.close()
    for st in list(d.store.streams.values()):  # the file's stack and the pushed stream
        assert st.meta["pixel_size_um"] == pytest.approx(want), st.stream


@pytest.mark.parametrize(("flag", "want"), [(None, FILE_PX), (FLAG_PX, FLAG_PX)])
def test_a_dask_task(tiny_model: Path, stack: Path, flag: float | None, want: float,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker-side task (distributed.enhance_plane_task), its resident model given here."""
    import tcan_live.distributed as dist
    from tcan_live.sr.enhancer import Enhancer

    resident = type("P", (), {"enhancer": Enhancer(tiny_model, device="cpu", warmup=False)})()
    monkeypatch.setattr(dist, "_plugin", lambda: resident)
    _, _, _, px, _ = dist.enhance_plane_task(str(stack), 1, flag, False)
    assert px == pytest.approx(want)


def test_training_pairs(tmp_path: Path) -> None:
    from tcan_live.train.pairs import read_pair_stack

    path = tmp_path / "pair.ome.tif"
    tifffile.imwrite(path, np.zeros((2, 32, 32), np.float32), ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": FILE_PX * 1000, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": FILE_PX * 1000, "PhysicalSizeYUnit": "nm"})
    assert read_pair_stack(path).pixel_size_um == pytest.approx(FILE_PX)
