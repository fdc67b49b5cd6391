"""Frame: one 2-D image plane with its indices and metadata. numpy only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PIXEL_SIZE_RANGE_UM = (1e-3, 100.0)  # a file's pixel size outside this is not believed


def plausible_pixel_size(value: object) -> float | None:
    """The rule for a pixel size read from a file: a finite number in
    :data:`PIXEL_SIZE_RANGE_UM` (um), else unknown (0, negative, NaN and absurd values)."""
    try:
        px = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    lo, hi = PIXEL_SIZE_RANGE_UM
    return px if lo <= px <= hi else None


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
    stream: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)
