"""Give back what the network erased: measured periodic detail the output lacks.

The network can *remove* structure that the confocal frame plainly shows. Measured on the
broad simulator (docs/evaluation/honesty.md): a field of puncta on a 250-300 nm lattice,
visible in the input (SSIM 0.36-0.83 against the truth), comes out as a flat grey field
(SSIM 0.02-0.03) - the network treats a regular pattern near the confocal limit as noise. A
flat output there is as wrong a picture as an invented mesh, and the uncertainty map does
not see it.

The rule (one place: :func:`restore_measured`), on the model's grid, normalised units:

- a spatial frequency counts as *measured* when its power in the input stands ``k`` times
  above the median power of its ring of equal ``|f|`` (noise and the broad spectrum of
  ordinary structure sit at the median; a regular pattern concentrates its power in a few
  peaks, 30-1000x the median in the tests' lattices; for white noise the chance of a bin
  above 30 x median is 2**-30 in theory and was 4e-6 measured on 160 px frames, whose small
  rings give noisy medians: about 0.02 false bins a frame, each one noise coefficient),
- inside the band the confocal PSF transmits (period longer than ``band`` x its FWHM; outside
  the lowest ``min_ring`` rings, whose few bins make no median) and that the frame itself
  sampled: below ``band`` x the Nyquist frequency of its own pixels (a frame resampled up to
  the model's grid holds nothing real above it, only the interpolation's echoes of what lies
  below, which a first version took for patterns on every real widefield ND2 it read),
- and *erased* when the output keeps less than ``ratio`` of the input's amplitude there (a
  faithful STED-like output keeps at least the confocal amplitude at every frequency: the
  STED transfer function lies above the confocal one).

At those frequencies the output's Fourier coefficient is replaced by the input's: the
restored pattern has the confocal amplitude and phase, never more (no amplification, so no
detail is added that the frame does not show). Every other frequency is left exactly as the
network made it, so on frames without such a pattern the output is unchanged bit for bit
(how often it acts, on every simulator family: ``python -m benchmarks.restore``; on the
honesty benchmark's images and the real pairs: ``python -m benchmarks.honesty``). Both
images are first split into their periodic part and a smooth remainder (Moisan's
periodic-plus-smooth decomposition) so that the frame's borders do not put a cross of
spurious peaks into the spectrum.

Cost: two FFTs of the frame and a sort of the in-band bins, on the device the network ran on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

PEAK_OVER_MEDIAN = 30.0  # k: "measured" = power above k x the ring's median
KEPT_RATIO = 0.5  # "erased" = output amplitude below this fraction of the input's
BAND = 0.9  # frequencies with period > BAND x confocal FWHM
MIN_RING = 3  # rings below this (in 1/size units) are never touched


@dataclass(frozen=True)
class Restored:
    image: Any  # torch tensor, same shape, dtype and device as the output given
    bins: int  # how many Fourier coefficients were replaced (0 = output unchanged)


@dataclass(frozen=True)
class _Grid:
    """What depends only on the frame's shape, device and band: made once per stream (cached),
    not per frame."""
    inband: Any  # bool mask of the frequencies examined
    ring: Any  # int64 ring index (|f| x size) of those frequencies, 1-D
    den: Any  # the periodic-plus-smooth decomposition's denominator (float32)


@lru_cache(maxsize=4)
def _grid(h: int, w: int, device: str, f_max: float, min_ring: int) -> _Grid:
    import torch

    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.fftfreq(w, device=device)[None, :]
    f = torch.sqrt(fy * fy + fx * fx)  # cycles per pixel
    ring = torch.round(f * max(h, w)).to(torch.int64)
    inband = (f < f_max) & (ring >= min_ring)
    q = torch.arange(h, device=device, dtype=torch.float32)[:, None]
    r = torch.arange(w, device=device, dtype=torch.float32)[None, :]
    den = 2 * torch.cos(2 * math.pi * q / h) + 2 * torch.cos(2 * math.pi * r / w) - 4
    den[0, 0] = 1.0
    return _Grid(inband, ring[inband], den)


def _periodic_part(u: Any, den: Any) -> Any:
    """u minus its smooth component (Moisan 2011): the part whose FFT has no border cross."""
    import torch

    v = torch.zeros_like(u)
    d = u[-1, :] - u[0, :]
    v[0, :] += d
    v[-1, :] -= d
    d = u[:, -1] - u[:, 0]
    v[:, 0] += d
    v[:, -1] -= d
    s = torch.fft.fft2(v) / den
    s[0, 0] = 0
    return u - torch.fft.ifft2(s).real


def _ring_medians(power: Any, ring: Any) -> Any:
    """Median of ``power`` per integer ``ring`` (1-D tensors of equal length); returns a
    tensor indexed by ring (inf for rings without bins)."""
    import torch

    n_rings = int(ring.max().item()) + 1
    order = torch.argsort(power)
    by_ring = torch.argsort(ring[order], stable=True)  # grouped by ring, ascending power
    sorted_power = power[order][by_ring]
    counts = torch.bincount(ring, minlength=n_rings)
    starts = torch.cumsum(counts, 0) - counts
    med = torch.full((n_rings,), math.inf, dtype=power.dtype, device=power.device)
    has = counts > 0
    med[has] = sorted_power[(starts + (counts - 1) // 2)[has]]
    return med


def restore_measured(x: Any, y: Any, pixel_size_um: float, confocal_fwhm_nm: float, *,
                     source_pixel_size_um: float | None = None,
                     k: float = PEAK_OVER_MEDIAN, ratio: float = KEPT_RATIO,
                     band: float = BAND, min_ring: int = MIN_RING) -> Restored:
    """``x``: the normalised input on the model's grid (``pixel_size_um``), ``y``: the
    network's output for it (2-D torch tensors, one device); ``source_pixel_size_um``: the
    frame's own pixel size before it was resampled to that grid (None: it was not). Returns
    the output with the measured-but-erased frequencies put back (module docstring) and how
    many were."""
    import torch

    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"input {tuple(x.shape)} and output {tuple(y.shape)} must be equal 2-D")
    h, w = x.shape
    if min(h, w) < 2 * min_ring + 2:
        return Restored(y, 0)
    xf = x.to(torch.float32)
    yf = y.to(torch.float32)
    f_max = pixel_size_um * 1000.0 / (band * confocal_fwhm_nm)  # cycles per pixel
    if source_pixel_size_um is not None and source_pixel_size_um > pixel_size_um:
        f_max = min(f_max, band * 0.5 * pixel_size_um / source_pixel_size_um)
    g = _grid(h, w, str(x.device), f_max, min_ring)
    inband = g.inband
    if g.ring.numel() == 0:
        return Restored(y, 0)
    X = torch.fft.fft2(_periodic_part(xf, g.den))
    power = X.real ** 2 + X.imag ** 2
    med = _ring_medians(power[inband], g.ring)
    measured = torch.zeros_like(inband)
    measured[inband] = power[inband] > k * med[g.ring]
    if not bool(measured.any()):
        return Restored(y, 0)
    Y = torch.fft.fft2(_periodic_part(yf, g.den))
    erased = measured & (Y.abs() < ratio * X.abs())
    n = int(erased.sum().item())
    if n == 0:
        return Restored(y, 0)
    fix = torch.fft.ifft2(torch.where(erased, X - Y, torch.zeros_like(X))).real
    return Restored((yf + fix).to(y.dtype), n)
