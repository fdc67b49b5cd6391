"""The wire format: pure encode/decode, no sockets (documented in docs/protocol.md).

A message is three ZeroMQ frames: ``[topic, header, buffer]``.

* topic (ASCII): ``"<kind>/<stream id>"``, kind one of ``raw``, ``enhanced``, ``status``,
  ``uncertainty``; a subscriber filters by prefix (``b"enhanced/"``, or ``b""`` for everything);
* header: UTF-8 JSON object with ``format = "tcan-live"`` and ``version``: protocol version 2
  added the ``uncertainty`` kind; messages of the version-1 kinds are still stamped
  ``version = 1`` (their layout did not change), so version-1 clients keep decoding them, and
  ``uncertainty`` messages are stamped 2 (a version-1 client that subscribes to everything
  rejects them as unknown and goes on);
* buffer: the pixels, C-contiguous, little-endian, dtype and shape as in the header (empty for
  status messages).

Nothing is ever unpickled. :func:`decode` rejects unknown formats and versions, and buffers whose
length does not match the header.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcan_live.errors import ProtocolError
from tcan_live.frame import stream_id

FORMAT = "tcan-live"
VERSION = 2  # the protocol; each message carries the version its kind needs (KIND_VERSION)
KINDS = ("raw", "enhanced", "status", "uncertainty")
KIND_VERSION = {"raw": 1, "enhanced": 1, "status": 1, "uncertainty": 2}
INGEST_VERSION = 1
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class Message:
    topic: str
    header: dict[str, Any]
    array: np.ndarray | None

    @property
    def kind(self) -> str:
        return self.topic.split("/", 1)[0]


def encode(kind: str, stream: str, header: dict[str, Any],
           array: np.ndarray | None = None) -> list[bytes | memoryview]:
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    head = {"format": FORMAT, "version": KIND_VERSION[kind], "kind": kind, **header}
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
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise ProtocolError(f"unsupported version {version!r} (expected 1..{VERSION})")
    if header.get("kind") not in KINDS:
        raise ProtocolError(f"unknown message kind {header.get('kind')!r}")
    if version < KIND_VERSION[header["kind"]]:
        raise ProtocolError(f"kind {header['kind']!r} needs protocol version "
                            f"{KIND_VERSION[header['kind']]}, the message says {version}")
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
    head = {"format": INGEST_FORMAT, "version": INGEST_VERSION, **header, "shape": list(arr.shape),
            "dtype": arr.dtype.name}
    return [json.dumps(head, separators=(",", ":")).encode("utf-8"),
            memoryview(arr).cast("B")]  # type: ignore[arg-type]


MAX_SIDE = 32768  # px per side of a pushed frame
MAX_HEADER_BYTES = 64 * 1024
MAX_INDEX = 10**7
STREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:@+=-]{0,127}$"  # an identifier, never a path


@functools.cache
def _ingest_schema() -> Any:
    """The one schema every pushed header is validated against (types, ranges, identifiers)."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

    Index = Annotated[StrictInt, Field(ge=0, le=MAX_INDEX)]
    Side = Annotated[StrictInt, Field(ge=1, le=MAX_SIDE)]
    Text = Annotated[str, Field(max_length=512, pattern=r"^[^\x00-\x1f\x7f]*$")]
    Number = StrictFloat | StrictInt

    class FrameIndexModel(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        t: Index = 0
        c: Index = 0
        z: Index = 0
        p: Index = 0

    class IngestHeader(BaseModel):
        model_config = ConfigDict(extra="ignore", strict=True)
        format: Literal["tcan-live-ingest"]
        version: Literal[1]
        shape: Annotated[list[Side], Field(min_length=2, max_length=2)]
        dtype: Literal["uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"]
        stream: Annotated[str, Field(pattern=STREAM_NAME)] = "pushed"
        source: Text | None = None
        index: FrameIndexModel = FrameIndexModel()
        # its plausible range is the frames' one rule (frame.plausible_pixel_size)
        pixel_size_um: Annotated[Number, Field(gt=0, allow_inf_nan=False)] | None = None
        channel_name: Annotated[Text, Field(max_length=128)] | None = None
        time_s: Annotated[Number, Field(allow_inf_nan=False)] | None = None

    return IngestHeader


def decode_ingest(frames: list[bytes] | list[memoryview]) -> tuple[dict[str, Any], np.ndarray]:
    """Validate and decode a pushed frame; anything off the schema is a :class:`ProtocolError`
    (the header is checked before the buffer is looked at)."""
    from pydantic import ValidationError

    if len(frames) != 2:
        raise ProtocolError(f"expected 2 ingest frames, got {len(frames)}")
    head_b, buf = (bytes(f) for f in frames)
    if len(head_b) > MAX_HEADER_BYTES:
        raise ProtocolError(f"ingest header of {len(head_b)} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(head_b.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ProtocolError(f"ingest header is not UTF-8 JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != INGEST_FORMAT:
        raise ProtocolError("not a tcan-live ingest message")
    if header.get("version") != INGEST_VERSION:
        raise ProtocolError(f"unsupported ingest version {header.get('version')!r}")
    try:
        valid = _ingest_schema().model_validate(header)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "header"
        raise ProtocolError(f"ingest header field {where!r}: {first['msg']}") from None
    dtype = np.dtype(valid.dtype).newbyteorder("<")
    shape = tuple(valid.shape)
    if shape[0] * shape[1] * dtype.itemsize != len(buf):
        raise ProtocolError(f"buffer of {len(buf)} bytes does not match shape {shape}")
    clean = valid.model_dump()
    clean["index"] = dict(clean["index"])
    return clean, np.frombuffer(buf, dtype=dtype).reshape(shape)
