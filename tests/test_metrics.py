"""Metrics against known answers, and the trust check flagging invented structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tcan_live.sim.simulate import Camera, Optics, Scene, detect, expected_images, scene_points
from tcan_live.sr.trust import trust_check
from tcan_live.train.decorrelation import decorrelation_cutoff, decorrelation_resolution_nm
from tcan_live.train.metrics import (
    background_grain,
    bead_fwhm_nm,
    fidelity,
    isolated_spots,
    richardson_lucy,
    snr,
)


def _scene(rng: np.random.Generator, fwhm: float = 230.0, photons: float = 150.0,
           structures: tuple[str, ...] = ("filaments",)) -> tuple[np.ndarray, np.ndarray]:
    pts, w = scene_points(rng, (192, 192), 0.05, Scene(structures=structures,  # type: ignore[arg-type]
                                                       filament_density=0.15, bead_density=0.3))
    conf, sted = expected_images(pts, w, (192, 192), Optics(confocal_fwhm_nm=fwhm), photons)
    cam = Camera(photons=photons, background=2.0)
    return detect(rng, conf, cam), sted + 2.0


def test_identical_images_are_perfect(rng: np.random.Generator) -> None:
    img = rng.gamma(2, 10, (64, 64))
    m = fidelity(img, img)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert m["nrmse"] == pytest.approx(0.0, abs=1e-9) and m["mse"] == pytest.approx(0, abs=1e-12)


def test_fidelity_ignores_affine_intensity_changes_but_not_blur(rng: np.random.Generator) -> None:
    _, sted = _scene(rng)
    scaled = fidelity(3.0 * sted + 50.0, sted)
    blurred = fidelity(ndimage.gaussian_filter(sted, 2.0), sted)
    assert scaled["ssim"] > 0.999 and scaled["nrmse"] < 1e-3
    assert blurred["ssim"] < 0.9 and blurred["nrmse"] > 0.02


@pytest.mark.parametrize("sigma", [1.2, 2.0, 3.5])
def test_gaussian_spot_fwhm_within_5_percent(sigma: float) -> None:
    yy, xx = np.mgrid[0:41, 0:41]
    img = 100 * np.exp(-((yy - 20.3) ** 2 + (xx - 19.6) ** 2) / (2 * sigma**2)) + 5
    fwhm = bead_fwhm_nm(img, [(20, 20)], pixel_size_um=0.05, window=21)
    assert fwhm == pytest.approx(2.3548 * sigma * 50, rel=0.05)


def test_isolated_spots_skip_filaments_and_pairs(rng: np.random.Generator) -> None:
    img = np.zeros((120, 120))
    img[30, 30] = img[90, 30] = 1.0  # isolated beads
    img[60, 80] = img[62, 84] = 1.0  # a close pair: not isolated
    img[10:110, 105] = 0.05  # a filament
    img = ndimage.gaussian_filter(img, 1.0)
    spots = isolated_spots(img, min_separation_px=10, window=15)
    assert sorted(spots) == [(30, 30), (90, 30)]


def test_snr_is_higher_for_brighter_beads(rng: np.random.Generator) -> None:
    values = []
    for photons in (20.0, 400.0):
        pts = rng.uniform(20, 172, (15, 2))
        conf, _ = expected_images(pts, np.ones(15), (192, 192), Optics(), photons)
        img = detect(rng, conf, Camera(photons=photons, background=2.0))
        spots = isolated_spots(conf, min_separation_px=12, window=15)
        values.append(snr(img, spots, conf < 0.01 * photons, 15))
    assert values[1] > 3 * values[0]


def test_decorrelation_recovers_a_known_cutoff(rng: np.random.Generator) -> None:
    """Noise band-limited at k0 (normalised), plus white noise: kc within 15% of k0."""
    n = 256
    k = np.fft.fftfreq(n) * 2
    r = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    for k0 in (0.3, 0.5, 0.7):
        img = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * (r <= k0)))
        img = img / img.std() + 0.3 * rng.normal(size=(n, n))
        assert decorrelation_cutoff(img) == pytest.approx(k0, rel=0.15)


def test_decorrelation_ranks_known_psfs(rng: np.random.Generator) -> None:
    res = [decorrelation_resolution_nm(_scene(rng, fwhm=f, photons=300)[0], 0.05)
           for f in (100, 160, 230)]
    assert res[0] < res[1] < res[2]
    assert res[2] == pytest.approx(250, rel=0.15)  # ~230 nm confocal (paper: 267 +- 12 nm)


def test_background_grain_sees_texture_painted_into_empty_space(
        rng: np.random.Generator) -> None:
    # a truth with structure in its middle and nothing around it (50 nm pixels)
    truth = np.zeros((160, 160))
    truth[60:100, 60:100] = ndimage.gaussian_filter(rng.random((40, 40)), 1.0) + 0.5
    truth = ndimage.gaussian_filter(truth, 1.0)
    assert background_grain(truth, truth, 0.05) == pytest.approx(0.0, abs=1e-3)
    # a global intensity change is not grain (the affine fit takes it)
    assert background_grain(3.0 * truth + 7.0, truth, 0.05) == pytest.approx(0.0, abs=1e-3)
    # the same structure with beads painted where the truth is empty scores higher, more
    # beads higher still
    painted = [truth.copy() for _ in range(2)]
    for n, img in zip((20, 80), painted, strict=True):
        ys, xs = rng.integers(0, 40, n), rng.integers(0, 160, n)  # top strip, far from it
        img[ys, xs] += 0.5
    grains = [background_grain(ndimage.gaussian_filter(p, 0.8), truth, 0.05) for p in painted]
    assert 0.002 < grains[0] < grains[1]
    # a truth that is structure everywhere has no background to judge
    assert np.isnan(background_grain(truth, rng.random((160, 160)) + 1.0, 0.05))


def test_richardson_lucy_sharpens_beads(rng: np.random.Generator) -> None:
    pts = rng.uniform(20, 172, (12, 2))
    conf, _ = expected_images(pts, np.ones(12), (192, 192), Optics(), 500.0)
    img = detect(rng, conf, Camera(photons=500.0, background=1.0))
    spots = isolated_spots(conf, min_separation_px=12, window=15)
    assert len(spots) >= 3
    before = bead_fwhm_nm(img, spots, 0.05)
    after = bead_fwhm_nm(richardson_lucy(img, 230, 0.05), spots, 0.05)
    assert after < 0.8 * before


def _trust(raw: np.ndarray, out: np.ndarray) -> tuple[float, np.ndarray]:
    t = trust_check(raw, out, 0.05)
    assert t.residual is not None
    return t.score, t.residual


def test_trust_check_matches_a_float64_reference(rng: np.random.Generator) -> None:
    """float32 images with float64 sums give the textbook float64 numbers; passing the
    Enhancer's affine and skipping the residual map changes nothing else."""
    from tcan_live.sr.normalize import normalize, percentile_affine
    from tcan_live.sr.trust import sigma_px

    raw, good = _scene(rng, photons=50)
    out = good + rng.normal(0, 0.05 * float(good.std()), good.shape).astype(np.float32)
    aff = percentile_affine(raw)
    x = normalize(raw, aff).astype(np.float64)
    r = ndimage.gaussian_filter(normalize(out, aff).astype(np.float64),
                                sigma_px(np.sqrt(230.0**2 - 80.0**2), 0.05), mode="reflect")
    a, b = np.polyfit(r.ravel(), x.ravel(), 1)
    fit = a * r + b
    want_nrmse = np.sqrt(np.mean((fit - x) ** 2)) / x.std()
    want_score = np.corrcoef(fit.ravel(), x.ravel())[0, 1]
    t = trust_check(raw, out, 0.05)
    assert t.score == pytest.approx(want_score, abs=1e-5)
    assert t.nrmse == pytest.approx(want_nrmse, rel=1e-4)
    fast = trust_check(raw, out, 0.05, affine=aff, residual=False)
    assert fast.residual is None
    assert (fast.score, fast.nrmse) == pytest.approx((t.score, t.nrmse), rel=1e-6)


