"""Issue 21: no input stops the daemon, a frame's identity never changes, nothing is written
outside its folder. Real sockets, real files, a real daemon (tiny random model)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zmq
from conftest import rss_mb, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcan_live.errors import ConfigError, ProtocolError
from tcan_live.frame import Frame, FrameIndex
from tcan_live.transport import wire


@pytest.fixture
def daemon(make_daemon: Callable[..., Any]) -> Callable[..., Any]:
    return make_daemon


def _ingest_endpoint(d: Any) -> str:
    return str(d.sources[-1].bound)


# ---------------------------------------------------------------------------------------------
# 0. nothing stops the daemon; a dead thread stops the process


class _Boom(BaseException):
    """Not an Exception: escapes every per-item handler, as a bug in a thread's loop would."""


def test_a_dead_worker_thread_makes_the_daemon_exit_non_zero(daemon: Any, tmp_path: Path) -> None:
    d = daemon(ingest="tcp://127.0.0.1:*")

    def broken(*a: Any, **k: Any) -> Any:
        raise _Boom("worker bug")

    d.enhancer.enhance = broken
    d.submit(Frame(np.zeros((16, 16), np.float32), stream="s", source="s"))
    t0 = time.monotonic()
    assert d.run_until_stopped(tick_s=5.0) == 70
    assert time.monotonic() - t0 < 3.0  # at once, not at the next check
    assert d.failed is not None and "tcan-worker" in d.failed and "worker bug" in d.failed
    assert d.status()["failed"] == d.failed


def test_a_dead_scanner_thread_makes_the_daemon_exit_non_zero(daemon: Any,
                                                               tmp_path: Path) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq)

    def broken(t: Any) -> None:
        raise _Boom("scanner bug")

    d.sources[0]._scan = broken
    tifffile.imwrite(acq / "a.tif", np.zeros((8, 8), np.uint16))
    assert d.run_until_stopped(tick_s=5.0) == 70
    assert "tcan-folder-scan" in str(d.failed)


def test_a_thread_gone_silently_is_noticed(daemon: Any, tmp_path: Path) -> None:
    d = daemon(ingest="tcp://127.0.0.1:*")
    d.sources[0]._stop.set()  # the ingest loop ends without an exception
    assert d.run_until_stopped(tick_s=0.2) == 70
    assert "tcan-ingest" in str(d.failed)


def test_watch_cli_exits_non_zero_when_refused(tmp_path: Path) -> None:
    """`--allow-remote` without CURVE keys is refused (exit 2, one line naming the fix)."""
    r = subprocess.run([sys.executable, "-m", "tcan_live._cli", "watch", str(tmp_path),
                        "--endpoint", "tcp://0.0.0.0:0", "--allow-remote", "--no-panel"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--curve-keys" in r.stderr and "--insecure" in r.stderr


def test_insecure_is_explicit_and_announced(daemon: Any, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings

    with pytest.raises(ConfigError, match="insecure"):
        Daemon(Settings(folder=tmp_path, allow_remote=True))
    d = daemon(folder=tmp_path, allow_remote=True, insecure=True,
               endpoint="tcp://0.0.0.0:*")
    assert d.status()["insecure"] is True
    assert "INSECURE" in caplog.text


# ---------------------------------------------------------------------------------------------
# names: long, non-UTF-8, colliding, hostile


def test_long_and_non_utf8_names_are_enhanced_and_saved_once(daemon: Any,
                                                            tmp_path: Path) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq)
    long_name = "x" * 245 + ".tif"  # 249 bytes
    assert len(long_name.encode()) == 249
    tifffile.imwrite(acq / long_name, np.ones((24, 24), np.uint16))
    raw_name = os.fsdecode(b"caf\xe9-latin1.tif")  # not UTF-8
    tifffile.imwrite(acq / raw_name, np.ones((24, 24), np.uint16))
    tifffile.imwrite(acq / "after.tif", np.ones((24, 24), np.uint16))
    assert wait_for(lambda: d.stats.frames_done == 3, 60), d.status()
    d.store.flush()
    outs = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file())
    assert len(outs) == 3 and "after_tcan.ome.tif" in outs
    assert all(len(os.fsencode(n)) <= 255 for n in outs)
    assert d.stats.errors == 0 and not d.dead_threads()


def test_stacks_that_map_to_one_name_get_distinct_outputs(daemon: Any, tmp_path: Path) -> None:
    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq)
    tifffile.imwrite(acq / "x.tif", np.full((2, 16, 16), 1, np.uint16))
    tifffile.imwrite(acq / "x.ome.tif", np.full((3, 16, 16), 2, np.uint16),
                     metadata={"axes": "TYX"})
    tifffile.imwrite(acq / "x_t0000.tif", np.full((16, 16), 3, np.uint16))
    assert wait_for(lambda: d.stats.frames_done == 6, 60), d.status()
    d.store.flush()
    outs = sorted((tmp_path / "out").glob("*.ome.tif"))
    assert len(outs) == 3, outs
    shapes = sorted(tifffile.imread(p).shape for p in outs)
    assert shapes == [(2, 16, 16), (3, 16, 16), (16, 16)]
    # the chosen names are in the journal: a restarted store keeps them
    from tcan_live.export.store import read_journal

    names = {e["output"].name for e in read_journal(tmp_path / "out").values()}
    assert names == {p.name for p in outs}


