"""Issue 18: ND2 files read while NIS-Elements writes them.

Real files (tests/data/nd2, real NIS-Elements output) are grown chunk by chunk in the order NIS
writes them (head metadata, image chunks in order, then the trailing metadata and the chunk
map) and cut at random byte offsets in between; at every step the folder source must hand on
exactly the complete frames of the finished file (as ``nd2`` reads it), under its indices, with
its metadata, never a partial or a wrong one, and most of them before the last byte.

Frame geometries and bit depths that no real file here has (band scans, tall frames, odd sizes,
8- and 12-bit) are made from a real file's head chunks (its bit depth patched in place) and
image chunks of known content: the live reader must return those frames exactly, or wait and
say why, never a wrong frame.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_DATA
from test_growth import Harness

from benchmarks.nd2scan import cell_image, chunks, synthetic_nd2
from tcan_live.frame import Frame, FrameIndex
from tcan_live.sources import nd2live, nd2private
from tcan_live.sources.readers import ND2Reader

ND2 = TEST_DATA / "nd2"
REAL = ["example-timelapse.nd2", "example-multichannel.nd2", "example-zstack.nd2"]
HEADER = struct.Struct("<IIQ")


# ---------------------------------------------------------------------------------------------
# the private nd2 internals (canary: fails loudly if an nd2 upgrade changes them)


def test_nd2_private_internals_are_the_tested_ones() -> None:
    import nd2

    assert nd2private.available(), "nd2's private API moved: see tcan_live/sources/nd2private.py"
    major, minor = (int(x) for x in nd2.__version__.split(".")[:2])
    assert (major, minor) == (0, 12), "nd2 outside the tested range: re-run this file and pin it"
    for name, want in [("example-zstack.nd2", [("Z", 11, 6.0)]),
                       ("example-timelapse.nd2", [("T", 53, None)])]:
        data = (ND2 / name).read_bytes()
        at = {n: (p, e) for p, n, e in chunks(data)}
        p, e = at[b"ImageMetadataLV!"]
        name_len = HEADER.unpack_from(data, p)[1]
        loops = nd2private.experiment_loops(data[p + 16 + name_len : e])
        assert [(lp.axis, lp.count, lp.z_step_um) for lp in loops or []] == want
        with nd2.ND2File(ND2 / name) as f:
            assert [(lp.type[0], lp.count) for lp in f.experiment] == [w[:2] for w in want]
        p, e = at[b"ImageMetadataSeqLV|0!"]
        pic = nd2private.decode(data[p + 16 + HEADER.unpack_from(data, p)[1] : e])
        assert pic is not None and "PicturePlanes" in pic["SLxPictureMetadata"]
    assert nd2private.decode(b"\x00garbage") in (None, {})


# ---------------------------------------------------------------------------------------------
# real files grown chunk by chunk, and cut at random offsets


def _finished_frames(path: Path) -> dict[FrameIndex, Frame]:
    with ND2Reader(path) as r:
        return {f.index: f for _, f in r.planes()}


def _check(seen: dict[FrameIndex, Frame], ref: dict[FrameIndex, Frame]) -> None:
    for i, f in seen.items():
        assert i in ref, f"{i} is not an index of the finished file"
        want = ref[i]
        np.testing.assert_array_equal(f.data, want.data, err_msg=str(i))
        assert f.pixel_size_um == want.pixel_size_um
        assert f.channel_name == want.channel_name
        assert f.z_step_um == want.z_step_um
        assert f.time_s == pytest.approx(want.time_s)
        assert f.stream == want.stream


@pytest.mark.parametrize("settled", [False, True], ids=["fast-writer", "slow-writer"])
@pytest.mark.parametrize("name", REAL)
def test_real_nd2_grown_chunk_by_chunk(name: str, settled: bool, tmp_path: Path) -> None:
    data = (ND2 / name).read_bytes()
    acq = tmp_path / "acq"
    acq.mkdir()
    target = acq / name
    target.write_bytes(data)
    ref = _finished_frames(target)
    target.write_bytes(b"")
    rng = np.random.default_rng(len(name) + settled)
    # the growth harness of test_growth: pixels checked against the finished file at emit
    h = Harness(acq, {i: f.data for i, f in ref.items()}, settled=settled)
    ends = [e for _, _, e in chunks(data)]
    before_last_byte = 0
    prev = 0
    for end in ends:
        for cut in sorted({int(c) for c in rng.integers(prev + 1, end, 3)}) + [end]:
            target.write_bytes(data[:cut])
            h.scan(target, closed=cut == len(data))
            _check(h.seen, ref)
            if cut < len(data):
                before_last_byte = len(h.seen)
        prev = end
    h.scan(target, closed=True)
    _check(h.seen, ref)
    assert set(h.seen) == set(ref)
    assert before_last_byte == len(ref), "every frame is handed on before the chunk map"
    assert not h.errors


@pytest.mark.parametrize("name", REAL)
def test_real_nd2_cut_at_every_offset_returns_only_complete_frames(name: str,
                                                                     tmp_path: Path) -> None:
    """Cuts every 4093 bytes (a prime: the cuts fall at every offset within a 4096-byte page)
    and at every chunk boundary and one byte either side."""
    data = (ND2 / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data)
    ref = _finished_frames(path)
    read = possible = 0
    image_ends = [e for _, n, e in chunks(data) if n.startswith(b"ImageDataSeq")]
    bounds = {p + d for p, _, _ in chunks(data) for d in (-1, 0, 1)} | {len(data)}
    cuts = sorted((set(range(1, len(data), 4093)) | bounds) & set(range(1, len(data) + 1)))
    for cut in cuts:
        path.write_bytes(data[: int(cut)])
        live = nd2live.LiveND2(path)
        got = live.poll(settled=False)
        complete = sum(e <= cut for e in image_ends)
        # a frame is handed on only once a later chunk has begun (the last complete one waits
        # for the next header, or for the file to settle)
        assert len(got) <= complete
        assert len(got) >= complete - 1 or live.geometry is None
        frames = [f for g in got for f in nd2live.frames_of(live, g)]
        _check({f.index: f for f in frames}, ref)
        settled = nd2live.LiveND2(path).poll(settled=True)
        assert len(settled) in (0, complete)  # all complete frames, or none yet (no geometry)
        read += len(settled) > 0
        possible += complete > 0
    assert read >= 0.8 * possible, "most cuts past the first frame are read"


# ---------------------------------------------------------------------------------------------
# geometries and bit depths no real file here has: real head chunks, known image content


def _grow_live(path: Path, data: bytes) -> tuple[nd2live.LiveND2, list[nd2live.LiveFrame], str]:
    live = nd2live.LiveND2(path)
    got: list[nd2live.LiveFrame] = []
    refused = ""
    for _, _, end in chunks(data):
        path.write_bytes(data[:end])
        try:
            got += live.poll(settled=False)
        except nd2live.Refused as err:
            refused = str(err)
            break
    return live, got, refused


@pytest.mark.parametrize("shape,bits", [
    ((256, 1024), 16), ((1024, 256), 16), ((512, 512), 12), ((300, 200), 16),
    ((128, 96), 8), ((48, 2048), 12), ((250, 333), 8),
])
def test_band_scans_odd_sizes_and_bit_depths_are_read_live(shape: tuple[int, int], bits: int,
                                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(sum(shape) + bits)
    frames = [cell_image(rng, shape, 30.0, bits) for _ in range(5)]
    data = synthetic_nd2(frames, bits)
    live, got, refused = _grow_live(tmp_path / "f.nd2", data)
    assert not refused, refused
    assert live.geometry is not None and (live.geometry.height, live.geometry.width) == shape
    assert [g.seq for g in got] == list(range(5))
    for g, want in zip(got, frames, strict=True):
        assert g.planes.dtype == want.dtype
        np.testing.assert_array_equal(g.planes[0], want)
        assert g.loop_index == {"T": g.seq}
        assert g.time_s == pytest.approx(0.5 * g.seq)


def test_featureless_frames_wait_for_the_finished_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.poisson(3.0, (256, 256)).astype(np.uint16) for _ in range(10)]
    _live, got, refused = _grow_live(tmp_path / "f.nd2", synthetic_nd2(frames))
    assert got == [] and "do not establish it" in refused


def test_padded_rows_are_never_read_as_wider_frames(tmp_path: Path) -> None:
    """Odd width, 16-bit: rows padded to 4 bytes with zeros. The padding cannot be told from
    a constant image edge, so the file waits (it is never read one column too wide)."""
    rng = np.random.default_rng(1)
    frames = [cell_image(rng, (200, 301), 30.0, 16) for _ in range(4)]
    _live, got, refused = _grow_live(tmp_path / "f.nd2", synthetic_nd2(frames, stride=604))
    assert got == [] and "padding" in refused


def test_no_wrong_frame_over_random_geometries(tmp_path: Path) -> None:
    """Property: over random sizes, depths and light levels the live reader returns the true
    frames or nothing, never a frame of the wrong shape."""
    rng = np.random.default_rng(2)
    read = bright = 0
    for k in range(24):
        shape = (int(rng.integers(16, 400)), int(rng.integers(16, 400)))
        bits = int(rng.choice([8, 12, 16]))
        if shape[1] * (1 if bits == 8 else 2) % 4:
            shape = (shape[0], shape[1] + 1)  # unpadded rows (padding: see the test above)
            if shape[1] * (1 if bits == 8 else 2) % 4:
                shape = (shape[0], shape[1] + 2)
        photons = float(rng.choice([2.0, 10.0, 100.0]))
        frames = [cell_image(rng, shape, photons, bits) for _ in range(3)]
        _live, got, _refused = _grow_live(tmp_path / f"f{k}.nd2", synthetic_nd2(frames, bits))
        for g, want in zip(got, frames, strict=False):
            assert g.planes[0].shape == want.shape, (shape, bits, photons)
            np.testing.assert_array_equal(g.planes[0], want)
        read += bool(got) and photons >= 10
        bright += photons >= 10  # 2 photons at the peak: featureless, waits (no wrong frame)
    assert read >= 0.8 * bright, f"only {read} of {bright} frames with 10+ photons read live"


def test_refusals_are_final_and_name_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "legacy.nd2"
    path.write_bytes(b"\x00" * 200)
    live = nd2live.LiveND2(path)
    with pytest.raises(nd2live.Refused, match="not an ND2 version 3"):
        live.poll(False)
    with pytest.raises(nd2live.Refused):
        live.poll(False)
    data = synthetic_nd2([cell_image(np.random.default_rng(3), (64, 64), 30, 16)] * 3)
    first = next(p for p, n, _ in chunks(data) if n == b"ImageDataSeq|1!")
    swapped = data.replace(b"ImageDataSeq|1!", b"ImageDataSeq|7!", 1)
    assert swapped[first + 16 : first + 31] == b"ImageDataSeq|7!"
    path.write_bytes(swapped)
    with pytest.raises(nd2live.Refused, match="out of order"):
        nd2live.LiveND2(path).poll(True)


def test_daemon_publishes_a_growing_nd2_before_it_is_finished(make_daemon: object,
                                                              tmp_path: Path) -> None:
    """Through the daemon: a real file copied chunk by chunk; frames are done before the chunk
    map arrives, and the saved output is the finished file's frames, each once."""
    import time

    import tifffile
    from conftest import wait_for

    src = ND2 / "example-zstack.nd2"
    data = src.read_bytes()
    ref = _finished_frames(src)
    acq = tmp_path / "acq"
    acq.mkdir()
    d = make_daemon(folder=acq, pixel_size_um=0.05)  # type: ignore[operator]
    target = acq / src.name
    ends = [e for _, _, e in chunks(data)]
    last_image = max(e for _, n, e in chunks(data) if n.startswith(b"ImageDataSeq"))
    with target.open("wb") as fh:
        for end in ends:
            fh.seek(0, 2)
            fh.write(data[fh.tell() : end])
            fh.flush()
            if end > last_image:
                break
        assert wait_for(lambda: d.stats.frames_done == len(ref), 60), d.status()
        fh.write(data[fh.tell() :])
    time.sleep(1.0)
    assert wait_for(lambda: d.stats.frames_done == len(ref), 10)
    time.sleep(0.5)
    d.store.flush()
    st = next(iter(d.store.streams.values()))
    with tifffile.TiffFile(d.store.output_path(st.stream)) as tif:
        saved = tif.series[0].asarray()
    assert saved.shape[0] == len(ref)
    for i, f in ref.items():
        want = d.enhancer.enhance(f.data, 0.05).image
        np.testing.assert_allclose(saved[i.z], want, rtol=1e-4, atol=1e-3 * float(np.ptp(want)))
    assert d.stats.frames_done == len(ref)


