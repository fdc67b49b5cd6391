"""ZmqPublisher: raw, enhanced and status messages on one XPUB socket.

* Loopback by default; another interface needs ``allow_remote=True`` (and CURVE is strongly
  advised, see docs/protocol.md for key generation).
* A slow or dead subscriber never slows the daemon: sends never block (small send high-water
  mark; messages to a subscriber whose queue is full are dropped by ZeroMQ for that subscriber).
* Late joiners are not left with nothing: XPUB reports each new subscription, and the publisher
  then replays the newest raw and enhanced frame of the most recently active streams (header
  ``replay: true``). The replay cache is bounded: at most ``replay_topics`` topics (a topic is
  one kind of one stream) and ``replay_bytes`` bytes, least recently published evicted first
  (defaults: 128 topics, 256 MiB; one topic is always kept, whatever its size).
Only the thread that created the publisher may use it (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import numpy as np
import zmq

from tcan_live.commands import DEFAULT_ENDPOINT
from tcan_live.errors import ConfigError
from tcan_live.transport import wire

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
REPLAY_TOPICS = 128
REPLAY_BYTES = 256 * 2**20


def is_loopback(endpoint: str) -> bool:
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlparse(endpoint).hostname or ""
    return host in LOOPBACK or host.startswith("127.")


def check_endpoint(endpoint: str, allow_remote: bool) -> None:
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ConfigError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT or ipc://PATH")
    if not is_loopback(endpoint) and not allow_remote:
        raise ConfigError(f"endpoint {endpoint!r} is not loopback; binding another interface "
                          "needs --allow-remote (and --curve-keys to restrict who may listen)")


class ZmqPublisher:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, allow_remote: bool = False,
                 curve_keys: Path | None = None, sndhwm: int = 16,
                 context: zmq.Context[Any] | None = None, replay_topics: int = REPLAY_TOPICS,
                 replay_bytes: int = REPLAY_BYTES) -> None:
        check_endpoint(endpoint, allow_remote)
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, also repeated ones
        self.sock.setsockopt(zmq.LINGER, 0)
        self._auth = None
        if curve_keys is not None:
            self._auth = curve_server(self.ctx, self.sock, Path(curve_keys))
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._cache: OrderedDict[bytes, list[bytes]] = OrderedDict()
        self._cache_bytes = 0
        self.replay_topics, self.replay_bytes = replay_topics, replay_bytes
        self.subscriptions = 0
        self.sent = 0

    def publish(self, kind: str, stream: str, header: dict[str, Any],
                array: np.ndarray | None = None, *, cache: bool = True) -> None:
        header = {**header, "published_at": time.time()}
        frames = wire.encode(kind, stream, header, array)
        self._send(frames)
        if cache and kind != "status" and self.replay_topics > 0:
            self._remember([bytes(f) for f in frames])

    def _remember(self, frames: list[bytes]) -> None:
        topic = frames[0]
        old = self._cache.pop(topic, None)
        if old is not None:
            self._cache_bytes -= sum(map(len, old))
        self._cache[topic] = frames
        self._cache_bytes += sum(map(len, frames))
        while len(self._cache) > 1 and (len(self._cache) > self.replay_topics
                                        or self._cache_bytes > self.replay_bytes):
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= sum(map(len, dropped))

    def cache_size(self) -> tuple[int, int]:
        """(topics, bytes) held for late joiners; bounded, see the module doc."""
        return len(self._cache), self._cache_bytes

    def _send(self, frames: list[bytes | memoryview]) -> None:
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:  # pragma: no cover - XPUB drops rather than blocks; kept for safety
            pass

    def service(self, timeout_ms: int = 0) -> int:
        """Handle subscription messages (replaying cached frames to late joiners)."""
        handled = 0
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            msg = self.sock.recv()
            handled += 1
            if msg[:1] != b"\x01":
                continue
            self.subscriptions += 1
            prefix = msg[1:]
            for topic, frames in list(self._cache.items()):
                if topic.startswith(prefix):
                    head = json.loads(bytes(frames[1]))
                    head["replay"] = True
                    self._send([frames[0], json.dumps(head).encode(), frames[2]])
        return handled

    def close(self) -> None:
        self.sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()


class _SharedAuth:
    """One ZAP authenticator per ZeroMQ context (the publisher and the ingest socket share it:
    a context can have only one), stopped when its last user stops."""

    _lock = threading.Lock()
    _by_ctx: ClassVar[dict[int, tuple[Any, int]]] = {}

    def __init__(self, ctx: zmq.Context[Any], clients: Path) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.key = id(ctx)
        with self._lock:
            auth, users = self._by_ctx.get(self.key, (None, 0))
            if auth is None:
                auth = ThreadAuthenticator(ctx)
                auth.start()
            auth.configure_curve(domain="*", location=str(clients))
            self._by_ctx[self.key] = (auth, users + 1)

    def stop(self) -> None:
        with self._lock:
            auth, users = self._by_ctx.pop(self.key, (None, 0))
            if auth is None:
                return
            if users > 1:
                self._by_ctx[self.key] = (auth, users - 1)
            else:
                auth.stop()


def curve_server(ctx: zmq.Context[Any], sock: zmq.Socket[Any], keys: Path) -> Any:
    """CURVE server: ``keys/server.key_secret`` + public keys of allowed clients in
    ``keys/clients/`` (see ``tcan-live keys``). Returns what to ``stop()`` with the socket."""
    import zmq.auth

    secret = keys / "server.key_secret"
    clients = keys / "clients"
    if not secret.is_file() or not clients.is_dir():
        raise ConfigError(f"{keys}: expected server.key_secret and a clients/ folder "
                          "(create them with `tcan-live keys`)")
    public, private = zmq.auth.load_certificate(str(secret))
    auth = _SharedAuth(ctx, clients)
    sock.curve_secretkey = private
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def create_keys(folder: Path, clients: tuple[str, ...] = ("viewer",)) -> list[Path]:
    """Server and client key pairs (ZeroMQ certificate text files, not pickles)."""
    import zmq.auth

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clients").mkdir(exist_ok=True)
    written = [Path(p) for p in zmq.auth.create_certificates(str(folder), "server")]
    for name in clients:
        pub, sec = (Path(p) for p in zmq.auth.create_certificates(str(folder), name))
        (folder / "clients" / pub.name).write_bytes(pub.read_bytes())
        written += [pub, sec]
    return written
