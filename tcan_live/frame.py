"""Frame: one 2-D image plane with its indices and metadata. numpy only."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
