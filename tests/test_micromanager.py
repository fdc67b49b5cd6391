"""Micro-Manager stream: a real pymmcore-plus MDA (pure-Python camera, no hardware) and the
pycromanager hook's contract, feeding the daemon's ingest endpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymmcore_plus")

import useq
from pymmcore_plus.experimental.unicore import (
    GenericDevice,
    SimpleCameraDevice,
    StageDevice,
    UniMMCore,
    pymm_property,
)

from tcan_live.daemon import Daemon
from tcan_live.micromanager import attach_pymmcore, pycromanager_hook
from tcan_live.settings import Settings
from tcan_live.transport.subscriber import FrameSubscriber


class Camera(SimpleCameraDevice):
    """A pure-Python camera: noisy frames of a fixed size."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self._size, self._exposure = size, 5.0
        rng = np.random.default_rng(0)
        self._frames = [rng.poisson(200, (size, size)).astype(np.uint16) for _ in range(3)]
        self._n = 0

    def sensor_shape(self) -> tuple[int, int]:
        return (self._size, self._size)

    def dtype(self) -> Any:
        return np.uint16

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = exposure

    def snap(self, buffer: np.ndarray) -> dict[str, Any]:
        self._n += 1
        buffer[:] = self._frames[self._n % 3]  # cheap: the camera itself must not be the limit
        return {}


class Focus(StageDevice):
    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0

    def set_position_um(self, val: float) -> None:
        self._z = val

    def get_position_um(self) -> float:
        return self._z

    def home(self) -> None: ...

    def stop(self) -> None: ...

    def set_origin(self) -> None: ...


class FilterWheel(GenericDevice):
    _label = "DAPI"

    @pymm_property(allowed_values=["DAPI", "FITC"])
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        self._label = value


def make_core(size: int = 64, pixel_um: float = 0.065) -> UniMMCore:
    core = UniMMCore()
    for label, dev in (("Camera", Camera(size)), ("Z", Focus()), ("Filter", FilterWheel())):
        core.loadPyDevice(label, dev)
        core.initializeDevice(label)
    core.setCameraDevice("Camera")
    core.setFocusDevice("Z")
    for ch in ("DAPI", "FITC"):
        core.defineConfig("Channel", ch, "Filter", "label", ch)
    core.setChannelGroup("Channel")
    core.definePixelSizeConfig("px")
    core.setPixelSizeUm("px", pixel_um)
    core.setPixelSizeConfig("px")
    core.setAutoShutter(False)
    return core


