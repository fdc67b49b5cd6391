"""Simulated confocal / STED-like image pairs (numpy + scipy only).

Structures are drawn as emitter densities on a grid ``OVERSAMPLE`` times finer than the pixel grid,
blurred by a Gaussian PSF there and summed into pixels (so each pixel integrates the PSF over its
area). The confocal image is ``offset + gain * Poisson(background + photons * signal) + read
noise``; the STED-like target is the noise-free expectation with the narrow PSF, on the same
photon scale (flux preserving: an isolated bead holds the same number of photons in both).

``photons`` is the expected confocal peak (in photons) of an isolated point centred on a pixel,
so it reads like the brightness of a single bead in the raw image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
from scipy import ndimage, special

OVERSAMPLE = 4
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def sigma_px(fwhm_nm: float, pixel_size_um: float) -> float:
    """The Gaussian sigma, in pixels, of a PSF with this FWHM (the one conversion)."""
    return fwhm_nm / FWHM_PER_SIGMA / (pixel_size_um * 1000.0)
Structure = Literal["filaments", "beads", "rings", "actin"]
STRUCTURES: tuple[Structure, ...] = ("filaments", "beads", "rings", "actin")


@dataclass(frozen=True)
class Optics:
    pixel_size_um: float = 0.05
    confocal_fwhm_nm: float = 230.0
    sted_fwhm_nm: float = 80.0


@dataclass(frozen=True)
class Camera:
    photons: float = 100.0
    background: float = 2.0
    gain: float = 1.0
    offset: float = 100.0
    read_noise: float = 1.0


@dataclass(frozen=True)
class Scene:
    """Which structures and how many; densities are per square micrometre."""

    structures: tuple[Structure, ...] = ("filaments",)
    filament_density: float = 0.05
    bead_density: float = 0.5
    ring_density: float = 0.3
    actin_density: float = 0.6
    persistence_um: float = 5.0


@dataclass(frozen=True)
class PairImage:
    confocal: np.ndarray  # float32, camera units, noisy
    sted: np.ndarray  # float32, camera units, noise-free STED-like target
    optics: Optics
    camera: Camera
    scene: Scene = field(default_factory=Scene)

    def params(self) -> dict[str, object]:
        return {"optics": asdict(self.optics), "camera": asdict(self.camera),
                "scene": asdict(self.scene)}


# ---------------------------------------------------------------------------------------------
# geometry: emitter coordinates in pixels (y, x) with a weight each


def worm_like_chain(
    rng: np.random.Generator, start: np.ndarray, length_px: float, persistence_px: float,
    step_px: float = 0.25, angle: float | None = None,
) -> np.ndarray:
    """Points along a 2-D worm-like chain (tangent angle diffuses, variance step/persistence)."""
    n = max(int(length_px / step_px), 2)
    theta0 = rng.uniform(0, 2 * np.pi) if angle is None else angle
    dtheta = rng.normal(0.0, math.sqrt(step_px / max(persistence_px, 1e-3)), n)
    theta = theta0 + np.cumsum(dtheta)
    steps = step_px * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    return start[None, :] + np.cumsum(steps, axis=0)


def _n_objects(rng: np.random.Generator, density: float, area_um2: float) -> int:
    return int(rng.poisson(density * area_um2))


def filament_points(
    rng: np.random.Generator, shape: tuple[int, int], px_um: float, density: float,
    persistence_um: float,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    area = h * w * px_um**2
    pts, wts = [], []
    for _ in range(max(_n_objects(rng, density, area), 1)):
        start = rng.uniform((-0.1 * h, -0.1 * w), (1.1 * h, 1.1 * w))
        length = rng.uniform(0.3, 1.5) * max(h, w)
        chain = worm_like_chain(rng, start, length, persistence_um / px_um)
        pts.append(chain)
        wts.append(np.full(len(chain), 0.25 * rng.uniform(0.6, 1.4)))  # per 0.25 px step
    return np.concatenate(pts), np.concatenate(wts)


def actin_points(
    rng: np.random.Generator, shape: tuple[int, int], px_um: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Short stiff segments with ~70 degree branches: a dense mesh."""
    h, w = shape
    area = h * w * px_um**2
    pts, wts = [], []
    for _ in range(max(_n_objects(rng, density, area), 1)):
        start = rng.uniform((0, 0), (h, w))
        angle = rng.uniform(0, 2 * np.pi)
        seg = worm_like_chain(rng, start, rng.uniform(0.3, 3.0) / px_um, 15.0 / px_um, angle=angle)
        pts.append(seg)
        if rng.random() < 0.5:
            at = seg[rng.integers(len(seg))]
            side = rng.choice([-1.0, 1.0]) * math.radians(70)
            pts.append(worm_like_chain(rng, at, rng.uniform(0.2, 1.5) / px_um, 15.0 / px_um,
                                       angle=angle + side))
    for p in pts:
        wts.append(np.full(len(p), 0.25 * rng.uniform(0.3, 1.0)))
    return np.concatenate(pts), np.concatenate(wts)