@pytest.mark.parametrize("camera", [False, True])
def test_trust_check_equals_scipys_float32_computation(rng: np.random.Generator,
                                                       camera: bool) -> None:
    """The torch implementation against the same maths in numpy/scipy (scipy's Gaussian,
    float32 images, float64 sums): score, NRMSE and the residual map, for float frames with a
    NaN and 16-bit camera frames, an odd shape, and a blur wider than the short side."""
    import torch

    from tcan_live.sr.normalize import normalize, percentile_affine
    from tcan_live.sr.trust import _gaussian_torch, _moments, sigma_px

    raw, good = _scene(rng, photons=50)
    raw = raw[:, :-3]
    out = good[:, :-3] + rng.normal(0, 0.05 * float(good.std()), raw.shape).astype(np.float32)
    if camera:
        raw = (raw * 1000 / raw.max()).astype(np.uint16)
    else:
        raw[5, 7] = np.nan
    aff = percentile_affine(raw)
    x, y = normalize(raw, aff), normalize(out, aff)
    r = ndimage.gaussian_filter(y, sigma_px(np.sqrt(230.0**2 - 80.0**2), 0.05), mode="reflect")
    m = _moments(r, x)
    a, b = m.fit()
    want_res = ndimage.gaussian_filter(r * np.float32(a) + np.float32(b) - x,
                                       sigma_px(230.0, 0.05) / 2, mode="reflect")
    got = trust_check(raw, out, 0.05, affine=aff)
    assert (got.score, got.nrmse) == pytest.approx(m.score_nrmse(), rel=1e-6)
    assert got.residual is not None and got.residual.dtype == np.float32
    np.testing.assert_allclose(got.residual, want_res, atol=1e-5 * float(np.abs(want_res).max()))
    assert got.score != pytest.approx(trust_check(raw, np.roll(out, 5, axis=0), 0.05,
                                                  affine=aff).score, rel=1e-3)
    img = rng.random((5, 40)).astype(np.float32)
    np.testing.assert_allclose(_gaussian_torch(torch.from_numpy(img), 3.0).numpy(),
                               ndimage.gaussian_filter(img, 3.0, mode="reflect"), atol=1e-6)


def test_trust_check_flags_an_invented_filament(rng: np.random.Generator) -> None:
    raw, good = _scene(rng, photons=200)
    score_good, res_good = _trust(raw, good)
    fake = good.copy()
    fake[150:154, 20:90] += good.max()  # a bright filament that the input does not have
    score_fake, res_fake = _trust(raw, fake)
    assert score_fake < score_good
    band = (slice(145, 160), slice(20, 90))
    elsewhere = np.ones(raw.shape, bool)
    elsewhere[140:165, 10:100] = False
    assert res_fake[band].mean() > 5 * max(res_good[band].mean(), 1e-3)
    assert res_fake[band].mean() > 5 * np.abs(res_fake[elsewhere]).mean()


def test_faithful_output_scores_better_than_blurred_or_shifted(rng: np.random.Generator) -> None:
    raw, good = _scene(rng, photons=200, structures=("filaments", "beads"))
    score_good, _ = _trust(raw, good)
    score_blur, _ = _trust(raw, ndimage.gaussian_filter(good, 3.0))
    score_shift, _ = _trust(raw, np.roll(good, (3, -2), axis=(0, 1)))
    assert score_good > score_blur and score_good > score_shift
    assert score_good > 0.9
