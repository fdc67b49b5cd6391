"""tcan-live: live TCAN super-resolution next to a confocal microscope."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("tcan-live")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.transport.subscriber import FrameSubscriber

from tcan_live.errors import ModelError, ReadError, TcanError, UnsupportedInputError
from tcan_live.frame import Frame, FrameIndex

_LAZY = {
    "Enhancer": "tcan_live.sr.enhancer",
    "FrameSubscriber": "tcan_live.transport.subscriber",
}


def __getattr__(name: str) -> Any:
    """Torch- and zmq-backed names load on first use, so ``import tcan_live`` stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tcan_live' has no attribute {name!r}")


__all__ = [
    "Enhancer",
    "Frame",
    "FrameIndex",
    "FrameSubscriber",
    "ModelError",
    "ReadError",
    "TcanError",
    "UnsupportedInputError",
    "__version__",
]
