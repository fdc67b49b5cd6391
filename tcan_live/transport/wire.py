"""The wire format: pure encode/decode, no sockets (documented in docs/protocol.md).

A message is three ZeroMQ frames: ``[topic, header, buffer]``.

* topic (ASCII): ``"<kind>/<stream id>"``, kind one of ``raw``, ``enhanced``, ``status``; a
  subscriber filters by prefix (``b"enhanced/"``, or ``b""`` for everything);
* header: UTF-8 JSON object with ``format = "tcan-live"`` and ``version = 1``;
* buffer: the pixels, C-contiguous, little-endian, dtype and shape as in the header (empty for
  status messages).

Nothing is ever unpickled. :func:`decode` rejects unknown formats and versions, and buffers whose
length does not match the header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcan_live.errors import ProtocolError

FORMAT = "tcan-live"
VERSION = 1
KINDS = ("raw", "enhanced", "status")
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class Message:
    topic: str
    header: dict[str, Any]
    array: np.ndarray | None

    @property
    def kind(self) -> str:
        return self.topic.split("/", 1)[0]


def stream_id(stream: str) -> str:
    """A short, topic-safe id for a stream (stable across runs)."""
    return hashlib.sha1(stream.encode("utf-8")).hexdigest()[:12]


def encode(kind: str, stream: str, header: dict[str, Any],
           array: np.ndarray | None = None) -> list[bytes | memoryview]:
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    head = {"format": FORMAT, "version": VERSION, "kind": kind, **header}
    buf: bytes | memoryview = b""
    if array is not None:
        arr = np.ascontiguousarray(array)
        if arr.dtype.name not in DTYPES:
            raise ProtocolError(f"dtype {arr.dtype} cannot be sent; expected one of {DTYPES}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        head.update(shape=list(arr.shape), dtype=arr.dtype.name)
        buf = memoryview(arr).cast("B")  # type: ignore[arg-type]
    topic = f"{kind}/{stream_id(stream) if kind != 'status' else 'daemon'}"
    return [topic.encode("ascii"), json.dumps(head, separators=(",", ":")).encode("utf-8"), buf]


def decode(frames: list[bytes] | list[memoryview]) -> Message:
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 message frames, got {len(frames)}")
    topic, head_b, buf = (bytes(f) for f in frames)
    try:
        header = json.loads(head_b.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"header is not UTF-8 JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else header
        raise ProtocolError(f"unknown message format {found!r}")
    if header.get("version") != VERSION:
        raise ProtocolError(f"unsupported version {header.get('version')!r} (expected {VERSION})")
    if header.get("kind") not in KINDS:
        raise ProtocolError(f"unknown message kind {header.get('kind')!r}")
    array = None
    if "shape" in header:
        dtype_name = header.get("dtype")
        if dtype_name not in DTYPES:
            raise ProtocolError(f"dtype {dtype_name!r} not allowed")
        dtype = np.dtype(dtype_name).newbyteorder("<")
        shape = tuple(int(s) for s in header["shape"])
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(buf):
            raise ProtocolError(f"buffer of {len(buf)} bytes does not match shape {shape} "
                                f"{dtype_name}")
        array = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return Message(topic.decode("ascii", "replace"), header, array)


# ---------------------------------------------------------------------------------------------
# ingest: acquisition software -> daemon (PUSH -> PULL), two frames [header, buffer]

INGEST_FORMAT = "tcan-live-ingest"


def encode_ingest(header: dict[str, Any], array: np.ndarray) -> list[bytes | memoryview]:
    arr = np.ascontiguousarray(array)
    if arr.ndim != 2:
        raise ProtocolError(f"ingest frames must be 2-D, got shape {arr.shape}")
    if arr.dtype.name not in DTYPES:
        raise ProtocolError(f"dtype {arr.dtype} cannot be sent; expected one of {DTYPES}")
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    head = {"format": INGEST_FORMAT, "version": VERSION, **header, "shape": list(arr.shape),
            "dtype": arr.dtype.name}
    return [json.dumps(head, separators=(",", ":")).encode("utf-8"),
            memoryview(arr).cast("B")]  # type: ignore[arg-type]


def decode_ingest(frames: list[bytes] | list[memoryview]) -> tuple[dict[str, Any], np.ndarray]:
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 ingest frames, got {len(frames)}")
    head_b, buf = (bytes(f) for f in frames)
    try:
        header = json.loads(head_b.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"ingest header is not UTF-8 JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != INGEST_FORMAT:
        raise ProtocolError("not a tcan-live ingest message")
    if header.get("version") != VERSION:
        raise ProtocolError(f"unsupported ingest version {header.get('version')!r}")
    if header.get("dtype") not in DTYPES:
        raise ProtocolError(f"dtype {header.get('dtype')!r} not allowed")
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    shape = tuple(int(s) for s in header.get("shape", ()))
    if len(shape) != 2 or shape[0] * shape[1] * dtype.itemsize != len(buf):
        raise ProtocolError(f"buffer of {len(buf)} bytes does not match shape {shape}")
    return header, np.frombuffer(buf, dtype=dtype).reshape(shape)
