"""FrameSubscriber: the Python client. Yields decoded messages; detects gaps and duplicates.

    with FrameSubscriber("tcp://127.0.0.1:5557", kinds=("enhanced",)) as sub:
        for msg in sub.messages(timeout_s=5):
            image, meta = msg.array, msg.header

Sequence numbers are per kind; a jump counts the missing frames in ``gaps`` (per kind), and a
message whose sequence number was already seen (a replay for a late joiner) is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import zmq

from tcan_live.commands import DEFAULT_ENDPOINT
from tcan_live.errors import ProtocolError
from tcan_live.transport import wire

log = logging.getLogger(__name__)


def curve_client(sock: zmq.Socket[Any], keys: Path, client: str) -> None:
    """Make ``sock`` a CURVE client with ``keys/<client>.key_secret`` and ``keys/server.key``
    (the files `tcan-live keys` writes; text certificates, never pickles)."""
    from zmq.auth import load_certificate

    pub, sec = load_certificate(str(keys / f"{client}.key_secret"))
    server, _ = load_certificate(str(keys / "server.key"))
    sock.curve_publickey, sock.curve_secretkey = pub, sec
    sock.curve_serverkey = server


class FrameSubscriber:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *,
                 kinds: Sequence[str] = ("raw", "enhanced", "status"), rcvhwm: int = 1000,
                 curve_keys: Path | None = None, client: str = "viewer",
                 context: zmq.Context[Any] | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_keys is not None:
            curve_client(self.sock, Path(curve_keys), client)
        for kind in kinds:
            self.sock.setsockopt(zmq.SUBSCRIBE, f"{kind}/".encode())
        self.sock.connect(endpoint)
        self.last_seq: dict[str, int] = {}
        self._run: dict[str, object] = {}
        self.gaps: dict[str, int] = {}
        self.duplicates = 0
        self.rejected = 0

    def receive(self, timeout_s: float) -> wire.Message | None:
        """The next new message, or None after ``timeout_s`` without one."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                return None
            frames = self.sock.recv_multipart(copy=True)
            try:
                msg = wire.decode(frames)
            except ProtocolError as err:
                self.rejected += 1
                log.warning("rejected message: %s", err)
                continue
            if self._is_new(msg):
                return msg
        return None

    def _is_new(self, msg: wire.Message) -> bool:
        seq = msg.header.get("seq")
        if not isinstance(seq, int):
            return True
        key = msg.kind
        run = msg.header.get("run")
        if run != self._run.get(key):  # a restarted daemon numbers from 0 again
            self._run[key] = run
            self.last_seq.pop(key, None)
        last = self.last_seq.get(key)
        if last is not None and seq <= last:
            self.duplicates += 1
            return False
        if last is not None and seq > last + 1:
            self.gaps[key] = self.gaps.get(key, 0) + seq - last - 1
        self.last_seq[key] = seq
        return True

    def messages(self, timeout_s: float = 5.0) -> Iterator[wire.Message]:
        """Messages until none arrives for ``timeout_s``."""
        while (msg := self.receive(timeout_s)) is not None:
            yield msg

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
