"""The live daemon with real watchdog, tifffile, nd2 and pyzmq; writers in separate processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import TEST_DATA, shared_path

from tcan_live.daemon import Daemon
from tcan_live.frame import Frame, FrameIndex
from tcan_live.settings import Settings
from tcan_live.transport.subscriber import FrameSubscriber
from tcan_live.transport.wire import Message

HERE = Path(__file__).resolve().parent


@pytest.fixture
def run_daemon(tiny_model: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def start(folder: Path, **kw: Any) -> tuple[Daemon, FrameSubscriber]:
        settings = Settings(folder=folder, output=tmp_path / "out", model=str(tiny_model),
                            endpoint="tcp://127.0.0.1:*", settle_s=0.4, give_up_s=3.0, **kw)
        d = Daemon(settings)
        d.start()
        started.append(d)
        while d.publisher is None:
            time.sleep(0.01)
        sub = FrameSubscriber(d.publisher.endpoint, kinds=("raw", "enhanced", "status"))
        time.sleep(0.3)
        return d, sub

    yield start
    for d in started:
        d.stop()


def collect(sub: FrameSubscriber, n: int, timeout: float = 60.0) -> dict[str, list[Message]]:
    got: dict[str, list[Message]] = {"raw": [], "enhanced": [], "status": []}
    deadline = time.monotonic() + timeout
    while len(got["enhanced"]) < n and time.monotonic() < deadline:
        msg = sub.receive(0.5)
        if msg is not None:
            got[msg.kind].append(msg)
    return got


def writer(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args])


def simulate(folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    return writer("-m", "tcan_live._cli", "simulate", str(folder), "--timelapse", "--size", "48",
                  *extra)


def keys(msgs: list[Message]) -> list[tuple[int, ...]]:
    return sorted(tuple(m.header["index"][a] for a in "tczp") for m in msgs)


Pair = tuple[Message, Message]  # (enhanced, raw) of one frame


def check_against_offline(pairs: list[Pair], tiny_model: Path) -> None:
    """Each published enhanced frame equals an offline Enhancer run on its published raw,
    and its header reports the same sr/restore.py count."""
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(tiny_model, warmup=False)
    for m, raw in pairs:
        ref = enh.enhance(raw.array, raw.header["pixel_size_in_um"])
        np.testing.assert_allclose(m.array, ref.image, rtol=1e-4, atol=1e-3)
        assert m.header["restored"] == ref.restored


def pair_up(got: dict[str, list[Message]]) -> list[Pair]:
    raws = {m.header["seq"]: m for m in got["raw"]}
    return [(m, raws[m.header["seq"]]) for m in got["enhanced"]]


# ---------------------------------------------------------------------------------------------
# every input kind: each frame exactly once, right indices, equal to offline enhancement


def test_image_per_file_series(run_daemon: Any, tmp_path: Path, tiny_model: Path) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    d, sub = run_daemon(acq)
    w = simulate(acq, "--frames", "4", "--channels", "2", "--interval", "0.3")
    got = collect(sub, 8)
    assert w.wait(30) == 0
    assert keys(got["enhanced"]) == [(t, c, 0, 0) for t in range(4) for c in range(2)]
    msgs = pair_up(got)
    assert all(m.header["pixel_size_out_um"] == pytest.approx(0.05) for m, _ in msgs)
    assert {m.header["stream"] for m, _ in msgs} == {str((acq / "timelapse").resolve())}
    check_against_offline(msgs, tiny_model)
    d.stop()
    out = tifffile.imread(tmp_path / "out" / "timelapse_tcan.ome.tif")
    assert out.shape == (4, 2, 48, 48) and np.isfinite(out).all()


def test_growing_ome_stack(run_daemon: Any, tmp_path: Path, tiny_model: Path) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    _d, sub = run_daemon(acq)
    w = simulate(acq, "--frames", "5", "--interval", "0.4", "--layout", "ome-stack")
    got = collect(sub, 5)
    assert w.wait(30) == 0
    assert keys(got["enhanced"]) == [(t, 0, 0, 0) for t in range(5)]
    msgs = pair_up(got)
    ref = tifffile.imread(acq / "timelapse.ome.tif")
    for m, raw in msgs:
        np.testing.assert_array_equal(raw.array, ref[m.header["index"]["t"]])
    check_against_offline(msgs, tiny_model)
    # frames arrived while the file was still growing, not all at the end
    seen = sorted(m.header["seen_at"] for m, _ in msgs)
    assert seen[-1] - seen[0] > 0.8


def test_nd2_being_written_then_complete(run_daemon: Any, tmp_path: Path,
                                         tiny_model: Path) -> None:
    """Byte prefixes of the real ND2 stand in for a file NIS-Elements is writing: live frames
    while it grows, the rest once it is complete; none twice, none missing."""
    import nd2

    src = TEST_DATA / "nd2" / "example-timelapse.nd2"
    acq = tmp_path / "acq"
    acq.mkdir()
    _d, sub = run_daemon(acq)
    w = writer(str(HERE / "microscope.py"), "grow", str(src), str(acq / "live.nd2"), "40000",
               "0.1")
    got = collect(sub, 53, timeout=90)
    assert w.wait(60) == 0
    assert keys(got["enhanced"]) == [(t, 0, 0, 0) for t in range(53)]
    ref = nd2.imread(src)
    msgs = pair_up(got)
    for m, raw in msgs:
        np.testing.assert_array_equal(raw.array, ref[m.header["index"]["t"]])
        assert m.header["pixel_size_in_um"] == pytest.approx(0.325)
    last = max(m.header["seen_at"] for m, _ in msgs)
    live = [m for m, _ in msgs if m.header["seen_at"] < last - 1.0]
    assert len(live) >= 10  # many frames were enhanced before the file was complete
    check_against_offline(msgs[:5], tiny_model)


@pytest.mark.shared
def test_mmstack_copied_in(run_daemon: Any, tmp_path: Path) -> None:
    src = shared_path("mmstack", "181003_multi_pos_time_course_1_MMStack.ome.tif")
    acq = tmp_path / "acq"
    acq.mkdir()
    # the file records a 5.23 um placeholder pixel size: the operator states the real one
    _d, sub = run_daemon(acq, pixel_size_um=0.1)
    w = writer(str(HERE / "microscope.py"), "copy", str(src), str(acq / src.name), "0.2")
    got = collect(sub, 20)
    assert w.wait(30) == 0
    assert keys(got["enhanced"]) == sorted((t, 0, 0, p) for t in range(10) for p in range(2))


@pytest.mark.shared
def test_ndtiff_dataset_copied_in(run_daemon: Any, tmp_path: Path) -> None:
    src = shared_path("ndtiff", "12_bit_pycromanager_mda")
    acq = tmp_path / "acq"
    acq.mkdir()
    _d, sub = run_daemon(acq, pixel_size_um=0.08)
    w = writer(str(HERE / "microscope.py"), "copy", str(src), str(acq / src.name), "0.2")
    got = collect(sub, 8)
    assert w.wait(30) == 0
    assert keys(got["enhanced"]) == sorted((t, c, 0, 0) for t in range(4) for c in range(2))


# ---------------------------------------------------------------------------------------------
# latest mode, bad input, settings


def test_latest_mode_skips_and_counts(run_daemon: Any, tmp_path: Path,
                                      rng: np.random.Generator) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    d, sub = run_daemon(acq, mode="latest")
    n = 60
    for t in range(n):  # a burst much faster than the enhancer (256 px frames)
        d.submit(Frame(rng.random((256, 256)).astype(np.float32), FrameIndex(t=t),
                       pixel_size_um=0.05, stream="burst", source="burst"))
    deadline = time.monotonic() + 60
    while d.stats.frames_done + d.queue.skipped < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.queue.skipped > 0
    assert d.stats.frames_done + d.queue.skipped == n
    got = collect(sub, d.stats.frames_done, timeout=10)
    assert got["enhanced"][-1].header["index"]["t"] == n - 1  # the newest is always processed
    status = [m for m in got["status"] if m.header.get("skipped")]
    assert not status or status[-1].header["skipped"] <= d.queue.skipped


def test_bad_inputs_never_stop_the_daemon(run_daemon: Any, tmp_path: Path,
                                          rng: np.random.Generator) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    _d, sub = run_daemon(acq, pixel_size_um=0.05)
    (acq / "zero.tif").write_bytes(b"")
    (acq / "garbage.tif").write_bytes(rng.integers(0, 255, 3000, dtype=np.uint8).tobytes())
    (acq / "cut.nd2").write_bytes((TEST_DATA / "nd2" / "example-zstack.nd2").read_bytes()[:90000])
    tifffile.imwrite(acq / "rgb.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(acq / "complex.tif", np.zeros((8, 8), np.complex64))
    good = {
        "u8.tif": rng.integers(0, 255, (40, 40), dtype=np.uint8),
        "u12.tif": rng.integers(0, 4095, (40, 40), dtype=np.uint16),
        "f32nan.tif": np.where(rng.random((40, 40)) < 0.05, np.nan,
                               rng.random((40, 40))).astype(np.float32),
        "inf.tif": np.where(rng.random((40, 40)) < 0.05, np.inf,
                            rng.random((40, 40))).astype(np.float32),
        "one.tif": np.array([[7]], np.uint16),
        "wide.tif": rng.integers(0, 999, (3, 700), dtype=np.uint16),
    }
    for name, arr in good.items():
        tifffile.imwrite(acq / name, arr)
    doomed = acq / "deleted.tif"
    tifffile.imwrite(doomed, np.zeros((8, 8), np.uint16))
    doomed.unlink()
    got = collect(sub, len(good), timeout=60)
    assert sorted(Path(m.header["source"]).name for m in got["enhanced"]) == sorted(good)
    for m in got["enhanced"]:
        assert np.isfinite(m.array).all()
    deadline = time.monotonic() + 20
    statuses = got["status"]
    errors: dict[str, str] = {}
    while time.monotonic() < deadline and len(errors) < 5:
        for msg in statuses:
            if msg.header.get("state") == "error":
                errors[Path(msg.header["file"]).name] = msg.header["reason"]
        msg = sub.receive(0.5)
        statuses = [msg] if msg is not None and msg.kind == "status" else []
    assert set(errors) == {"zero.tif", "garbage.tif", "cut.nd2", "rgb.tif", "complex.tif"}
    assert "empty" in errors["zero.tif"] and "RGB" in errors["rgb.tif"]
    assert "complex64" in errors["complex.tif"]
    # still alive and working
    tifffile.imwrite(acq / "late.tif", np.ones((20, 20), np.uint16))
    assert [Path(m.header["source"]).name for m in collect(sub, 1)["enhanced"]] == ["late.tif"]


def test_permission_denied_is_reported(run_daemon: Any, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, where chmod cannot deny reading: the OS error is injected instead."""
    acq = tmp_path / "acq"
    acq.mkdir()
    locked = acq / "locked.tif"
    tifffile.imwrite(locked, np.ones((8, 8), np.uint16))
    real_stat = Path.stat

    def stat(self: Path, *a: Any, **k: Any) -> Any:
        if self.name == "locked.tif":
            raise PermissionError(13, "Permission denied")
        return real_stat(self, *a, **k)

    monkeypatch.setattr(Path, "stat", stat)
    _d, sub = run_daemon(acq)
    deadline = time.monotonic() + 15
    reason = None
    while reason is None and time.monotonic() < deadline:
        msg = sub.receive(0.5)
        if msg is not None and msg.header.get("state") == "error":
            reason = msg.header["reason"]
    assert reason is not None and "permission denied" in reason