def test_hostile_stream_names_never_escape_the_output_folder(daemon: Any,
                                                             tmp_path: Path) -> None:
    from tcan_live.transport.ingest import FrameForwarder

    d = daemon(ingest="tcp://127.0.0.1:*")
    fwd = FrameForwarder(_ingest_endpoint(d))
    img = np.ones((16, 16), np.uint16)
    hostile = [f"{tmp_path}/../escape/evil", "../../x", "a\x00b", "n" * 300, "/etc/passwd",
               "..", ".hidden", "a/b"]
    for name in hostile:
        assert wait_for(lambda n=name: fwd.send(img, {"stream": n}), 5)
    assert wait_for(lambda: fwd.send(img, {"stream": "good"}), 5)
    assert wait_for(lambda: d.stats.frames_done == 1, 30)
    assert wait_for(lambda: d.sources[0].rejected == len(hostile), 10)
    fwd.close()
    d.store.flush()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all((tmp_path / "out") in p.parents for p in written), written
    assert (tmp_path / "out" / "ingest" / "good_tcan.ome.tif").is_file()
    assert not (tmp_path / "escape").exists()


def test_two_daemons_on_one_output_folder_are_refused(daemon: Any, tmp_path: Path) -> None:
    from tcan_live.export.store import OutputStore

    a = tmp_path / "a"
    a.mkdir()
    daemon(folder=a)
    in_use = f"in use by another tcan-live daemon \\(pid {os.getpid()}"
    with pytest.raises(ConfigError, match=in_use):
        OutputStore(tmp_path / "out")


def test_record_fill_from_only_reads_the_daemons_folder(tmp_path: Path) -> None:
    from tcan_live.export.store import OutputStore
    from tcan_live.record import Recording, fill_from

    saved = tmp_path / "saved"
    store = OutputStore(saved)  # the daemon's store, still open (the daemon is running)
    for t in range(3):
        p = np.full((8, 8), t, np.float32)
        store.add(Frame(p, FrameIndex(t=t), stream="cells"), p, 0.05)
    store.flush()
    # a torn last line, as a crash leaves it: the daemon's recovery decides, not the recorder
    with (saved / ".tcan-live" / "journal.jsonl").open("a") as fh:
        fh.write('{"stream": "cel')
    before = {p: p.read_bytes() for p in saved.rglob("*") if p.is_file()}
    rec = Recording()
    rec.frames["cells"] = {(2, 0, 0, 0): (np.zeros((8, 8), np.float32),
                                          {"index": {"t": 2}, "stream": "cells"})}
    fill_from(rec, saved)
    assert rec.filled == 2
    after = {p: p.read_bytes() for p in saved.rglob("*") if p.is_file()}
    assert after == before
    store.close()


# ---------------------------------------------------------------------------------------------
# 5. the ingest endpoint under abuse


def _raw_push(endpoint: str) -> zmq.Socket[Any]:
    s: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDTIMEO, 5000)
    s.connect(endpoint)
    return s


