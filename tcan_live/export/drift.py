"""Stage-drift estimation by sub-pixel phase correlation, and shifting (numpy/scipy only).

:func:`phase_shift` finds the translation of ``moving`` relative to ``reference``: the peak of the
(partly whitened) cross-correlation of the images' periodic components, refined by an upsampled
DFT around the peak (Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 2008) to 1/``upsample`` px.
A positive (dy, dx) means the content moved down/right.

:func:`estimate_drift` builds a trajectory for a time series with a reference mode:

* ``first``: every frame against frame 0 (no accumulation of error; best for slow change);
* ``previous``: every frame against the one before, shifts accumulated (robust to large changes
  of content, errors accumulate as a random walk);
* ``running-mean``: every frame against the mean of the already registered frames before it
  (the last ``window``), which averages out noise and follows slow changes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from tcan_live.errors import ConfigError, ProcessingError

Reference = Literal["first", "previous", "running-mean"]


def periodic_component(u: np.ndarray) -> np.ndarray:
    """Moisan's periodic + smooth decomposition (J. Math. Imaging Vis. 2011): the periodic part
    has no artificial edges where the FFT wraps around, and unlike a window it does not pull
    the estimated shift towards zero."""
    u = np.asarray(u, np.float64)
    m, n = u.shape
    v = np.zeros_like(u)
    v[0, :] += u[-1, :] - u[0, :]
    v[-1, :] -= u[-1, :] - u[0, :]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] -= u[:, -1] - u[:, 0]
    q, r = np.arange(m)[:, None], np.arange(n)[None, :]
    den = 2 * np.cos(2 * np.pi * q / m) + 2 * np.cos(2 * np.pi * r / n) - 4
    den[0, 0] = 1.0
    smooth_part = np.fft.fft2(v) / den
    smooth_part[0, 0] = 0
    return u - np.real(np.fft.ifft2(smooth_part))


def _upsampled_dft(data: np.ndarray, region: int, upsample: int,
                   offset: tuple[float, float]) -> np.ndarray:
    """DFT of ``data`` on a ``region`` x ``region`` grid, ``upsample`` times finer, around
    ``offset`` (matrix-multiply DFT; only the neighbourhood of the peak is computed)."""
    ny, nx = data.shape
    ky = np.fft.ifftshift(np.arange(ny)) - ny // 2
    kx = np.fft.ifftshift(np.arange(nx)) - nx // 2
    ry = np.arange(region) - offset[0]
    rx = np.arange(region) - offset[1]
    ker_y = np.exp(-2j * np.pi / (ny * upsample) * ry[:, None] * ky[None, :])
    ker_x = np.exp(-2j * np.pi / (nx * upsample) * kx[:, None] * rx[None, :])
    return ker_y @ data @ ker_x


def phase_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = 100,
                whitening: float = 1e-2) -> np.ndarray:
    """(dy, dx) that ``moving`` is displaced by relative to ``reference`` (sub-pixel).

    The cross-power spectrum is only partly whitened (divided by its magnitude plus
    ``whitening`` x its maximum): full whitening, as in textbook phase correlation, lets the
    frequencies beyond the optical cut-off, where there is no signal, decide the sub-pixel
    position (measured: 0.38 px for a true 0.445 px shift of noise-free beads).
    """
    a = np.fft.fft2(periodic_component(reference))
    b = np.fft.fft2(periodic_component(moving))
    a[0, 0] = b[0, 0] = 0
    cross = a * np.conj(b)
    cross /= np.abs(cross) + whitening * np.abs(cross).max() + 1e-30
    corr = np.abs(np.fft.ifft2(cross))
    peak = np.array(np.unravel_index(int(np.argmax(corr)), corr.shape), float)
    mid = np.array(corr.shape) // 2
    peak[peak > mid] -= np.array(corr.shape)[peak > mid]
    if upsample > 1:
        peak = np.round(peak * upsample) / upsample
        region = int(np.ceil(upsample * 1.5))
        centre = np.fix(region / 2.0)
        offset = centre - peak * upsample
        up = np.abs(_upsampled_dft(np.conj(cross), region, upsample, (offset[0], offset[1])))
        fine = np.array(np.unravel_index(int(np.argmax(up)), up.shape), float) - centre
        peak = peak + fine / upsample
    return -peak  # displacement of `moving`


def estimate_drift(frames: np.ndarray, reference: Reference = "first", *, window: int = 5,
                   upsample: int = 100) -> np.ndarray:
    """(T, 2) displacement of each frame relative to frame 0 (frame 0 is (0, 0))."""
    frames = np.asarray(frames, np.float64)
    n = len(frames)
    out = np.zeros((n, 2))
    if reference == "first":
        for t in range(1, n):
            out[t] = phase_shift(frames[0], frames[t], upsample)
    elif reference == "previous":
        for t in range(1, n):
            out[t] = out[t - 1] + phase_shift(frames[t - 1], frames[t], upsample)
    elif reference == "running-mean":
        registered = [frames[0]]
        for t in range(1, n):
            ref = np.mean(registered[-window:], axis=0)
            out[t] = phase_shift(ref, frames[t], upsample)
            registered.append(shift_image(frames[t], -out[t]))
    else:
        raise ConfigError(f"drift reference must be first, previous or running-mean, got "
                          f"{reference!r}")
    return out


def smooth(traj: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over time (edges use what is available); frame 0 stays (0, 0)."""
    if window <= 1:
        return traj
    out = ndimage.uniform_filter1d(traj, size=window, axis=0, mode="nearest")
    return out - out[0]


def shift_image(image: np.ndarray, shift: np.ndarray, cval: float = 0.0) -> np.ndarray:
    """Move the content of a 2-D image by (dy, dx) px (cubic spline; outside -> ``cval``)."""
    return ndimage.shift(np.asarray(image, np.float32), shift, order=3, mode="constant",
                         cval=cval, prefilter=True)


def common_crop(traj: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The region that stays inside the field of view in every frame once the corrections
    (``-traj``) are applied."""
    corr = -traj
    top = int(np.ceil(max(corr[:, 0].max(), 0)))
    bottom = int(np.ceil(max(-corr[:, 0].min(), 0)))
    left = int(np.ceil(max(corr[:, 1].max(), 0)))
    right = int(np.ceil(max(-corr[:, 1].min(), 0)))
    if top + bottom >= shape[0] or left + right >= shape[1]:
        raise ProcessingError("the drift is larger than the field of view: no region is seen in "
                              "every frame (export without drift correction, or pad with NaN)")
    return slice(top, shape[0] - bottom), slice(left, shape[1] - right)
