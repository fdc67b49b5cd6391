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


def _histogram_percentiles(image: np.ndarray, qs: list[float]) -> list[float]:
    """``np.percentile(image, qs)`` (linear interpolation) of an 8/16-bit image from its
    histogram: the same order statistics, exactly, in one counting pass instead of a
    partition of a float copy (a 2048x2048 camera frame: about 10x faster)."""
    counts = np.bincount(image.ravel(), minlength=1)
    cum = np.cumsum(counts)
    n = int(cum[-1])
    out = []
    for q in qs:
        rank = q / 100.0 * (n - 1)
        below = int(np.floor(rank))
        lo_v, hi_v = np.searchsorted(cum, [below + 1, min(below + 2, n)])
        out.append(float(lo_v) + (rank - below) * float(hi_v - lo_v))
    return out


def percentile_affine(image: np.ndarray, low: float = 1.0, high: float = 99.9) -> Affine:
    """Affine from the low/high percentiles of the finite pixels; flat images get scale 1."""
    image = np.asarray(image)
    if image.dtype in (np.uint8, np.uint16) and image.size:  # camera frames: all finite
        lo, hi = _histogram_percentiles(image, [low, high])
        top = float(image.max()) if not hi > lo else hi
    else:
        finite = image[np.isfinite(image)]
        if finite.size == 0:
            return Affine(0.0, 1.0)
        lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
        top = float(finite.max()) if not hi > lo else hi
    if not hi > lo:
        hi = top
        if not hi > lo:
            hi = lo + 1.0
    return Affine(lo, hi)


def normalize(image: np.ndarray, affine: Affine) -> np.ndarray:
    """Normalised float32 copy; NaN/Inf pixels become 0 (the low percentile)."""
    out = np.subtract(image, np.float32(affine.lo), dtype=np.float32)
    out /= np.float32(affine.scale)
    if out.dtype.kind == "f" and np.asarray(image).dtype.kind == "f":  # integers are finite
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def denormalize(image: np.ndarray, affine: Affine) -> np.ndarray:
    return np.asarray(image, np.float32) * np.float32(affine.scale) + np.float32(affine.lo)