def _valid(stream: str = "ok", t: int = 0) -> list[bytes]:
    return [bytes(f) for f in wire.encode_ingest({"stream": stream, "index": {"t": t}},
                                                 np.ones((16, 16), np.uint16))]


BAD_MESSAGES: dict[str, list[bytes]] = {}


def _bad(name: str, **change: Any) -> None:
    head = json.loads(_valid()[0])
    head.update(change)
    BAD_MESSAGES[name] = [json.dumps(head).encode(), _valid()[1]]


for _name, _change in {
    "shape string": {"shape": "16x16"}, "shape null": {"shape": None},
    "shape negative": {"shape": [-8, -8]}, "shape huge": {"shape": [100000, 100000]},
    "shape 3-D": {"shape": [1, 16, 16]}, "index.t string": {"index": {"t": "3"}},
    "index list": {"index": [1, 2]}, "index negative": {"index": {"t": -1}},
    "index bool": {"index": {"t": True}}, "wrong dtype": {"dtype": "complex64"},
    "object dtype": {"dtype": "object"}, "unknown version": {"version": 99},
    "stream NUL": {"stream": "a\x00b"}, "stream 300 chars": {"stream": "s" * 300},
    "stream path": {"stream": "../../x"}, "pixel size NaN": {"pixel_size_um": float("nan")},
    "pixel size negative": {"pixel_size_um": -1}, "time string": {"time_s": "now"},
}.items():
    _bad(_name, **_change)
BAD_MESSAGES.update({
    "one frame": [_valid()[0]], "three frames": [*_valid(), b"x"],
    "not JSON": [b"\xff\xfe{", _valid()[1]], "JSON list": [b"[1,2]", _valid()[1]],
    "short buffer": [_valid()[0], _valid()[1][:-2]], "deep JSON": [b"[" * 100000, b""],
    "wrong format": [json.dumps({"format": "x"}).encode(), b""],
})


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_decoder_rejects(name: str) -> None:
    with pytest.raises(ProtocolError):
        wire.decode_ingest(BAD_MESSAGES[name])


def test_ingest_survives_every_bad_message_and_a_flood(daemon: Any) -> None:
    d = daemon(ingest="tcp://127.0.0.1:*")
    ing = d.sources[0]
    sock = _raw_push(_ingest_endpoint(d))
    try:
        sock.send_multipart(_valid("ok", 0))
        for msg in BAD_MESSAGES.values():
            sock.send_multipart(msg)
        sock.send_multipart(_valid("ok", 1))
        assert wait_for(lambda: d.stats.frames_done == 2, 30)
        assert wait_for(lambda: ing.rejected == len(BAD_MESSAGES), 10), (ing.rejected, ing.reasons)
        rss = rss_mb()
        tiny = [json.dumps({"format": "tcan-live-ingest"}).encode(), b""]
        for _ in range(10_000):
            sock.send_multipart(tiny)
        sock.send_multipart(_valid("ok", 2))
        assert wait_for(lambda: d.stats.frames_done == 3, 60)
        assert wait_for(lambda: ing.rejected == len(BAD_MESSAGES) + 10_000, 30)
        assert rss_mb() - rss < 50
        # counted, each kind named once (not 10,000 log lines)
        assert sum(ing.reasons.values()) == ing.rejected and len(ing.reasons) <= 64
        assert not d.dead_threads()
    finally:
        sock.close(linger=0)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_headers = st.fixed_dictionaries(
    {}, optional={"format": st.sampled_from(["tcan-live-ingest", "x"]) | _json_values,
                  "version": st.sampled_from([1, 2]) | _json_values,
                  "shape": st.lists(st.integers(-5, 40), max_size=3) | _json_values,
                  "dtype": st.sampled_from([*wire.DTYPES, "bool", "object"]) | _json_values,
                  "stream": st.text(max_size=40) | _json_values,
                  "index": st.dictionaries(st.sampled_from("tczpq"), _json_values, max_size=5)
                  | _json_values,
                  "pixel_size_um": _json_values, "time_s": _json_values,
                  "channel_name": _json_values})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=_headers, buf=st.binary(max_size=3000), raw=st.binary(max_size=64),
       use_raw=st.booleans())
