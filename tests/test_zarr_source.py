"""Zarr acquisitions as input (issue 19): a growing OME-Zarr read plane by plane as its chunks
land, a real pymmcore-plus MDA writing zarr (TensorStoreHandler) enhanced live by the daemon,
OME-Zarr files into `enhance`, and clear refusals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from conftest import wait_for

from tcan_live.errors import UnsupportedInputError
from tcan_live.export.omezarr import ZarrMeta, ngff_attrs
from tcan_live.sources.zarrsrc import ZarrReader

SHAPE = (40, 56)


def _ngff(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], unit: str = "nanometer",
          scale_xy: float = 65.0) -> Any:
    """An NGFF 0.5 image written with zarr and ome-zarr-models (not tcan-live's writer), as an
    acquisition program would: metadata first, planes later."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    attrs = ngff_attrs(ZarrMeta(pixel_size_um=1.0, time_increment_s=2.0,
                                channel_names=["GFP", "RFP"]))
    for ax in attrs["multiscales"][0]["axes"][3:]:
        ax["unit"] = unit
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][3:] = \
        [scale_xy, scale_xy]
    group.attrs["ome"] = attrs
    return group.create_array("p0", shape=shape, chunks=chunks, dtype="uint16", fill_value=0,
                              dimension_names=list("tczyx"))


def test_a_growing_ome_zarr_is_read_plane_by_plane(tmp_path: Path) -> None:
    path = tmp_path / "run.ome.zarr"
    arr = _ngff(path, (4, 2, 1, *SHAPE), (1, 1, 1, 20, 28))  # each plane in 4 tiles
    rng = np.random.default_rng(0)
    planes = {(t, c): rng.integers(1, 4000, SHAPE, dtype=np.uint16)
              for t in range(4) for c in range(2)}
    seen: set[tuple[int, ...]] = set()
    order = [(0, 0), (0, 1), (1, 1), (1, 0), (3, 0)]  # out of order, one time point skipped
    for t, c in order:
        arr[t, c, 0, :20] = planes[(t, c)][:20]  # half the tiles: not yet
        assert not list(ZarrReader(path).written_planes(seen, multi_ok=False))
        arr[t, c, 0, 20:] = planes[(t, c)][20:]
        reader = ZarrReader(path)
        got = list(reader.written_planes(seen, multi_ok=False))
        assert [idx for idx, _ in got] == [(t, c, 0)]
        frame = got[0][1]
        np.testing.assert_array_equal(frame.data, planes[(t, c)])
        assert (frame.index.t, frame.index.c, frame.channel_name) == (t, c, ["GFP", "RFP"][c])
        assert frame.pixel_size_um == pytest.approx(0.065)  # 65 nm, unit honoured
        assert frame.time_s == pytest.approx(2.0 * t)
        seen.add(got[0][0])
    assert reader.info.axes == "TCZ" and reader.info.shape == (4, 2, 1)


def test_planes_sharing_a_chunk_wait_until_the_dataset_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "multi.zarr"
    arr = _ngff(path, (4, 1, 1, *SHAPE), (2, 1, 1, *SHAPE))
    arr[0, 0, 0] = 7
    reader = ZarrReader(path)
    assert not reader.one_plane_per_chunk()
    assert not list(reader.written_planes(set(), multi_ok=False))  # plane 1 may be unwritten
    got = list(reader.written_planes(set(), multi_ok=True))
    assert [idx for idx, _ in got] == [(0, 0, 0), (1, 0, 0)]


def test_unreadable_zarr_layouts_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "noaxes.zarr"
    zarr.create_array(str(path), shape=(3, 16, 16), dtype="uint16", zarr_format=3)
    with pytest.raises(UnsupportedInputError, match="without axis names") as err:
        ZarrReader(path)
    assert str(path) in str(err.value)
    path = tmp_path / "odd.zarr"
    zarr.create_array(str(path), shape=(3, 16, 16), dtype="uint16", zarr_format=3,
                      dimension_names=["angle", "y", "x"])
    with pytest.raises(UnsupportedInputError, match="unsupported axis 'angle'"):
        ZarrReader(path)


def test_enhance_reads_ome_zarr(tiny_model: Path, tmp_path: Path) -> None:
    from tcan_live._cli import main

    path = tmp_path / "run.ome.zarr"
    arr = _ngff(path, (2, 2, 1, *SHAPE), (1, 1, 1, *SHAPE), unit="micrometer", scale_xy=0.05)
    arr[...] = np.random.default_rng(1).integers(0, 3000, arr.shape, dtype=np.uint16)
    assert main(["enhance", str(path), "-o", str(tmp_path / "o"), "--model",
                 str(tiny_model)]) == 0
    out = tifffile.imread(tmp_path / "o" / "run_tcan.ome.tif")
    assert out.shape == (2, 2, *SHAPE) and np.isfinite(out).all()


@pytest.mark.slow
def test_a_real_pymmcore_plus_zarr_acquisition_is_enhanced_live(make_daemon: Any,
                                                                tmp_path: Path) -> None:
    """pymmcore-plus's TensorStoreHandler (zarr v3) writes an MDA into the watched folder while
    the daemon runs: every plane is enhanced once, with its index, some before the acquisition
    ends, and the saved stack equals the Enhancer's output for the finished dataset."""
    pytest.importorskip("tensorstore")
    import useq
    from pymmcore_plus.mda.handlers import TensorStoreHandler
    from test_micromanager import make_core

    from tcan_live.frame import FrameIndex

    acq = tmp_path / "acq"
    acq.mkdir()
    # the handler writes the pixel size only when the acquisition ends: given, as the docs say
    d = make_daemon(folder=acq, pixel_size_um=0.065)
    core = make_core(size=64)
    seq = useq.MDASequence(time_plan={"interval": 0.4, "loops": 5}, channels=["DAPI", "FITC"],
                           axis_order="tpcz")
    handler = TensorStoreHandler(driver="zarr3", path=acq / "mda.zarr")
    thread = core.run_mda(seq, output=handler)
    saved_during: list[int] = []
    while thread.is_alive():
        saved_during.append(sum(len(s.planes) for s in list(d.store.streams.values())))
        time.sleep(0.05)
    assert wait_for(lambda: sum(len(s.planes) for s in list(d.store.streams.values())) >= 10,
                    60)
    time.sleep(1.0)  # nothing more may come
    (stream,) = d.store.streams
    done = d.store.streams[stream].planes
    assert done == {FrameIndex(t=t, c=c) for t in range(5) for c in range(2)}
    assert max(saved_during) >= 1, "nothing was enhanced before the acquisition ended"
    assert d.stats.frames_in == 10  # each plane handed on once
    d.store.flush()
    saved = tifffile.imread(tmp_path / "out" / "mda_tcan.ome.tif")  # T, C, Y, X
    with ZarrReader(acq / "mda.zarr") as reader:
        for idx, frame in reader.planes():
            want = d.enhancer.enhance(frame.data, 0.065).image
            np.testing.assert_allclose(saved[idx[0], idx[1]], want, rtol=1e-4, atol=1e-3)
