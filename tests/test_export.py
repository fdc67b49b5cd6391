"""Drift-free export: accuracy against the simulator's known drift, channel alignment kept,
OME metadata valid, real ND2 end to end, movies, positions, interruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import TEST_DATA
from scipy import ndimage

from tcan_live._cli import main
from tcan_live.export.drift import estimate_drift, phase_shift
from tcan_live.export.timelapse import ExportOptions, process_position
from tcan_live.sim.simulate import Camera, Optics
from tcan_live.sim.timelapse import TimelapseSpec, render_frames


def _fourier_shift(img: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    return np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(img), shift)))


def test_phase_shift_is_sub_pixel_exact_for_pure_translations(rng: np.random.Generator) -> None:
    img = ndimage.gaussian_filter(rng.random((128, 160)), 2.0)
    for shift in [(0.3, -1.7), (5.25, 2.5), (-3.33, 0.07)]:
        np.testing.assert_allclose(phase_shift(img, _fourier_shift(img, shift)), shift,
                                   atol=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 6])
def test_drift_rms_below_a_tenth_of_a_pixel(seed: int) -> None:
    """50 noisy frames of growing/shrinking/bending filaments with a known sub-pixel drift
    (the simulator's drift CSV values): RMS error of the estimated trajectory < 0.1 px."""
    spec = TimelapseSpec(frames=50, size=384, n_filaments=40, drift_px_per_frame=0.3,
                         seed=seed)
    rendered = list(render_frames(spec, Optics(), Camera(photons=30.0, background=3.0)))
    frames = np.stack([f[0] for _, f, _ in rendered]).astype(np.float64)
    truth = np.stack([s for _, _, s in rendered])
    assert np.abs(truth).max() > 2  # several pixels of drift in total
    est = estimate_drift(frames, "first")
    rms = float(np.sqrt(np.mean(np.sum((est - truth) ** 2, axis=1))))
    assert rms < 0.1, rms


def test_registration_keeps_the_dual_colour_offset(rng: np.random.Generator) -> None:
    """Channel 1 sits (0.6, -0.4) px from channel 0 (chromatic offset); both drift together.
    After drift correction the channels are still (0.6, -0.4) px apart."""
    base = ndimage.gaussian_filter(rng.random((96, 96)), 2.0)
    drift = np.cumsum(rng.normal(0, 0.7, (8, 2)), axis=0)
    drift -= drift[0]
    raw = np.zeros((8, 2, 1, 96, 96), np.float32)
    for t in range(8):
        raw[t, 0, 0] = _fourier_shift(base, tuple(drift[t]))
        raw[t, 1, 0] = _fourier_shift(base, tuple(drift[t] + [0.6, -0.4]))
    res = process_position(raw, lambda x: x, ExportOptions(pad=True))
    np.testing.assert_allclose(res.drift, drift, atol=0.1)
    assert res.raw is not None
    for t in (0, 4, 7):
        inner = (slice(10, -10), slice(10, -10))
        offset = phase_shift(res.raw[t, 0, 0][inner], res.raw[t, 1, 0][inner])
        np.testing.assert_allclose(offset, (0.6, -0.4), atol=0.05)


@pytest.fixture
def dual_stack(tmp_path: Path) -> Path:
    spec = TimelapseSpec(frames=6, size=96, channels=2, drift_px_per_frame=0.5, seed=3)
    frames = np.stack([f for _, f, _ in render_frames(spec, Optics(), Camera(photons=80.0))])
    path = tmp_path / "dual.ome.tif"
    tifffile.imwrite(path, frames, ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.05, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 0.05, "PhysicalSizeYUnit": "µm", "TimeIncrement": 2.0,
        "TimeIncrementUnit": "s", "Channel": {"Name": ["tubulin", "actin"]}})
    return path


