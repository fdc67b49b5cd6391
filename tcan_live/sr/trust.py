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

from tcan_live.sr.normalize import normalize, percentile_affine

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class TrustResult:
    score: float  # Pearson correlation of re-blurred output and input
    nrmse: float
    residual: np.ndarray  # float32, in normalised input units (1 = input's p1..p99.9 range)


def sigma_px(fwhm_nm: float, pixel_size_um: float) -> float:
    return fwhm_nm / FWHM_PER_SIGMA / (pixel_size_um * 1000.0)


def trust_check(
    raw: np.ndarray, enhanced: np.ndarray, pixel_size_um: float, *,
    confocal_fwhm_nm: float = 230.0, target_fwhm_nm: float = 80.0,
) -> TrustResult:
    if raw.shape != enhanced.shape:
        raise ValueError(f"raw {raw.shape} and enhanced {enhanced.shape} differ in shape")
    aff = percentile_affine(raw)
    x = normalize(raw, aff).astype(np.float64)
    y = normalize(enhanced, aff).astype(np.float64)
    blur = math.sqrt(max(confocal_fwhm_nm**2 - target_fwhm_nm**2, 1.0))
    r = ndimage.gaussian_filter(y, sigma_px(blur, pixel_size_um), mode="reflect")
    a, b = _affine_fit(r, x)
    fit = a * r + b
    diff = fit - x
    sd = float(x.std()) or 1.0
    nrmse = float(np.sqrt(np.mean(diff**2)) / sd)
    score = _pearson(fit, x)
    residual = ndimage.gaussian_filter(diff, sigma_px(confocal_fwhm_nm, pixel_size_um) / 2,
                                       mode="reflect")
    return TrustResult(score, nrmse, residual.astype(np.float32))


def _affine_fit(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b minimising |a * pred + b - target|^2."""
    p = pred.ravel() - pred.mean()
    var = float(p @ p)
    if var <= 0:
        return 0.0, float(target.mean())
    a = float(p @ (target.ravel() - target.mean())) / var
    return a, float(target.mean() - a * pred.mean())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a0, b0 = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a0 * a0).sum()) * float((b0 * b0).sum()))
    return float((a0 * b0).sum() / den) if den > 0 else 0.0
