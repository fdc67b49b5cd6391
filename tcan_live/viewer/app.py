"""``tcan-live view``: napari window with raw and enhanced frames, live (optional extra).

A receiver thread decodes messages off the GUI thread and keeps only the newest pending frame
per layer; a Qt timer applies them to the layers (at most ``fps`` times a second). A slow
redraw therefore skips stale frames instead of falling behind. Each layer holds a ring buffer
of the last ``buffer`` frames along the time axis. Raw and enhanced are side by side (napari
grid mode); channel 0 is magenta and channel 1 cyan (the paper's microtubules / actin
convention), one channel is grey. Contrast limits follow the data slowly so they stay stable.
The scale bar uses the frames' pixel size. The ZeroMQ socket reconnects by itself when the
daemon restarts; the status line says so.

When the daemon publishes uncertainty maps (``watch --uncertainty``, protocol version 2), each
is an overlay on the enhanced image of its channel (colormap ``inferno``, additive, half
opaque): brighter = less certain. The key ``u`` (or the layer's eye icon) toggles the overlay;
the status line shows the newest frame's uncertainty score.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tcan_live.transport.subscriber import FrameSubscriber
from tcan_live.transport.wire import Message

if TYPE_CHECKING:
    from tcan_live.commands import ViewOptions

COLORMAPS = ("magenta", "cyan")
UNCERTAINTY_COLORMAP = "inferno"
KINDS_ORDER = ("raw", "enhanced", "uncertainty")


def _overlays(viewer: Any) -> tuple[Any, Any, Any]:
    """(grid, scale bar, text overlay): napari >= 0.9 keeps them on ``viewer.canvas``."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "grid"):
        return canvas.grid, canvas.overlays.scale_bar, canvas.overlays.text
    return viewer.grid, viewer.scale_bar, viewer.text_overlay


@dataclass
class LayerState:
    ring: np.ndarray
    filled: int = 0
    limits: tuple[float, float] | None = None
    last_seq: int = -1
    layer: Any = None


@dataclass
class ViewStats:
    received: int = 0
    shown: int = 0
    skipped: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    shown_times: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    daemon: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    restarts: int = 0
    uncertainty: float | None = None  # the newest frame's uncertainty score


