"""Micro-Manager adapters: map Micro-Manager metadata to frame metadata and push frames.

Index mapping (Micro-Manager -> tcan-live): time -> t, channel -> c (channel names numbered in
order of first appearance, unless an index is given), z -> z, position -> p. Pixel size from the
image metadata (``PixelSizeUm``; pymmcore-plus: ``pixel_size_um``, i.e. the core's pixel size
configuration), elapsed time from ``ElapsedTime-ms`` (pymmcore-plus: ``runner_time_ms``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tcan_live.transport.ingest import DEFAULT_INGEST, FrameForwarder

log = logging.getLogger(__name__)


class _ChannelNumbers:
    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def __call__(self, value: Any) -> tuple[int, str | None]:
        if value is None:
            return 0, None
        if isinstance(value, int | np.integer):
            return int(value), None
        name = str(value)
        return self.numbers.setdefault(name, len(self.numbers)), name


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class PycromanagerHook:
    """``image_process_fn`` for pycromanager: 2-argument and 3-argument forms.

        from tcan_live.micromanager import pycromanager_hook
        with Acquisition(directory="D:/data", name="run", image_process_fn=pycromanager_hook()):
            ...

    Returns ``(image, metadata)`` unchanged, so Micro-Manager still saves the frame itself; the
    copy sent to the daemon is dropped (and counted in ``dropped``) if the daemon is absent or
    busy. It never raises into the acquisition.
    """

    def __init__(self, endpoint: str = DEFAULT_INGEST, *, stream: str = "micromanager",
                 hwm: int = 8) -> None:
        self.forwarder = FrameForwarder(endpoint, hwm=hwm)
        self.stream = stream
        self._channels = _ChannelNumbers()

    @property
    def sent(self) -> int:
        return self.forwarder.sent

    @property
    def dropped(self) -> int:
        return self.forwarder.dropped

    def header(self, metadata: dict[str, Any]) -> dict[str, Any]:
        axes = metadata.get("Axes") or {}
        c, name = self._channels(axes.get("channel"))
        px = _num(metadata.get("PixelSizeUm") or metadata.get("PixelSize_um"))
        t_ms = _num(metadata.get("ElapsedTime-ms"))
        return {"stream": self.stream, "source": f"micromanager:{self.stream}",
                "index": {"t": int(axes.get("time", 0) or 0), "c": c,
                          "z": int(axes.get("z", 0) or 0),
                          "p": int(axes.get("position", 0) or 0)},
                "channel_name": name or metadata.get("Channel"),
                "pixel_size_um": px if px and px > 0 else None,
                "time_s": t_ms / 1000 if t_ms is not None else None}

    def __call__(self, image: Any, metadata: Any, event_queue: Any = None) -> Any:
        try:
            self.forwarder.send(np.asarray(image), self.header(dict(metadata)))
        except Exception:  # the acquisition must never see our problems
            self.forwarder.errors += 1
            self.forwarder.dropped += 1
        return image, metadata

    def close(self) -> None:
        self.forwarder.close()


def pycromanager_hook(endpoint: str = DEFAULT_INGEST, stream: str = "micromanager"
                      ) -> PycromanagerHook:
    return PycromanagerHook(endpoint, stream=stream)


class PymmcoreForwarder:
    """Listener for ``core.mda.events.frameReady(img, event, meta)`` of pymmcore-plus."""

    def __init__(self, endpoint: str = DEFAULT_INGEST, *, stream: str = "pymmcore") -> None:
        self.forwarder = FrameForwarder(endpoint)
        self.stream = stream
        self._core: Any = None

    def header(self, event: Any, meta: dict[str, Any]) -> dict[str, Any]:
        idx = {str(getattr(k, "value", k)): int(v) for k, v in dict(event.index).items()}
        px = _num(meta.get("pixel_size_um"))
        t_ms = _num(meta.get("runner_time_ms"))
        channel = getattr(getattr(event, "channel", None), "config", None)
        return {"stream": self.stream, "source": f"pymmcore-plus:{self.stream}",
                "index": {k: idx.get(k, 0) for k in "tczp"}, "channel_name": channel,
                "pixel_size_um": px if px and px > 0 else None,
                "time_s": t_ms / 1000 if t_ms is not None else None}

    def frame_ready(self, img: Any, event: Any, meta: Any = None) -> None:
        try:
            self.forwarder.send(np.asarray(img), self.header(event, dict(meta or {})))
        except Exception:
            self.forwarder.errors += 1
            self.forwarder.dropped += 1

    def detach(self) -> None:
        if self._core is not None:
            self._core.mda.events.frameReady.disconnect(self.frame_ready)
            self._core = None
        self.forwarder.close()


def attach_pymmcore(core: Any, endpoint: str = DEFAULT_INGEST, *, stream: str = "pymmcore"
                    ) -> PymmcoreForwarder:
    """Forward every frame of ``core``'s MDA runs; call ``.detach()`` when done."""
    fwd = PymmcoreForwarder(endpoint, stream=stream)
    core.mda.events.frameReady.connect(fwd.frame_ready)
    fwd._core = core
    return fwd