def test_fuzz_decoder_only_accepts_or_rejects(header: dict[str, Any], buf: bytes, raw: bytes,
                                              use_raw: bool) -> None:
    head = raw if use_raw else json.dumps(header, default=str).encode()
    try:
        h, arr = wire.decode_ingest([head, buf])
    except ProtocolError:
        return
    assert arr.ndim == 2 and arr.nbytes == len(buf) and arr.dtype.name in wire.DTYPES
    from tcan_live.transport.ingest import frame_from_header

    frame = frame_from_header(h, arr)  # a valid header always makes a frame
    assert frame.stream.startswith("ingest:") and "/" not in frame.stream


def test_fuzz_a_running_daemon(daemon: Any) -> None:
    """Random messages from hypothesis at a live ingest socket, then a valid frame: served."""
    d = daemon(ingest="tcp://127.0.0.1:*")
    sock = _raw_push(_ingest_endpoint(d))
    sent: list[int] = [0]

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(header=_headers, buf=st.binary(max_size=600),
           parts=st.lists(st.binary(max_size=40), max_size=3), shape=st.integers(0, 2))
    def throw(header: dict[str, Any], buf: bytes, parts: list[bytes], shape: int) -> None:
        msg = [json.dumps(header, default=str).encode(), buf] if shape else parts or [b""]
        sock.send_multipart(msg)
        sent[0] += 1

    try:
        throw()
        sock.send_multipart(_valid("after-fuzz", 0))
        assert wait_for(lambda: any(s.startswith("ingest:after-fuzz") for s in d.store.streams), 60)
        assert not d.dead_threads()
        assert sent[0] >= 300
    finally:
        sock.close(linger=0)


def test_ingest_with_curve_accepts_only_known_clients(daemon: Any, tmp_path: Path) -> None:
    from tcan_live.transport.ingest import FrameForwarder
    from tcan_live.transport.publisher import create_keys

    keys = tmp_path / "keys"
    create_keys(keys, ("scope",))
    stranger_keys = tmp_path / "stranger"
    create_keys(stranger_keys, ("scope",))
    (stranger_keys / "server.key").write_bytes((keys / "server.key").read_bytes())
    d = daemon(ingest="tcp://127.0.0.1:*", curve_keys=keys)
    img = np.ones((16, 16), np.uint16)
    plain = FrameForwarder(_ingest_endpoint(d))
    stranger = FrameForwarder(_ingest_endpoint(d), curve_keys=stranger_keys, client="scope")
    for _ in range(20):
        plain.send(img, {"stream": "plain"})
        stranger.send(img, {"stream": "stranger"})
        time.sleep(0.02)
    known = FrameForwarder(_ingest_endpoint(d), curve_keys=keys, client="scope")
    assert wait_for(lambda: known.send(img, {"stream": "known"}), 10)
    assert wait_for(lambda: d.stats.frames_done >= 1, 30)
    time.sleep(0.5)
    assert set(d.store.streams) == {"ingest:known"}
    for f in (plain, stranger, known):
        f.close()


# ---------------------------------------------------------------------------------------------
# 6. outputs are never silently renamed


@pytest.mark.parametrize(("argv", "what"), [
    (["export", "IN", "-o", "out.zarr"], "out.zarr"),
    (["export", "IN", "-o", "out.png"], "out.png"),
    (["record", "-o", "run.zarr", "--frames", "1"], "run.zarr"),
])
def test_unknown_output_suffixes_are_refused(tmp_path: Path, argv: list[str], what: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tcan_live._cli import main

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((2, 16, 16), np.uint16))
    argv = [str(src) if a == "IN" else str(tmp_path / a) if a == what else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert what in err and ".ome.tif" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob("run*"))


# ---------------------------------------------------------------------------------------------
# 1. index stability: a growing multi-series OME-TIFF


