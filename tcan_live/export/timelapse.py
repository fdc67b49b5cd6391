"""``tcan-live export``: a whole time-lapse enhanced, drift-corrected, as OME-TIFF (+ movie).

For every stage position: read all planes -> enhance every plane (skipped when the input is
already tcan-live output) -> estimate the drift on one channel (raw by default; max projection
over z) -> optionally smooth it -> apply the same correction to raw and enhanced, every channel
and every z -> crop to the field of view common to all frames (or pad with NaN) -> write
``OUT.ome.tif`` or ``OUT.ome.zarr`` (TCZYX, pixel size, time increment, channel names),
``OUT_drift.csv``, ``OUT_drift.png`` and, on request, a movie (raw | enhanced). Every file is
written under a temporary name and renamed, so an interrupted export leaves no half-written
output.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.errors import ConfigError
from tcan_live.export.drift import Reference, common_crop, estimate_drift, shift_image, smooth
from tcan_live.export.formats import strip_output_suffix, write_image
from tcan_live.export.ometiff import OmeMeta
from tcan_live.frame import StackInfo, resolve_pixel_size
from tcan_live.sources.readers import open_stack
from tcan_live.sources.tiffmeta import is_enhanced_output

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportOptions:
    drift_correct: bool = True
    reference: Reference = "first"
    drift_channel: int = 0
    drift_on: str = "raw"  # raw | enhanced
    smooth_window: int = 1
    pad: bool = False
    movie: Path | None = None
    pixel_size_um: float | None = None
    save_raw: bool = False


@dataclass
class PositionResult:
    enhanced: np.ndarray  # (T, C, Z, Y, X)
    raw: np.ndarray | None
    drift: np.ndarray  # (T, 2) estimated displacement, px


def read_all(path: Path) -> tuple[StackInfo, np.ndarray]:
    """All planes as (P, T, C, Z, Y, X) float32."""
    with open_stack(path) as reader:
        info = reader.info
        size = {a: info.shape[info.axes.index(a)] if a in info.axes else 1 for a in "PTCZ"}
        data = np.zeros((size["P"], size["T"], size["C"], size["Z"], *info.plane_shape),
                        np.float32)
        for _, f in reader.planes():
            i = f.index
            data[i.p, i.t, i.c, i.z] = f.data
    return info, data


def is_tcan_output(path: Path) -> bool:
    """Frames tcan-live already enhanced (OME-TIFF or OME-Zarr): exported as they are."""
    import tifffile

    if path.is_dir() and path.name.lower().endswith(".zarr"):
        from tcan_live.sources.zarrsrc import ZarrReader

        with ZarrReader(path) as reader:
            return reader.enhanced
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    with tifffile.TiffFile(path) as tif:
        return is_enhanced_output(tif)


def process_position(raw: np.ndarray, enhance: Callable[[np.ndarray], np.ndarray] | None,
                     opts: ExportOptions, progress: Progress | None = None,
                     enhanced: np.ndarray | None = None) -> PositionResult:
    """``enhance`` None and no ``enhanced``: the input is already enhanced (no raw frames).
    ``enhanced`` given: computed elsewhere (a cluster), ``raw`` is the raw stack."""
    t_n, c_n, z_n = raw.shape[:3]
    if enhanced is not None:
        raw_out = raw
    elif enhance is None:
        enhanced, raw_out = raw, None
    else:
        enhanced = np.zeros_like(raw)
        k, total = 0, t_n * c_n * z_n
        for t in range(t_n):
            for c in range(c_n):
                for z in range(z_n):
                    enhanced[t, c, z] = enhance(raw[t, c, z])
                    k += 1
                    if progress:
                        progress("enhance", k, total)
        raw_out = raw
    drift = np.zeros((t_n, 2))
    if opts.drift_correct and t_n > 1:
        if not 0 <= opts.drift_channel < c_n:
            raise ConfigError(f"drift channel {opts.drift_channel} does not exist: the input has "
                              f"{c_n} channel(s), numbered from 0")
        source = enhanced if (opts.drift_on == "enhanced" or raw_out is None) else raw_out
        frames = source[:, opts.drift_channel].max(axis=1)
        drift = smooth(estimate_drift(frames, opts.reference), opts.smooth_window)
        enhanced = _apply(enhanced, drift, opts.pad)
        raw_out = _apply(raw_out, drift, opts.pad) if raw_out is not None else None
    return PositionResult(enhanced, raw_out, drift)


def _apply(stack: np.ndarray, drift: np.ndarray, pad: bool) -> np.ndarray:
    out = np.empty_like(stack)
    fill = np.nan if pad else 0.0
    for t in range(stack.shape[0]):
        for c in range(stack.shape[1]):
            for z in range(stack.shape[2]):
                out[t, c, z] = shift_image(stack[t, c, z], -drift[t], cval=fill)
    if pad:
        return out
    ys, xs = common_crop(drift, stack.shape[-2:])
    return np.ascontiguousarray(out[..., ys, xs])


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")  # keep the suffix (ffmpeg needs it)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_drift(path_csv: Path, path_png: Path, drift: np.ndarray, px: float | None,
                dt: float | None) -> None:
    def csv_writer(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["t", "time_s", "dy_px", "dx_px", "dy_um", "dx_um"])
            for t, (dy, dx) in enumerate(drift):
                w.writerow([t, "" if dt is None else f"{t * dt:.3f}", f"{dy:.4f}", f"{dx:.4f}",
                            "" if px is None else f"{dy * px:.5f}",
                            "" if px is None else f"{dx * px:.5f}"])

    _atomic(path_csv, csv_writer)

    def png_writer(tmp: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        scale, unit = (px, "um") if px else (1.0, "px")
        x = np.arange(len(drift)) * (dt or 1.0)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(x, drift[:, 1] * scale, label="x")
        ax.plot(x, drift[:, 0] * scale, label="y")
        ax.set_xlabel("time (s)" if dt else "frame")
        ax.set_ylabel(f"drift ({unit})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    _atomic(path_png, png_writer)


def export(input_path: Path, out: Path, opts: ExportOptions, enhancer: Any | None,
           progress: Progress | None = None, client: Any = None) -> list[Path]:
    """Export one input; returns the files written. ``enhancer`` None: input not enhanced.
    With a Dask ``client`` the planes are enhanced on the cluster."""
    info, data = read_all(input_path)
    px = resolve_pixel_size(opts.pixel_size_um, info.pixel_size_um, source=str(input_path))
    already = is_tcan_output(input_path)
    enhance = None
    pre = None
    if not already and client is not None:
        pre = _enhance_on_cluster(client, input_path, info, data.shape, px, progress)
    elif not already:
        if enhancer is None:
            raise ValueError("an enhancer is needed for input that is not tcan-live output")

        def enhance(img: np.ndarray) -> np.ndarray:
            return enhancer.enhance(img, px, source=str(input_path)).image

    written: list[Path] = []
    n_pos = data.shape[0]
    for p in range(n_pos):
        res = process_position(data[p], enhance, opts, progress,
                               enhanced=None if pre is None else pre[p])
        stem = strip_output_suffix(out.name)
        ext = out.name[len(stem):]  # the format's suffix, as given
        base = out.with_name(f"{stem}_p{p}" if n_pos > 1 else stem)
        target = base.with_name(base.name + ext)
        meta = OmeMeta(axes="TCZ", pixel_size_um=px, channel_names=info.channel_names,
                       time_increment_s=info.time_increment_s, z_step_um=info.z_step_um,
                       description=f"Enhanced by tcan-live; drift-corrected "
                                   f"({opts.reference}) from {input_path.name}")
        written.append(write_image(target, res.enhanced, meta))
        if opts.save_raw and res.raw is not None:
            raw_meta = OmeMeta(axes="TCZ", pixel_size_um=px, channel_names=info.channel_names,
                               time_increment_s=info.time_increment_s, z_step_um=info.z_step_um,
                               description=f"Raw, drift-corrected, from {input_path.name}")
            written.append(write_image(base.with_name(base.name + "_raw" + ext), res.raw,
                                       raw_meta))
        csv_path = base.with_name(base.name + "_drift.csv")
        png_path = base.with_name(base.name + "_drift.png")
        write_drift(csv_path, png_path, res.drift, px, info.time_increment_s)
        written += [csv_path, png_path]
        if opts.movie is not None:
            movie = opts.movie if n_pos == 1 else opts.movie.with_name(
                f"{opts.movie.stem}_p{p}{opts.movie.suffix}")
            _write_movie_atomic(movie, res, px, info.time_increment_s)
            written.append(movie)
    return written


def _write_movie_atomic(movie: Path, res: PositionResult, px: float | None,
                        dt: float | None) -> None:
    from tcan_live.export.movie import write_movie

    fmt = movie.suffix.lower().lstrip(".")

    def write(tmp: Path) -> None:
        write_movie(tmp, res.raw, res.enhanced, px, dt, fmt=fmt)

    _atomic(movie, write)


def _enhance_on_cluster(client: Any, path: Path, info: StackInfo, shape: tuple[int, ...],
                        px: float | None, progress: Progress | None) -> np.ndarray:
    from tcan_live.distributed import enhance_planes

    results = enhance_planes(client, path, info.n_planes, pixel_size_um=px,
                             progress=(lambda d, n: progress("enhance", d, n)) if progress
                             else None)
    out = np.zeros(shape, np.float32)
    for idx, img, _ in results.values():
        pos = dict(zip(info.axes, idx, strict=True))
        out[pos.get("P", 0), pos.get("T", 0), pos.get("C", 0), pos.get("Z", 0)] = img
    return out
