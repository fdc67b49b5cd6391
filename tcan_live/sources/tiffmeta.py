"""Metadata of TIFF-family files (OME, ImageJ, Micro-Manager, plain) -> StackInfo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcan_live.errors import UnsupportedInputError
from tcan_live.frame import warn_once

if TYPE_CHECKING:
    import tifffile

    from tcan_live.frame import StackInfo


# tifffile axis codes -> ours (T time, C channel, Z depth, P position)
AXIS_MAP = {"T": "T", "I": "T", "Q": "T", "C": "C", "Z": "Z", "R": "P", "M": "P", "P": "P",
            "V": "P"}
# length and time units of every reader (OME and ImageJ symbols, NGFF/UDUNITS names)
UNIT_TO_UM = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "\\u00B5m": 1.0, "mm": 1e3,
              "cm": 1e4, "m": 1e6, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
              "centimeter": 1e4, "meter": 1e6}
TIME_TO_S = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "millisecond": 1e-3,
             "second": 1.0, "minute": 60.0, "hour": 3600.0}


# TIFF field types -> bytes per value
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
              16: 8, 17: 8, 18: 8}


def first_header_on_disk(tif: tifffile.TiffFile) -> bool:
    """Whether every value of the first page's tags lies within the file. Writers (tifffile
    among them) put the image description and other long values after the pixel data and
    fill them in at close, so a file still being written or copied can hold a first IFD whose
    description is missing: read then, it would describe another layout (issue 21)."""
    import struct

    fh, fmt = tif.filehandle, tif.tiff
    size = fh.size
    offset = tif.pages.first.offset
    fh.seek(offset)
    raw = fh.read(fmt.tagnosize)
    if len(raw) < fmt.tagnosize:
        return False
    n = struct.unpack(fmt.tagnoformat, raw)[0]
    entries = fh.read(n * fmt.tagsize)
    if len(entries) < n * fmt.tagsize:
        return False
    inline = fmt.tagoffsetthreshold
    for k in range(n):
        e = entries[k * fmt.tagsize:(k + 1) * fmt.tagsize]
        _code, dtype = struct.unpack(fmt.byteorder + "HH", e[:4])
        count = struct.unpack(fmt.offsetformat, e[4:4 + fmt.offsetsize])[0]
        nbytes = count * _TYPE_SIZE.get(dtype, 1)
        if nbytes > inline:
            value_at = struct.unpack(fmt.offsetformat,
                                     e[4 + fmt.offsetsize:4 + 2 * fmt.offsetsize])[0]
            if value_at + nbytes > size:
                return False
    return True


def describe(path: Path, tif: tifffile.TiffFile) -> tuple[StackInfo, int]:
    from tcan_live.frame import StackInfo

    series = list(tif.series)
    s0 = series[0]
    n_series = 1
    if tif.is_ome and len(series) > 1 and all(
        s.shape == s0.shape and s.dtype == s0.dtype and s.axes == s0.axes for s in series
    ):
        n_series = len(series)  # one OME Image per stage position
    axes, shape, plane = _map_axes(path, s0.axes, s0.shape)
    if n_series > 1:
        if "P" in axes:
            raise UnsupportedInputError(path, "positions both as series and as an axis")
        axes, shape = "P" + axes, (n_series, *shape)
    meta = _ome(tif) if tif.is_ome else {}
    if not meta.get("pixel_size_um"):
        meta.update({k: v for k, v in _imagej(tif).items() if v is not None})
    if not meta.get("pixel_size_um"):
        meta["pixel_size_um"] = _resolution(tif)
    fmt = ("ndtiff-file" if getattr(tif, "is_ndtiff", False) or is_ndtiff_file(path) else
           "mmstack" if tif.is_micromanager else "ome-tiff" if tif.is_ome else
           "imagej" if tif.is_imagej else "tiff")
    if tif.is_micromanager:
        _micromanager(tif, meta)
    info = StackInfo(
        path=path, format=fmt, axes=axes, shape=shape, plane_shape=plane, dtype=np.dtype(s0.dtype),
        pixel_size_um=meta.get("pixel_size_um"), channel_names=tuple(meta.get("channels", ())),
        time_increment_s=meta.get("time_increment_s"), z_step_um=meta.get("z_step_um"),
        extra={"plane_times": _plane_times(meta, axes), "written_by_tcan_live": written_by_us(tif)},
    )
    return info, n_series


SOFTWARE = "tcan-live"  # the TIFF Software tag of every file tcan-live writes (export/ometiff.py)
# the OME descriptions of tcan-live's enhanced outputs (enhance_files, export, store)
ENHANCED_MARKERS = ("Enhanced by tcan-live", "Enhanced live by tcan-live")


def is_enhanced_output(tif: tifffile.TiffFile) -> bool:
    """Frames tcan-live enhanced (its OME description says so)."""
    ome = (tif.ome_metadata or "") if tif.is_ome else ""
    return any(m in ome for m in ENHANCED_MARKERS)


def written_by_us(tif: tifffile.TiffFile) -> bool:
    """A TIFF that tcan-live wrote: its Software tag, or (files from before the tag was set)
    an enhanced output's OME description."""
    try:
        software = str(tif.pages.first.software or "")
    except Exception:
        software = ""
    return software.startswith(SOFTWARE) or is_enhanced_output(tif)


NDTIFF_MAGIC = (483729).to_bytes(4, "little")  # NDTiff's major-version marker at byte 8


def is_ndtiff_file(path: Path) -> bool:
    """The image file of an NDTiff dataset (recognised by its header, with or without the
    dataset's NDTiff.index next to it)."""
    try:
        with path.open("rb") as fh:
            return fh.read(12)[8:12] == NDTIFF_MAGIC
    except OSError:
        return False


