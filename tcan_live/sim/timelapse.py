"""Simulated live time-lapse: dynamic filaments (grow, shrink, bend) plus known stage drift.

Frames are written one by one, at a chosen interval, either as separate TIFF files
(``<name>_t0000.tif``, ``..._c1_t0000.tif`` for the second channel: image-per-file saving) or
appended page by page to one growing OME-TIFF whose OME-XML (written with the first page)
already declares the final shape, as acquisition software does. ``drift.csv`` holds the exact
shift applied to every frame (pixels, relative to frame 0; a positive dy moves content down).
With two channels, channel 1 is an actin-like mesh imaged with a fixed chromatic offset
(``channel_offset_px``) relative to channel 0's microtubules.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tcan_live.sim.simulate import (
    Camera,
    Optics,
    actin_points,
    detect,
    expected_images,
)


@dataclass(frozen=True)
class TimelapseSpec:
    frames: int = 20
    size: int = 256
    interval_s: float = 0.0
    drift_px_per_frame: float = 0.3
    layout: Literal["files", "ome-stack"] = "files"
    seed: int = 0
    channels: int = 1
    name: str = "timelapse"
    n_filaments: int = 12
    channel_offset_px: tuple[float, float] = (0.6, -0.4)
    dtype: str = "uint16"


@dataclass
class _Filament:
    start: np.ndarray
    angles: np.ndarray  # tangent angle per 0.25-px step
    growing: bool
    brightness: float
    curvature: np.ndarray = field(default_factory=lambda: np.zeros(0))


STEP = 0.25
CHANNEL_NAMES = ("microtubules", "actin")


class DynamicFilaments:
    """Microtubule-like chains with dynamic instability and slow bending."""

    def __init__(self, rng: np.random.Generator, size: int, n: int) -> None:
        self.rng, self.size = rng, size
        self.fils = []
        for _ in range(n):
            start = rng.uniform(0.1 * size, 0.9 * size, 2)
            length = rng.uniform(0.15, 0.6) * size
            steps = int(length / STEP)
            theta0 = rng.uniform(0, 2 * np.pi)
            angles = theta0 + np.cumsum(rng.normal(0, math.sqrt(STEP / 100.0), steps))
            self.fils.append(_Filament(start, angles, bool(rng.random() < 0.7),
                                       rng.uniform(0.7, 1.3)))

    def step(self) -> None:
        rng = self.rng
        for f in self.fils:
            # dynamic instability: growth ~4 px/frame, shrinkage ~8 px/frame, random switching
            if rng.random() < (0.08 if f.growing else 0.15):
                f.growing = not f.growing
            n = int((4.0 if f.growing else -8.0) / STEP)
            if n > 0:
                extra = f.angles[-1] + np.cumsum(rng.normal(0, math.sqrt(STEP / 100.0), n))
                f.angles = np.concatenate([f.angles, extra])
            else:
                f.angles = f.angles[: max(len(f.angles) + n, int(10 / STEP))]
            # bending: a slow, smooth change of curvature, anchored at the minus end (the
            # plus end wanders most, ~0.1 um per frame for a 10 um filament)
            k = np.cumsum(rng.normal(0, 1e-5, len(f.angles)))
            f.angles = f.angles + k

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        pts, wts = [], []
        for f in self.fils:
            steps = STEP * np.stack([np.sin(f.angles), np.cos(f.angles)], axis=1)
            pts.append(f.start[None] + np.cumsum(steps, axis=0))
            wts.append(np.full(len(f.angles), STEP * f.brightness))
        return np.concatenate(pts), np.concatenate(wts)


def drift_trajectory(rng: np.random.Generator, frames: int, step_px: float) -> np.ndarray:
    """(frames, 2) cumulative (dy, dx) shifts: a slow trend plus a random walk; frame 0 is 0."""
    trend = rng.normal(0, step_px * 0.7, 2)
    walk = rng.normal(0, step_px * 0.7, (frames, 2))
    walk[0] = 0
    shifts = np.cumsum(walk + trend[None], axis=0)
    return shifts - shifts[0]


def render_frames(spec: TimelapseSpec, optics: Optics, camera: Camera
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (t, frame (C, Y, X) in camera units, shift (dy, dx))."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.size, spec.size)
    fil = DynamicFilaments(rng, spec.size, spec.n_filaments)
    actin = actin_points(rng, shape, optics.pixel_size_um, 1.5) if spec.channels > 1 else None
    shifts = drift_trajectory(rng, spec.frames, spec.drift_px_per_frame)
    for t in range(spec.frames):
        planes = []
        pts, wts = fil.points()
        conf, _ = expected_images(pts + shifts[t], wts, shape, optics, camera.photons)
        planes.append(detect(rng, conf, camera))
        if actin is not None:
            off = np.asarray(spec.channel_offset_px)
            conf2, _ = expected_images(actin[0] + shifts[t] + off, actin[1], shape, optics,
                                       camera.photons * 0.7)
            planes.append(detect(rng, conf2, camera))
        frame = np.clip(np.stack(planes), 0, np.iinfo(np.uint16).max)
        yield t, frame.astype(spec.dtype), shifts[t]
        fil.step()


def write_drift_csv(path: Path, shifts: list[tuple[int, float, float]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["t", "dy_px", "dx_px"])
        for t, dy, dx in shifts:
            w.writerow([t, f"{dy:.6f}", f"{dx:.6f}"])


def read_drift_csv(path: Path) -> np.ndarray:
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r["dy_px"]), float(r["dx_px"])] for r in rows])


def write_timelapse(out: Path, spec: TimelapseSpec, optics: Optics = Optics(),
                    camera: Camera = Camera(photons=60.0, background=3.0),
                    on_frame: Callable[[int, Path], None] | None = None) -> Path:
    """Write the time-lapse into ``out`` frame by frame; returns the folder (files) or file."""
    out.mkdir(parents=True, exist_ok=True)
    frames = render_frames(spec, optics, camera)
    shifts: list[tuple[int, float, float]] = []
    target = out / f"{spec.name}.ome.tif" if spec.layout == "ome-stack" else out
    writer = _StackWriter(target, spec, optics) if spec.layout == "ome-stack" else None
    try:
        for t, frame, shift in frames:
            t0 = time.monotonic()
            shifts.append((t, float(shift[0]), float(shift[1])))
            write_drift_csv(out / "drift.csv", shifts)
            if writer is not None:
                writer.append(frame)
                path = target
            else:
                path = _write_single(out, spec, optics, t, frame)
            if on_frame:
                on_frame(t, path)
            if spec.interval_s and t < spec.frames - 1:
                time.sleep(max(spec.interval_s - (time.monotonic() - t0), 0))
    finally:
        if writer is not None:
            writer.close()
    return target


def _write_single(out: Path, spec: TimelapseSpec, optics: Optics, t: int,
                  frame: np.ndarray) -> Path:
    """One TIFF per frame and channel, written under a temporary name and renamed."""
    import os

    import tifffile

    last = out
    for c, plane in enumerate(frame):
        tag = f"_c{c}" if spec.channels > 1 else ""
        path = out / f"{spec.name}{tag}_t{t:04d}.tif"
        tmp = out / f".{path.name}.tmp"
        tifffile.imwrite(tmp, plane, ome=True, metadata={
            "axes": "YX", "PhysicalSizeX": optics.pixel_size_um, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": optics.pixel_size_um, "PhysicalSizeYUnit": "µm",
            "Channel": {"Name": [CHANNEL_NAMES[c]]}})
        os.replace(tmp, path)
        last = path
    return last


class _StackWriter:
    """Appends pages to one OME-TIFF whose first page declares the final (T, C, Y, X) shape."""

    def __init__(self, path: Path, spec: TimelapseSpec, optics: Optics) -> None:
        import tifffile

        shape = (spec.frames, spec.channels, spec.size, spec.size)
        ome = tifffile.OmeXml()
        names = list(CHANNEL_NAMES[: spec.channels])
        ome.addimage(np.dtype(spec.dtype), shape, (shape[0] * shape[1], 1, 1, *shape[2:], 1),
                     axes="TCYX", PhysicalSizeX=optics.pixel_size_um, PhysicalSizeXUnit="µm",
                     PhysicalSizeY=optics.pixel_size_um, PhysicalSizeYUnit="µm",
                     TimeIncrement=spec.interval_s or None, TimeIncrementUnit="s",
                     Channel={"Name": names})
        self._description = ome.tostring().encode("utf-8")
        self._fh = path.open("wb")
        self._tw = tifffile.TiffWriter(self._fh)
        self._first = True

    def append(self, frame: np.ndarray) -> None:
        for plane in frame:
            self._tw.write(plane, description=self._description if self._first else None,
                           metadata=None, contiguous=False, photometric="minisblack")
            self._first = False
            self._fh.flush()

    def close(self) -> None:
        self._tw.close()
        self._fh.close()
