"""Trust check: is the enhanced frame consistent with the confocal frame it came from?

The enhanced frame (STED-like PSF) is re-blurred to the confocal resolution with a Gaussian of
FWHM sqrt(confocal^2 - target^2), fitted to the normalised input by least squares (a * r + b),
and compared with it: Pearson correlation (the ``score``, 1 = fully consistent) and NRMSE
(RMS of the difference over the input's standard deviation). The residual map is the fitted,
re-blurred output minus the input, smoothed with the confocal PSF to suppress pixel noise:
positive where the output claims signal that the input does not support, negative where it
lost signal. numpy/scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tcan_live.sr.normalize import Affine, normalize, percentile_affine

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class TrustResult:
    score: float  # Pearson correlation of re-blurred output and input
    nrmse: float
    # float32, in normalised input units (1 = input's p1..p99.9 range); None when not asked for
    residual: np.ndarray | None


def sigma_px(fwhm_nm: float, pixel_size_um: float) -> float:
    return fwhm_nm / FWHM_PER_SIGMA / (pixel_size_um * 1000.0)


def trust_check(
    raw: np.ndarray, enhanced: np.ndarray, pixel_size_um: float, *,
    confocal_fwhm_nm: float = 230.0, target_fwhm_nm: float = 80.0,
    affine: Affine | None = None, residual: bool = True,
) -> TrustResult:
    """``affine``: the input's percentile normalisation if already computed (the Enhancer's
    ``EnhanceResult.affine``, same percentiles); ``residual=False`` skips the residual map
    (the daemon publishes only the score and NRMSE). Images in float32, sums in float64."""
    if raw.shape != enhanced.shape:
        raise ValueError(f"raw {raw.shape} and enhanced {enhanced.shape} differ in shape")
    aff = affine or percentile_affine(raw)
    x = normalize(raw, aff)
    y = normalize(enhanced, aff)
    blur = math.sqrt(max(confocal_fwhm_nm**2 - target_fwhm_nm**2, 1.0))
    r = ndimage.gaussian_filter(y, sigma_px(blur, pixel_size_um), mode="reflect")
    a, b = _affine_fit(r, x)
    diff = r * np.float32(a) + np.float32(b) - x
    x_mean = _mean(x)
    sd = math.sqrt(max(_dot(x, x) / x.size - x_mean**2, 0.0)) or 1.0
    nrmse = math.sqrt(_dot(diff, diff) / diff.size) / sd
    score = _pearson(r, x) if a > 0 else -_pearson(r, x) if a < 0 else 0.0
    res = (ndimage.gaussian_filter(diff, sigma_px(confocal_fwhm_nm, pixel_size_um) / 2,
                                   mode="reflect").astype(np.float32) if residual else None)
    return TrustResult(score, nrmse, res)


def _mean(a: np.ndarray) -> float:
    return float(np.sum(a, dtype=np.float64)) / a.size


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b) accumulated in float64 (pairwise), for float32 images of millions of pixels."""
    return float(np.sum(a * b, dtype=np.float64))


def _affine_fit(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b minimising |a * pred + b - target|^2."""
    n = pred.size
    pm, tm = _mean(pred), _mean(target)
    var = _dot(pred, pred) - n * pm * pm
    if var <= 0:
        return 0.0, tm
    a = (_dot(pred, target) - n * pm * tm) / var
    return a, tm - a * pm


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    n = a.size
    am, bm = _mean(a), _mean(b)
    cov = _dot(a, b) - n * am * bm
    den = math.sqrt(max(_dot(a, a) - n * am * am, 0.0) * max(_dot(b, b) - n * bm * bm, 0.0))
    return cov / den if den > 0 else 0.0