def _grow_one_page_per_write(path: Path, n: int = 8) -> list[bytes]:
    """The file's bytes after each TiffWriter.write() call and after close."""
    snaps = []
    with tifffile.TiffWriter(path, ome=True) as tw:
        for k in range(n):
            tw.write(np.full((128, 160), 100 * (k + 1), np.uint16), photometric="minisblack",
                     metadata={"axes": "YX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05})
            tw._fh.flush()
            snaps.append(path.read_bytes())
    snaps.append(path.read_bytes())
    return snaps


def test_growing_multi_series_ome_tiff_keeps_its_first_indices(daemon: Any,
                                                               tmp_path: Path) -> None:
    grown = _grow_one_page_per_write(tmp_path / "src.ome.tif")
    with tifffile.TiffFile(tmp_path / "src.ome.tif") as tif:  # as tifffile reads it, closed
        assert [s.shape for s in tif.series] == [(128, 160)] * 8
    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq, settle_s=0.3)
    target = acq / "stack.ome.tif"
    for k, snap in enumerate(grown):
        with target.open("r+b" if target.exists() else "wb") as fh:  # grown in place
            fh.write(snap)
        if k < len(grown) - 1:
            assert wait_for(lambda k=k: d.stats.frames_done >= k, 30), (k, d.status())
    assert wait_for(lambda: d.stats.frames_done == 8, 30), d.status()
    time.sleep(1.0)
    d.store.flush()
    assert d.stats.frames_done == 8 and d.stats.errors == 0
    st = d.store.streams[str(target.resolve())]
    assert sorted(i.t for i in st.planes) == list(range(8))
    assert {(i.c, i.z, i.p) for i in st.planes} == {(0, 0, 0)}
    out = tmp_path / "out" / "stack_tcan.ome.tif"
    with tifffile.TiffFile(out) as tif:
        assert len(tif.series) == 1 and tif.series[0].shape == (8, 128, 160)
        data = tif.series[0].asarray()
        px = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["PhysicalSizeX"]
    assert np.isfinite(data).all()
    assert px == pytest.approx(0.05)
    # each output plane is the enhancement of the source page with that number
    means = data.reshape(8, -1).mean(1)
    assert np.all(np.diff(means) > 0)


# ---------------------------------------------------------------------------------------------
# 4. the bad and odd input corpus, between valid frames


@pytest.mark.slow
def test_bad_input_corpus_never_stops_the_daemon(daemon: Any, tmp_path: Path) -> None:
    from badinputs import build
    from conftest import TEST_DATA

    from tcan_live.transport.subscriber import FrameSubscriber

    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq)
    sub = FrameSubscriber(d.publisher.endpoint, kinds=("enhanced", "status"))
    time.sleep(0.3)
    rss0 = rss_mb()
    rng = np.random.default_rng(3)
    valid = [f"valid_{k}.tif" for k in range(4)]
    for name in valid[:2]:
        tifffile.imwrite(acq / name, rng.integers(0, 4000, (40, 40), np.uint16))
    expected = build(acq, TEST_DATA / "nd2" / "example-zstack.nd2")
    # a symlink loop and a file deleted mid-write, besides the corpus
    (acq / "loop").symlink_to(acq, target_is_directory=True)
    doomed = acq / "deleted.tif"
    doomed.write_bytes(b"II*\x00" + b"\x00" * 100)
    doomed.unlink()
    for name in valid[2:]:
        tifffile.imwrite(acq / name, rng.integers(0, 4000, (40, 40), np.uint16))
    kinds = len(expected) + 2
    assert kinds >= 24
    enhance = {n for n, k in expected.items() if k == "enhance"} | set(valid)
    report = {n for n, k in expected.items() if k == "report"}
    # partly readable: the complete pages / ND2 frame chunks are published, the file reported
    partial = {"five_cut_in_page4.tif": 1, "truncated.nd2": 3, "chunkmap.nd2": 11}
    planes = {"five_d.tif": 8, **partial}
    want = sum(planes.get(n, 1) for n in enhance) + sum(partial.values())
    published: dict[str, int] = {}
    errors: dict[str, list[str]] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (sum(published.values()) < want
                                           or set(errors) != report):
        m = sub.receive(0.5)
        if m is None:
            continue
        name = Path(m.header.get("source") or m.header.get("file") or "").name
        if m.kind == "enhanced":
            published[name] = published.get(name, 0) + 1
            assert np.isfinite(m.array).all(), name
        elif m.header.get("state") == "error":
            errors.setdefault(Path(m.header["file"]).name, []).append(m.header["reason"])
    time.sleep(1.0)
    sub.close()
    assert set(errors) == report, (sorted(set(errors) ^ report), errors)
    assert all(len(v) == 1 for v in errors.values()), errors  # named once each
    assert published == {n: planes.get(n, 1) for n in enhance | set(partial)}
    # saved exactly once each: the journal holds one plane per published frame
    saved = {Path(s).name: len(st.planes) for s, st in d.store.streams.items()}
    assert saved == published
    assert not d.dead_threads() and d.failed is None
    assert rss_mb() - rss0 < 1500  # the 100000 px header was refused before any allocation


