"""OME-TIFF writing with physical metadata, atomically (temporary name, then rename)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcan_live.sources.tiffmeta import SOFTWARE

BIGTIFF_BYTES = 2**31


@dataclass(frozen=True)
class OmeMeta:
    """What goes into the OME-XML. ``axes`` are the array's leading axes (letters of PTCZ)."""

    axes: str
    pixel_size_um: float | None = None
    channel_names: Sequence[str] = ()
    time_increment_s: float | None = None
    z_step_um: float | None = None
    description: str | None = None
    # each plane's time stamp (s), shaped like the leading axes; NaN where unknown
    plane_times_s: np.ndarray | None = None


def ome_metadata(meta: OmeMeta, axes: str, n_channels: int,
                 plane_times: np.ndarray | None = None) -> dict[str, object]:
    md: dict[str, object] = {"axes": axes + "YX"}
    if plane_times is not None and plane_times.size and np.isfinite(plane_times).all():
        flat = [float(v) for v in plane_times.ravel()]  # page order = C order of the axes
        md["Plane"] = {"DeltaT": flat, "DeltaTUnit": ["s"] * len(flat)}
    if meta.pixel_size_um:
        md.update(PhysicalSizeX=meta.pixel_size_um, PhysicalSizeY=meta.pixel_size_um,
                  PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
    if meta.z_step_um and "Z" in axes:
        md.update(PhysicalSizeZ=meta.z_step_um, PhysicalSizeZUnit="µm")
    if meta.time_increment_s and "T" in axes:
        md.update(TimeIncrement=meta.time_increment_s, TimeIncrementUnit="s")
    names = list(meta.channel_names)[:n_channels]
    if names and len(names) == n_channels:
        md["Channel"] = {"Name": names}
    if meta.description:
        md["Description"] = meta.description
    return md


def _positions(data: np.ndarray, axes: str) -> Iterator[tuple[np.ndarray, str]]:
    """Split off the position axis: one OME Image (series) per stage position."""
    if "P" not in axes:
        yield data, axes
        return
    i = axes.index("P")
    rest = axes.replace("P", "")
    for p in range(data.shape[i]):
        yield np.take(data, p, axis=i), rest


def write_ome_tiff(path: Path, data: np.ndarray, meta: OmeMeta) -> Path:
    """Write ``data`` (leading axes ``meta.axes`` + YX) to ``path`` atomically."""
    import tifffile

    if data.ndim != len(meta.axes) + 2:
        raise ValueError(f"data has {data.ndim} dims, axes {meta.axes!r}+YX need "
                         f"{len(meta.axes) + 2}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short temporary name (a long output name must not become a too-long temporary one);
    # hidden and ".part", so no watcher takes it for an image
    tmp = path.with_name(f".tcan-{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with tifffile.TiffWriter(tmp, ome=True, bigtiff=data.nbytes >= BIGTIFF_BYTES) as tw:
            times = meta.plane_times_s
            for p, (block, axes) in enumerate(_positions(data, meta.axes)):
                n_c = block.shape[axes.index("C")] if "C" in axes else 1
                t_p = None
                if times is not None and times.shape == data.shape[:len(meta.axes)]:
                    t_p = np.take(times, p, axis=meta.axes.index("P")) if "P" in meta.axes \
                        else times
                tw.write(block, metadata=ome_metadata(meta, axes, n_c, t_p),
                         photometric="minisblack", software=SOFTWARE)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