def bead_points(
    rng: np.random.Generator, shape: tuple[int, int], px_um: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    n = max(_n_objects(rng, density, h * w * px_um**2), 1)
    pts = rng.uniform((0, 0), (h, w), size=(n, 2))
    n_pairs = n // 4  # some close pairs, below confocal resolution
    if n_pairs:
        sep = rng.uniform(0.08, 0.25, n_pairs) / px_um
        ang = rng.uniform(0, 2 * np.pi, n_pairs)
        partners = pts[:n_pairs] + np.stack([sep * np.sin(ang), sep * np.cos(ang)], axis=1)
        pts = np.concatenate([pts, partners])
    return pts, rng.uniform(0.7, 1.3, len(pts))


def ring_points(
    rng: np.random.Generator, shape: tuple[int, int], px_um: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclear-pore-like rings: 8 sub-units on a circle (radius 50-150 nm), random rotation."""
    h, w = shape
    n = max(_n_objects(rng, density, h * w * px_um**2), 1)
    centres = rng.uniform((0, 0), (h, w), size=(n, 2))
    radius = rng.uniform(0.05, 0.15, n) / px_um
    phase = rng.uniform(0, 2 * np.pi, n)
    k = np.arange(8) * (2 * np.pi / 8)
    ang = phase[:, None] + k[None, :]
    pts = centres[:, None, :] + radius[:, None, None] * np.stack([np.sin(ang), np.cos(ang)], -1)
    keep = rng.random(pts.shape[:2]) < 0.85  # incomplete labelling
    return pts[keep], rng.uniform(0.3, 0.6, int(keep.sum()))


def scene_points(
    rng: np.random.Generator, shape: tuple[int, int], px_um: float, scene: Scene
) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for s in scene.structures:
        if s == "filaments":
            parts.append(filament_points(rng, shape, px_um, scene.filament_density,
                                         scene.persistence_um))
        elif s == "beads":
            parts.append(bead_points(rng, shape, px_um, scene.bead_density))
        elif s == "rings":
            parts.append(ring_points(rng, shape, px_um, scene.ring_density))
        elif s == "actin":
            parts.append(actin_points(rng, shape, px_um, scene.actin_density))
        else:
            raise ValueError(f"unknown structure {s!r}; expected one of {STRUCTURES}")
    return np.concatenate([p for p, _ in parts]), np.concatenate([w for _, w in parts])


# ---------------------------------------------------------------------------------------------
# image formation


def render_density(points: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear splat of points (pixel coordinates) onto the oversampled grid."""
    oh, ow = shape[0] * OVERSAMPLE, shape[1] * OVERSAMPLE
    sub = points * OVERSAMPLE + (OVERSAMPLE - 1) / 2.0  # pixel centre -> sub-pixel coordinates
    y0, x0 = np.floor(sub[:, 0]), np.floor(sub[:, 1])
    fy, fx = sub[:, 0] - y0, sub[:, 1] - x0
    grid = np.zeros((oh + 2, ow + 2), np.float64)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                        (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0.astype(np.int64) + dy + 1, x0.astype(np.int64) + dx + 1
        ok = (yy >= 0) & (yy < oh + 2) & (xx >= 0) & (xx < ow + 2)
        np.add.at(grid, (yy[ok], xx[ok]), (weights * wgt)[ok])
    return grid[1:-1, 1:-1]


def blur_and_bin(density: np.ndarray, fwhm_nm: float, pixel_size_um: float) -> np.ndarray:
    sigma_sub = fwhm_nm / FWHM_PER_SIGMA / (pixel_size_um * 1000.0) * OVERSAMPLE
    blurred = ndimage.gaussian_filter(density, sigma_sub, mode="constant", truncate=4.0)
    h, w = density.shape[0] // OVERSAMPLE, density.shape[1] // OVERSAMPLE
    return blurred.reshape(h, OVERSAMPLE, w, OVERSAMPLE).sum(axis=(1, 3))


def centred_peak_fraction(fwhm_nm: float, pixel_size_um: float) -> float:
    """Fraction of a Gaussian PSF's photons that land in the pixel it is centred on."""
    sigma = fwhm_nm / FWHM_PER_SIGMA / (pixel_size_um * 1000.0)
    return float(special.erf(0.5 / (math.sqrt(2.0) * sigma)) ** 2)


def expected_images(
    points: np.ndarray, weights: np.ndarray, shape: tuple[int, int], optics: Optics,
    photons: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free confocal and STED signal in photons (no background)."""
    density = render_density(points, weights, shape)
    scale = photons / centred_peak_fraction(optics.confocal_fwhm_nm, optics.pixel_size_um)
    conf = blur_and_bin(density, optics.confocal_fwhm_nm, optics.pixel_size_um) * scale
    sted = blur_and_bin(density, optics.sted_fwhm_nm, optics.pixel_size_um) * scale
    return conf, sted


def detect(rng: np.random.Generator, signal: np.ndarray, camera: Camera) -> np.ndarray:
    """Camera/detector model: Poisson photons, gain, offset, Gaussian read noise."""
    counts = rng.poisson(np.clip(signal + camera.background, 0, None)).astype(np.float64)
    noisy = camera.offset + camera.gain * counts + rng.normal(0, camera.read_noise, signal.shape)
    return noisy.astype(np.float32)


def as_camera_units(signal: np.ndarray, camera: Camera) -> np.ndarray:
    return (camera.offset + camera.gain * (signal + camera.background)).astype(np.float32)


def simulate_pair(
    rng: np.random.Generator, shape: tuple[int, int], optics: Optics, camera: Camera,
    scene: Scene,
) -> PairImage:
    points, weights = scene_points(rng, shape, optics.pixel_size_um, scene)
    conf, sted = expected_images(points, weights, shape, optics, camera.photons)
    return PairImage(detect(rng, conf, camera), as_camera_units(sted, camera), optics, camera,
                     scene)


# ---------------------------------------------------------------------------------------------
# randomised conditions for training sets (wide ranges, for generality)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_conditions(
    rng: np.random.Generator, base: Optics = Optics()
) -> tuple[Optics, Camera, Scene]:
    """Draw optics/camera/scene widely: PSF width, brightness, background, noise, density, mix."""
    optics = replace(base, confocal_fwhm_nm=base.confocal_fwhm_nm * rng.uniform(0.85, 1.2))
    camera = Camera(
        photons=_log_uniform(rng, 8.0, 1000.0),
        background=_log_uniform(rng, 0.2, 30.0),
        gain=_log_uniform(rng, 0.5, 4.0),
        offset=float(rng.choice([0.0, 100.0, 500.0])),
        read_noise=_log_uniform(rng, 0.3, 6.0),
    )
    k = int(rng.integers(1, 3))
    structures = tuple(str(s) for s in rng.choice(STRUCTURES, size=k, replace=False))
    scene = Scene(
        structures=structures,  # type: ignore[arg-type]
        filament_density=_log_uniform(rng, 0.01, 0.4),
        bead_density=_log_uniform(rng, 0.1, 4.0),
        ring_density=_log_uniform(rng, 0.1, 3.0),
        actin_density=_log_uniform(rng, 0.3, 6.0),
        persistence_um=_log_uniform(rng, 0.5, 20.0),
    )
    return optics, camera, scene
