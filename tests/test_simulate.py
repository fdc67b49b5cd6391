"""Simulator physics: PSF widths, photon statistics, drift bookkeeping, files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tcan_live._cli import main
from tcan_live.sim.simulate import (
    FWHM_PER_SIGMA,
    Camera,
    Optics,
    detect,
    expected_images,
)
from tcan_live.sim.timelapse import TimelapseSpec, read_drift_csv, render_frames, write_timelapse
from tcan_live.sources.readers import open_stack
from tcan_live.train.metrics import fit_spot


@pytest.mark.parametrize(("confocal", "sted", "px"), [(230, 80, 0.05), (300, 100, 0.03),
                                                      (200, 60, 0.02)])
def test_isolated_bead_has_the_configured_fwhm(confocal: float, sted: float, px: float,
                                               rng: np.random.Generator) -> None:
    """A point emitter at a random sub-pixel position, fitted with a 2-D Gaussian: FWHM within
    10% of the configured PSF for both the confocal image and the STED-like target."""
    for _ in range(3):
        pos = np.array([[20.0, 20.0]]) + rng.uniform(-0.5, 0.5, (1, 2))
        conf, target = expected_images(pos, np.ones(1), (41, 41), Optics(px, confocal, sted), 1e4)
        for img, want in ((conf, confocal), (target, sted)):
            fit = fit_spot(img[10:31, 10:31], 2.0)
            assert fit is not None
            fwhm = fit.sigma * FWHM_PER_SIGMA * px * 1000
            assert fwhm == pytest.approx(want, rel=0.10)


def test_peak_photons_and_flux_are_as_configured() -> None:
    pos = np.array([[20.0, 20.0]])
    conf, target = expected_images(pos, np.ones(1), (41, 41), Optics(), 100.0)
    assert conf.max() == pytest.approx(100.0, rel=0.01)  # `photons` = centred confocal peak
    assert conf.sum() == pytest.approx(target.sum(), rel=1e-3)  # same photons in both


def test_photon_statistics_mean_and_variance(rng: np.random.Generator) -> None:
    cam = Camera(photons=0, background=0, gain=2.5, offset=100.0, read_noise=3.0)
    for lam in (4.0, 50.0, 400.0):
        img = detect(rng, np.full((400, 400), lam), cam).astype(np.float64)
        assert img.mean() == pytest.approx(100 + 2.5 * lam, rel=0.01)
        assert img.var() == pytest.approx(2.5**2 * lam + 3.0**2, rel=0.03)


def test_drift_csv_matches_applied_shifts(tmp_path: Path) -> None:
    """The CSV holds exactly the shifts the renderer applied (the next test shows that applying
    a shift moves the image content by exactly that amount)."""
    spec = TimelapseSpec(frames=6, size=64, seed=3, drift_px_per_frame=0.8, n_filaments=6)
    write_timelapse(tmp_path, spec, camera=Camera(photons=100))
    shifts = read_drift_csv(tmp_path / "drift.csv")
    frames = list(render_frames(spec, Optics(), Camera(photons=100)))
    assert shifts.shape == (6, 2) and np.all(shifts[0] == 0)
    np.testing.assert_allclose(shifts, np.array([s for _, _, s in frames]), atol=1e-6)
    assert np.abs(np.diff(shifts, axis=0)).max() > 0.05  # it does drift


def test_static_scene_moves_by_exactly_the_drift() -> None:
    from scipy import ndimage

    from tcan_live.sim.simulate import render_density

    pts = np.array([[30.0, 25.0], [40.2, 41.7]])
    a, _ = expected_images(pts, np.ones(2), (64, 64), Optics(), 1e3)
    b, _ = expected_images(pts + [1.3, -0.6], np.ones(2), (64, 64), Optics(), 1e3)
    shifted = ndimage.shift(a, (1.3, -0.6), order=3)
    assert np.abs(shifted - b).max() < 0.02 * b.max()
    assert render_density(pts, np.ones(2), (8, 8)).shape == (32, 32)


def test_simulate_cli_writes_pairs_with_pixel_size(tmp_path: Path) -> None:
    assert main(["simulate", str(tmp_path / "p"), "--n", "3", "--size", "48", "--seed", "5"]) == 0
    files = sorted((tmp_path / "p").glob("*.ome.tif"))
    assert len(files) == 3 and (tmp_path / "p" / "manifest.csv").is_file()
    info = open_stack(files[0]).info
    assert info.axes == "C" and info.shape == (2,) and info.pixel_size_um == pytest.approx(0.05)
    assert info.channel_names == ("confocal", "sted")


def test_timelapse_cli_both_layouts(tmp_path: Path) -> None:
    assert main(["simulate", str(tmp_path / "f"), "--timelapse", "--frames", "3", "--size", "48",
                 "--channels", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "f").glob("*.tif"))
    assert names == [f"timelapse_c{c}_t000{t}.tif" for c in (0, 1) for t in range(3)]
    assert main(["simulate", str(tmp_path / "s"), "--timelapse", "--frames", "4", "--size", "48",
                 "--layout", "ome-stack"]) == 0
    arr = tifffile.imread(tmp_path / "s" / "timelapse.ome.tif")
    assert arr.shape == (4, 48, 48) and arr.dtype == np.uint16
    info = open_stack(tmp_path / "s" / "timelapse.ome.tif").info
    assert info.axes == "T" and info.pixel_size_um == pytest.approx(0.05)
