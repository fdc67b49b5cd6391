"""Percentile normalisation (numpy in, numpy out, reversible)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Affine:
    """x_norm = (x - lo) / (hi - lo); reversible with :func:`denormalize`."""

    lo: float
    hi: float

    @property
    def scale(self) -> float:
        return self.hi - self.lo


def percentile_affine(image: np.ndarray, low: float = 1.0, high: float = 99.9) -> Affine:
    """Affine from the low/high percentiles of the finite pixels; flat images get scale 1."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return Affine(0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if not hi > lo:
        hi = float(finite.max())
        if not hi > lo:
            hi = lo + 1.0
    return Affine(lo, hi)


def normalize(image: np.ndarray, affine: Affine) -> np.ndarray:
    """Normalised float32 copy; NaN/Inf pixels become 0 (the low percentile)."""
    out = (np.asarray(image, np.float32) - np.float32(affine.lo)) / np.float32(affine.scale)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def denormalize(image: np.ndarray, affine: Affine) -> np.ndarray:
    return np.asarray(image, np.float32) * np.float32(affine.scale) + np.float32(affine.lo)
