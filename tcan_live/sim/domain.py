"""The broad ("domain-randomised") simulator: many structure families, point-scanning PSFs,
point-detector noise, pixel sizes 30-100 nm (numpy + scipy only).

Why: a network trained on a catalogue of four shapes paints those shapes wherever the data are
ambiguous. Here every image mixes several structure families (and empty space) drawn over wide
ranges, so what the network can learn is the physics: undo the confocal blur, respect the noise.

Image formation, in this order (all rules live here):

1. **Sample.** An emitter density on a fine grid of ``FINE_NM`` (10 nm): 1-4 families from
   :data:`FAMILIES`, each in a smooth random region of the field, plus empty regions. A second,
   independent layer is the out-of-focus part of a 3-D sample.
2. **Optics.** Confocal: excitation Airy x (emission Airy convolved with the pinhole), with
   random excitation wavelength, NA and pinhole (0.5-1.5 AU), see :func:`confocal_psf`. Target:
   a STED PSF, the confocal PSF times the depletion factor of a vortex donut plus a residual
   confocal pedestal (long tails where the donut vanishes), see :func:`sted_psf`. Both PSFs are
   normalised to unit sum, so every image holds the same photons (flux conserved). The
   out-of-focus layer is blurred by a wide defocus kernel, the same in both.
3. **Sampling.** Integrated over the acquisition pixel (30-100 nm, a multiple of 10 nm); the
   confocal image is then resampled to the model grid (50 nm) with the enhancer's own resampler
   (:func:`tcan_live.resample.resample_to_shape`), so training sees the interpolation the
   live path makes. The target is integrated over the model grid directly, over the same
   field (a whole number of acquisition and of model pixels, cropped to the requested size
   afterwards), so the pair is registered to well under 0.1 px everywhere.
4. **Detector.** :class:`Detector`: Poisson photons, multiplicative excess noise of a PMT /
   GaAsP / HyD (each photon's pulse height is Gamma distributed with mean 1 and variance
   ``excess - 1``, so the output variance is ``gain**2 * excess * mean``), gain, offset, dark
   and electronic noise, rounding to integers and saturation at ``2**bits - 1``. ``photons`` is
   the expected number of photons in the brightest pixel of the noise-free confocal image.
   The target is the noise-free STED image in the same detector units (no saturation).

Structure families that training never sees (:data:`HELDOUT_FAMILIES`) exist for evaluation
of generality.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy import fft, ndimage, special

from tcan_live.sim.simulate import Optics, sigma_px, worm_like_chain

FINE_NM = 10.0
MODEL_PX_NM = 50.0
Family = Literal["filaments", "cytoplasm", "membranes", "mitochondria", "vesicles", "lattice",
                 "nucleus", "texture", "beads", "rings", "actin", "asters", "honeycomb"]
FAMILIES: tuple[Family, ...] = ("filaments", "cytoplasm", "membranes", "mitochondria",
                                "vesicles", "lattice", "nucleus", "texture", "beads", "rings",
                                "actin")
HELDOUT_FAMILIES: tuple[Family, ...] = ("asters", "honeycomb")
DetectorKind = Literal["pmt", "gaasp", "hyd"]


# ---------------------------------------------------------------------------------------------
# optics: point-scanning PSFs on the fine grid


@dataclass(frozen=True)
class ConfocalOptics:
    wavelength_nm: float = 561.0  # excitation
    stokes_nm: float = 30.0  # emission - excitation
    na: float = 1.4
    pinhole_au: float = 1.0


@dataclass(frozen=True)
class StedOptics:
    """The target microscope: the confocal of :data:`TARGET_CONFOCAL` with depletion."""

    fwhm_nm: float = 80.0  # main-lobe FWHM the depletion strength is set for
    depletion_wavelength_nm: float = 775.0
    pedestal: float = 0.02  # fraction of the confocal PSF not depleted (re-excitation etc.)


TARGET_CONFOCAL = ConfocalOptics(wavelength_nm=561.0, stokes_nm=30.0, na=1.4, pinhole_au=1.0)


def _radius_grid(half: int, step_nm: float) -> np.ndarray:
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    return np.hypot(y, x) * step_nm


def airy(r_nm: np.ndarray, wavelength_nm: float, na: float) -> np.ndarray:
    """Intensity of an Airy pattern, 1 at the centre."""
    v = 2.0 * math.pi * na * r_nm / wavelength_nm
    out = np.ones_like(v)
    nz = v > 1e-9
    out[nz] = (2.0 * special.j1(v[nz]) / v[nz]) ** 2
    return out


def _fftconvolve_same(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'same'-size linear convolution (zero padded) via real FFTs."""
    sh = (a.shape[0] + k.shape[0] - 1, a.shape[1] + k.shape[1] - 1)
    fsh = (fft.next_fast_len(sh[0], real=True), fft.next_fast_len(sh[1], real=True))
    out = fft.irfft2(fft.rfft2(a, fsh) * fft.rfft2(k, fsh), fsh)
    oy, ox = (k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2
    return np.asarray(out[oy:oy + a.shape[0], ox:ox + a.shape[1]])


def confocal_psf(o: ConfocalOptics, step_nm: float = FINE_NM, half_nm: float = 1200.0
                 ) -> np.ndarray:
    """Excitation Airy x (emission Airy ⊗ pinhole disk), unit sum, on a ``step_nm`` grid."""
    half = int(math.ceil(half_nm / step_nm))
    r = _radius_grid(half, step_nm)
    exc = airy(r, o.wavelength_nm, o.na)
    em = airy(r, o.wavelength_nm + o.stokes_nm, o.na)
    au_nm = 1.22 * (o.wavelength_nm + o.stokes_nm) / o.na  # 1 Airy unit (diameter)
    disk = (r <= o.pinhole_au * au_nm / 2.0).astype(np.float64)
    det = _fftconvolve_same(em, disk / disk.sum()) if disk.sum() > 1 else em
    psf = exc * np.clip(det, 0.0, None)
    return psf / psf.sum()


def _donut(r_nm: np.ndarray, wavelength_nm: float, na: float) -> np.ndarray:
    """Vortex-beam donut, 1 at its crest: (r/r_m)^2 exp(1 - (r/r_m)^2)."""
    r_m = 0.37 * wavelength_nm / na
    q = (r_nm / r_m) ** 2
    return np.asarray(q * np.exp(1.0 - q))


def _sted_from(conf: np.ndarray, r: np.ndarray, s: StedOptics, na: float, zeta: float
               ) -> np.ndarray:
    keep = s.pedestal + (1.0 - s.pedestal) * np.exp(-math.log(2.0) * zeta *
                                                    _donut(r, s.depletion_wavelength_nm, na))
    psf = conf * keep
    return np.asarray(psf / psf.sum())


def fwhm_nm(psf: np.ndarray, step_nm: float) -> float:
    """FWHM of a centred radial PSF along its central row (linear interpolation)."""
    row = psf[psf.shape[0] // 2]
    c = len(row) // 2
    half = row[c] / 2.0
    right = row[c:]
    i = int(np.argmax(right < half))
    if i == 0:
        return float("nan")
    x = (i - 1) + (right[i - 1] - half) / (right[i - 1] - right[i])
    return float(2.0 * x * step_nm)


def sted_psf(s: StedOptics = StedOptics(), c: ConfocalOptics = TARGET_CONFOCAL,
             step_nm: float = FINE_NM, half_nm: float = 1200.0) -> np.ndarray:
    """The confocal PSF x (pedestal + (1 - pedestal) exp(-ln2 zeta donut)), unit sum, with the
    saturation factor zeta chosen (bisection) so that the main lobe has ``s.fwhm_nm``."""
    conf = confocal_psf(c, step_nm, half_nm)
    r = _radius_grid(conf.shape[0] // 2, step_nm)
    lo, hi = math.log(1e-3), math.log(1e5)  # bisection on log(zeta): FWHM falls with zeta
    for _ in range(50):
        mid = (lo + hi) / 2.0
        if fwhm_nm(_sted_from(conf, r, s, c.na, math.exp(mid)), step_nm) > s.fwhm_nm:
            lo = mid
        else:
            hi = mid
    hi = math.exp(hi)
    return _sted_from(conf, r, s, c.na, hi)


# ---------------------------------------------------------------------------------------------
# detector


@dataclass(frozen=True)
class Detector:
    """A point detector. ``excess`` is the excess noise factor F^2 (1 = ideal photon
    counting); ``gain`` counts per photon; ``dark`` photons per pixel (background and dark
    counts, Poisson like the signal); ``read_noise`` electronic noise in counts; ``bits`` the
    ADC depth (saturation at 2**bits - 1)."""

    kind: DetectorKind = "gaasp"
    photons: float = 50.0  # expected photons in the brightest confocal pixel
    background: float = 0.5
    gain: float = 4.0
    offset: float = 10.0
    excess: float = 1.3
    read_noise: float = 1.0
    bits: int = 12

    @property
    def max_count(self) -> float:
        return float(2 ** self.bits - 1)


def detect(rng: np.random.Generator, photons: np.ndarray, d: Detector) -> np.ndarray:
    """Noisy detector counts for an image of expected photons per pixel (before background)."""
    lam = np.clip(photons + d.background, 0.0, None)
    n = rng.poisson(lam).astype(np.float64)
    if d.excess > 1.0 + 1e-9:
        k = 1.0 / (d.excess - 1.0)  # sum of n Gamma(k, 1/k) pulses = Gamma(n k, 1/k)
        pos = n > 0
        pulses = np.zeros_like(n)
        pulses[pos] = rng.gamma(n[pos] * k, 1.0 / k)
    else:
        pulses = n
    counts = d.offset + d.gain * pulses + rng.normal(0.0, d.read_noise, n.shape)
    return np.clip(np.round(counts), 0.0, d.max_count).astype(np.float32)


def expected_counts(photons: np.ndarray, d: Detector) -> np.ndarray:
    """The noise-free detector output (unsaturated): offset + gain * (photons + background)."""
    return (d.offset + d.gain * (photons + d.background)).astype(np.float32)


def random_detector(rng: np.random.Generator, photons: float | None = None) -> Detector:
    kind: DetectorKind = str(rng.choice(["pmt", "gaasp", "hyd"]))  # type: ignore[assignment]
    ph = photons if photons is not None else _log_uniform(rng, 2.0, 500.0)
    if kind == "hyd":  # photon counting: no excess, no offset, no read noise
        return Detector(kind, ph, _log_uniform(rng, 0.05, 3.0), 1.0, 0.0, 1.0, 0.0, 12)
    excess = rng.uniform(1.5, 2.2) if kind == "pmt" else rng.uniform(1.1, 1.5)
    bits = int(rng.choice([8, 12], p=[0.2, 0.8]))
    top = float(2 ** bits - 1)
    offset = float(rng.choice([0.0, 0.02, 0.05])) * top
    # the user sets the gain (HV) so the brightest structure fills 15-110% of the ADC range:
    # a few images saturate, as some real ones do
    gain = rng.uniform(0.15, 1.1) * (top - offset) / max(ph, 1.0)
    return Detector(kind, ph, _log_uniform(rng, 0.05, 5.0), float(gain), offset, float(excess),
                    _log_uniform(rng, 0.1, 0.02 * top), bits)


# ---------------------------------------------------------------------------------------------
# sample: families of structures as emitter densities on the fine grid (pixel units)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _splat(grid: np.ndarray, pts: np.ndarray, wts: np.ndarray | float) -> None:
    """Add points (fine-grid coordinates) to ``grid`` bilinearly, in place."""
    if len(pts) == 0:
        return
    w = np.broadcast_to(np.asarray(wts, np.float64), (len(pts),))
    y0, x0 = np.floor(pts[:, 0]), np.floor(pts[:, 1])
    fy, fx = pts[:, 0] - y0, pts[:, 1] - x0
    h, wd = grid.shape
    for dy, dx, f in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0.astype(np.int64) + dy, x0.astype(np.int64) + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        np.add.at(grid, (yy[ok], xx[ok]), (w * f)[ok])


def _line(pts: np.ndarray, step: float = 1.0) -> np.ndarray:
    """Resample a polyline to points every ``step`` fine pixels."""
    seg = np.diff(pts, axis=0)
    lens = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lens)])
    if cum[-1] <= 0:
        return pts[:1]
    s = np.arange(0.0, cum[-1], step)
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` (fine px),
    made on a coarse grid and zoomed (cheap for long correlation lengths)."""
    f = max(int(sigma / 4), 1)
    small = (max(shape[0] // f, 4), max(shape[1] // f, 4))
    g = ndimage.gaussian_filter(rng.normal(size=small), sigma / f, mode="wrap")
    g = ndimage.zoom(g, (shape[0] / small[0], shape[1] / small[1]), order=1)[:shape[0], :shape[1]]
    g = np.pad(g, ((0, shape[0] - g.shape[0]), (0, shape[1] - g.shape[1])), "edge")
    return np.asarray((g - g.mean()) / (g.std() + 1e-12))


def _region(rng: np.random.Generator, shape: tuple[int, int], fine_nm: float,
            cover: float) -> np.ndarray:
    """A smooth random region covering about ``cover`` of the field (soft 0..1 mask)."""
    f = _smooth_field(rng, shape, _log_uniform(rng, 1500.0, 5000.0) / fine_nm)
    thr = np.quantile(f, 1.0 - cover)
    return np.asarray(np.clip((f - thr) * 4.0 + 0.5, 0.0, 1.0))


def _n(rng: np.random.Generator, density_per_um2: float, area_um2: float, lo: int = 1) -> int:
    return max(int(rng.poisson(density_per_um2 * area_um2)), lo)


def _wlc(rng: np.random.Generator, shape: tuple[int, int], length: float, persistence: float,
         start: np.ndarray | None = None, angle: float | None = None) -> np.ndarray:
    h, w = shape
    s = start if start is not None else rng.uniform((-0.1 * h, -0.1 * w), (1.1 * h, 1.1 * w))
    return worm_like_chain(rng, s, length, persistence, step_px=1.0, angle=angle)


def fam_filaments(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    area = g.size * (nm / 1000) ** 2
    pers = _log_uniform(rng, 300.0, 30000.0) / nm
    for _ in range(_n(rng, _log_uniform(rng, 0.02, 0.8), area)):
        chain = _wlc(rng, g.shape, rng.uniform(0.2, 1.5) * max(g.shape), pers)
        lab = np.exp(0.3 * _smooth1d(rng, len(chain), 30))  # uneven labelling along it
        _splat(g, chain, rng.uniform(0.5, 1.5) * lab)


def _smooth1d(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    v = ndimage.gaussian_filter1d(rng.normal(size=n), corr, mode="wrap")
    return np.asarray(v / (v.std() + 1e-12))


def fam_actin(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    area = g.size * (nm / 1000) ** 2
    for _ in range(_n(rng, _log_uniform(rng, 0.3, 5.0), area)):
        start = rng.uniform((0, 0), g.shape)
        ang = rng.uniform(0, 2 * np.pi)
        seg = _wlc(rng, g.shape, rng.uniform(300, 3000) / nm, 15000 / nm, start, ang)
        _splat(g, seg, rng.uniform(0.3, 1.0))
        if rng.random() < 0.5:
            at = seg[rng.integers(len(seg))]
            br = _wlc(rng, g.shape, rng.uniform(200, 1500) / nm, 15000 / nm, at,
                      ang + rng.choice([-1.0, 1.0]) * math.radians(70))
            _splat(g, br, rng.uniform(0.3, 1.0))


def fam_beads(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    area = g.size * (nm / 1000) ** 2
    n = _n(rng, _log_uniform(rng, 0.1, 6.0), area)
    pts = rng.uniform((0, 0), g.shape, size=(n, 2))
    pairs = n // 4
    if pairs:
        sep = rng.uniform(60, 250, pairs) / nm
        a = rng.uniform(0, 2 * np.pi, pairs)
        pts = np.concatenate([pts, pts[:pairs] + np.stack([sep * np.sin(a), sep * np.cos(a)], 1)])
    _splat(g, pts, 4.0 * rng.lognormal(0.0, 0.4, len(pts)))


def fam_rings(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    area = g.size * (nm / 1000) ** 2
    n = _n(rng, _log_uniform(rng, 0.1, 3.0), area)
    c = rng.uniform((0, 0), g.shape, size=(n, 2))
    rad = rng.uniform(40, 150, n) / nm
    k = rng.integers(6, 10)
    a = rng.uniform(0, 2 * np.pi, n)[:, None] + np.arange(k)[None] * (2 * np.pi / k)
    pts = c[:, None] + rad[:, None, None] * np.stack([np.sin(a), np.cos(a)], -1)
    keep = rng.random(pts.shape[:2]) < 0.85
    _splat(g, pts[keep], 2.0 * rng.uniform(0.5, 1.0, int(keep.sum())))


def _circle(c: np.ndarray, r: float, rng: np.random.Generator, wobble: float = 0.0,
            modes: int = 0) -> np.ndarray:
    n = max(int(2 * np.pi * r), 8)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rr = np.full(n, r)
    for m in range(2, 2 + modes):
        rr = rr + wobble * r / m * rng.normal() * np.cos(m * t + rng.uniform(0, 2 * np.pi))
    return np.asarray(c[None] + np.stack([rr * np.sin(t), rr * np.cos(t)], 1))


def fam_vesicles(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    area = g.size * (nm / 1000) ** 2
    for _ in range(_n(rng, _log_uniform(rng, 0.1, 3.0), area)):
        c = rng.uniform((0, 0), g.shape)
        r = _log_uniform(rng, 40.0, 400.0) / nm
        if rng.random() < 0.7:  # hollow (membrane label)
            _splat(g, _circle(c, r, rng, 0.05, 3), rng.uniform(0.5, 1.5))
        else:  # filled (lumen label)
            yy, xx = np.ogrid[:g.shape[0], :g.shape[1]]
            g += rng.uniform(0.02, 0.1) * (((yy - c[0]) ** 2 + (xx - c[1]) ** 2) <= r * r)


def fam_membranes(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    for _ in range(int(rng.integers(1, 4))):
        c = rng.uniform((0, 0), g.shape)
        r = _log_uniform(rng, 1500.0, 6000.0) / nm
        pts = _circle(c, r, rng, 0.15, 6)
        _splat(g, _line(np.concatenate([pts, pts[:1]])), rng.uniform(0.8, 2.0))
        if rng.random() < 0.5:  # a second, parallel membrane (envelope, ER sheet edge)
            inner = c[None] + (pts - c[None]) * (1 - rng.uniform(40, 150) / nm / r)
            _splat(g, _line(np.concatenate([inner, inner[:1]])), rng.uniform(0.5, 1.5))


def fam_mitochondria(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    area = g.size * (nm / 1000) ** 2
    for _ in range(_n(rng, _log_uniform(rng, 0.05, 0.6), area)):
        axis = _wlc(rng, g.shape, rng.uniform(500, 5000) / nm, _log_uniform(rng, 1000, 8000) / nm,
                    rng.uniform((0, 0), g.shape))
        rad = rng.uniform(80, 200) / nm
        tang = np.gradient(axis, axis=0)
        normal = np.stack([-tang[:, 1], tang[:, 0]], 1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        per = max(int(2 * np.pi * rad / 2), 8)
        phi = rng.uniform(0, 2 * np.pi, (len(axis), per))
        if rng.random() < 0.6:  # outer membrane: emitters on the tube's surface, projected
            off = rad * np.cos(phi)
        else:  # matrix label: emitters filling the tube
            off = rad * np.sqrt(rng.random(phi.shape)) * np.cos(phi)
        pts = axis[:, None, :] + off[..., None] * normal[:, None, :]
        _splat(g, pts.reshape(-1, 2), rng.uniform(0.2, 0.5) / per * 8)


def fam_lattice(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    """Periodic structures: stripes along a band (spectrin rings in axons, sarcomeres) or
    patches of a 2-D lattice of puncta."""
    period = rng.uniform(150, 350) / nm
    if rng.random() < 0.6:
        axis = _wlc(rng, g.shape, rng.uniform(0.5, 1.5) * max(g.shape),
                    _log_uniform(rng, 5000, 30000) / nm)
        width = rng.uniform(300, 1200) / nm
        tang = np.gradient(axis, axis=0)
        tang /= np.linalg.norm(tang, axis=1, keepdims=True) + 1e-12
        normal = np.stack([-tang[:, 1], tang[:, 0]], 1)
        idx = np.arange(0, len(axis), period).astype(int)
        off = np.linspace(-width / 2, width / 2, max(int(width), 2))
        pts = axis[idx][:, None, :] + off[None, :, None] * normal[idx][:, None, :]
        _splat(g, pts.reshape(-1, 2), rng.uniform(0.5, 1.2))
    else:
        a = rng.uniform(0, np.pi)
        hexa = rng.random() < 0.5
        n = int(max(g.shape) * 1.5 / period)
        i, j = np.mgrid[-n:n, -n:n].reshape(2, -1).astype(np.float64)
        u = np.array([np.cos(a), np.sin(a)]) * period
        v = (np.array([np.cos(a + np.pi / 3), np.sin(a + np.pi / 3)]) if hexa else
             np.array([-np.sin(a), np.cos(a)])) * period
        pts = np.asarray(g.shape) / 2 + i[:, None] * u + j[:, None] * v
        pts = pts + rng.normal(0, 0.05 * period, pts.shape)
        _splat(g, pts, 3.0 * rng.uniform(0.5, 1.0))


def fam_cytoplasm(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    field_ = _smooth_field(rng, g.shape, _log_uniform(rng, 300.0, 1500.0) / nm)
    g += rng.uniform(0.01, 0.05) * np.log1p(np.exp(1.5 * field_))
    fam_beads(rng, g, nm)  # puncta in it


def fam_nucleus(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    c = rng.uniform(0.2, 0.8, 2) * np.asarray(g.shape)
    ry, rx = (_log_uniform(rng, 2500.0, 7000.0) / nm for _ in range(2))
    yy, xx = np.ogrid[:g.shape[0], :g.shape[1]]
    inside = ((yy - c[0]) / ry) ** 2 + ((xx - c[1]) / rx) ** 2 <= 1.0
    tex = _smooth_field(rng, g.shape, _log_uniform(rng, 60.0, 400.0) / nm)
    chrom = np.clip(1.0 + 0.8 * tex, 0.0, None) * inside
    for _ in range(int(rng.integers(0, 3))):  # nucleoli: dark holes
        n_c = c + rng.normal(0, 0.3, 2) * np.array([ry, rx])
        rn = rng.uniform(400, 1200) / nm
        chrom[((yy - n_c[0]) ** 2 + (xx - n_c[1]) ** 2) <= rn * rn] *= 0.2
    g += rng.uniform(0.02, 0.08) * chrom
    if rng.random() < 0.5:  # lamina: a bright rim
        t = np.linspace(0, 2 * np.pi, int(2 * np.pi * max(ry, rx)), endpoint=False)
        rim = c[None] + np.stack([ry * np.sin(t), rx * np.cos(t)], 1)
        _splat(g, rim, rng.uniform(0.5, 1.5))


def fam_texture(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    """Band-limited random texture: detail between 60 nm and 1 um, rectified."""
    lo = _log_uniform(rng, 30.0, 150.0) / nm
    hi = lo * rng.uniform(2.0, 8.0)
    noise = rng.normal(size=g.shape)
    band = gaussian_fft(noise, lo, pad=False) - gaussian_fft(noise, hi, pad=False)
    band /= band.std() + 1e-12
    g += rng.uniform(0.02, 0.08) * np.clip(band - rng.uniform(-0.5, 1.0), 0.0, None)


def fam_asters(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    """(held out) Straight rays from centres: microtubule asters."""
    for _ in range(int(rng.integers(1, 4))):
        c = rng.uniform((0, 0), g.shape)
        for a in rng.uniform(0, 2 * np.pi, int(rng.integers(8, 30))):
            ln = rng.uniform(1000, 6000) / nm
            s = np.arange(rng.uniform(50, 200) / nm, ln)
            _splat(g, c[None] + s[:, None] * np.array([np.sin(a), np.cos(a)])[None],
                   rng.uniform(0.5, 1.2))


def fam_honeycomb(rng: np.random.Generator, g: np.ndarray, nm: float) -> None:
    """(held out) Voronoi cell edges: epithelial junctions, a polygonal network."""
    from scipy.spatial import Voronoi

    area = g.size * (nm / 1000) ** 2
    n = _n(rng, _log_uniform(rng, 0.05, 1.0), area, lo=4)
    seeds = rng.uniform((-0.2 * g.shape[0], -0.2 * g.shape[1]),
                        (1.2 * g.shape[0], 1.2 * g.shape[1]), (n, 2))
    vor = Voronoi(seeds)
    w = rng.uniform(0.5, 1.5)
    for a, b in vor.ridge_vertices:
        if a >= 0 and b >= 0:
            _splat(g, _line(vor.vertices[[a, b]]), w)


FAMILY_FNS = {"filaments": fam_filaments, "cytoplasm": fam_cytoplasm,
              "membranes": fam_membranes, "mitochondria": fam_mitochondria,
              "vesicles": fam_vesicles, "lattice": fam_lattice, "nucleus": fam_nucleus,
              "texture": fam_texture, "beads": fam_beads, "rings": fam_rings,
              "actin": fam_actin, "asters": fam_asters, "honeycomb": fam_honeycomb}


@dataclass(frozen=True)
class Sample:
    families: tuple[Family, ...] = ("filaments",)
    regions: bool = True  # each family in its own smooth region (else all overlap)
    empty: float = 0.0  # fraction of the field left empty
    defocus_weight: float = 0.0  # out-of-focus layer, relative to the in-focus one
    defocus_fwhm_nm: float = 1000.0


def render_sample(rng: np.random.Generator, shape: tuple[int, int], sample: Sample,
                  fine_nm: float = FINE_NM) -> tuple[np.ndarray, np.ndarray]:
    """(in-focus density, out-of-focus density) on the fine grid; each family is normalised so
    that its 99.9th percentile after a 100 nm blur is about 1 (so families mix comparably)."""
    focus = np.zeros(shape, np.float64)
    for fam in sample.families:
        g = np.zeros(shape, np.float64)
        FAMILY_FNS[fam](rng, g, fine_nm)
        ref = np.quantile(ndimage.gaussian_filter(g, 40.0 / fine_nm), 0.999)
        g *= rng.uniform(0.3, 1.0) / max(float(ref), 1e-12)
        if sample.regions and len(sample.families) > 1:
            g *= _region(rng, shape, fine_nm, rng.uniform(0.3, 0.8))
        focus += g
    if sample.empty > 0:
        focus *= 1.0 - _region(rng, shape, fine_nm, sample.empty)
    out = np.zeros(shape, np.float64)
    if sample.defocus_weight > 0:
        for name in rng.choice(FAMILIES, 2, replace=False):
            FAMILY_FNS[str(name)](rng, out, fine_nm)
        ref = np.quantile(ndimage.gaussian_filter(out, 40.0 / fine_nm), 0.999)
        out *= sample.defocus_weight / max(float(ref), 1e-12)
    return focus, out


# ---------------------------------------------------------------------------------------------
# a pair


@dataclass(frozen=True)
class Acquisition:
    pixel_nm: float = 50.0  # acquisition pixel size: a multiple of FINE_NM
    confocal: ConfocalOptics = ConfocalOptics()
    sted: StedOptics = StedOptics()
    detector: Detector = Detector()


@dataclass(frozen=True)
class BroadPair:
    """A simulated pair on the model grid (50 nm): noisy confocal and noise-free STED target."""

    confocal: np.ndarray
    sted: np.ndarray
    acquisition: Acquisition
    sample: Sample
    optics: Optics = field(default_factory=lambda: Optics(pixel_size_um=MODEL_PX_NM / 1000))

    def params(self) -> dict[str, object]:
        return {"simulator": "broad", "acquisition": asdict(self.acquisition),
                "sample": asdict(self.sample)}


def _bin(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[0] // k, img.shape[1] // k
    return np.asarray(img[:h * k, :w * k].reshape(h, k, w, k).sum(axis=(1, 3)))


def gaussian_fft(img: np.ndarray, sigma: float, pad: bool = True) -> np.ndarray:
    """Gaussian filter via FFT (fast for wide kernels); zero padding by 3 sigma unless
    ``pad=False`` (periodic)."""
    p = int(min(3 * sigma, max(img.shape))) if pad else 0
    a = np.pad(img, p) if p else img
    f = ndimage.fourier_gaussian(fft.rfft2(a), sigma, n=a.shape[1])
    out = fft.irfft2(f, a.shape)
    return np.asarray(out[p:p + img.shape[0], p:p + img.shape[1]] if p else out)


def _defocus(out: np.ndarray, fwhm_nm: float) -> np.ndarray:
    return gaussian_fft(out, sigma_px(fwhm_nm, FINE_NM / 1000.0))


_PSF_CACHE: dict[object, np.ndarray] = {}


def _psf(key: object, make: object) -> np.ndarray:
    if key not in _PSF_CACHE:
        if len(_PSF_CACHE) > 64:
            _PSF_CACHE.clear()
        _PSF_CACHE[key] = make()  # type: ignore[operator]
    return _PSF_CACHE[key]


@dataclass(frozen=True)
class NoiseFree:
    """Expected photons per pixel: confocal on the acquisition grid, STED on the model grid,
    both covering exactly the same field of view (a whole number of acquisition *and* model
    pixels, at least the requested size; scaled so the brightest confocal pixel holds
    ``photons``)."""

    confocal: np.ndarray
    sted: np.ndarray
    k_acq: int  # acquisition pixel / fine pixel
    k_mod: int  # model pixel / fine pixel


def noise_free(rng: np.random.Generator, size: int, acq: Acquisition, sample: Sample
               ) -> NoiseFree:
    k_acq = int(round(acq.pixel_nm / FINE_NM))
    k_mod = int(round(MODEL_PX_NM / FINE_NM))
    if abs(k_acq * FINE_NM - acq.pixel_nm) > 1e-6:
        raise ValueError(f"acquisition pixel {acq.pixel_nm:g} nm is not a multiple of "
                         f"{FINE_NM:g} nm")
    # one field for both images: a whole number of acquisition and of model pixels, at least
    # ``size`` model pixels. (Cutting the field to whole acquisition pixels only, as before,
    # gave the confocal image a field up to one acquisition pixel smaller than the target's:
    # resampled to the model grid it was stretched by up to 1% (90 nm, 160 px: 1.6 px at the
    # last pixel), and the target had a dark strip there; tests/test_domain.py.)
    period = math.lcm(k_acq, k_mod)
    n_fine = -(-size * k_mod // period) * period
    focus, haze = render_sample(rng, (n_fine, n_fine), sample)
    pc = _psf(("c", acq.confocal), lambda: confocal_psf(acq.confocal))
    ps = _psf(("s", acq.sted), lambda: sted_psf(acq.sted))
    blur = _defocus(haze, sample.defocus_fwhm_nm) if sample.defocus_weight > 0 else 0.0
    conf = np.clip(_fftconvolve_same(focus, pc), 0.0, None) + blur
    sted = np.clip(_fftconvolve_same(focus, ps), 0.0, None) + blur
    conf_acq = _bin(conf, k_acq)
    scale = acq.detector.photons / max(float(conf_acq.max()), 1e-12)
    return NoiseFree(conf_acq * scale, _bin(sted, k_mod) * scale, k_acq, k_mod)


def image_pair(rng: np.random.Generator, size: int, acq: Acquisition, sample: Sample
               ) -> BroadPair:
    """Simulate one pair of ``size`` x ``size`` model pixels (50 nm)."""
    from tcan_live.resample import resample_to_shape

    nf = noise_free(rng, size, acq, sample)
    counts = detect(rng, nf.confocal, acq.detector)
    conf_model = resample_to_shape(counts, nf.sted.shape)[:size, :size]  # same field
    # the target in the detector's units for a pixel of the *acquisition* grid: photons scale
    # with pixel area, and the resampler keeps values (not sums)
    target = expected_counts(nf.sted[:size, :size] * (nf.k_acq / nf.k_mod) ** 2, acq.detector)
    return BroadPair(conf_model.astype(np.float32), target, acq, sample)


def random_acquisition(rng: np.random.Generator, photons: float | None = None,
                       pixel_nm: float | None = None) -> Acquisition:
    wl = float(rng.choice([488.0, 514.0, 561.0, 594.0, 640.0]))
    conf = ConfocalOptics(wavelength_nm=wl, stokes_nm=float(rng.uniform(15, 45)),
                          na=float(rng.uniform(1.2, 1.45)),
                          pinhole_au=float(rng.choice([0.6, 0.8, 1.0, 1.0, 1.2, 1.5])))
    px = pixel_nm if pixel_nm is not None else float(rng.choice(np.arange(30.0, 101.0, 10.0)))
    return Acquisition(px, conf, StedOptics(), random_detector(rng, photons))


def random_sample(rng: np.random.Generator, families: tuple[Family, ...] = FAMILIES
                  ) -> Sample:
    k = int(rng.choice([1, 2, 2, 3, 3, 4]))
    fams = tuple(str(f) for f in rng.choice(families, size=min(k, len(families)), replace=False))
    return Sample(families=fams, regions=bool(rng.random() < 0.8),  # type: ignore[arg-type]
                  empty=float(rng.choice([0.0, 0.0, rng.uniform(0.1, 0.6)])),
                  defocus_weight=float(rng.choice([0.0, _log_uniform(rng, 0.05, 1.0)])),
                  defocus_fwhm_nm=float(rng.uniform(600, 2000)))