def _map_axes(path: Path, axes: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...],
                                                                      tuple[int, int]]:
    if "S" in axes and shape[axes.index("S")] > 1:
        raise UnsupportedInputError(path, f"RGB/multi-sample images are not supported "
                                          f"(axes {axes}, shape {shape})")
    if not axes.endswith("YX") and not (axes.endswith("YXS")):
        raise UnsupportedInputError(path, f"unsupported TIFF layout: axes {axes}, shape {shape}")
    plane = (shape[axes.index("Y")], shape[axes.index("X")])
    out_axes, out_shape = "", []
    for a, n in zip(axes, shape, strict=True):
        if a in "YXS":
            continue
        ours = AXIS_MAP.get(a)
        if ours is None or ours in out_axes:
            if n == 1:
                continue
            raise UnsupportedInputError(path, f"unsupported TIFF axis {a!r} (axes {axes})")
        out_axes += ours
        out_shape.append(n)
    return out_axes, tuple(out_shape), plane


def _ome(tif: tifffile.TiffFile) -> dict[str, Any]:
    import tifffile

    try:
        ome = tifffile.xml2dict(tif.ome_metadata or "")["OME"]
    except Exception:
        return {}
    images = ome.get("Image")
    images = images if isinstance(images, list) else [images] if images else []
    image = images[0] if images else None
    if not image:
        return {}
    pix = image.get("Pixels", {})
    out: dict[str, Any] = {}
    size = pix.get("PhysicalSizeX")
    if size:
        out["pixel_size_um"] = float(size) * UNIT_TO_UM.get(pix.get("PhysicalSizeXUnit", "µm"), 1)
    if pix.get("PhysicalSizeZ"):
        out["z_step_um"] = float(pix["PhysicalSizeZ"]) * UNIT_TO_UM.get(
            pix.get("PhysicalSizeZUnit", "µm"), 1)
    if pix.get("TimeIncrement"):
        out["time_increment_s"] = float(pix["TimeIncrement"]) * TIME_TO_S.get(
            pix.get("TimeIncrementUnit", "s"), 1)
    channels = pix.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    out["channels"] = [str(c.get("Name", f"C{i}")) for i, c in enumerate(channels)]
    out["planes"] = []  # (OME Image number, Plane) for every Image: one per position
    for i, img in enumerate(images):
        planes = (img.get("Pixels", {}) if isinstance(img, dict) else {}).get("Plane", [])
        out["planes"] += [(i, q) for q in (planes if isinstance(planes, list) else [planes])]
    return out


def _imagej(tif: tifffile.TiffFile) -> dict[str, Any]:
    ij = tif.imagej_metadata or {}
    if not ij:
        return {}
    out: dict[str, Any] = {}
    unit = str(ij.get("unit", "")).replace("\\u00B5", "µ")
    if unit in UNIT_TO_UM:
        px = _resolution(tif, assume_unit=UNIT_TO_UM[unit])
        out["pixel_size_um"] = px
    if ij.get("finterval"):
        out["time_increment_s"] = float(ij["finterval"])
    if ij.get("spacing") and unit in UNIT_TO_UM:
        out["z_step_um"] = float(ij["spacing"]) * UNIT_TO_UM[unit]
    labels = ij.get("Labels")
    if isinstance(labels, list):
        out["channels"] = [str(x) for x in labels]
    return out


def _resolution(tif: tifffile.TiffFile, assume_unit: float | None = None) -> float | None:
    page = tif.pages.first
    tag, unit_tag = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den
    unit = int(unit_tag.value) if unit_tag is not None else 1
    if assume_unit is not None:
        um_per_unit = assume_unit
    elif unit == 2:
        um_per_unit = 25400.0
    elif unit == 3:
        um_per_unit = 1e4
    else:
        return None
    return um_per_unit / per_unit  # judged with every other pixel size (StackInfo)


def _micromanager(tif: tifffile.TiffFile, meta: dict[str, Any]) -> None:
    summary = (tif.micromanager_metadata or {}).get("Summary", {}) or {}
    if not meta.get("pixel_size_um") and summary.get("PixelSize_um"):
        px = float(summary["PixelSize_um"])
        if px == 1.0:  # Micro-Manager's value when no pixel-size calibration is configured
            warn_once(f"mm:{tif.filehandle.path}", "%s: pixel size 1.0 um is Micro-Manager's "
                       "uncalibrated placeholder; treated as unknown (give --pixel-size-um)",
                       tif.filehandle.path)
        else:
            meta["pixel_size_um"] = px
    if not meta.get("channels") and summary.get("ChNames"):
        meta["channels"] = [str(c) for c in summary["ChNames"]]
    if not meta.get("time_increment_s") and summary.get("Interval_ms"):
        meta["time_increment_s"] = float(summary["Interval_ms"]) / 1000.0


def _plane_times(meta: dict[str, Any], axes: str) -> dict[tuple[int, ...], float]:
    """OME Plane DeltaT values keyed by the array index; a file of one OME Image per stage
    position gives each Image's planes its position (P)."""
    times: dict[tuple[int, ...], float] = {}
    for image, p in meta.get("planes", []):
        if not isinstance(p, dict) or p.get("DeltaT") is None:
            continue
        if image and "P" not in axes:
            continue  # more Images than positions: not a layout we can place
        pos = {"T": p.get("TheT", 0), "C": p.get("TheC", 0), "Z": p.get("TheZ", 0), "P": image}
        scale = TIME_TO_S.get(p.get("DeltaTUnit", "s"), 1.0)
        try:
            times[tuple(int(pos[a]) for a in axes)] = float(p["DeltaT"]) * scale
        except (TypeError, ValueError):
            continue
    return times
