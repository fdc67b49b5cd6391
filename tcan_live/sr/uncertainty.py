"""Per-pixel uncertainty of an enhanced frame: where the network is guessing.

Method (numpy + the enhancer; no retraining needed): **resampled noise with test-time
augmentation**. A confocal frame is one noisy draw of the sample; another draw would have
given another output wherever the data do not pin the output down. So:

1. The frame's noise is measured from the frame itself (:func:`estimate_noise`): a
   photon-transfer fit of local variance against local mean (point detectors: variance is
   linear in the mean, slope = gain x excess noise factor, intercept = electronic noise).
   The noise is read from each pixel's difference to its four neighbours, which the confocal
   PSF (several pixels wide) leaves almost free of signal.
2. ``passes`` new frames are drawn: the frame's expected value (the frame smoothed well inside
   the PSF's pass band) plus fresh noise of the measured variance.
3. Each draw is enhanced under another of the eight flips/rotations (and turned back), so the
   map also sees where the output depends on orientation, which real structure does not.
4. The map is the per-pixel standard deviation over the passes (the variance pooled over a
   50 nm Gaussian), in the enhanced image's units (larger = less certain). Its frame score is
   the map's mean over the enhanced image's dynamic range (1st-99.9th percentile).

Cost: ``passes`` extra forward passes per frame (4 by default), so about 5x the plain frame
time with the plain output included; opt-in in the daemon on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tcan_live.sim.simulate import sigma_px

DEFAULT_PASSES = 4
SMOOTH_NM = 50.0  # the variance is pooled over a Gaussian of this sigma
# white noise: the 5 x 5 mean of squared neighbour residuals has its lower quartile at 0.747 of
# its mean (measured, 512 x 512 Gaussian noise; tests/test_adapt.py checks it): the factor
# that makes the fit exact on smooth samples (used by tcan-live adapt, whose split views need
# the variance right). On textured samples the structure that leaks into the residual raises
# the estimate (by up to ~30%); the uncertainty map keeps the compromise 1.2 it was measured
# with (10% low on flat regions, within 25% on textured ones: tests/test_uncertainty.py)
LOWER_QUARTILE_TO_MEAN = 1.34
UNCERTAINTY_QUARTILE_FACTOR = 1.2


@dataclass(frozen=True)
class NoiseModel:
    """variance = slope * mean + intercept (detector units)."""

    slope: float
    intercept: float

    def variance(self, mean: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(self.slope * mean + self.intercept, 1e-6, None))


def _neighbour_residual(x: np.ndarray) -> np.ndarray:
    """x minus the mean of its 4 neighbours; for white noise of variance v its variance is
    1.25 v."""
    k = np.array([[0, -0.25, 0], [-0.25, 1.0, -0.25], [0, -0.25, 0]])
    return np.asarray(ndimage.convolve(x, k, mode="mirror"))


def noise_line(image: np.ndarray, bins: int = 24, factor: float = LOWER_QUARTILE_TO_MEAN
               ) -> tuple[float, float] | None:
    """Photon-transfer fit from one frame: local variance (neighbour residuals) against local
    mean, the lower quartile per mean bin (structure edges only add variance), a weighted
    least-squares line ``variance = slope * mean + intercept``, unclamped (a positive offset
    gives a negative intercept). Saturated pixels are left out. None: too few pixels."""
    x = np.asarray(image, np.float64)
    r2 = _neighbour_residual(x) ** 2 / 1.25
    mean = ndimage.uniform_filter(x, 5, mode="mirror")
    var = ndimage.uniform_filter(r2, 5, mode="mirror")
    top = x.max()
    ok = ndimage.minimum_filter(x < top, 5) if np.mean(x == top) > 1e-4 else np.ones_like(x, bool)
    m, v = mean[ok].ravel(), var[ok].ravel()
    if m.size < 64:
        return None
    edges = np.unique(np.quantile(m, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, len(edges) - 2)
    ms, vs, ws = [], [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() >= 16:
            ms.append(float(np.median(m[sel])))
            vs.append(float(np.quantile(v[sel], 0.25)) * factor)
            ws.append(float(np.sqrt(sel.sum())))
    if len(ms) < 2:
        return 0.0, float(np.median(v))
    slope, intercept = np.polyfit(ms, vs, 1, w=ws)
    if slope <= 0:
        return 0.0, float(np.average(vs, weights=ws))
    return float(slope), float(intercept)


def estimate_noise(image: np.ndarray, bins: int = 24) -> NoiseModel:
    """The frame's noise model from :func:`noise_line` (intercept kept positive)."""
    line = noise_line(image, bins, UNCERTAINTY_QUARTILE_FACTOR)
    if line is None:
        return NoiseModel(0.0, float(np.var(np.asarray(image, np.float64))) + 1e-6)
    return NoiseModel(line[0], max(line[1], 1e-6))


