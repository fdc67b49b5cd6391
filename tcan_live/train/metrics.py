"""Image-quality metrics of the paper and the usual restoration metrics (numpy/scipy).

* :func:`fidelity`: MSE, NRMSE, PSNR and SSIM of a prediction against a target, after percentile
  normalisation of both and a least-squares affine fit of the prediction to the target (so a
  global intensity scale/offset is not counted as an error);
* :func:`bead_fwhm_nm`: FWHM of isolated point sources by 2-D Gaussian fits;
* :func:`snr`: the paper's SNR, (mean fitted peak - background mean) / background std;
* :func:`richardson_lucy`: the classical deconvolution baseline with a Gaussian PSF.
Decorrelation resolution lives in :mod:`tcan_live.train.decorrelation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from tcan_live.sim.simulate import FWHM_PER_SIGMA, sigma_px
from tcan_live.sr.normalize import normalize, percentile_affine
from tcan_live.sr.trust import _affine_fit


def _norm(img: np.ndarray) -> np.ndarray:
    return normalize(img, percentile_affine(img, 0.1, 99.9)).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM with an 11-px Gaussian window (sigma 1.5), as Wang et al. 2004."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    f = lambda x: ndimage.gaussian_filter(x, 1.5, truncate=3.5)  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    saa, sbb, sab = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(s[5:-5, 5:-5].mean() if min(s.shape) > 10 else s.mean())


def fidelity(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    t = _norm(target)
    p = _norm(pred)
    a, b = _affine_fit(p, t)
    p = a * p + b
    mse = float(np.mean((p - t) ** 2))
    rmse = math.sqrt(mse)
    return {"mse": mse, "nrmse": rmse, "psnr": 20 * math.log10(1.0 / max(rmse, 1e-12)),
            "ssim": ssim(p, t)}


DETAIL_BAND_NM = (60.0, 200.0)  # FWHMs of the difference of Gaussians: what STED resolves
# and confocal does not


def detail_band(img: np.ndarray, pixel_size_um: float,
                band_nm: tuple[float, float] = DETAIL_BAND_NM) -> np.ndarray:
    """Difference of Gaussians (FWHM ``band_nm[0]`` minus FWHM ``band_nm[1]``)."""
    s1, s2 = (sigma_px(b, pixel_size_um) for b in band_nm)
    img = np.asarray(img, np.float64)
    return np.asarray(ndimage.gaussian_filter(img, s1) - ndimage.gaussian_filter(img, s2))


def _fitted(pred: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = _norm(pred)
    a, b = _affine_fit(p, t)
    return np.asarray(a * p + b)


def detail_band_error(pred: np.ndarray, target: np.ndarray, raw: np.ndarray,
                      pixel_size_um: float) -> float:
    """NRMSE of ``pred`` against ``target`` in the detail band (after the affine fit), relative
    to that of the raw confocal input: 1.0 = no better than adding no detail (the raw input
    scores exactly 1); below 1 the added detail is more right than wrong; above 1 it is
    invented."""
    t = _norm(target)
    bt = detail_band(t, pixel_size_um)
    err = lambda img: float(np.sqrt(np.mean(  # noqa: E731
        (detail_band(_fitted(img, t), pixel_size_um) - bt) ** 2)))
    return err(pred) / max(err(raw), 1e-12)


def ridge_cv(img: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of variation of ``img`` along the target's ridges (pixels above 40% of the
    target's 99.5th percentile that are local maxima of the target): continuous structure keeps
    it near the target's own; beads on a string raise it."""
    thr = 0.4 * np.percentile(target, 99.5)
    ridge = (target > thr) & (target >= ndimage.maximum_filter(target, 3) * 0.999)
    if ridge.sum() < 20:
        return float("nan")
    v = np.asarray(img, np.float64)[ridge]
    return float(v.std() / max(abs(v.mean()), 1e-12))


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive`` (ties averaged)."""
    from scipy.stats import rankdata

    s, pos = np.ravel(score), np.ravel(positive).astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def error_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel |pred - target| after the affine fit, in units of the target's range
    (0.1-99.9th percentile): the error the uncertainty map is judged against."""
    t = _norm(target)
    return np.abs(_fitted(pred, t) - t)


