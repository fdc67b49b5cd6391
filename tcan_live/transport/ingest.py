"""Frames pushed by acquisition software (Micro-Manager hooks) into the daemon.

The daemon binds a PULL socket (``--ingest tcp://127.0.0.1:5556``, loopback unless
``allow_remote``); :class:`FrameForwarder` is the acquisition side: a PUSH socket that never
blocks and never raises. When the daemon is not there or not keeping up, frames are dropped
and counted, so the acquisition keeps its timing. Frames that arrive join the same pipeline as
folder frames (enhancement, publishing, saving, journal).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from tcan_live.errors import ProtocolError
from tcan_live.frame import Frame, FrameIndex, plausible_pixel_size
from tcan_live.pipeline import guarded
from tcan_live.transport import wire
from tcan_live.transport.publisher import check_endpoint

log = logging.getLogger(__name__)
DEFAULT_INGEST = "tcp://127.0.0.1:5556"


class IngestSource:
    """Daemon side: a thread that receives pushed frames and hands them on."""

    def __init__(self, endpoint: str, *, emit: Callable[[Frame], None],
                 on_error: Callable[[Path | str, str], None],
                 is_done: Callable[[str, FrameIndex], bool] | None = None,
                 allow_remote: bool = False, curve_keys: Path | None = None,
                 on_death: Callable[[str], None] | None = None) -> None:
        check_endpoint(endpoint, allow_remote)
        self.endpoint = endpoint
        self.curve_keys = curve_keys
        self._auth: Any = None
        self.emit, self.on_error = emit, on_error
        self.is_done = is_done or (lambda s, i: False)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=guarded("tcan-ingest", self._run, on_death or (lambda reason: None)),
            name="tcan-ingest", daemon=True)
        self.bound: str | None = None
        self.bind_error: BaseException | None = None
        self.received = 0
        self.rejected = 0
        self.reasons: dict[str, int] = {}  # rejection reason (first words) -> count

    def threads(self) -> list[threading.Thread]:
        return [self._thread]

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self.bind_error is not None:
            raise self.bind_error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 4)
        sock.setsockopt(zmq.LINGER, 0)
        # a message larger than the biggest valid frame is dropped by ZeroMQ before it is read
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_HEADER_BYTES + wire.MAX_SIDE**2 * 8)
        try:
            if self.curve_keys is not None:
                from tcan_live.transport.publisher import curve_server

                self._auth = curve_server(sock.context, sock, Path(self.curve_keys))
            sock.bind(self.endpoint)
            self.bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as err:
            self.bind_error = err
            sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
            return
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(100, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart(copy=True)
                try:
                    self._one(frames)
                except ProtocolError as err:
                    self._reject(str(err))
                except Exception as err:  # one message must never stop the ingest thread
                    log.exception("pushed frame not handled")
                    self._reject(f"{type(err).__name__}: {err}")
        finally:
            sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()

    def _one(self, frames: list[bytes]) -> None:
        header, array = wire.decode_ingest(frames)
        self.received += 1
        frame = frame_from_header(header, array)
        if not self.is_done(frame.stream, frame.index):
            self.emit(frame)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        key = reason.split(":", 1)[0][:80]
        if key not in self.reasons and len(self.reasons) >= 64:
            key = "other"
        first = key not in self.reasons
        self.reasons[key] = self.reasons.get(key, 0) + 1
        # each kind of reason reported once by name, the rest counted (a flood of bad messages
        # must not flood the log or the status channel)
        if first:
            self.on_error(self.endpoint, f"rejected pushed frame: {reason}")


INGEST_STREAM_PREFIX = "ingest:"  # pushed streams never share a name with a file's stream


def frame_from_header(header: dict[str, Any], array: np.ndarray) -> Frame:
    """A frame from a header that :func:`wire.decode_ingest` validated. The stream name is an
    identifier (``ingest:<name>``), never a path."""
    idx = header["index"]
    stream = INGEST_STREAM_PREFIX + header["stream"]
    return Frame(
        data=array.copy(), index=FrameIndex(**{k: idx[k] for k in "tczp"}),
        pixel_size_um=plausible_pixel_size(header.get("pixel_size_um"), stream),
        channel_name=header.get("channel_name"), time_s=header.get("time_s"), stream=stream,
        source=header.get("source") or stream, extra={"pushed": True},
    )


class FrameForwarder:
    """Acquisition side: push frames to the daemon without ever blocking or raising.

    ``send`` returns True when the frame was queued for the daemon and False when it was dropped
    (daemon absent, slow, or an error); ``sent``/``dropped``/``errors`` count them.
    """

    def __init__(self, endpoint: str = DEFAULT_INGEST, *, hwm: int = 8,
                 curve_keys: Path | None = None, client: str = "viewer") -> None:
        self.endpoint, self.hwm = endpoint, hwm
        self.curve_keys, self.client = curve_keys, client
        self._sock: zmq.Socket[Any] | None = None
        self._lock = threading.Lock()
        self.sent = self.dropped = self.errors = 0
        try:  # connect now, so the connection exists before the first frame
            self._socket()
        except zmq.ZMQError:
            log.warning("cannot use ingest endpoint %s; frames will be dropped", endpoint)

    def _socket(self) -> zmq.Socket[Any]:
        if self._sock is None:
            sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a peer that is not connected
            if self.curve_keys is not None:
                from tcan_live.transport.subscriber import curve_client

                curve_client(sock, Path(self.curve_keys), self.client)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def send(self, array: np.ndarray, header: dict[str, Any]) -> bool:
        try:
            frames = wire.encode_ingest(header, np.asarray(array))
            with self._lock:
                self._socket().send_multipart(frames, flags=zmq.NOBLOCK, copy=True)
            self.sent += 1
            return True
        except zmq.Again:
            self.dropped += 1
        except Exception:  # never into the acquisition
            self.errors += 1
            self.dropped += 1
            log.debug("could not forward a frame", exc_info=True)
        return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
