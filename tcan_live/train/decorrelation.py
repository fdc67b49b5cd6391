"""Image resolution by decorrelation analysis (Descloux, Grussmayer & Radenovic, Nat. Methods
16, 918-924, 2019), numpy only.

The image's Fourier transform I(k) is compared with its phase-only (normalised) version
In(k) = I(k)/|I(k)| inside a disc of radius r (normalised frequency, 1 = Nyquist):

    d(r) = sum_{|k|<r} Re{I(k) In*(k)} / sqrt(sum_{all k} |I(k)|^2 * sum_{|k|<r} |In(k)|^2)

d(r) peaks where signal gives way to noise. Repeating with Gaussian high-pass filtered I(k)
(``1 - exp(-2 g^2 |k|^2)``, g from coarse to fine) moves the peak outwards; the cut-off kc is the
highest peak position found, and the resolution is 2 * pixel size / kc.
"""

from __future__ import annotations

import math

import numpy as np


def _apodize(img: np.ndarray, border: int = 20) -> np.ndarray:
    """Subtract the mean and taper the edges (cosine), as the reference implementation."""
    img = img.astype(np.float64) - img.mean()
    h, w = img.shape
    wy, wx = np.ones(h), np.ones(w)
    for win, n in ((wy, h), (wx, w)):
        b = min(border, n // 4)
        if b > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(b) + 0.5) / b)
            win[:b], win[n - b :] = ramp, ramp[::-1]
    return img * wy[:, None] * wx[None, :]


def _peak(d: np.ndarray, radii: np.ndarray) -> tuple[float, float]:
    """Position and height of the last genuine maximum of d(r) (drop >= 5e-4 after it)."""
    t = d.copy()
    while len(t) > 1:
        i = int(np.argmax(t))
        if t[i] - d[i:].min() >= 5e-4:
            return float(radii[i]), float(t[i])
        t = t[:-1]
    return 0.0, 0.0


def _curve(ik: np.ndarray, ink: np.ndarray, rk: np.ndarray, radii: np.ndarray) -> np.ndarray:
    order = np.argsort(rk, axis=None)
    r_sorted = rk.ravel()[order]
    num = np.cumsum(np.real(ik * np.conj(ink)).ravel()[order])
    cnt = np.cumsum((np.abs(ink) ** 2).ravel()[order])
    total = float((np.abs(ik) ** 2).sum())
    idx = np.searchsorted(r_sorted, radii, side="right") - 1
    out = np.zeros(len(radii))
    ok = idx >= 0
    out[ok] = num[idx[ok]] / np.sqrt(total * np.maximum(cnt[idx[ok]], 1e-12))
    return out


def decorrelation_cutoff(image: np.ndarray, n_radii: int = 100, n_filters: int = 10) -> float:
    """Normalised cut-off frequency kc in [0, 1] (1 = Nyquist); 0 when no peak is found."""
    img = _apodize(image)
    h, w = img.shape
    ik = np.fft.fftshift(np.fft.fft2(img))
    ky = np.fft.fftshift(np.fft.fftfreq(h)) * 2
    kx = np.fft.fftshift(np.fft.fftfreq(w)) * 2
    rk = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    inside = rk <= 1.0
    ik = np.where(inside, ik, 0)
    ink = np.where(inside, ik / np.maximum(np.abs(ik), 1e-12), 0)
    radii = np.linspace(0, 1, n_radii + 1)[1:]
    r0, _ = _peak(_curve(ik, ink, rk, radii), radii)
    g_max = 2.0 / r0 if r0 > 0 else max(h, w) / 2.0
    peaks = [r0]
    for g in [max(h, w) / 4.0, *np.exp(np.linspace(math.log(g_max), math.log(0.15), n_filters))]:
        filtered = ik * (1 - np.exp(-2 * g * g * rk**2))
        r, a = _peak(_curve(filtered, ink, rk, radii), radii)
        if a > 0.05:
            peaks.append(r)
    return float(max(peaks))


def decorrelation_resolution_nm(image: np.ndarray, pixel_size_um: float) -> float:
    """Resolution in nm (2 * pixel / kc); infinite when no cut-off is found."""
    kc = decorrelation_cutoff(image)
    return 2 * pixel_size_um * 1000 / kc if kc > 0 else float("inf")
