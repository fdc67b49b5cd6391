"""Pixel-size matching: resample an image between pixel grids (numpy/scipy, no torch).

The model was trained on one pixel size (50 nm in the paper); TCAN's output is only trustworthy
for inputs on (about) that grid, so the Enhancer resamples every frame to it and back.
Grid-aligned (pixel-area) coordinates are used, the sizes are rounded, and downsampling is
anti-aliased with a Gaussian prefilter.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tcan_live.errors import UnsupportedInputError

MAX_UPSAMPLE = 8.0
MAX_DOWNSAMPLE = 4.0
MAX_SIDE = 16384


def resampled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return (max(int(round(shape[0] * factor)), 1), max(int(round(shape[1] * factor)), 1))


def check_factor(factor: float, pixel_size_um: float, target_um: float, source: str) -> None:
    """Refuse pixel sizes that would need absurd resampling (usually wrong metadata)."""
    if not (1.0 / MAX_DOWNSAMPLE <= factor <= MAX_UPSAMPLE):
        lo, hi = target_um / MAX_UPSAMPLE, target_um * MAX_DOWNSAMPLE
        raise UnsupportedInputError(
            source or "<frame>",
            f"pixel size {pixel_size_um:g} um is outside what the model can use "
            f"({lo:g}-{hi:g} um for a {target_um:g} um model); the recorded value may be a "
            "placeholder: pass the real one with --pixel-size-um",
        )


def resample_to_shape(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a 2-D image onto ``shape`` covering the same field of view (cubic spline)."""
    image = np.asarray(image, np.float32)
    if tuple(image.shape) == tuple(shape):
        return image
    zoom = (shape[0] / image.shape[0], shape[1] / image.shape[1])
    if min(zoom) < 1.0:
        sigma = [max((1.0 / z - 1.0) / 2.0, 0.0) for z in zoom]
        image = ndimage.gaussian_filter(image, sigma, mode="mirror")
    order = 3 if min(image.shape) >= 4 else 1
    out = ndimage.zoom(image, zoom, order=order, mode="grid-mirror", grid_mode=True,
                       output=np.float32)
    if tuple(out.shape) != tuple(shape):  # zoom rounds; make the shape exact
        out = out[: shape[0], : shape[1]]
        out = np.pad(out, ((0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1])), "edge")
    return out


def same_grid(from_um: float, to_um: float) -> bool:
    """True when the two pixel sizes are the same grid (no resampling)."""
    return abs(from_um / to_um - 1.0) < 1e-6


def resample(image: np.ndarray, from_um: float, to_um: float) -> np.ndarray:
    """Resample from a ``from_um`` pixel grid to a ``to_um`` grid (same field of view)."""
    if same_grid(from_um, to_um):
        return np.asarray(image, np.float32)
    return resample_to_shape(image, resampled_shape(image.shape, from_um / to_um))