def redraw(rng: np.random.Generator, image: np.ndarray, noise: NoiseModel,
           smooth_px: float) -> np.ndarray:
    """Another noisy draw of the frame: its expected value plus noise of the measured
    variance."""
    mean = ndimage.gaussian_filter(np.asarray(image, np.float64), smooth_px, mode="mirror")
    return np.asarray(mean + np.sqrt(noise.variance(mean)) * rng.standard_normal(mean.shape),
                      np.float32)


def _dihedral(a: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    rot, flip = k % 4, k >= 4
    if inverse:
        a = a[:, ::-1] if flip else a
        return np.ascontiguousarray(np.rot90(a, -rot))
    a = np.rot90(a, rot)
    return np.ascontiguousarray(a[:, ::-1] if flip else a)


def uncertainty_map(enhance: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                    pixel_size_um: float, *, confocal_fwhm_nm: float = 230.0,
                    passes: int = DEFAULT_PASSES, seed: int = 0) -> np.ndarray:
    """Per-pixel standard deviation (enhanced units, the enhanced image's shape) of the
    enhancement over ``passes`` noise redraws under the eight flips/rotations.
    ``enhance(frame) -> enhanced`` is the plain path (same grid in and out)."""
    if passes < 2:
        raise ValueError("the uncertainty needs at least 2 passes")
    image = np.asarray(image, np.float32)
    finite = np.isfinite(image)
    if not finite.all():  # NaN/Inf pixels: redrawn from the frame's median (not propagated)
        image = np.where(finite, image, np.median(image[finite]) if finite.any() else 0.0)
    rng = np.random.default_rng(seed)
    psf_sigma_px = sigma_px(confocal_fwhm_nm, pixel_size_um)
    smooth = max(0.5 * psf_sigma_px, 0.5)
    noise = estimate_noise(image)
    acc = acc2 = None
    for k in range(passes):
        draw = _dihedral(redraw(rng, image, noise, smooth), k % 8)
        y = _dihedral(np.asarray(enhance(draw), np.float64), k % 8, inverse=True)
        acc = y if acc is None else acc + y
        acc2 = y * y if acc2 is None else acc2 + y * y
    assert acc is not None and acc2 is not None
    mean = acc / passes
    var = np.clip(acc2 / passes - mean * mean, 0.0, None) * passes / (passes - 1)
    # a 4-sample standard deviation is itself noisy: pool it over ~SMOOTH_NM
    sigma = SMOOTH_NM / 1000.0 / pixel_size_um * (var.shape[0] / image.shape[0])
    return np.sqrt(ndimage.gaussian_filter(var, sigma)).astype(np.float32)


def frame_score(uncertainty: np.ndarray, enhanced: np.ndarray) -> float:
    """The map's mean over the enhanced image's dynamic range (1st to 99.9th percentile):
    0 = certain; about 0.05 and up = a large part of the detail is a guess."""
    lo, hi = np.percentile(enhanced, [1.0, 99.9])
    return float(np.mean(uncertainty) / max(float(hi - lo), 1e-12))