# ---------------------------------------------------------------------------------------------
# every error reaches the user as one line (issue 20)


def test_every_error_is_one_line_and_a_nonzero_exit(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tcan_live import _cli

    src = tmp_path / "in.ome.tif"
    tifffile.imwrite(src, np.zeros((3, 2, 16, 16), np.uint16), ome=True,
                     metadata={"axes": "TCYX"})
    # a library error in the user's terms (no flag names, no traceback)
    assert _cli.main(["export", str(src), "-o", str(tmp_path / "x.ome.tif"),
                      "--drift-channel", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drift channel 5 does not exist" in err
    assert "Traceback" not in err and "--drift-channel" not in err

    def boom(args: object) -> int:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setitem(_cli.COMMANDS, "keys", boom)
    assert _cli.main(["keys", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: disk on fire" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="disk on fire"):
        _cli.main(["--debug", "keys", str(tmp_path)])


def test_one_pixel_size_precedence(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """flag > file > model, everywhere (frame.resolve_pixel_size); a placeholder value (1 um,
    what uncalibrated files state) is used but warned about; training pairs honour the unit."""
    from tcan_live.frame import resolve_pixel_size
    from tcan_live.train.pairs import _plane

    assert resolve_pixel_size(0.04, 0.1, 0.05) == 0.04
    assert resolve_pixel_size(None, 0.1, 0.05) == 0.1
    assert resolve_pixel_size(None, None, 0.05) == 0.05
    assert resolve_pixel_size(None, None) is None
    with caplog.at_level(logging.WARNING):
        assert resolve_pixel_size(None, 1.0, source="uncal.tif") == 1.0
    assert "uncal.tif" in caplog.text and "uncalibrated" in caplog.text
    path = tmp_path / "pair.ome.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.float32), ome=True,
                     metadata={"PhysicalSizeX": 30.0, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 30.0, "PhysicalSizeYUnit": "nm"})
    assert _plane(path)[1] == pytest.approx(0.03)  # 30 nm, not 30 um


@pytest.mark.parametrize(("argv", "flag"), [
    (["enhance", "IN", "-o", "OUT", "--tile", "8"], "--tile"),
    (["export", "IN", "-o", "OUT/x.ome.tif", "--tile", "8"], "--tile"),
    (["export", "IN", "-o", "OUT/x.ome.tif", "--smooth", "0"], "--smooth"),
    (["record", "-o", "OUT/r.ome.tif", "--frames", "0"], "--frames"),
])
def test_typed_options_are_checked_for_every_command(tmp_path: Path, argv: list[str], flag: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """commands.py: one bound per option, whatever the command (--tile was checked for watch
    only); the message names the option, nothing is written."""
    from tcan_live._cli import main

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((2, 16, 16), np.uint16))
    argv = [str(src) if a == "IN" else a.replace("OUT", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [
    ["enhance", "MISSING", "-o", "OUT"],
    ["export", "MISSING", "-o", "OUT/x.ome.tif"],
    ["watch", "MISSING", "--output", "OUT", "--no-panel"],
    ["train", "MISSING", "--out", "OUT/m", "--steps", "1"],
    ["evaluate", "MISSING"],
    ["models", "export", "--model", "MISSING", "--out", "OUT/m.onnx"],
    ["simulate", "OUT/s", "--n", "-1"],
    ["demo", "--frames", "0"],
])
def test_every_command_fails_in_one_line_on_bad_input(tmp_path: Path, argv: list[str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tcan_live._cli import main

    argv = [a.replace("MISSING", str(tmp_path / "no-such-thing")).replace("OUT", str(tmp_path
                                                                                     / "o"))
            for a in argv]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcan-live: error: "), err
    assert "Traceback" not in err[0]
