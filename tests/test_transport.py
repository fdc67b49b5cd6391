"""Wire format (pure), publisher and subscriber over real pyzmq sockets, CURVE."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from tcan_live.errors import ConfigError, ProtocolError
from tcan_live.frame import stream_id
from tcan_live.transport import wire
from tcan_live.transport.publisher import ZmqPublisher, check_endpoint, create_keys
from tcan_live.transport.subscriber import FrameSubscriber


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_round_trip(dtype: str, rng: np.random.Generator) -> None:
    arr = (rng.random((7, 5)) * 100).astype(dtype)
    frames = wire.encode("enhanced", "/data/a.nd2", {"seq": 3, "index": {"t": 1}}, arr)
    msg = wire.decode([bytes(f) for f in frames])
    assert msg.kind == "enhanced" and msg.topic == f"enhanced/{stream_id('/data/a.nd2')}"
    assert msg.header["seq"] == 3 and msg.header["version"] == wire.KIND_VERSION["enhanced"] == 1
    assert msg.array is not None and msg.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(msg.array, arr)


def test_big_endian_input_is_sent_little_endian() -> None:
    arr = np.arange(6, dtype=">u2").reshape(2, 3)
    msg = wire.decode([bytes(f) for f in wire.encode("raw", "s", {}, arr)])
    np.testing.assert_array_equal(msg.array, arr)


def _frames(header: dict[str, object], buf: bytes = b"") -> list[bytes]:
    return [b"raw/x", json.dumps(header).encode(), buf]


@pytest.mark.parametrize(("header", "buf", "match"), [
    ({"format": "tcan-live", "version": 3, "kind": "raw"}, b"", "unsupported version 3"),
    ({"format": "other", "version": 1, "kind": "raw"}, b"", "unknown message format"),
    ({"format": "tcan-live", "version": 1, "kind": "video"}, b"", "unknown message kind"),
    ({"format": "tcan-live", "version": 1, "kind": "raw", "shape": [2, 2], "dtype": "uint16"},
     b"123", "does not match shape"),
    ({"format": "tcan-live", "version": 1, "kind": "raw", "shape": [1], "dtype": "object"},
     b"1234", "not allowed"),
])
def test_decode_rejects(header: dict[str, object], buf: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        wire.decode(_frames(header, buf))


def test_decode_rejects_non_json_and_wrong_frame_count() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        wire.decode([b"raw/x", b"\x80\x04pickle", b""])
    with pytest.raises(ProtocolError, match="3 message frames"):
        wire.decode([b"raw/x", b"{}"])


def test_only_loopback_without_explicit_permission() -> None:
    for ok in ("tcp://127.0.0.1:5557", "tcp://localhost:1", "ipc:///tmp/x", "tcp://[::1]:5"):
        check_endpoint(ok, allow_remote=False)
    for bad in ("tcp://0.0.0.0:5557", "tcp://*:5557", "tcp://192.168.1.5:5557"):
        with pytest.raises(ConfigError, match="allow-remote"):
            check_endpoint(bad, allow_remote=False)
        check_endpoint(bad, allow_remote=True)


def _pump(pub: ZmqPublisher, stop: threading.Event) -> None:
    while not stop.is_set():
        pub.service(20)


def test_late_joiner_gets_the_latest_frame_and_gaps_are_counted() -> None:
    pub = ZmqPublisher("tcp://127.0.0.1:*")
    for seq in range(3):
        pub.publish("enhanced", "s", {"seq": seq}, np.full((4, 4), seq, np.float32))
    sub = FrameSubscriber(pub.endpoint, kinds=("enhanced",))
    try:
        msg = None
        for _ in range(50):  # the publisher replays when the subscription arrives
            pub.service(20)
            msg = sub.receive(0.05)
            if msg is not None:
                break
        assert msg is not None and msg.header["replay"] is True and msg.header["seq"] == 2
        pub.publish("enhanced", "s", {"seq": 5}, np.zeros((4, 4), np.float32))
        assert sub.receive(2.0) is not None
        assert sub.gaps == {"enhanced": 2}
    finally:
        sub.close()
        pub.close()


def test_stalled_subscriber_never_blocks_the_publisher() -> None:
    pub = ZmqPublisher("tcp://127.0.0.1:*", sndhwm=4)
    stalled = zmq.Context.instance().socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 2)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(pub.endpoint)
    try:
        time.sleep(0.2)
        pub.service(50)
        big = np.zeros((512, 512), np.float32)
        t0 = time.perf_counter()
        for seq in range(300):  # 300 MB offered to a subscriber that never reads
            pub.publish("enhanced", "s", {"seq": seq}, big, cache=False)
        assert time.perf_counter() - t0 < 30  # generous; the point is: it returns at all
        assert pub.sent == 300
    finally:
        stalled.close(linger=0)
        pub.close()


def test_curve_unauthenticated_client_receives_nothing(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    create_keys(keys, clients=("viewer",))
    pub = ZmqPublisher("tcp://127.0.0.1:*", curve_keys=keys)
    plain = FrameSubscriber(pub.endpoint, kinds=("raw",))
    good = FrameSubscriber(pub.endpoint, kinds=("raw",), curve_keys=keys, client="viewer")
    stop = threading.Event()
    try:
        got_good = got_plain = 0
        deadline = time.monotonic() + 5
        seq = 0
        while time.monotonic() < deadline and got_good < 3:
            pub.service(10)
            pub.publish("raw", "s", {"seq": seq}, np.ones((2, 2), np.uint16), cache=False)
            seq += 1
            got_good += good.receive(0.05) is not None
            got_plain += plain.receive(0.01) is not None
        assert got_good >= 3
        assert got_plain == 0
    finally:
        stop.set()
        plain.close()
        good.close()
        pub.close()


def test_curve_needs_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.key_secret"):
        ZmqPublisher("tcp://127.0.0.1:*", curve_keys=tmp_path)
