"""Periodic test fields: puncta on a 2-D lattice seen through a Gaussian confocal PSF with
Poisson noise (tests of sr/restore.py and of the shipped model)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PX_UM = 0.05
CONF_NM = 230.0


def sigma_px(fwhm_nm: float) -> float:
    return fwhm_nm / 2.3548 / (PX_UM * 1000)


def lattice(n: int, period_nm: float, angle: float, hexa: bool, rng: np.random.Generator
             ) -> np.ndarray:
    """Puncta on a 2-D lattice (50 nm pixels), slightly jittered."""
    g = np.zeros((n, n))
    p = period_nm / (PX_UM * 1000)
    m = int(1.5 * n / p)
    i, j = np.mgrid[-m:m, -m:m].reshape(2, -1).astype(float)
    u = np.array([np.cos(angle), np.sin(angle)]) * p
    b = angle + (np.pi / 3 if hexa else np.pi / 2)
    v = np.array([np.cos(b), np.sin(b)]) * p
    pts = n / 2 + i[:, None] * u + j[:, None] * v + rng.normal(0, 0.05 * p, (i.size, 2))
    pts = pts[(pts >= 0).all(1) & (pts < n - 1).all(1)]
    np.add.at(g, (np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)), 1.0)
    return g


def confocal(truth: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    blurred = ndimage.gaussian_filter(truth, sigma_px(CONF_NM), mode="wrap")
    return rng.poisson(blurred / blurred.max() * photons + 2.0).astype(np.float32)


def norm(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99.9])
    return ((a - lo) / (hi - lo)).astype(np.float32)
