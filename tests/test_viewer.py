"""The napari viewer under Xvfb with a real publisher, and the headless recorder."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tcan_live.transport.publisher import ZmqPublisher


class Publisher(threading.Thread):
    """Publishes frames like the daemon, from its own thread (which owns the socket)."""

    def __init__(self, frames: list[tuple[np.ndarray, dict[str, Any]]], rate_hz: float,
                 kinds: tuple[str, ...] = ("raw", "enhanced")) -> None:
        super().__init__(daemon=True)
        self.frames, self.rate, self.kinds = frames, rate_hz, kinds
        self.ready = threading.Event()
        self.go = threading.Event()
        self.endpoint = ""
        self.newest = -1
        self.elapsed = 0.0

    def run(self) -> None:
        pub = ZmqPublisher("tcp://127.0.0.1:*")
        self.endpoint = pub.endpoint
        self.ready.set()
        self.go.wait(30)
        t0 = time.perf_counter()
        for seq, (img, head) in enumerate(self.frames):
            pub.service()
            for kind in self.kinds:
                extra = {"uncertainty": {"score": 0.01 * seq}} if kind == "uncertainty" else {}
                pub.publish(kind, "cells", {**head, **extra, "seq": seq, "seen_at": time.time()},
                            img if kind == "enhanced" else (img / 2).astype(np.float32))
            self.newest = seq
            time.sleep(max(0.0, t0 + (seq + 1) / self.rate - time.perf_counter()))
        self.elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        pub.close()


def _frames(n: int, channels: int = 2) -> list[tuple[np.ndarray, dict[str, Any]]]:
    rng = np.random.default_rng(0)
    out = []
    for t in range(n):
        for c in range(channels):
            img = rng.random((64, 80)).astype(np.float32) + t
            out.append((img, {"index": {"t": t, "c": c, "z": 0, "p": 0}, "pixel_size_um": 0.05,
                              "channel_name": ["tubulin", "actin"][c], "stream": "cells"}))
    return out


def _pump(live: Any, until: Any, timeout: float) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)


@pytest.mark.viewer
def test_viewer_shows_live_frames_with_names_scale_and_a_screenshot(xvfb: str,
                                                                    tmp_path: Path) -> None:
    import napari

    from tcan_live.viewer.app import LiveView

    frames = _frames(10)
    pub = Publisher(frames, rate_hz=4)
    pub.start()
    pub.ready.wait(10)
    viewer = napari.Viewer(show=True)
    live = LiveView(viewer, pub.endpoint, buffer=10, fps=20)
    try:
        live.start()
        time.sleep(0.5)
        pub.go.set()
        _pump(live, lambda: pub.elapsed > 0 and len(live.layers) == 4 and all(
            st.last_seq == len(frames) - 1 - (1 - k[2]) for k, st in live.layers.items()), 30)
        names = sorted(layer.name for layer in viewer.layers)
        assert names == ["enhanced c0 tubulin", "enhanced c1 actin", "raw c0 tubulin",
                         "raw c1 actin"]
        enh0 = live.layers[("enhanced", "cells", 0)]
        assert enh0.filled >= 3  # frames appended along time (stale ones may be skipped)
        # the newest slot holds exactly the newest frame of that layer (seq 18: t=9, c=0)
        np.testing.assert_array_equal(enh0.ring[enh0.filled - 1], frames[enh0.last_seq][0])
        assert enh0.last_seq == 18
        np.testing.assert_allclose(enh0.layer.scale, (1.0, 0.05, 0.05))
        assert enh0.layer.colormap.name == "magenta"
        assert live.layers[("enhanced", "cells", 1)].layer.colormap.name == "cyan"
        from tcan_live.viewer.app import _overlays

        grid, scale_bar, text = _overlays(viewer)
        assert grid.enabled and scale_bar.visible
        assert "frames/s shown" in text.text
        shot = viewer.screenshot(canvas_only=True, flash=False)
        tifffile.imwrite(tmp_path / "shot.tif", shot)
        assert shot.ndim == 3 and shot[..., :3].std() > 5  # not a blank canvas
    finally:
        live.stop()
        viewer.close()


@pytest.mark.viewer
def test_uncertainty_is_a_toggleable_overlay_on_the_enhanced_cell(xvfb: str) -> None:
    import napari

    from tcan_live.viewer.app import LiveView, _overlays

    frames = _frames(6)
    pub = Publisher(frames, rate_hz=4, kinds=("raw", "enhanced", "uncertainty"))
    pub.start()
    pub.ready.wait(10)
    viewer = napari.Viewer(show=True)
    live = LiveView(viewer, pub.endpoint, buffer=6, fps=20)
    try:
        live.start()
        time.sleep(0.5)
        pub.go.set()
        _pump(live, lambda: pub.elapsed > 0 and len(live.layers) == 6 and all(
            st.last_seq == len(frames) - 1 - (1 - k[2]) for k, st in live.layers.items()), 30)
        unc = live.layers[("uncertainty", "cells", 0)]
        assert unc.layer.name == "uncertainty c0 tubulin"
        assert unc.layer.colormap.name == "inferno" and unc.layer.opacity == 0.5
        grid, _, text = _overlays(viewer)
        layers = list(viewer.layers)
        cell = {layer.name: grid.position(i, layers) for i, layer in enumerate(layers)}
        # each overlay shares the enhanced image's grid cell; raw is in another
        assert cell["uncertainty c0 tubulin"] == cell["enhanced c0 tubulin"] == \
            cell["uncertainty c1 actin"] == cell["enhanced c1 actin"]
        assert cell["raw c0 tubulin"] == cell["raw c1 actin"] != cell["enhanced c0 tubulin"]
        assert "uncertainty 0.1" in text.text  # the newest score (seq 10 or 11)
        assert live.toggle_uncertainty() is False
        assert not unc.layer.visible and live.layers[("enhanced", "cells", 0)].layer.visible
        assert live.toggle_uncertainty() is True and unc.layer.visible
    finally:
        live.stop()
        viewer.close()


@pytest.mark.viewer
def test_slow_viewer_shows_the_newest_frame_and_never_slows_the_publisher(xvfb: str) -> None:
    import napari

    from tcan_live.viewer.app import LiveView

    frames = _frames(90, channels=1)  # 3 s at 30 frames/s
    pub = Publisher(frames, rate_hz=30)
    pub.start()
    pub.ready.wait(10)
    viewer = napari.Viewer(show=True)
    live = LiveView(viewer, pub.endpoint, buffer=20, fps=10, draw_delay_s=0.25)
    lags: list[int] = []
    original = live.update

    def measured_update() -> None:
        newest = pub.newest
        original()
        st = live.layers.get(("enhanced", "cells", 0))
        if st is not None and newest >= 0:
            lags.append(newest - st.last_seq)

    live.update = measured_update  # type: ignore[method-assign]
    live._timer = None
    try:
        live.start()
        live._timer.timeout.disconnect()
        live._timer.timeout.connect(measured_update)
        time.sleep(0.5)
        pub.go.set()
        _pump(live, lambda: pub.elapsed > 0, 20)
        _pump(live, lambda: False, 0.8)
    finally:
        live.stop()
        viewer.close()
    assert pub.elapsed < 3.0 * 1.2  # 90 frames at 30/s: the publisher kept its pace
    assert live.stats.skipped > 30  # most frames were skipped, not queued
    assert max(lags) <= 2, lags  # each draw showed (nearly) the newest frame
    assert live.layers[("enhanced", "cells", 0)].last_seq == 89


def test_recorder_saves_every_frame_with_metadata(tmp_path: Path) -> None:
    from tcan_live.record import receive, write

    frames = _frames(5)
    pub = Publisher(frames, rate_hz=50)
    pub.start()
    pub.ready.wait(10)
    result: dict[str, Any] = {}
    th = threading.Thread(target=lambda: result.update(
        rec=receive(pub.endpoint, max_frames=len(frames), idle_s=10)))
    th.start()
    time.sleep(0.5)
    pub.go.set()
    th.join(30)
    rec = result["rec"]
    assert rec.gaps == 0
    paths = write(rec, tmp_path / "rec.ome.tif")
    with tifffile.TiffFile(paths[0]) as tif:
        data = tif.asarray()
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        desc = json.loads(tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Description"])
    assert data.shape == (5, 2, 64, 80)
    np.testing.assert_array_equal(data[3, 1], frames[7][0])
    assert ome["PhysicalSizeX"] == pytest.approx(0.05)
    assert [c["Name"] for c in ome["Channel"]] == ["tubulin", "actin"]
    assert [h["seq"] for h in desc["frames"]] == list(range(10))
    assert desc["frames"][7]["index"] == {"t": 3, "c": 1, "z": 0, "p": 0}


def test_recorder_fills_gaps_from_the_saved_output(tmp_path: Path) -> None:
    from tcan_live.export.store import OutputStore
    from tcan_live.frame import Frame, FrameIndex
    from tcan_live.record import Recording, fill_from, write

    saved = tmp_path / "saved"
    store = OutputStore(saved)
    planes = [np.full((8, 8), t, np.float32) for t in range(4)]
    for t, p in enumerate(planes):
        store.add(Frame(p, FrameIndex(t=t), stream="cells"), p, 0.05)
    store.flush()
    rec = Recording(gaps=2)
    head = {"stream": "cells", "pixel_size_um": 0.05, "index": {}}
    for t in (0, 3):
        rec.frames.setdefault("cells", {})[(t, 0, 0, 0)] = (
            planes[t], {**head, "index": {"t": t, "c": 0, "z": 0, "p": 0}, "seq": t})
    fill_from(rec, saved)
    assert rec.filled == 2
    out = tifffile.imread(write(rec, tmp_path / "r.ome.tif")[0])
    np.testing.assert_array_equal(out.reshape(4, -1)[:, 0], [0, 1, 2, 3])  # T (C, Z squeezed)


def _bind_with_retry(endpoint: str) -> ZmqPublisher:
    """A closed ZeroMQ socket releases its port asynchronously (a restarted daemon is a new
    process, where this does not arise)."""
    import zmq

    for _ in range(100):
        try:
            return ZmqPublisher(endpoint)
        except zmq.ZMQError:
            time.sleep(0.05)
    return ZmqPublisher(endpoint)


@pytest.mark.viewer
def test_viewer_reconnects_when_the_daemon_restarts(xvfb: str) -> None:
    import socket

    import napari

    from tcan_live.viewer.app import LiveView

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    viewer = napari.Viewer(show=True)
    live = LiveView(viewer, endpoint, buffer=5, fps=20)
    img = np.ones((32, 32), np.float32)
    try:
        live.start()
        for run in ("first", "second"):  # the daemon stops, then starts again on the same port
            pub = _bind_with_retry(endpoint)
            deadline = time.monotonic() + 15
            st = live.layers.get(("enhanced", "cells", 0))
            before = st.last_seq if st else -1
            seq = 0
            while time.monotonic() < deadline:
                pub.service()
                pub.publish("status", "daemon", {"run": run, "state": "running"}, cache=False)
                pub.publish("enhanced", "cells", {"seq": seq, "run": run, "index": {"c": 0},
                                                  "stream": "cells", "pixel_size_um": 0.1},
                            img * (seq + 1))
                seq += 1
                _pump(live, lambda: False, 0.1)
                st = live.layers.get(("enhanced", "cells", 0))
                if st is not None and live.stats.run == run and st.last_seq != before:
                    break
            pub.close()
            assert live.stats.run == run
        assert live.stats.restarts == 1
        assert "restarted x1" in live.status_line()
    finally:
        live.stop()
        viewer.close()
