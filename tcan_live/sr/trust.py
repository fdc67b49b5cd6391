"""Trust check: is the enhanced frame consistent with the confocal frame it came from?

The enhanced frame (STED-like PSF) is re-blurred to the confocal resolution with a Gaussian of
FWHM sqrt(confocal^2 - target^2), fitted to the normalised input by least squares (a * r + b),
and compared with it: Pearson correlation (the ``score``, 1 = fully consistent) and NRMSE
(RMS of the difference over the input's standard deviation). The residual map is the fitted,
re-blurred output minus the input, smoothed with the confocal PSF to suppress pixel noise:
positive where the output claims signal that the input does not support, negative where it
lost signal. Computed with torch on any device (the daemon's, so that on a GPU a 2048 px
frame's check takes a few ms instead of a CPU's 0.1-0.2 s, a third of the frame's time there);
the least-squares moments are shared with train/metrics.py (numpy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcan_live.sim.simulate import sigma_px
from tcan_live.sr.normalize import Affine, percentile_affine


@dataclass(frozen=True)
class TrustResult:
    score: float  # Pearson correlation of re-blurred output and input
    nrmse: float
    # float32, in normalised input units (1 = input's p1..p99.9 range); None when not asked for
    residual: np.ndarray | None


def trust_check(
    raw: np.ndarray, enhanced: np.ndarray, pixel_size_um: float, *,
    confocal_fwhm_nm: float = 230.0, target_fwhm_nm: float = 80.0,
    affine: Affine | None = None, residual: bool = True, device: Any = "cpu",
) -> TrustResult:
    """``affine``: the input's percentile normalisation if already computed (the Enhancer's
    ``EnhanceResult.affine``, same percentiles); ``residual=False`` skips the residual map
    (the daemon publishes only the score and NRMSE); ``device``: where to compute (the
    daemon passes the Enhancer's). Torch, images in float32, sums in float64; the Gaussian is
    scipy's (truncated at 4 sigma, 'reflect' edges) as float32 multiply-adds."""
    import torch

    from tcan_live.sr.device import download, normalize_on_device, upload

    if raw.shape != enhanced.shape:
        raise ValueError(f"raw {raw.shape} and enhanced {enhanced.shape} differ in shape")
    aff = affine or percentile_affine(raw)
    dev = torch.device(device)
    with torch.inference_mode():
        x, y = (normalize_on_device(upload(img, dev), aff) for img in (raw, enhanced))
        score, nrmse, res = trust_normalised(x, y, pixel_size_um,
                                             confocal_fwhm_nm=confocal_fwhm_nm,
                                             target_fwhm_nm=target_fwhm_nm, residual=residual)
    return TrustResult(score, nrmse, None if res is None else download(res))


def trust_normalised(x: Any, y: Any, pixel_size_um: float, *, confocal_fwhm_nm: float = 230.0,
                     target_fwhm_nm: float = 80.0, residual: bool = False,
                     ) -> tuple[float, float, Any]:
    """The check on the normalised input ``x`` and output ``y`` (2-D float32 tensors, one
    device, the input's normalisation for both): (score, NRMSE, residual tensor or None). The
    Enhancer calls it on the tensors it already holds, so the daemon's check moves no data."""
    import torch

    blur = math.sqrt(max(confocal_fwhm_nm**2 - target_fwhm_nm**2, 1.0))
    r = _gaussian_torch(y, sigma_px(blur, pixel_size_um))
    sums = torch.stack([r.sum(dtype=torch.float64), x.sum(dtype=torch.float64),
                        (r * r).sum(dtype=torch.float64), (x * x).sum(dtype=torch.float64),
                        (r * x).sum(dtype=torch.float64)]).tolist()
    m = _Moments.from_sums(r.numel(), *sums)
    score, nrmse = m.score_nrmse()
    res = None
    if residual:
        a, b = (float(np.float32(v)) for v in m.fit())
        res = _gaussian_torch(r * a + b - x, sigma_px(confocal_fwhm_nm, pixel_size_um) / 2)
    return score, nrmse, res


@dataclass(frozen=True)
class _Moments:
    """Means and centred sums of squares/products of two images, one pass each, float64."""

    n: int
    mean_p: float
    mean_t: float
    srr: float  # sum (p - mean_p)^2
    sxx: float  # sum (t - mean_t)^2
    srx: float  # sum (p - mean_p)(t - mean_t)

    @classmethod
    def from_sums(cls, n: int, sp: float, st: float, spp: float, stt: float,
                  spt: float) -> _Moments:
        """From the plain sums of p, t, p*p, t*t and p*t (float64)."""
        mp, mt = sp / n, st / n
        return cls(n, mp, mt, max(spp - n * mp * mp, 0.0), max(stt - n * mt * mt, 0.0),
                   spt - n * mp * mt)

    def score_nrmse(self) -> tuple[float, float]:
        """(Pearson correlation, NRMSE of the least-squares fit), p the prediction, t the
        target."""
        # least squares leaves Sxx - Srx^2 / Srr of the input's Sxx unexplained (RMS of the
        # difference over the input's standard deviation, squared, is that ratio)
        sse = self.sxx - (self.srx**2 / self.srr if self.srr > 0 else 0.0)
        nrmse = math.sqrt(max(sse, 0.0) / self.sxx) if self.sxx > 0 else 0.0
        # the fitted a has the covariance's sign: Pearson(a * r + b, x) = |Pearson(r, x)|
        den = math.sqrt(self.srr * self.sxx)
        return (abs(self.srx) / den if den > 0 else 0.0), nrmse

    def fit(self) -> tuple[float, float]:
        """Least-squares a, b minimising |a * p + b - t|^2."""
        if self.srr <= 0:
            return 0.0, self.mean_t
        a = self.srx / self.srr
        return a, self.mean_t - a * self.mean_p


def _moments(p: np.ndarray, t: np.ndarray) -> _Moments:
    def total(a: np.ndarray) -> float:  # accumulated in float64 (pairwise)
        return float(np.sum(a, dtype=np.float64))

    return _Moments.from_sums(p.size, total(p), total(t), total(p * p), total(t * t),
                              total(p * t))


def _affine_fit(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b minimising |a * pred + b - target|^2."""
    return _moments(pred, target).fit()


def _gaussian_torch(img: Any, sigma: float, truncate: float = 4.0) -> Any:
    """scipy.ndimage.gaussian_filter(img, sigma, mode="reflect") for a 2-D float32 tensor:
    separable, each axis a sum of shifted slices (exact float32, no TF32, no cuDNN search)."""
    import torch

    radius = int(truncate * sigma + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w = (w / w.sum()).astype(np.float32)

    def along(t: torch.Tensor, axis: int) -> torch.Tensor:
        n = t.shape[axis]
        i = torch.arange(-radius, n + radius, device=t.device) % (2 * n)
        padded = t.index_select(axis, torch.where(i >= n, 2 * n - 1 - i, i))  # b a | a b c
        out = torch.zeros_like(t)
        for j, wj in enumerate(w.tolist()):
            out.add_(padded.narrow(axis, j, n), alpha=wj)
        return out

    return along(along(img, 0), 1)
