"""Readers on real files (tests/data, ../shared/data) and on tifffile-written variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import TEST_DATA, shared_path

from tcan_live.errors import ReadError, UnsupportedInputError
from tcan_live.frame import FrameIndex
from tcan_live.sources.readers import open_stack, read_frames

ND2 = TEST_DATA / "nd2"
KNOWN = yaml.safe_load((ND2 / "known-metadata.yml").read_text())


def test_nd2_timelapse_matches_known_metadata() -> None:
    with open_stack(ND2 / "example-timelapse.nd2") as r:
        info = r.info
        frames = [f for _, f in r.planes()]
    assert (info.format, info.axes, info.shape, info.plane_shape) == ("nd2", "T", (53,), (64, 64))
    assert info.dtype == np.uint16
    assert info.pixel_size_um == KNOWN["example-timelapse.nd2"]["FITC"]["resolution"]["xy_step_um"]
    assert info.time_increment_s == pytest.approx(0.5002, abs=1e-3)
    assert [f.index.t for f in frames] == list(range(53))
    assert frames[0].data.shape == (64, 64) and frames[0].channel_name == "GFP 488 nm"
    gaps = np.diff([f.time_s for f in frames])
    assert np.median(gaps) == pytest.approx(0.5, abs=0.01)


def test_nd2_multichannel_and_zstack() -> None:
    with open_stack(ND2 / "example-multichannel.nd2") as r:
        assert (r.info.axes, r.info.shape) == ("C", (4,))
        assert r.info.pixel_size_um == pytest.approx(
            KNOWN["example-multichannel.nd2"]["DAPI"]["resolution"]["xy_step_um"])
        idx = [f.index for _, f in r.planes()]
        assert idx == [FrameIndex(c=c) for c in range(4)]
        assert r.info.channel_names == ("Mono", "DAPI", "FITC BP", "TRITC BP")
    with open_stack(ND2 / "example-zstack.nd2") as r:
        assert (r.info.axes, r.info.shape, r.info.z_step_um) == ("Z", (11,), 6.0)
        assert [f.index.z for _, f in r.planes()] == list(range(11))


def test_nd2_planes_match_the_nd2_library() -> None:
    import nd2

    ref = nd2.imread(ND2 / "example-multichannel.nd2")
    got = np.stack([f.data for f in read_frames(ND2 / "example-multichannel.nd2")])
    np.testing.assert_array_equal(got, ref)


def test_start_skips_planes_already_seen() -> None:
    frames = list(read_frames(ND2 / "example-timelapse.nd2", start=50))
    assert [f.index.t for f in frames] == [50, 51, 52]


@pytest.mark.shared
def test_mmstack_multi_position_time_course() -> None:
    path = shared_path("mmstack", "181003_multi_pos_time_course_1_MMStack.ome.tif")
    with open_stack(path) as r:
        info = r.info
        frames = list(r.planes())
    assert (info.format, info.axes, info.shape, info.plane_shape) == ("mmstack", "TP", (10, 2),
                                                                      (256, 256))
    assert info.pixel_size_um == pytest.approx(5.2304)  # what the file says (a placeholder)
    assert info.time_increment_s == pytest.approx(5.0)
    assert {f.index.p for _, f in frames} == {0, 1} and len(frames) == 20
    ref = tifffile.imread(path)
    np.testing.assert_array_equal(frames[3][1].data, ref[1, 1])
    assert frames[2][1].time_s == pytest.approx(5.264, abs=1e-3)  # OME Plane DeltaT


@pytest.mark.shared
def test_ndtiff_dataset() -> None:
    path = shared_path("ndtiff", "12_bit_pycromanager_mda")
    with open_stack(path) as r:
        info = r.info
        frames = [f for _, f in r.planes()]
    assert (info.format, info.axes, info.shape, info.dtype) == ("ndtiff", "TC", (4, 2), np.uint16)
    assert info.channel_names == ("DAPI", "FITC") and info.pixel_size_um == 1.0
    assert sorted((f.index.t, f.index.c) for f in frames) == [(t, c) for t in range(4)
                                                               for c in range(2)]
    ref = tifffile.imread(path / "12_bit_pycromanager_mda_NDTiffStack.tif")
    f = next(f for f in frames if (f.index.t, f.index.c) == (2, 1))
    np.testing.assert_array_equal(f.data, ref[2, 1])
    # the NDTiff file inside the folder opens as the dataset too
    assert open_stack(path / "12_bit_pycromanager_mda_NDTiffStack.tif").info.format == "ndtiff"


def test_imagej_hyperstack(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 4000, (3, 2, 2, 20, 24), dtype=np.uint16)  # TZCYX
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.08, 1 / 0.08),
                     metadata={"axes": "TZCYX", "unit": "um", "finterval": 2.5, "spacing": 0.3})
    with open_stack(path) as r:
        info = r.info
        frames = list(r.planes())
    assert (info.format, info.axes, info.shape) == ("imagej", "TZC", (3, 2, 2))
    assert info.pixel_size_um == pytest.approx(0.08)
    assert info.time_increment_s == 2.5 and info.z_step_um == pytest.approx(0.3)
    idx, f = frames[7]
    assert idx == (1, 1, 1) and f.index == FrameIndex(t=1, z=1, c=1)
    np.testing.assert_array_equal(f.data, data[1, 1, 1])
    assert f.time_s == pytest.approx(2.5)


def test_ome_tiff_metadata(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.random((4, 2, 16, 16)).astype(np.float32)
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.045, "PhysicalSizeXUnit": "µm",
        "TimeIncrement": 1500, "TimeIncrementUnit": "ms",
        "Channel": {"Name": ["tubulin", "actin"]}})
    info = open_stack(path).info
    assert (info.format, info.axes, info.shape) == ("ome-tiff", "TC", (4, 2))
    assert info.pixel_size_um == pytest.approx(0.045)
    assert info.time_increment_s == pytest.approx(1.5)
    assert info.channel_names == ("tubulin", "actin")


def test_plain_tiff_resolution_in_cm(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((10, 12), np.uint8), resolution=(1e4 / 0.06, 1e4 / 0.06),
                     resolutionunit="CENTIMETER")
    info = open_stack(path).info
    assert (info.format, info.axes, info.shape) == ("tiff", "", ())
    assert info.pixel_size_um == pytest.approx(0.06)
    assert [f.index for f in read_frames(path)] == [FrameIndex()]


def test_bad_inputs_give_named_reasons(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(ReadError, match=r"empty\.tif: file is empty"):
        open_stack(empty)
    junk = tmp_path / "junk.nd2"
    junk.write_bytes(b"not an nd2 file at all" * 10)
    with pytest.raises(ReadError, match=r"junk\.nd2: not a readable ND2"):
        open_stack(junk)
    trunc = tmp_path / "trunc.nd2"
    trunc.write_bytes((ND2 / "example-timelapse.nd2").read_bytes()[:300_000])
    with pytest.raises(ReadError, match=r"trunc\.nd2"):
        open_stack(trunc)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(UnsupportedInputError, match="RGB"):
        open_stack(rgb)
    with pytest.raises(UnsupportedInputError, match=r"unsupported file type '\.png'"):
        (tmp_path / "a.png").write_bytes(b"x")
        open_stack(tmp_path / "a.png")
    with pytest.raises(ReadError, match="no such file"):
        open_stack(tmp_path / "missing.tif")
    complex_tif = tmp_path / "complex.tif"
    tifffile.imwrite(complex_tif, np.zeros((4, 4), np.complex64))
    with pytest.raises(UnsupportedInputError, match="pixel type complex64"):
        open_stack(complex_tif)


def test_the_content_decides_between_nd2_and_tiff(tmp_path: Path) -> None:
    """sources/formats.py: a file's first bytes win over its name (an ND2 saved as .tif, a TIFF
    named .nd2); unknown content with an unknown suffix is refused by name."""
    import shutil

    from tcan_live.errors import UnsupportedInputError
    from tcan_live.sources.formats import input_kind
    from tcan_live.sources.readers import ND2Reader, TiffReader, open_stack

    nd2_as_tif = tmp_path / "actually_nd2.tif"
    shutil.copy(TEST_DATA / "nd2" / "example-timelapse.nd2", nd2_as_tif)
    tif_as_nd2 = tmp_path / "actually_tiff.nd2"
    tifffile.imwrite(tif_as_nd2, np.zeros((2, 8, 8), np.uint16))
    assert input_kind(nd2_as_tif) == "nd2" and input_kind(tif_as_nd2) == "tiff"
    with open_stack(nd2_as_tif) as r:
        assert isinstance(r, ND2Reader) and r.info.n_planes == 53
    with open_stack(tif_as_nd2) as r:
        assert isinstance(r, TiffReader) and r.info.n_planes == 2
    odd = tmp_path / "notes.xyz"
    odd.write_text("hello")
    with pytest.raises(UnsupportedInputError, match=r"notes\.xyz"):
        open_stack(odd)
    assert input_kind(tmp_path / "empty_yet.nd2") == "nd2"  # no bytes yet: the name decides