class LiveView:
    """Connects a napari viewer to a daemon. ``start()`` begins receiving and updating."""

    def __init__(self, viewer: Any, endpoint: str, *, buffer: int = 50, fps: float = 10.0,
                 draw_delay_s: float = 0.0, curve_keys: Any = None) -> None:
        self.viewer, self.endpoint = viewer, endpoint
        self.buffer, self.fps, self.draw_delay_s = buffer, fps, draw_delay_s
        self.curve_keys = curve_keys
        self.layers: dict[tuple[str, str, int], LayerState] = {}
        self.stats = ViewStats()
        self._pending: dict[tuple[str, str, int], Message] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="tcan-view-recv", daemon=True)
        self._timer: Any = None
        self.show_uncertainty = True
        self._spacers: list[Any] = []  # invisible layers that keep grid cells aligned

    # -- receiver thread ---------------------------------------------------------------------
    def _receive(self) -> None:
        sub = FrameSubscriber(self.endpoint, rcvhwm=4, curve_keys=self.curve_keys,
                              kinds=("raw", "enhanced", "uncertainty", "status"))
        try:
            while not self._stop.is_set():
                msg = sub.receive(0.2)
                if msg is None:
                    continue
                if msg.kind == "status":
                    self._status(msg.header)
                    continue
                self.stats.received += 1
                if msg.kind == "uncertainty":
                    self.stats.uncertainty = (msg.header.get("uncertainty") or {}).get("score")
                key = (msg.kind, str(msg.header.get("stream", "")),
                       int(msg.header.get("index", {}).get("c", 0)))
                with self._lock:
                    if key in self._pending:
                        self.stats.skipped += 1  # a newer frame came before we could draw
                    self._pending[key] = msg
        finally:
            sub.close()

    def _status(self, header: dict[str, Any]) -> None:
        run = header.get("run")
        if self.stats.run is not None and run != self.stats.run:
            self.stats.restarts += 1
        self.stats.run = run
        self.stats.daemon = header

    # -- GUI thread --------------------------------------------------------------------------
    def start(self) -> None:
        from qtpy.QtCore import QTimer

        self.grid, scale_bar, self.text = _overlays(self.viewer)
        self.grid.enabled = True
        scale_bar.visible = True
        self.text.visible = True
        self.viewer.bind_key("u", lambda _viewer: self.toggle_uncertainty(), overwrite=True)
        self._thread.start()
        self._timer = QTimer()
        self._timer.timeout.connect(self.update)
        self._timer.start(int(1000 / self.fps))

    def toggle_uncertainty(self) -> bool:
        """Show or hide every uncertainty overlay; returns whether they are now shown."""
        self.show_uncertainty = not self.show_uncertainty
        for key, st in self.layers.items():
            if key[0] == "uncertainty":
                st.layer.visible = self.show_uncertainty
        return self.show_uncertainty

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._stop.set()
        self._thread.join(timeout=5)

    def update(self) -> None:
        """Apply the newest pending frame of every layer (called by the timer)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for key in sorted(pending):  # raw before enhanced: stable grid order
            self._show(key, pending[key])
        if pending and self.draw_delay_s:
            time.sleep(self.draw_delay_s)  # test hook: a slow display
        self.text.text = self.status_line()

    def _show(self, key: tuple[str, str, int], msg: Message) -> None:
        assert msg.array is not None
        img = np.asarray(msg.array, np.float32)
        st = self.layers.get(key)
        if st is None or st.ring.shape[1:] != img.shape:
            st = self._new_layer(key, msg, img.shape)
        if st.filled < self.buffer:
            st.ring[st.filled] = img
            st.filled += 1
        else:
            st.ring[:-1] = st.ring[1:]
            st.ring[-1] = img
        lo, hi = np.percentile(img, [0.5, 99.8])
        if st.limits is None:
            st.limits = (float(lo), float(max(hi, lo + 1e-6)))
        else:  # follow slowly: no flicker from frame to frame
            a = 0.1
            st.limits = ((1 - a) * st.limits[0] + a * lo, (1 - a) * st.limits[1] + a * hi)
        st.layer.contrast_limits = st.limits
        st.layer.refresh()
        st.last_seq = int(msg.header.get("seq", -1))
        self.viewer.dims.set_current_step(0, st.filled - 1)
        self.stats.shown += 1
        now = time.time()
        self.stats.shown_times.append(now)
        if msg.header.get("seen_at"):
            self.stats.latencies_ms.append(1000 * (now - float(msg.header["seen_at"])))

    def _new_layer(self, key: tuple[str, str, int], msg: Message,
                   shape: tuple[int, ...]) -> LayerState:
        kind, _, c = key
        px = msg.header.get("pixel_size_um") or 1.0
        n_channels = 1 + max([k[2] for k in self.layers if k[1] == key[1]] + [c])
        name = f"{kind} c{c}" + (f" {msg.header['channel_name']}"
                                 if msg.header.get("channel_name") else "")
        ring = np.zeros((self.buffer, *shape), np.float32)
        colormap = COLORMAPS[c % 2] if n_channels > 1 or c > 0 else "gray"
        if kind == "uncertainty":
            colormap = UNCERTAINTY_COLORMAP
        layer = self.viewer.add_image(ring, name=name, colormap=colormap,
                                      blending="additive", scale=(1.0, px, px),
                                      units=("s", "um", "um"),
                                      opacity=0.5 if kind == "uncertainty" else 1.0,
                                      visible=kind != "uncertainty" or self.show_uncertainty)
        st = LayerState(ring=ring, layer=layer)
        self.layers[key] = st
        if c == 1 and kind != "uncertainty":  # a second channel: channel 0 becomes magenta
            first = self.layers.get((kind, key[1], 0))
            if first is not None:
                first.layer.colormap = COLORMAPS[0]
        self._order_layers()
        return st

    def _order_layers(self) -> None:
        """raw c0, raw c1, ..., enhanced c0, ...: with grid stride = channels, each grid cell
        is one kind (raw | enhanced) with its channels overlaid. With uncertainty overlays the
        enhanced cell also holds them (stride = 2 x channels), and the raw cell is padded with
        invisible spacer layers to keep the cells aligned."""
        n = max(1, len({k[2] for k in self.layers}))
        has_unc = any(k[0] == "uncertainty" for k in self.layers)
        n_raw = sum(k[0] == "raw" for k in self.layers)
        pad = 2 * n - n_raw if has_unc else 0
        while len(self._spacers) < pad:
            self._spacers.append(self.viewer.add_image(
                np.zeros((1, 1), np.float32), name=f"(grid spacer {len(self._spacers)})",
                visible=False))
        order = sorted(self.layers, key=lambda k: (KINDS_ORDER.index(k[0]), k[1], k[2]))
        raw = [self.layers[k].layer for k in order if k[0] == "raw"]
        rest = [self.layers[k].layer for k in order if k[0] != "raw"]
        wanted = raw + self._spacers[:pad] + rest
        for i, layer in enumerate(wanted):
            j = self.viewer.layers.index(layer)
            if j != i:
                self.viewer.layers.move(j, i)
        self.grid.stride = 2 * n if has_unc else n

    def status_line(self) -> str:
        s = self.stats
        lat = np.median(s.latencies_ms) if s.latencies_ms else float("nan")
        times = list(s.shown_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] \
            else 0.0
        d = s.daemon
        daemon = (f"daemon {d.get('state', '?')}: {d.get('frames_done', 0)} done, "
                  f"{d.get('errors', 0)} errors" if d else "waiting for the daemon")
        restart = f", restarted x{s.restarts}" if s.restarts else ""
        unc = f" | uncertainty {s.uncertainty:.3f}" if s.uncertainty is not None else ""
        return (f"latency {lat:.0f} ms | {fps:.1f} frames/s shown | {s.skipped} skipped | "
                f"{daemon}{restart}{unc}")


def run_view(args: ViewOptions) -> int:
    """``tcan-live view``: a napari window on the daemon's stream until it is closed."""
    try:
        import napari
    except ImportError:
        print("tcan-live view needs the viewer extra: pip install 'tcan-live[viewer]'")
        return 2
    viewer = napari.Viewer(title=f"tcan-live: {args.address}")
    live = LiveView(viewer, args.address, buffer=args.buffer, fps=args.fps,
                    curve_keys=args.curve_keys)
    live.start()
    try:
        napari.run()
    finally:
        live.stop()
    return 0