def error_auroc(uncertainty: np.ndarray, pred: np.ndarray, target: np.ndarray,
                top: float = 0.10) -> float:
    """How well ``uncertainty`` ranks pixels by actual error: AUROC for "this pixel's error
    (:func:`error_map`) is in the image's top ``top`` fraction"."""
    err = error_map(pred, target)
    q = np.quantile(err, 1.0 - top)
    pos = err >= q
    return auroc(uncertainty, pos if not pos.all() else err > q)  # ties at the threshold


# ---------------------------------------------------------------------------------------------
# point sources


@dataclass(frozen=True)
class GaussFit:
    amplitude: float
    offset: float
    y: float
    x: float
    sigma: float
    r2: float


def _gauss2d(coords: tuple[np.ndarray, np.ndarray], a: float, b: float, y0: float, x0: float,
             s: float) -> np.ndarray:
    yy, xx = coords
    return (a * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * s * s)) + b).ravel()


def fit_spot(window: np.ndarray, sigma_guess: float) -> GaussFit | None:
    """Circular 2-D Gaussian + offset fitted to a window centred on a spot."""
    h, w = window.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    b0 = float(np.percentile(window, 10))
    p0 = (float(window.max()) - b0, b0, (h - 1) / 2, (w - 1) / 2, sigma_guess)
    lo = (0.0, -np.inf, 0.0, 0.0, 0.2)
    hi = (np.inf, np.inf, h - 1.0, w - 1.0, max(h, w))
    try:
        popt, _ = optimize.curve_fit(_gauss2d, (yy, xx), window.ravel().astype(np.float64), p0=p0,
                                     bounds=(lo, hi), maxfev=2000)
    except (RuntimeError, ValueError):
        return None
    resid = window.ravel() - _gauss2d((yy, xx), *popt)
    ss_tot = float(((window - window.mean()) ** 2).sum()) or 1.0
    a, b, y0, x0 = (float(v) for v in popt[:4])
    return GaussFit(a, b, y0, x0, abs(float(popt[4])), 1.0 - float((resid**2).sum()) / ss_tot)


def isolated_spots(reference: np.ndarray, *, min_separation_px: float, window: int,
                   max_spots: int = 50) -> list[tuple[int, int]]:
    """Round, isolated local maxima of ``reference`` (the sharpest image, e.g. the target):
    a maximum qualifies when no other signal above 20% of its height lies within
    ``min_separation_px`` and the window's second moments are round (filaments are not)."""
    ref = ndimage.gaussian_filter(reference.astype(np.float64), 0.7)
    bg = float(np.median(ref))
    peak_level = bg + 0.3 * (float(np.percentile(ref, 99.99)) - bg)
    size = int(2 * min_separation_px + 1)
    maxima = (ref == ndimage.maximum_filter(ref, size=size)) & (ref > peak_level)
    half = window // 2
    spots: list[tuple[int, int]] = []
    for y, x in zip(*np.nonzero(maxima), strict=True):
        if not (half <= y < ref.shape[0] - half and half <= x < ref.shape[1] - half):
            continue
        win = ref[y - half : y + half + 1, x - half : x + half + 1] - bg
        height = win[half, half]
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        far = (yy**2 + xx**2) > (min_separation_px / 2) ** 2
        if np.any(win[far] > 0.2 * height):
            continue
        if _elongation(np.clip(win, 0, None), yy, xx) > 1.3:
            continue
        spots.append((int(y), int(x)))
        if len(spots) >= max_spots:
            break
    return spots


