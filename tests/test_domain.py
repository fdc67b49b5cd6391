"""The broad simulator's physics against theory: PSF widths, flux, detector statistics."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tcan_live.sim import domain as d


@pytest.mark.parametrize(("wl", "na"), [(488.0, 1.4), (640.0, 1.2)])
def test_airy_fwhm_is_0_514_lambda_over_na(wl: float, na: float) -> None:
    r = d._radius_grid(150, 2.0)
    assert d.fwhm_nm(d.airy(r, wl, na), 2.0) == pytest.approx(0.5145 * wl / na, rel=0.01)


def test_confocal_psf_narrows_with_the_pinhole_as_theory_says() -> None:
    """Closed pinhole: the PSF is the square of the Airy pattern (FWHM 0.37 lambda/NA, for
    equal excitation and emission wavelengths); open: about the excitation Airy; 1 AU: between,
    and the FWHM grows monotonically with the pinhole."""
    wl, na = 600.0, 1.4
    widths = [d.fwhm_nm(d.confocal_psf(d.ConfocalOptics(wl, 0.0, na, pin), 5.0), 5.0)
              for pin in (0.05, 0.5, 1.0, 2.0, 6.0)]
    assert widths[0] == pytest.approx(0.3708 * wl / na, rel=0.03)
    assert widths[-1] == pytest.approx(0.5145 * wl / na, rel=0.06)
    assert all(a < b * 1.01 for a, b in itertools.pairwise(widths))
    # the instrument the model is for: a 561 nm confocal at 1 AU is about 200-240 nm wide
    assert 190 <= d.fwhm_nm(d.confocal_psf(d.ConfocalOptics()), d.FINE_NM) <= 240


@pytest.mark.parametrize("target", [60.0, 80.0, 110.0])
def test_sted_psf_has_its_main_lobe_fwhm_a_pedestal_and_long_tails(target: float) -> None:
    s = d.StedOptics(fwhm_nm=target, pedestal=0.03)
    psf = d.sted_psf(s, step_nm=5.0)
    assert d.fwhm_nm(psf, 5.0) == pytest.approx(target, rel=0.02)
    assert psf.sum() == pytest.approx(1.0)
    conf = d.confocal_psf(d.TARGET_CONFOCAL, 5.0)
    r = d._radius_grid(psf.shape[0] // 2, 5.0)
    # long tails: far more energy beyond 2.5 FWHM than a Gaussian of that FWHM has there
    sigma = target / (2 * math.sqrt(2 * math.log(2)))
    gauss_tail = math.exp(-(2.5 * target) ** 2 / (2 * sigma ** 2))
    assert psf[r > 2.5 * target].sum() > 100 * gauss_tail
    # the pedestal: beyond the main lobe the PSF never falls below pedestal x confocal
    ratio = (psf / psf.max()) / np.maximum(conf / conf.max(), 1e-30)
    assert ratio[(r > 200) & (conf > 1e-6 * conf.max())].min() >= 0.03 * 0.99


def test_flux_is_conserved_between_confocal_and_sted() -> None:
    """The same sample through both microscopes: the same photons (away from the field's edge),
    whatever the acquisition pixel size."""
    for px in (30.0, 50.0, 100.0):
        rng = np.random.default_rng(3)
        acq = d.Acquisition(pixel_nm=px, detector=d.Detector(photons=100.0))
        nf = d.noise_free(rng, 128, acq, d.Sample(("beads", "vesicles"), regions=False))
        conf_photons = nf.confocal.sum()
        sted_photons = nf.sted.sum()
        assert sted_photons == pytest.approx(conf_photons, rel=0.02)
        assert nf.confocal.max() == pytest.approx(100.0)  # `photons` = brightest pixel


@pytest.mark.parametrize("px", [30.0, 40.0, 60.0, 70.0, 90.0, 100.0])
def test_confocal_and_target_cover_the_same_field(px: float, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """Spots anywhere in the field land at the same place in the confocal input (acquired at
    ``px``, resampled to the model grid) and in the target: the pair is registered everywhere,
    not only near the origin. Each spot fills one acquisition pixel, so its true centre is
    known on both grids. (The field used to be cut to whole acquisition pixels only: at 90 nm
    the confocal image was stretched by 1% against the target, 1.4 px off at the far edge.)"""
    from tcan_live.train.metrics import fit_spot

    k = int(px / d.FINE_NM)
    spots = [(int(fy * 800 / k), int(fx * 800 / k))  # acquisition pixels
             for fy, fx in ((0.12, 0.12), (0.5, 0.88), (0.88, 0.88), (0.9, 0.1))]

    def render(rng: np.random.Generator, shape: tuple[int, int], sample: d.Sample
               ) -> tuple[np.ndarray, np.ndarray]:
        g = np.zeros(shape)
        for y, x in spots:
            g[y * k:(y + 1) * k, x * k:(x + 1) * k] = 1.0 / k ** 2
        return g, np.zeros(shape)

    monkeypatch.setattr(d, "render_sample", render)
    acq = d.Acquisition(px, detector=d.Detector(photons=1e5))  # noise far below 0.1 px
    pair = d.image_pair(np.random.default_rng(0), 160, acq, d.Sample(("beads",), regions=False))
    for y, x in spots:
        want = ((y + 0.5) * k / 5 - 0.5, (x + 0.5) * k / 5 - 0.5)  # model pixel coordinates
        cy, cx = int(round(want[0])), int(round(want[1]))
        for img in (pair.confocal, pair.sted):
            fit = fit_spot(np.asarray(img[cy - 6:cy + 7, cx - 6:cx + 7], np.float64), 2.0)
            assert fit is not None
            got = (cy - 6 + fit.y, cx - 6 + fit.x)
            assert got == pytest.approx(want, abs=0.1), (px, (y, x))


def test_a_point_images_with_the_psf_fwhm(rng: np.random.Generator) -> None:
    from tcan_live.sim.simulate import FWHM_PER_SIGMA
    from tcan_live.train.metrics import fit_spot

    g = np.zeros((400, 400))
    d._splat(g, np.array([[200.3, 199.6]]), 1.0)
    psf_c, psf_s = d.confocal_psf(d.ConfocalOptics()), d.sted_psf()
    for psf, want in ((psf_c, d.fwhm_nm(psf_c, d.FINE_NM)), (psf_s, 80.0)):
        img = d._bin(d._fftconvolve_same(g, psf), 2)  # 20 nm pixels
        fit = fit_spot(img[80:121, 80:121], 3.0)
        assert fit is not None
        got = fit.sigma * FWHM_PER_SIGMA * 20.0
        # a Gaussian fitted to an Airy-like core: within 10% (STED: the pedestal widens it)
        assert got == pytest.approx(want, rel=0.12)


@pytest.mark.parametrize("kind", ["pmt", "gaasp", "hyd"])
def test_detector_statistics_match_theory(kind: str, rng: np.random.Generator) -> None:
    """mean = offset + gain (lambda + background); var = gain^2 F^2 (lambda + background)
    + read noise^2 (+1/12 from rounding)."""
    excess = {"pmt": 1.8, "gaasp": 1.25, "hyd": 1.0}[kind]
    det = d.Detector(kind, 0, background=0.5, gain=6.0, offset=20.0, excess=excess,
                     read_noise=1.5 if kind != "hyd" else 0.0, bits=16)
    for lam in (2.0, 20.0, 200.0):
        x = d.detect(rng, np.full((600, 600), lam), det).astype(np.float64)
        n = lam + det.background
        assert x.mean() == pytest.approx(det.offset + det.gain * n, rel=0.01)
        var = det.gain ** 2 * excess * n + det.read_noise ** 2 + 1 / 12
        assert x.var() == pytest.approx(var, rel=0.04)
        assert np.array_equal(x, np.round(x))  # integer counts


def test_detector_saturates_at_its_bit_depth(rng: np.random.Generator) -> None:
    det = d.Detector("pmt", 0, background=0.0, gain=20.0, offset=0.0, excess=1.5, bits=12)
    x = d.detect(rng, np.full((200, 200), 200.0), det)  # mean 4000 of 4095
    assert x.max() == 4095 and x.min() >= 0
    frac = float((x == 4095).mean())
    assert 0.1 < frac < 0.9  # the upper tail is clipped, not the whole image
    x8 = d.detect(rng, np.full((50, 50), 200.0), d.Detector(bits=8))
    assert x8.max() == 255


@pytest.mark.parametrize("family", d.FAMILIES + d.HELDOUT_FAMILIES)
def test_every_family_renders_finite_nonempty_structure(family: str) -> None:
    rng = np.random.default_rng(11)
    pair = d.image_pair(rng, 96, d.random_acquisition(rng, photons=50.0),
                        d.Sample((family,)))  # type: ignore[arg-type]
    for img in (pair.confocal, pair.sted):
        assert img.shape == (96, 96) and img.dtype == np.float32 and np.isfinite(img).all()
    assert pair.sted.max() > pair.sted.min()


def test_training_sets_never_contain_held_out_families(tmp_path: Path) -> None:
    from tcan_live.train.dataset import simulate_dataset

    paths = simulate_dataset(tmp_path / "s", n=12, size=64, seed=4)
    seen = set()
    for p in paths:
        with tifffile.TiffFile(p) as tif:
            params = json.loads(tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
                                ["Description"])
            assert tif.series[0].shape == (2, 64, 64)
        seen |= set(params["sample"]["families"])
        assert 30 <= params["acquisition"]["pixel_nm"] <= 100
    assert seen and not seen & set(d.HELDOUT_FAMILIES)


def test_acquisition_pixel_sizes_resample_onto_the_model_grid() -> None:
    """A field acquired at 30 or 100 nm ends on the 50 nm grid with the same image content."""
    out = {}
    for px in (30.0, 50.0, 100.0):
        rng = np.random.default_rng(8)
        acq = d.Acquisition(pixel_nm=px, detector=d.Detector(photons=1e5, excess=1.0,
                                                                read_noise=0.0))
        out[px] = d.image_pair(rng, 120, acq, d.Sample(("nucleus",), regions=False))
    ref = out[50.0].confocal[10:-20, 10:-20]
    for px in (30.0, 100.0):
        img = out[px].confocal[10:-20, 10:-20]
        assert np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.97
        assert math.isclose(float(np.median(img)), float(np.median(ref)), rel_tol=0.1)