@pytest.fixture
def ingest_daemon(tiny_model: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    d = Daemon(Settings(ingest="tcp://127.0.0.1:*", output=tmp_path / "out",
                        model=str(tiny_model), endpoint="tcp://127.0.0.1:*", queue_size=64))
    d.start()
    while d.publisher is None:
        time.sleep(0.01)
    yield d
    d.stop()


def _ingest_endpoint(d: Daemon) -> str:
    return str(d.sources[0].bound)


def test_real_mda_reaches_the_subscriber_once_with_metadata(ingest_daemon: Daemon) -> None:
    core = make_core()
    sub = FrameSubscriber(ingest_daemon.publisher.endpoint, kinds=("enhanced",))
    fwd = attach_pymmcore(core, _ingest_endpoint(ingest_daemon), stream="mda")
    try:
        time.sleep(0.3)
        seq = useq.MDASequence(time_plan={"interval": 0.2, "loops": 3},
                               z_plan={"range": 2, "step": 1}, channels=["DAPI", "FITC"],
                               axis_order="tpcz")
        core.mda.run(seq)
        got = []
        while len(got) < 18 and (msg := sub.receive(20.0)) is not None:
            got.append(msg.header)
    finally:
        fwd.detach()
        sub.close()
    assert fwd.forwarder.dropped == 0 and fwd.forwarder.sent == 18
    keys = sorted((h["index"]["t"], h["index"]["c"], h["index"]["z"]) for h in got)
    assert keys == [(t, c, z) for t in range(3) for c in range(2) for z in range(3)]
    assert {h["channel_name"] for h in got} == {"DAPI", "FITC"}
    assert all(h["pixel_size_in_um"] == pytest.approx(0.065) for h in got)
    t0 = {h["index"]["t"]: h["acquired_s"] for h in got if h["index"]["c"] == h["index"]["z"] == 0}
    assert t0[1] - t0[0] == pytest.approx(0.2, abs=0.08)  # elapsed time from the runner
    assert t0[2] - t0[1] == pytest.approx(0.2, abs=0.08)


def _frame_times(core: UniMMCore, loops: int, interval: float) -> np.ndarray:
    times: list[float] = []
    core.mda.events.frameReady.connect(lambda img, ev, meta: times.append(time.perf_counter()))
    core.mda.run(useq.MDASequence(time_plan={"interval": interval, "loops": loops}))
    return np.diff(times)


def test_acquisition_keeps_its_interval_when_the_daemon_is_stopped() -> None:
    core = make_core(size=512)
    fwd = attach_pymmcore(core, "tcp://127.0.0.1:5")  # nobody listens there
    try:
        gaps = _frame_times(core, 12, 0.1)
    finally:
        fwd.detach()
    assert np.median(gaps) == pytest.approx(0.1, abs=0.02) and gaps.max() < 0.2
    assert fwd.forwarder.sent == 0 and fwd.forwarder.dropped == 12


def test_acquisition_keeps_its_interval_when_the_daemon_is_busy(
        tiny_model: Path, tmp_path: Path) -> None:
    """1024 px frames every 0.15 s (40 of them), more than the daemon enhances on 2 cores: the
    daemon falls behind and frames are dropped, but the acquisition's timing is that of a run
    without it."""
    baseline = _frame_times(make_core(size=1024), 15, 0.15)
    d = Daemon(Settings(ingest="tcp://127.0.0.1:*", output=tmp_path / "o", model=str(tiny_model),
                        endpoint="tcp://127.0.0.1:*", queue_size=1))
    d.start()
    core = make_core(size=1024)
    fwd = attach_pymmcore(core, _ingest_endpoint(d))
    try:
        gaps = _frame_times(core, 40, 0.15)
        done = d.stats.frames_done
    finally:
        fwd.detach()
        d.stop()
    assert np.median(gaps) == pytest.approx(0.15, abs=0.03)
    assert np.median(gaps) == pytest.approx(np.median(baseline), abs=0.03)
    assert done < 40  # the daemon really was behind
    assert fwd.forwarder.dropped > 0  # what it could not take was dropped, not waited for
    assert fwd.forwarder.sent + fwd.forwarder.dropped == 40


def _mm_metadata(t: int, channel: str, z: int) -> dict[str, Any]:
    """Image metadata as pycromanager's acquisition engines hand it to image_process_fn."""
    return {"Axes": {"time": t, "channel": channel, "z": z}, "PixelSizeUm": 0.08,
            "ElapsedTime-ms": 150.0 * t, "Channel": channel, "Width": 32, "Height": 32}


@pytest.mark.parametrize("three_args", [False, True])
def test_pycromanager_hook_contract_without_a_daemon(three_args: bool) -> None:
    hook = pycromanager_hook("tcp://127.0.0.1:5")  # nobody listens there
    img = np.ones((32, 32), np.uint16)
    try:
        t0 = time.perf_counter()
        for t in range(20):
            md = _mm_metadata(t, "DAPI", 0)
            out = hook(img, md, object()) if three_args else hook(img, md)
            assert out[0] is img and out[1] is md  # unchanged: Micro-Manager saves as usual
        assert (time.perf_counter() - t0) / 20 < 0.05  # never waits for the daemon
        assert hook.dropped == 20 and hook.sent == 0
        # garbage in: still no exception into the acquisition
        assert hook(np.zeros((2, 3, 4)), {"Axes": None})[1] == {"Axes": None}
        assert hook.dropped == 21
    finally:
        hook.close()


def test_pycromanager_hook_delivers_with_mapped_indices(ingest_daemon: Daemon) -> None:
    sub = FrameSubscriber(ingest_daemon.publisher.endpoint, kinds=("raw",))
    hook = pycromanager_hook(_ingest_endpoint(ingest_daemon), stream="pm")
    try:
        time.sleep(0.3)
        for t in range(2):
            for c in ("DAPI", "FITC"):
                hook(np.full((32, 32), 100 + t, np.uint16), _mm_metadata(t, c, 1))
        got = []
        while len(got) < 4 and (msg := sub.receive(10.0)) is not None:
            got.append(msg.header)
    finally:
        hook.close()
        sub.close()
    assert hook.sent == 4
    assert sorted((h["index"]["t"], h["index"]["c"], h["index"]["z"]) for h in got) == [
        (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]
    assert {h["channel_name"] for h in got} == {"DAPI", "FITC"}
    assert all(h["pixel_size_in_um"] == pytest.approx(0.08) for h in got)
    assert sorted(h["acquired_s"] for h in got)[-1] == pytest.approx(0.15)