def _elongation(w: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> float:
    m = w.sum() or 1.0
    cy, cx = (w * yy).sum() / m, (w * xx).sum() / m
    cov = np.array([[(w * (yy - cy) ** 2).sum(), (w * (yy - cy) * (xx - cx)).sum()],
                    [(w * (yy - cy) * (xx - cx)).sum(), (w * (xx - cx) ** 2).sum()]]) / m
    ev = np.linalg.eigvalsh(cov)
    return float(math.sqrt(max(ev[1], 1e-12) / max(ev[0], 1e-12)))


def spot_fits(image: np.ndarray, spots: list[tuple[int, int]], window: int,
              sigma_guess: float) -> list[GaussFit]:
    half = window // 2
    fits = []
    for y, x in spots:
        fit = fit_spot(image[y - half : y + half + 1, x - half : x + half + 1].astype(np.float64),
                       sigma_guess)
        if fit is not None and fit.r2 > 0.5:
            fits.append(fit)
    return fits


def bead_fwhm_nm(image: np.ndarray, spots: list[tuple[int, int]], pixel_size_um: float,
                 window: int = 15) -> float:
    """Median FWHM (nm) of 2-D Gaussian fits at the given isolated spots; NaN if none fit."""
    fits = spot_fits(image, spots, window, sigma_guess=1.5)
    if not fits:
        return float("nan")
    return float(np.median([f.sigma for f in fits]) * FWHM_PER_SIGMA * pixel_size_um * 1000)


def snr(image: np.ndarray, spots: list[tuple[int, int]], background: np.ndarray,
        window: int = 15) -> float:
    """(mean fitted peak - background mean) / background std (paper, after Wang et al. 2019)."""
    fits = spot_fits(image, spots, window, sigma_guess=1.5)
    bg = image[background].astype(np.float64)
    if not fits or bg.size < 10 or bg.std() == 0:
        return float("nan")
    peak = float(np.mean([f.amplitude + f.offset for f in fits]))
    return (peak - float(bg.mean())) / float(bg.std())


def background_mask(target: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """Pixels well away from any structure of the (sharp) target image."""
    ref = ndimage.gaussian_filter(target.astype(np.float64), 1.0)
    lo, hi = np.percentile(ref, [5, 99.9])
    struct = ref > lo + 0.05 * (hi - lo)
    grow = max(int(round(0.4 / pixel_size_um)), 1)
    return ~ndimage.binary_dilation(struct, iterations=grow)


def background_grain(pred: np.ndarray, target: np.ndarray, pixel_size_um: float) -> float:
    """Structure where the truth has none: the standard deviation of ``pred`` (after the
    affine fit to the target) over :func:`background_mask`, in units of the target's range
    (0.1-99.9th percentile). Painted texture and grain raise it; a flat background scores the
    truth's own (its noise-free background: about 0). NaN when under 1% of the pixels are
    background."""
    bg = background_mask(target, pixel_size_um)
    if bg.sum() < max(0.01 * bg.size, 20):
        return float("nan")
    return float(np.std(_fitted(pred, _norm(target))[bg]))


# ---------------------------------------------------------------------------------------------
# classical baseline


def richardson_lucy(image: np.ndarray, fwhm_nm: float, pixel_size_um: float,
                    iterations: int = 20) -> np.ndarray:
    """Richardson-Lucy deconvolution with a Gaussian PSF (background estimated and removed)."""
    img = image.astype(np.float64)
    bg = float(np.percentile(img, 1))
    img = np.clip(img - bg, 0, None)
    s = sigma_px(fwhm_nm, pixel_size_um)
    est = np.full_like(img, img.mean() or 1.0)
    for _ in range(iterations):
        conv = ndimage.gaussian_filter(est, s, mode="reflect")
        est *= ndimage.gaussian_filter(img / np.maximum(conv, 1e-6), s, mode="reflect")
    return (est + bg).astype(np.float32)
