"""Frame: one 2-D image plane with its indices and metadata; StackInfo: what a reader knows of
a file; :func:`make_frame`: a file's plane as a Frame. numpy only (the core)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PIXEL_SIZE_RANGE_UM = (1e-3, 100.0)  # a file's pixel size outside this is not believed
_warned: dict[str, None] = {}


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a warning once per key (a file re-read while it grows warns once, not at every
    scan); at most 4096 keys are remembered."""
    if key in _warned:
        return
    if len(_warned) >= 4096:
        _warned.clear()
    _warned[key] = None
    log.warning(message, *args)


def plausible_pixel_size(value: object, source: str = "") -> float | None:
    """The rule for a pixel size read from a file or the wire: a finite number in
    :data:`PIXEL_SIZE_RANGE_UM` (um), else unknown (0, negative, NaN and absurd values), warned
    once per source."""
    if value is None:
        return None
    try:
        px = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        px = float("nan")
    lo, hi = PIXEL_SIZE_RANGE_UM
    if lo <= px <= hi:
        return px
    warn_once(f"px:{source}", "%s: pixel size %r um is not plausible; treated as unknown (give "
              "--pixel-size-um)", source, value)
    return None


PLACEHOLDER_PIXEL_SIZES_UM = (1.0,)  # what uncalibrated files state (ImageJ "pixel", tifffile)


def resolve_pixel_size(given: float | None, from_file: float | None,
                       model: float | None = None, source: str = "") -> float | None:
    """The one pixel-size precedence (docs/architecture.md): the user's value (a flag or
    setting) > the file's (already judged by :func:`plausible_pixel_size`) > the model's
    (``None`` if ``model`` is not given: the caller then works on the model's grid). A file
    value that looks like a placeholder is used but warned about once per source."""
    if given is not None:
        return given
    if from_file is not None:
        if from_file in PLACEHOLDER_PIXEL_SIZES_UM:
            warn_once(f"px-placeholder:{source}", "%s: pixel size %g um looks like the default "
                      "of an uncalibrated file; if it is not the real one, give "
                      "--pixel-size-um", source, from_file)
        return from_file
    return model


@dataclass(frozen=True, order=True)
class FrameIndex:
    """Position of a plane in its acquisition: time, channel, z, stage position."""

    t: int = 0
    c: int = 0
    z: int = 0
    p: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"t": self.t, "c": self.c, "z": self.z, "p": self.p}


@dataclass(frozen=True)
class Frame:
    """A plane of pixels and what is known about it.

    ``stream`` names the acquisition the frame belongs to (usually the source file or dataset);
    frames of one stream share shape, dtype and pixel size.
    """

    data: np.ndarray
    index: FrameIndex = FrameIndex()
    pixel_size_um: float | None = None
    channel_name: str | None = None
    time_s: float | None = None  # acquisition time stamp relative to the stream start
    z_step_um: float | None = None  # the stack's Z spacing, where it has a Z axis
    stream: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


# ---------------------------------------------------------------------------------------------
# stacks: what a reader knows of a file, and the one way a file's plane becomes a Frame

def stream_id(stream: str) -> str:
    """A short, topic-safe id for a stream (stable across runs; the wire's topics use it)."""
    return hashlib.sha1(stream.encode("utf-8", "surrogateescape")).hexdigest()[:12]


AXIS_TO_FIELD = {"T": "t", "C": "c", "Z": "z", "P": "p"}


@dataclass(frozen=True)
class StackInfo:
    path: Path
    format: str
    axes: str  # leading axes in array order, letters from "PTCZ"
    shape: tuple[int, ...]  # sizes of the leading axes
    plane_shape: tuple[int, int]
    dtype: np.dtype[Any]
    pixel_size_um: float | None = None
    channel_names: tuple[str, ...] = ()
    time_increment_s: float | None = None
    z_step_um: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the one pixel-size rule, for every reader
        object.__setattr__(self, "pixel_size_um",
                           plausible_pixel_size(self.pixel_size_um, str(self.path)))

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def stream(self) -> str:
        return str(self.path)

    def frame_index(self, idx: tuple[int, ...]) -> FrameIndex:
        return FrameIndex(**{AXIS_TO_FIELD[a]: int(i)
                             for a, i in zip(self.axes, idx, strict=True)})

    def channel_name(self, idx: FrameIndex) -> str | None:
        return self.channel_names[idx.c] if idx.c < len(self.channel_names) else None


def make_frame(info: StackInfo, idx: tuple[int, ...], data: np.ndarray,
               time_s: float | None) -> Frame:
    """Plane ``idx`` (in ``info.axes`` order) of a file as a Frame: every reader, the live ND2
    reader and the zarr reader build their frames here (pushed frames: transport/ingest.py)."""
    findex = info.frame_index(idx)
    if time_s is None and info.time_increment_s is not None:
        time_s = findex.t * info.time_increment_s
    return Frame(data=data, index=findex, pixel_size_um=info.pixel_size_um,
                 channel_name=info.channel_name(findex), time_s=time_s, stream=info.stream,
                 source=str(info.path), z_step_um=info.z_step_um if "Z" in info.axes else None)