def test_export_metadata_round_trips_and_validates_as_ome(
    tiny_model: Path, tmp_path: Path, dual_stack: Path
) -> None:
    from ome_types import from_xml

    out = tmp_path / "out" / "dual_export.ome.tif"
    assert main(["export", str(dual_stack), "-o", str(out), "--model", str(tiny_model),
                 "--movie", str(tmp_path / "out" / "dual.gif")]) == 0
    with tifffile.TiffFile(out) as tif:
        arr = tif.asarray()
        ome = from_xml(tif.ome_metadata)  # validates against the OME schema model
    pixels = ome.images[0].pixels
    assert arr.shape[:2] == (6, 2) and arr.dtype == np.float32
    assert arr.shape[-1] < 96 and arr.shape[-2] < 96  # cropped to the common field of view
    assert pixels.physical_size_x == pytest.approx(0.05)
    assert pixels.time_increment == pytest.approx(2.0)
    assert [c.name for c in pixels.channels] == ["tubulin", "actin"]
    assert (pixels.size_t, pixels.size_c) == (6, 2)
    table = (tmp_path / "out" / "dual_export_drift.csv").read_text().splitlines()
    assert table[0] == "t,time_s,dy_px,dx_px,dy_um,dx_um" and len(table) == 7
    from PIL import Image

    with Image.open(tmp_path / "out" / "dual.gif") as gif:
        assert gif.n_frames == 6
    assert not list((tmp_path / "out").glob(".*part*"))


def test_real_nd2_timelapse_end_to_end(tiny_model: Path, tmp_path: Path) -> None:
    src = TEST_DATA / "nd2" / "example-timelapse.nd2"
    out = tmp_path / "nd2_export.ome.tif"
    assert main(["export", str(src), "-o", str(out), "--model", str(tiny_model),
                 "--reference", "running-mean", "--smooth", "3",
                 "--movie", str(tmp_path / "nd2.mp4")]) == 0
    arr = tifffile.imread(out)
    assert arr.shape[0] == 53 and np.isfinite(arr).all()
    import imageio.v2 as imageio

    with imageio.get_reader(tmp_path / "nd2.mp4") as r:
        assert r.count_frames() == 53


def test_tcan_output_is_not_enhanced_again(tiny_model: Path, tmp_path: Path,
                                           dual_stack: Path) -> None:
    assert main(["enhance", str(dual_stack), "-o", str(tmp_path / "enh"),
                 "--model", str(tiny_model)]) == 0
    enhanced = tmp_path / "enh" / "dual_tcan.ome.tif"
    # no model is needed (and none is given) for tcan-live output
    assert main(["export", str(enhanced), "-o", str(tmp_path / "x.ome.tif"),
                 "--model", "no-such-model"]) == 0
    assert tifffile.imread(tmp_path / "x.ome.tif").shape[:2] == (6, 2)


def test_positions_are_exported_separately(tiny_model: Path, tmp_path: Path,
                                           rng: np.random.Generator) -> None:
    src = tmp_path / "multi.ome.tif"
    with tifffile.TiffWriter(src, ome=True) as tw:
        for _ in range(2):
            tw.write(rng.integers(0, 500, (4, 48, 48), dtype=np.uint16),
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.05})
    assert main(["export", str(src), "-o", str(tmp_path / "m.ome.tif"),
                 "--model", str(tiny_model), "--no-drift-correct"]) == 0
    for p in (0, 1):
        assert tifffile.imread(tmp_path / f"m_p{p}.ome.tif").shape == (4, 48, 48)


def test_interrupted_export_leaves_nothing(tmp_path: Path, dual_stack: Path) -> None:
    from tcan_live.export.timelapse import export

    class Boom:
        calls = 0

        def enhance(self, img: np.ndarray, px: float, source: str = "") -> object:
            Boom.calls += 1
            if Boom.calls > 5:
                raise KeyboardInterrupt
            return type("R", (), {"image": img})()

    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export(dual_stack, out / "x.ome.tif", ExportOptions(movie=out / "x.mp4"), Boom())
    assert list(out.iterdir()) == []