def test_settings_precedence_and_service_example(tmp_path: Path) -> None:
    from tcan_live.errors import ConfigError
    from tcan_live.settings import load_settings

    repo = HERE.parent
    example = load_settings(repo / "service" / "tcan-live.example.toml", env={})
    assert example.endpoint.startswith("tcp://127.0.0.1")
    cfg = tmp_path / "c.toml"
    cfg.write_text('endpoint = "tcp://127.0.0.1:6001"\nsettle_s = 5\nmode = "latest"\n')
    env = {"TCAN_LIVE_SETTLE_S": "3", "TCAN_LIVE_ENDPOINT": "tcp://127.0.0.1:6002"}
    s = load_settings(cfg, env=env, endpoint="tcp://127.0.0.1:6003")
    assert (s.endpoint, s.settle_s, s.mode) == ("tcp://127.0.0.1:6003", 3.0, "latest")
    with pytest.raises(ConfigError, match="TCAN_LIVE_SETTLE_S"):
        load_settings(None, env={"TCAN_LIVE_SETTLE_S": "-1"})
    assert load_settings(None, env={}, folder=Path("D:/acquisitions")).output_folder().name == \
        "acquisitions_tcan"
    assert example.precision == "auto"
    assert load_settings(None, env={"TCAN_LIVE_PRECISION": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="TCAN_LIVE_PRECISION"):
        load_settings(None, env={"TCAN_LIVE_PRECISION": "fp8"})


def test_watch_flags_reach_the_settings() -> None:
    from tcan_live._cli import build_parser, settings_from_args
    from tcan_live.settings import load_settings

    args = build_parser().parse_args(["watch", "D:/acquisitions", "--precision", "bf16",
                                      "--tile", "256"])
    s = settings_from_args(args)
    assert (s.precision, s.tile, s.folder) == ("bf16", 256, Path("D:/acquisitions"))
    default = settings_from_args(build_parser().parse_args(["watch", "x"]))
    assert default.precision == "auto" and default.restore is True
    assert settings_from_args(build_parser().parse_args(["watch", "x", "--no-restore"])
                              ).restore is False
    assert load_settings(None, env={"TCAN_LIVE_RESTORE": "false"}).restore is False


def test_slowly_written_single_frame_is_read_once_complete(run_daemon: Any, tmp_path: Path,
                                                           rng: np.random.Generator) -> None:
    """A big one-frame TIFF written in small chunks (a slow share): while incomplete it may look
    like anything (no IFD, or an empty series); it must be enhanced once it is complete and
    never reported as bad."""
    src = tmp_path / "src.tif"
    tifffile.imwrite(src, rng.integers(0, 4000, (1024, 1024), dtype=np.uint16),
                     metadata={"axes": "YX"}, resolution=(2e5, 2e5), resolutionunit="CENTIMETER")
    acq = tmp_path / "acq"
    acq.mkdir()
    _d, sub = run_daemon(acq, pixel_size_um=0.05)
    w = writer(str(HERE / "microscope.py"), "grow", str(src), str(acq / "big.tif"), "65536",
               "0.05", "600")
    got = collect(sub, 1, timeout=90)
    assert w.wait(60) == 0
    assert [Path(m.header["source"]).name for m in got["enhanced"]] == ["big.tif"]
    errors = [m for m in got["status"] if m.header.get("state") == "error"]
    assert not errors, [m.header["reason"] for m in errors]
    np.testing.assert_array_equal(got["raw"][0].array, tifffile.imread(src))


@pytest.mark.slow
def test_tiffs_written_in_place_are_never_rejected_half_written(run_daemon: Any,
                                                                tmp_path: Path) -> None:
    """tifffile writes a page's IFD with placeholder values and patches them after the pixels;
    a scan in between sees an empty series. Seen once in a benchmark (a frame reported as
    'unsupported TIFF layout' and lost): such a file must be retried, not rejected."""
    acq = tmp_path / "acq"
    acq.mkdir()
    _d, sub = run_daemon(acq, pixel_size_um=0.05)
    n = 5
    w = writer(str(HERE / "microscope.py"), "tiffs", str(acq), str(n), "1536", "0.3")
    got = collect(sub, n, timeout=240)
    assert w.wait(120) == 0
    assert sorted(m.header["index"]["t"] for m in got["enhanced"]) == list(range(n))
    errors = [m.header["reason"] for m in got["status"] if m.header.get("state") == "error"]
    assert not errors, errors


def test_unsupported_looking_file_is_final_only_once_quiet_or_closed(tmp_path: Path) -> None:
    """Deterministic core of the case above: while a file may still be written, 'unsupported'
    is treated as 'not complete yet' (a half-written ImageJ or OME file can look unsupported,
    and a slow writer may pause longer than the settle window); the file is reported once its
    writer closed it, or once it has been quiet for give_up_s."""
    from tcan_live.sources.folder import FolderSource, Tracked

    errors: list[tuple[Path, str]] = []
    src = FolderSource(tmp_path, emit=lambda f: None, on_error=lambda p, r: errors.append((p, r)),
                       settle_s=0.2, give_up_s=1.0)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    t = Tracked(rgb)
    src._scan(t)  # just written (last change = now): not settled
    assert errors == [] and t.failed and not t.reported
    time.sleep(0.4)
    src._scan(t)  # settled, but a writer may only be pausing
    assert errors == [] and t.failed and not t.reported
    time.sleep(0.7)
    src._scan(t)  # quiet for give_up_s
    assert [p.name for p, _ in errors] == ["rgb.tif"] and "RGB" in errors[0][1]
    errors.clear()
    closed = Tracked(rgb, closed=True)  # the writer closed it: final once settled
    time.sleep(0.3)
    src._scan(closed)
    assert [p.name for p, _ in errors] == ["rgb.tif"]


@pytest.mark.shared
def test_ndtiff_dataset_whose_index_grows(run_daemon: Any, tmp_path: Path) -> None:
    """Micro-Manager's NDTiff writer appends an index entry per image. The real dataset's index
    is grown here half an entry at a time (the image file is already there, as Micro-Manager
    preallocates it): frames come while it grows, each once, with stable indices."""
    import shutil

    src = shared_path("ndtiff", "12_bit_pycromanager_mda")
    acq = tmp_path / "acq"
    ds = acq / "mda_1"
    ds.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "NDTiff.index":
            shutil.copy(f, ds / f.name)
    _d, sub = run_daemon(acq, pixel_size_um=0.08)
    entry = (src / "NDTiff.index").stat().st_size // 8
    w = writer(str(HERE / "microscope.py"), "grow", str(src / "NDTiff.index"),
               str(ds / "NDTiff.index"), str(entry // 2), "0.4")
    got = collect(sub, 8, timeout=60)
    assert w.wait(60) == 0
    assert keys(got["enhanced"]) == sorted((t, c, 0, 0) for t in range(4) for c in range(2))
    seen = sorted(m.header["seen_at"] for m in got["enhanced"])
    assert seen[-1] - seen[0] > 1.5  # frames came while the index grew
    errors = [m.header["reason"] for m in got["status"] if m.header.get("state") == "error"]
    assert not errors, errors