def test_time_loop_without_a_final_count_runs_on(tmp_path: Path) -> None:
    """A time loop "until stopped" (count 0 in the experiment): frames get T = sequence
    number, however many come."""
    data = synthetic_nd2([cell_image(np.random.default_rng(k), (64, 96), 50, 16)
                          for k in range(4)])
    key = "uiCount".encode("utf-16-le") + b"\0\0"
    at = data.find(key)
    assert at > 0 and struct.unpack_from("<I", data, at + len(key)) == (53,)
    data = data[: at + len(key)] + struct.pack("<I", 0) + data[at + len(key) + 4 :]
    live, got, refused = _grow_live(tmp_path / "f.nd2", data)
    assert not refused
    assert live.meta is not None and [(lp.axis, lp.count) for lp in live.meta.loops] == [("T", 0)]
    assert [g.loop_index for g in got] == [{"T": k} for k in range(4)]
    frames = [f for g in got for f in nd2live.frames_of(live, g)]
    assert [f.index.t for f in frames] == [0, 1, 2, 3]


def test_bit_depth_from_the_pixels_when_the_metadata_has_none(tmp_path: Path) -> None:
    """No ``uiBpc`` in the head: 12-bit data in 16-bit words are recognised by their high
    bytes; 8-bit data (no such pattern) wait for the finished file."""
    rng = np.random.default_rng(4)
    frames = [cell_image(rng, (128, 160), 300.0, 12) for _ in range(4)]
    live, got, refused = _grow_live(tmp_path / "a.nd2", synthetic_nd2(frames, bits=0))
    assert not refused and live.geometry is not None and live.geometry.dtype == "uint16"
    for g, want in zip(got, frames, strict=True):
        np.testing.assert_array_equal(g.planes[0], want)
    frames8 = [cell_image(rng, (128, 160), 20.0, 8) for _ in range(4)]
    _, got8, refused8 = _grow_live(tmp_path / "b.nd2", synthetic_nd2(frames8, bits=0))
    assert got8 == [] and "bit depth" in refused8
