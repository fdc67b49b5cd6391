"""The daemon's output store (issue 19): append-only (bytes per plane do not grow with the
stream), current OME-Zarr during the run, crash recovery by the journal, the OME-TIFF written
once a stream is quiet, journals of the parts-file era taken over, OME-Zarr as output format."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from tcan_live.export.omezarr import PlaneStore, validate
from tcan_live.export.store import OutputStore, read_journal
from tcan_live.frame import Frame, FrameIndex

SHAPE = (64, 96)


def _plane(t: int, c: int = 0) -> np.ndarray:
    rng = np.random.default_rng(1000 * c + t)
    return rng.random(SHAPE, dtype=np.float32)


def _frame(t: int, c: int = 0, stream: str = "cells") -> Frame:
    return Frame(_plane(t, c), FrameIndex(t=t, c=c), stream=stream, source=f"{stream}.tif",
                 time_s=2.0 * t, channel_name=f"ch{c}")


def _wchar() -> int:
    """Bytes this process has handed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_bytes_written_per_plane_do_not_grow_with_the_stream(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out")
    per_plane = []
    for t in range(120):
        before = _wchar()
        store.add(_frame(t), _plane(t), 0.05)
        store.flush(idle_s=3.0)  # what the daemon does between frames: nothing to write yet
        per_plane.append(_wchar() - before)
    plane_bytes = SHAPE[0] * SHAPE[1] * 4
    early, late = np.median(per_plane[5:20]), np.median(per_plane[100:])
    assert late <= 1.1 * early, (early, late)
    assert late < plane_bytes + 8192, (late, plane_bytes)  # the chunk + journal line + json
    assert not (tmp_path / "out" / "cells_tcan.ome.tif").exists()  # not rewritten per frame
    store.close()


def test_the_live_ome_zarr_is_valid_and_current_during_the_run(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out")
    for t in range(3):
        for c in range(2):
            store.add(_frame(t, c), _plane(t, c), 0.05)
    live = read_journal(tmp_path / "out")["cells"]["planes"]  # what another process sees
    assert live == tmp_path / "out" / ".tcan-live" / "live" / "cells_tcan.ome.zarr"
    validate(live)
    group = zarr.open_group(str(live), mode="r")
    arr = group["p0"]
    assert arr.shape == (3, 2, 1, *SHAPE)
    np.testing.assert_array_equal(arr[2, 1, 0], _plane(2, 1))
    ome = group.attrs["ome"]
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == list("tczyx")
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 1.0, 1.0, 0.05,
                                                                          0.05]
    assert [c["label"] for c in ome["omero"]["channels"]] == ["ch0", "ch1"]
    store.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_ome_tiff_is_written_once_the_stream_is_quiet(tmp_path: Path) -> None:
    """A time-lapse at one frame per 5 s, the daemon flushing (idle 3 s) between frames: the
    OME-TIFF is written after the first frame (no gap known yet) and once at the end, never in
    between (it would be rewritten whole after every frame)."""
    clock = _Clock()
    store = OutputStore(tmp_path / "out", clock=clock.monotonic)
    out = tmp_path / "out" / "cells_tcan.ome.tif"
    writes = []
    start = clock.now
    for t in range(20):
        clock.now = start + 5 * t
        store.add(_frame(t), _plane(t), 0.05)
        for dt in (0.1, 4.0, 4.9):
            clock.now = start + 5 * t + dt
            writes += [(t, dt)] * len(store.flush(idle_s=3.0))
    assert writes == [(0, 4.0)]
    clock.now = start + 5 * 19 + 10.1  # quiet for 2 x the longest gap: the acquisition ended
    assert store.flush(idle_s=3.0) == [out]
    assert store.flush(idle_s=3.0) == []  # nothing new: not rewritten
    np.testing.assert_array_equal(tifffile.imread(out), np.stack([_plane(t) for t in range(20)]))
    store.close()


def test_recovery_removes_unjournaled_planes_and_forgets_lost_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = OutputStore(out)
    for t in range(4):
        store.add(_frame(t), _plane(t), 0.05)
    store.close()
    live = out / ".tcan-live" / "live" / "cells_tcan.ome.zarr"
    # a crash after a plane's chunk was written and before its journal line ...
    PlaneStore(live, SHAPE).write(FrameIndex(t=4), _plane(4))
    (live / "p0" / "c" / "stray.partial").write_bytes(b"half a chunk")
    # ... and a saved plane's chunk lost (deleted by hand)
    (live / "p0" / "c" / "1" / "0" / "0" / "0" / "0").unlink()
    store = OutputStore(out)
    assert sorted(i.t for i in store.streams["cells"].planes) == [0, 2, 3]
    assert not store.is_done("cells", FrameIndex(t=1))  # so it is processed again
    assert not list(live.rglob("*.partial"))
    assert PlaneStore(live, SHAPE).written() == {FrameIndex(t=t) for t in (0, 2, 3)}
    lines = [json.loads(x) for x in (out / ".tcan-live" / "journal.jsonl").read_text().splitlines()]
    assert sorted(r["index"]["t"] for r in lines) == [0, 2, 3]
    store.add(_frame(1), _plane(1), 0.05)
    store.flush()
    saved = tifffile.imread(out / "cells_tcan.ome.tif")
    np.testing.assert_array_equal(saved, np.stack([_plane(t) for t in range(4)]))
    store.close()


def test_a_journal_of_the_parts_file_era_is_taken_over(tmp_path: Path) -> None:
    """Output folders written by earlier versions (planes in .tcan-live/parts/<id>.f32, plane
    number in each journal line) keep their frames."""
    import hashlib

    out = tmp_path / "out"
    state = out / ".tcan-live"
    (state / "parts").mkdir(parents=True)
    order = [2, 0, 1]  # planes in processing order
    parts = state / "parts" / f"{hashlib.sha1(b'cells').hexdigest()[:12]}.f32"  # as written
    with parts.open("wb") as fh:
        for t in order:
            fh.write(_plane(t).tobytes())
    meta = {"pixel_size_um": 0.05, "source": "cells.tif", "channels": {}, "z_step_um": None,
            "output": "cells_tcan.ome.tif"}
    with (state / "journal.jsonl").open("w") as fh:
        for k, t in enumerate(order):
            fh.write(json.dumps({"stream": "cells", "index": FrameIndex(t=t).as_dict(),
                                 "plane": k, "shape": list(SHAPE), "meta": meta}) + "\n")
    store = OutputStore(out)
    assert not parts.exists()
    store.flush()
    np.testing.assert_array_equal(tifffile.imread(out / "cells_tcan.ome.tif"),
                                  np.stack([_plane(t) for t in range(3)]))
    store.close()


def test_ome_zarr_output_format(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = OutputStore(out, fmt="ome-zarr")
    for t in range(3):
        store.add(_frame(t), _plane(t), 0.05)
    target = out / "cells_tcan.ome.zarr"
    validate(target)  # current before any flush
    assert store.flush() == [target]
    assert not list(out.glob("*.ome.tif")) and not (out / ".tcan-live" / "live").exists()
    arr = zarr.open_group(str(target), mode="r")["p0"]
    np.testing.assert_array_equal(arr[:, 0, 0], np.stack([_plane(t) for t in range(3)]))
    store.close()
    store = OutputStore(out, fmt="ome-zarr")  # restart: the journal finds the same store
    assert store.is_done("cells", FrameIndex(t=2))
    store.close()


def test_positions_are_one_multiscale_each(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out")
    for p in (0, 1):
        for t in range(2):
            f = Frame(_plane(t, p), FrameIndex(t=t, p=p), stream="s", source="s.nd2")
            store.add(f, f.data, 0.1)
    store.flush()
    live = tmp_path / "out" / ".tcan-live" / "live" / "s_tcan.ome.zarr"
    validate(live)
    ms = zarr.open_group(str(live), mode="r").attrs["ome"]["multiscales"]
    assert [m["datasets"][0]["path"] for m in ms] == ["p0", "p1"]
    with tifffile.TiffFile(tmp_path / "out" / "s_tcan.ome.tif") as tif:
        assert len(tif.series) == 2
        np.testing.assert_array_equal(tif.series[1].asarray()[1], _plane(1, 1))
    store.close()


# ---------------------------------------------------------------------------------------------
# OME-Zarr from the command line: the same numbers as the OME-TIFF


@pytest.fixture
def dual_stack(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    path = tmp_path / "dual.ome.tif"
    tifffile.imwrite(path, rng.integers(0, 900, (4, 2, 48, 64), dtype=np.uint16), ome=True,
                     metadata={"axes": "TCYX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05,
                               "TimeIncrement": 2.0, "Channel": {"Name": ["tub", "act"]}})
    return path


def _zarr_tczyx(path: Path, p: int = 0) -> tuple[np.ndarray, dict[str, object]]:
    validate(path)  # ome_zarr_models' validation of NGFF 0.5
    group = zarr.open_group(str(path), mode="r")
    return np.asarray(group[f"p{p}"][...]), dict(group.attrs)


def test_export_ome_zarr_matches_the_ome_tiff_bit_for_bit(tiny_model: Path, tmp_path: Path,
                                                          dual_stack: Path) -> None:
    from tcan_live._cli import main

    for name in ("e.ome.tif", "e.ome.zarr"):
        assert main(["export", str(dual_stack), "-o", str(tmp_path / name), "--model",
                     str(tiny_model), "--save-raw"]) == 0
    for stem in ("e", "e_raw"):
        tif = tifffile.imread(tmp_path / f"{stem}.ome.tif")  # T, C, Y, X
        arr, attrs = _zarr_tczyx(tmp_path / f"{stem}.ome.zarr")
        assert arr.shape == (4, 2, 1, *tif.shape[-2:])
        np.testing.assert_array_equal(arr[:, :, 0], tif)  # bit for bit
    ms = attrs["ome"]["multiscales"][0]  # type: ignore[index]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 1.0, 1.0, 0.05,
                                                                          0.05]
    assert [a.get("unit") for a in ms["axes"]] == ["second", None, None, "micrometer",
                                                   "micrometer"]
    assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == ["tub", "act"]
    assert main(["export", str(dual_stack), "-o", str(tmp_path / "f.ome.tif"),
                 "--format", "ome-zarr", "--model", str(tiny_model)]) == 2  # name vs format
    assert not list(tmp_path.glob(".*part*"))


def test_enhance_format_ome_zarr(tiny_model: Path, tmp_path: Path, dual_stack: Path) -> None:
    from tcan_live._cli import main

    assert main(["enhance", str(dual_stack), "-o", str(tmp_path / "t"), "--model",
                 str(tiny_model)]) == 0
    assert main(["enhance", str(dual_stack), "-o", str(tmp_path / "z"), "--model",
                 str(tiny_model), "--format", "ome-zarr", "--residual"]) == 0
    arr, _ = _zarr_tczyx(tmp_path / "z" / "dual_tcan.ome.zarr")
    np.testing.assert_array_equal(arr[:, :, 0], tifffile.imread(tmp_path / "t" /
                                                                "dual_tcan.ome.tif"))
    assert (tmp_path / "z" / "dual_residual.ome.zarr" / "zarr.json").is_file()


def test_watch_format_ome_zarr_saves(make_daemon: Any, tmp_path: Path) -> None:
    """The daemon with output_format ome-zarr: the enhanced stack is an OME-Zarr, valid while it
    grows, equal to what the Enhancer gives for each frame."""
    from conftest import wait_for

    from tcan_live.sim.timelapse import TimelapseSpec, write_timelapse

    acq = tmp_path / "acq"
    write_timelapse(acq, TimelapseSpec(frames=3, size=64, name="cells", seed=1))
    d = make_daemon(folder=acq, output_format="ome-zarr")
    target = tmp_path / "out" / "cells_tcan.ome.zarr"
    assert wait_for(lambda: sum(len(s.planes) for s in list(d.store.streams.values())) >= 3, 120)
    arr, attrs = _zarr_tczyx(target)
    assert arr.shape[0] == 3 and np.isfinite(arr).all()
    assert attrs["tcan_live"]["model"] == d.enhancer.model_id  # type: ignore[index]
    raw = tifffile.imread(acq / "cells_t0002.tif")
    np.testing.assert_allclose(arr[2, 0, 0], d.enhancer.enhance(raw, 0.05).image, rtol=1e-4,
                               atol=1e-3)
    assert not list((tmp_path / "out").glob("*.ome.tif"))


def test_own_ome_zarr_outputs_are_never_enhanced_again(tiny_model: Path, tmp_path: Path,
                                                       dual_stack: Path,
                                                       make_daemon: Any) -> None:
    """An `.ome.zarr` that tcan-live wrote: `export` takes it as already enhanced (no model
    needed), and a daemon watching a folder that holds one leaves it alone."""
    from conftest import wait_for

    from tcan_live._cli import main

    acq = tmp_path / "acq"
    assert main(["enhance", str(dual_stack), "-o", str(acq), "--model", str(tiny_model),
                 "--format", "ome-zarr"]) == 0
    assert main(["export", str(acq / "dual_tcan.ome.zarr"), "-o", str(tmp_path / "x.ome.tif"),
                 "--model", "no-such-model", "--no-drift-correct"]) == 0
    assert tifffile.imread(tmp_path / "x.ome.tif").shape[:2] == (4, 2)
    d = make_daemon(folder=acq)
    assert wait_for(lambda: d.sources[0].tracked_count()[1] >= 1, 30)  # looked at, finished
    time.sleep(1.0)
    assert d.stats.frames_in == 0


def test_a_configuration_of_an_earlier_version_still_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`flush_every_s` (periodic OME-TIFF rewrites, retired by issue 19) in a service's TOML
    must not stop the service from starting: ignored, with a warning."""
    import logging

    from tcan_live.settings import load_settings

    cfg = tmp_path / "tcan-live.toml"
    cfg.write_text("flush_idle_s = 3.0\nflush_every_s = 60.0\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        s = load_settings(cfg, env={})
    assert s.flush_idle_s == 3.0 and "flush_every_s is no longer used" in caplog.text
