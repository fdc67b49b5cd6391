"""Issue 21, index stability: every file layout the project reads is grown page by page (as
its writer writes it) and byte range by byte range (random cuts), and the folder source is
scanned at every step. Whatever the file looks like on the way, each frame handed on is a
complete plane of the finished file under the index the finished file gives it (read by
tifffile or nd2, not by us), no index is handed on twice, and at the end every plane was handed
on. Then the daemon saves complete files of each layout, and the saved output has the source's
shape and, plane by plane, the enhancement of the source plane at that index."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import TEST_DATA, shared_path, wait_for

from tcan_live.frame import Frame, FrameIndex
from tcan_live.sources.folder import FolderSource

FIELD = {"T": "t", "C": "c", "Z": "z", "P": "p", "S": "p", "R": "p", "Q": "t", "I": "t"}
Reference = dict[FrameIndex, np.ndarray]


def _index(axes: str, idx: tuple[int, ...]) -> FrameIndex:
    return FrameIndex(**{FIELD[a]: int(i) for a, i in zip(axes, idx, strict=True)})


def _reference_tiff(path: Path, series_as: str | None = None) -> tuple[Reference, float | None]:
    """Planes of the finished file as tifffile reads it: index from the series' axes.
    ``series_as``: the index letter that stands for the series number (a file of one OME Image
    per page; the daemon keeps the T it published while the file grew)."""
    ref: Reference = {}
    with tifffile.TiffFile(path) as tif:
        if not tif.is_shaped and not tif.is_ome and not tif.is_imagej:
            # a plain multi-page TIFF: its pages are time points (the documented rule)
            return {FrameIndex(t=k): p.asarray() for k, p in enumerate(tif.pages)}, None
        px = None
        if tif.ome_metadata:
            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
            px = pixels.get("PhysicalSizeX")
        for s_i, series in enumerate(tif.series):
            data = series.asarray()
            lead = series.axes[:-2]
            for idx in np.ndindex(*data.shape[:-2]):
                i = _index(lead, idx) if lead else FrameIndex()
                if series_as:
                    i = FrameIndex(**{**i.as_dict(), FIELD[series_as]: s_i})
                ref[i] = data[idx]
            if not series_as:
                break
    return ref, px


def _reference_nd2(path: Path) -> tuple[Reference, float | None]:
    import nd2

    with nd2.ND2File(path) as f:
        data = f.asarray()
        lead = "".join(a for a in f.sizes if a not in "YX")
    ref = {_index(lead, idx) if lead else FrameIndex(): data[idx]
           for idx in np.ndindex(*data.shape[:len(lead)])}
    return ref, None


class Harness:
    """A FolderSource scanned synchronously (no threads): every emitted frame is checked."""

    def __init__(self, root: Path, ref: Reference, *, settled: bool) -> None:
        self.ref, self.seen = ref, {}  # type: ignore[var-annotated]
        self.errors: list[tuple[Path, str]] = []
        self.metadata: dict[str, Any] = {}
        self.src = FolderSource(root, emit=self.emit, on_error=self.error,
                                is_done=lambda s, i: i in self.seen,
                                settle_s=0.0 if settled else 1e9, give_up_s=1e9,
                                on_metadata=lambda s, m: self.metadata.update(m))

    def emit(self, frame: Frame) -> None:
        i = frame.index
        assert i not in self.seen, f"{i} handed on twice"
        assert i in self.ref, f"{i} is not an index of the finished file"
        np.testing.assert_array_equal(frame.data, self.ref[i], err_msg=f"plane {i}")
        self.seen[i] = frame

    def error(self, path: Path, reason: str) -> None:
        self.errors.append((path, reason))

    def scan(self, path: Path, closed: bool = False) -> None:
        self.src.touch(path, closed=closed)
        key = path.parent if path.name == "NDTiff.index" else path
        t = self.src._tracked.get(key)
        if t is not None:
            self.src._scan(t)


def _write(target: Path, data: bytes) -> None:
    with target.open("r+b" if target.exists() else "wb") as fh:  # grown in place
        fh.write(data)
        fh.truncate(len(data))


def _cuts(rng: np.random.Generator, lo: int, hi: int, n: int) -> list[int]:
    return sorted({int(c) for c in rng.integers(lo, hi, n)} | {hi}) if hi > lo else [hi]


def grow(harness: Harness, target: Path, states: list[bytes], rng: np.random.Generator,
         cuts_per_state: int = 4) -> None:
    """Write each writer state in turn, and before each, random prefixes of it that are longer
    than the state before (a writer's bytes arriving in pieces)."""
    prev = 0
    for k, state in enumerate(states):
        for cut in _cuts(rng, prev + 1, len(state), cuts_per_state):
            _write(target, state[:cut])
            harness.scan(target, closed=(k == len(states) - 1 and cut == len(state)))
        prev = len(state)


# ---------------------------------------------------------------------------------------------
# writers: the file's bytes after each page (or series) the writer writes


def _pages(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 4000, shape, dtype=np.uint16)


def _snapshots(path: Path, write: Callable[[tifffile.TiffWriter, Callable[[], None]], None],
               **kw: Any) -> list[bytes]:
    snaps: list[bytes] = []
    with tifffile.TiffWriter(path, **kw) as tw:
        def snap() -> None:
            tw._fh.flush()
            snaps.append(path.read_bytes())
        write(tw, snap)
    snaps.append(path.read_bytes())
    return snaps


def _iter_with_snaps(data: np.ndarray, snap: Callable[[], None]) -> Iterator[np.ndarray]:
    flat = data.reshape(-1, *data.shape[-2:])
    for k, page in enumerate(flat):
        if k:
            snap()
        yield page


def make_plain(tmp: Path, rng: np.random.Generator) -> tuple[list[bytes], str]:
    data = _pages(rng, (7, 40, 52))
    return _snapshots(tmp / "src.tif", lambda tw, snap: [
        (tw.write(p, photometric="minisblack", metadata=None), snap()) for p in data]), ".tif"


def make_shaped(tmp: Path, rng: np.random.Generator) -> tuple[list[bytes], str]:
    data = _pages(rng, (3, 2, 30, 34))
    return _snapshots(tmp / "src.tif", lambda tw, snap: tw.write(
        _iter_with_snaps(data, snap), shape=data.shape, dtype=data.dtype,
        photometric="minisblack", metadata={"axes": "TCYX"})), ".tif"


def make_ome(tmp: Path, rng: np.random.Generator) -> tuple[list[bytes], str]:
    data = _pages(rng, (3, 2, 2, 32, 36))  # TCZ
    return _snapshots(tmp / "src.ome.tif", lambda tw, snap: tw.write(
        _iter_with_snaps(data, snap), shape=data.shape, dtype=data.dtype,
        photometric="minisblack", metadata={"axes": "TCZYX", "PhysicalSizeX": 0.06,
                                            "PhysicalSizeY": 0.06}), ome=True), ".ome.tif"


def make_ome_multi_series(tmp: Path, rng: np.random.Generator) -> tuple[list[bytes], str]:
    pages = _pages(rng, (6, 28, 40))
    return _snapshots(tmp / "src.ome.tif", lambda tw, snap: [
        (tw.write(p, photometric="minisblack", metadata={
            "axes": "YX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05}), snap())
        for p in pages], ome=True), ".ome.tif"


def make_imagej(tmp: Path, rng: np.random.Generator) -> tuple[list[bytes], str]:
    data = _pages(rng, (3, 2, 2, 24, 30))  # TZCYX
    return _snapshots(tmp / "src.tif", lambda tw, snap: tw.write(
        _iter_with_snaps(data, snap), shape=data.shape, dtype=data.dtype,
        resolution=(1 / 0.07, 1 / 0.07), metadata={"axes": "TZCYX", "unit": "um",
                                                   "finterval": 2.0, "spacing": 0.4}),
        imagej=True), ".tif"


WRITTEN = {"plain-tiff": make_plain, "shaped-tiff": make_shaped, "ome-tczyx": make_ome,
           "ome-one-image-per-page": make_ome_multi_series, "imagej-tzcyx": make_imagej}


@pytest.mark.parametrize("settled", [False, True], ids=["fast-writer", "slow-writer"])
@pytest.mark.parametrize("layout", sorted(WRITTEN))
def test_written_layouts_keep_their_indices_while_growing(layout: str, settled: bool,
                                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(sorted(WRITTEN).index(layout))
    (tmp_path / "w").mkdir()
    states, suffix = WRITTEN[layout](tmp_path / "w", rng)
    done = tmp_path / "w" / f"src{suffix}"
    multi = layout == "ome-one-image-per-page"
    ref, px = _reference_tiff(done, series_as="T" if multi else None)
    acq = tmp_path / "acq"
    acq.mkdir()
    h = Harness(acq, ref, settled=settled)
    grow(h, acq / f"stack{suffix}", states, rng)
    assert sorted(h.seen, key=lambda i: (i.p, i.t, i.c, i.z)) == \
        sorted(ref, key=lambda i: (i.p, i.t, i.c, i.z))
    assert h.errors == [] or all("incomplete" in r or "missing" in r for _, r in h.errors), \
        h.errors
    if px is not None:  # learnt at close where the writer adds it only then
        got = {f.pixel_size_um for f in h.seen.values()} | {h.metadata.get("pixel_size_um")}
        assert [round(v, 9) for v in got - {None}] == [round(px, 9)]


def _file_states(src: Path, rng: np.random.Generator, n: int = 12) -> list[bytes]:
    """Byte ranges of a finished file: random prefixes, then the whole file."""
    data = src.read_bytes()
    cuts = sorted({int(c) for c in rng.integers(1, len(data), n)}) + [len(data)]
    return [data[:c] for c in cuts]


REAL = {
    "nd2-timelapse": (lambda: TEST_DATA / "nd2" / "example-timelapse.nd2"),
    "nd2-multichannel": (lambda: TEST_DATA / "nd2" / "example-multichannel.nd2"),
    "nd2-zstack": (lambda: TEST_DATA / "nd2" / "example-zstack.nd2"),
    "mmstack": (lambda: shared_path("mmstack", "181003_multi_pos_time_course_1_MMStack.ome.tif")),
}


@pytest.mark.parametrize("settled", [False, True], ids=["fast-writer", "slow-writer"])
@pytest.mark.parametrize("layout", sorted(REAL))
def test_real_files_cut_at_random_byte_offsets(layout: str, settled: bool,
                                               tmp_path: Path) -> None:
    src = REAL[layout]()
    rng = np.random.default_rng(len(layout))
    ref, _ = (_reference_nd2(src) if src.suffix == ".nd2" else _reference_tiff(src))
    acq = tmp_path / "acq"
    acq.mkdir()
    h = Harness(acq, ref, settled=settled)
    target = acq / src.name
    for k, state in enumerate(_file_states(src, rng, 16)):
        _write(target, state)
        h.scan(target, closed=k == 16)
    h.scan(target, closed=True)
    assert set(h.seen) == set(ref)


@pytest.mark.shared
def test_ndtiff_dataset_grown_entry_by_entry(tmp_path: Path) -> None:
    """NDTiff: the image file grows, then its index entry is appended (Micro-Manager's order);
    the index is also cut inside entries."""
    src = shared_path("ndtiff", "12_bit_pycromanager_mda")
    tif = next(src.glob("*NDTiffStack.tif"))
    ref_data = tifffile.imread(tif)  # (T, C, Y, X)
    ref = {FrameIndex(t=t, c=c): ref_data[t, c] for t in range(ref_data.shape[0])
           for c in range(ref_data.shape[1])}
    acq = tmp_path / "acq"
    ds = acq / src.name
    ds.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in ("NDTiff.index",) and f.suffix != ".md":
            shutil.copy(f, ds / f.name)
    index = (src / "NDTiff.index").read_bytes()
    h = Harness(acq, ref, settled=False)
    rng = np.random.default_rng(2)
    for cut in sorted({int(c) for c in rng.integers(1, len(index), 24)}) + [len(index)]:
        _write(ds / "NDTiff.index", index[:cut])
        h.scan(ds / "NDTiff.index", closed=cut == len(index))
    assert set(h.seen) == set(ref)


# ---------------------------------------------------------------------------------------------
# the saved output equals the reading of the source


@pytest.fixture
def daemon(make_daemon: Callable[..., Any]) -> Callable[..., Any]:
    """Daemons with a 0.05 um pixel size unless the test says otherwise."""
    return lambda **kw: make_daemon(**{"pixel_size_um": 0.05, **kw})


def _source_imagej(tmp: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray, str]:
    data = _pages(rng, (2, 3, 2, 48, 40))
    path = tmp / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    return path, data, "TZC"


def _source_ome(tmp: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray, str]:
    data = _pages(rng, (2, 2, 3, 40, 48))
    path = tmp / "stack.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCZYX"})
    return path, data, "TCZ"


def _source_nd2(tmp: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray, str]:
    import nd2

    path = tmp / "example-zstack.nd2"
    shutil.copy(TEST_DATA / "nd2" / path.name, path)
    with nd2.ND2File(path) as f:
        return path, f.asarray(), "Z"


@pytest.mark.parametrize("make", [_source_imagej, _source_ome, _source_nd2],
                         ids=["imagej", "ome", "nd2"])
def test_saved_output_is_the_enhanced_source_plane_by_plane(daemon: Any, tmp_path: Path,
                                                            make: Any) -> None:
    rng = np.random.default_rng(0)
    stage = tmp_path / "stage"
    stage.mkdir()
    src, data, axes = make(stage, rng)
    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq)
    shutil.copy(src, acq / src.name)
    n = int(np.prod(data.shape[:-2]))
    assert wait_for(lambda: d.stats.frames_done == n, 60), d.status()
    time.sleep(0.5)
    d.store.flush()
    st = next(iter(d.store.streams.values()))
    out = d.store.output_path(st.stream)
    with tifffile.TiffFile(out) as tif:
        saved = tif.series[0].asarray()
        saved_axes = tif.series[0].axes
    # the output's axes are the source's (in the store's order T C Z), each of the same size
    sizes = dict(zip(axes, data.shape[:-2], strict=True))
    assert saved.shape[-2:] == data.shape[-2:]
    assert {a: n for a, n in zip(saved_axes[:-2], saved.shape[:-2], strict=True)} == sizes
    for idx in np.ndindex(*data.shape[:-2]):
        want = d.enhancer.enhance(data[idx], 0.05).image
        pos = tuple(idx[axes.index(a)] for a in saved_axes[:-2])
        np.testing.assert_allclose(saved[pos], want, rtol=1e-4, atol=1e-3 * float(np.ptp(want)))



# ---------------------------------------------------------------------------------------------
# metadata: pixel size, channel names, Z step and per-plane time stamps reach journal and output


def _ome_pixels(path: Path) -> list[dict[str, Any]]:
    with tifffile.TiffFile(path) as tif:
        images = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
    return [im["Pixels"] for im in (images if isinstance(images, list) else [images])]


def _delta_t(pixels: dict[str, Any]) -> dict[tuple[int, int, int], float]:
    planes = pixels.get("Plane", [])
    planes = planes if isinstance(planes, list) else [planes]
    return {(int(p["TheT"]), int(p["TheC"]), int(p["TheZ"])): float(p["DeltaT"]) for p in planes}


def _run(daemon: Any, tmp_path: Path, src: Path, n: int, **kw: Any) -> tuple[Any, Path]:
    acq = tmp_path / "acq"
    acq.mkdir(exist_ok=True)
    d = daemon(folder=acq, **kw)
    shutil.copy(src, acq / src.name)
    assert wait_for(lambda: d.stats.frames_done == n, 60), d.status()
    time.sleep(0.5)
    d.store.flush()
    st = next(iter(d.store.streams.values()))
    return d, d.store.output_path(st.stream)


def test_ome_per_plane_metadata_reaches_journal_and_output(daemon: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = _pages(rng, (3, 2, 2, 32, 40))  # TCZ
    times = {(t, c, z): 10.0 * t + 0.5 * c + 0.1 * z + 0.03
             for t in range(3) for c in range(2) for z in range(2)}
    order = [(t, c, z) for t in range(3) for c in range(2) for z in range(2)]
    src = tmp_path / "meta.ome.tif"
    tifffile.imwrite(src, data, ome=True, metadata={
        "axes": "TCZYX", "PhysicalSizeX": 0.06, "PhysicalSizeY": 0.06, "PhysicalSizeZ": 0.35,
        "Channel": {"Name": ["actin", "tubulin"]},
        "Plane": {"DeltaT": [times[k] for k in order], "DeltaTUnit": ["s"] * 12}})
    d, out = _run(daemon, tmp_path, src, 12, pixel_size_um=None)
    st = next(iter(d.store.streams.values()))
    assert st.meta["z_step_um"] == pytest.approx(0.35)
    assert st.meta["pixel_size_um"] == pytest.approx(0.06)
    assert {(i.t, i.c, i.z): v for i, v in st.times.items()} == pytest.approx(times)
    journal = [json.loads(x) for x in (d.store.journal).read_text().splitlines()]
    assert sorted(r["time_s"] for r in journal if "time_s" in r) == sorted(times.values())
    (pix,) = _ome_pixels(out)
    assert float(pix["PhysicalSizeZ"]) == pytest.approx(0.35)
    assert float(pix["PhysicalSizeX"]) == pytest.approx(0.06)
    assert [c["Name"] for c in pix["Channel"]] == ["actin", "tubulin"]
    assert _delta_t(pix) == pytest.approx(times)
    assert float(pix["TimeIncrement"]) == pytest.approx(10.0)
    # and after a restart, from the journal alone
    d.stop()
    d2 = daemon(folder=tmp_path / "acq", pixel_size_um=None)
    d2.store.flush()
    assert _delta_t(_ome_pixels(out)[0]) == pytest.approx(times)


def test_one_ome_image_per_position_keeps_each_positions_times(daemon: Any,
                                                               tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    src = tmp_path / "pos.ome.tif"
    with tifffile.TiffWriter(src, ome=True) as tw:
        for p in range(2):
            tw.write(_pages(rng, (3, 24, 28)), photometric="minisblack", metadata={
                "axes": "TYX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05,
                "Plane": {"DeltaT": [5.0 * t + p for t in range(3)], "DeltaTUnit": ["s"] * 3}})
    d, out = _run(daemon, tmp_path, src, 6, pixel_size_um=None)
    st = next(iter(d.store.streams.values()))
    assert {(i.p, i.t): v for i, v in st.times.items()} == \
        {(p, t): 5.0 * t + p for p in range(2) for t in range(3)}
    images = _ome_pixels(out)
    assert len(images) == 2
    for p, pix in enumerate(images):
        assert _delta_t(pix) == pytest.approx({(t, 0, 0): 5.0 * t + p for t in range(3)})


def test_imagej_and_nd2_z_step_and_times(daemon: Any, tmp_path: Path) -> None:
    import nd2

    src = TEST_DATA / "nd2" / "example-zstack.nd2"
    with nd2.ND2File(src) as f:
        z = f.voxel_size().z
    d, out = _run(daemon, tmp_path, src, 11)
    (pix,) = _ome_pixels(out)
    assert float(pix["PhysicalSizeZ"]) == pytest.approx(z)
    d.stop()

    rng = np.random.default_rng(3)
    ij = tmp_path / "ij" / "hyper.tif"
    ij.parent.mkdir()
    tifffile.imwrite(ij, _pages(rng, (3, 2, 24, 20)), imagej=True,
                     resolution=(1 / 0.07, 1 / 0.07),
                     metadata={"axes": "TZYX", "unit": "um", "finterval": 2.5, "spacing": 0.4})
    shutil.rmtree(tmp_path / "out")
    shutil.rmtree(tmp_path / "acq")
    d, out = _run(daemon, tmp_path, ij, 6, pixel_size_um=None)
    (pix,) = _ome_pixels(out)
    assert float(pix["PhysicalSizeZ"]) == pytest.approx(0.4)
    assert float(pix["PhysicalSizeX"]) == pytest.approx(0.07)
    assert float(pix["TimeIncrement"]) == pytest.approx(2.5)
    assert _delta_t(pix) == pytest.approx({(t, 0, zz): 2.5 * t for t in range(3)
                                           for zz in range(2)})
