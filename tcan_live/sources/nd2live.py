"""Best-effort reading of an ND2 file that NIS-Elements is still writing.

The ``nd2`` reader needs the chunk map at the end of the file, so a file being written does not
open. Its complete frames can still be recovered with ``nd2.rescue_nd2`` if the frame geometry
is known. Geometry and loop structure are taken from the chunks at the start of the file:

* the experiment (``ImageMetadataLV``): live reading only for a pure time loop (no Z, no
  positions), so a frame's sequence number is its time index;
* the channel count (``ImageMetadataSeqLV|0``, ``PicturePlanes/CompCount``);
* the frame size from the first image chunk's length (timestamp + Y*X*C*2 bytes, 16-bit pixels),
  accepted only when Y*X is a perfect square (the usual 512x512 / 1024x1024 scans).

Anything else returns ``None`` and the file is read once it is complete. Every function here is
defensive: a failure means "not readable yet", never an exception into the daemon.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
CHUNK_MAGIC = b"\xda\xce\xbe\x0a"
TIME_LOOPS = (1, 8)  # TimeLoop, NETimeLoop


@dataclass(frozen=True)
class LiveGeometry:
    shape: tuple[int, int]
    channels: int
    dtype: str = "uint16"
    pixel_size_um: float | None = None


def _chunk(data: bytes, name: bytes) -> bytes | None:
    at = data.find(name)
    if at < 16 or data[at - 16 : at - 12] != CHUNK_MAGIC:
        return None
    p = at - 16
    name_len, = struct.unpack("<I", data[p + 4 : p + 8])
    data_len, = struct.unpack("<Q", data[p + 8 : p + 16])
    start = p + 16 + name_len
    if start + data_len > len(data):
        return None
    return data[start : start + data_len]


def _lite(raw: bytes) -> dict[str, Any] | None:
    try:
        from nd2._parse._clx_lite import json_from_clx_lite_variant

        out = json_from_clx_lite_variant(raw)
        return out if isinstance(out, dict) else None
    except Exception:  # private API of nd2; any change means: not live-readable
        return None


def live_geometry(head: bytes) -> LiveGeometry | None:
    """Frame geometry of a time-loop ND2 from the start of the file, or None."""
    exp_raw = _chunk(head, b"ImageMetadataLV!")
    exp = _lite(exp_raw) if exp_raw else None
    exp = exp.get("SLxExperiment") if exp else None
    if not isinstance(exp, dict) or exp.get("Type") not in TIME_LOOPS:
        return None
    if exp.get("NextLevelCount", 0):
        return None
    seq_raw = _chunk(head, b"ImageMetadataSeqLV|0!")
    seq = _lite(seq_raw) if seq_raw else None
    planes = (seq or {}).get("SLxPictureMetadata", {})
    channels = int(planes.get("PicturePlanes", {}).get("CompCount", 1)) if isinstance(
        planes, dict) else 1
    first = re.search(rb"ImageDataSeq\|0!", head)
    if first is None or first.start() < 16:
        return None
    p = first.start() - 16
    data_len, = struct.unpack("<Q", head[p + 8 : p + 16])
    pixels = (data_len - 8) // 2 // max(channels, 1)
    side = math.isqrt(pixels)
    if side * side != pixels or side == 0:
        return None
    cal_raw = _chunk(head, b"ImageCalibrationLV|0!")
    cal = (_lite(cal_raw) or {}).get("SLxCalibration", {}) if cal_raw else {}
    px = cal.get("Calibration") if isinstance(cal, dict) and cal.get("Valid", True) else None
    return LiveGeometry((side, side), channels, pixel_size_um=float(px) if px else None)


def read_live_frames(path: Path, start: int) -> tuple[LiveGeometry, list[np.ndarray]] | None:
    """Complete frames (C, Y, X) from sequence number ``start`` on, or None if not possible."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return None
    geom = live_geometry(head)
    if geom is None:
        return None
    import nd2

    frames: list[np.ndarray] = []
    with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
        for i, f in enumerate(nd2.rescue_nd2(path,
                                             frame_shape=(*geom.shape, geom.channels),
                                             dtype=geom.dtype, verbose=False)):
            if i >= start:
                frames.append(np.moveaxis(np.array(f), -1, 0))
    return geom, frames
