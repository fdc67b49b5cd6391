"""Live ND2 scan cost: does reading a growing ND2 cost the same per new frame at 2 GB as at 2 MB?

``python -m benchmarks.nd2scan [--frames 1000] [--size 1024] [--write-docs]``

Builds an ND2 the way NIS-Elements writes it (the head chunks of a real NIS file, then one image
chunk per frame, 4096-aligned) in a temporary folder, grows it frame by frame, and after each
frame times one :meth:`LiveND2.poll` (the folder source's scan) and counts the bytes it read.
For comparison it also times ``nd2.rescue_nd2`` over the whole file at a few lengths (what the
previous live reader ran at every scan).

:func:`synthetic_nd2` is also used by tests/test_nd2live.py to make frame sizes and bit depths
that no real file in the repository has.
"""

from __future__ import annotations

import contextlib
import io
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.cli import parse_script
from benchmarks.report import emit, machine, table
from tcan_live.sources import nd2live

HEAD_FILE = Path(__file__).resolve().parents[1] / "tests" / "data" / "nd2" / "example-timelapse.nd2"
HEADER = struct.Struct("<IIQ")


def chunks(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """(offset, name, end) of each chunk of an ND2 file's bytes, in file order."""
    p = 0
    while p + 16 <= len(data):
        magic, name_len, data_len = HEADER.unpack_from(data, p)
        if magic != nd2live.MAGIC:
            q = -(-p // nd2live.PAGE) * nd2live.PAGE
            if q == p:
                return
            p = q
            continue
        name = data[p + 16 : p + 16 + name_len].split(b"!", 1)[0] + b"!"
        end = p + 16 + name_len + data_len
        yield p, name, end
        p = end


def chunk(at: int, name: bytes, payload: bytes) -> bytes:
    """A chunk as NIS writes it at offset ``at``: the name padded with zeros so that the data
    ends on a 4096-byte boundary."""
    name_len = len(name)
    while (at + 16 + name_len + len(payload)) % nd2live.PAGE:
        name_len += 1
    return HEADER.pack(nd2live.MAGIC, name_len, len(payload)) + name.ljust(name_len, b"\0") + \
        payload


def head_and_tail(bits: int = 16, source: Path = HEAD_FILE) -> tuple[bytes, bytes]:
    """A real NIS file's chunks before its first image (bit depth ``uiBpc`` patched in place;
    ``bits=0``: the key renamed, so that the metadata states no bit depth) and its text-info
    chunk's payload (a chunk NIS writes after the images)."""
    data = source.read_bytes()
    first = next(p for p, n, _ in chunks(data) if n == b"ImageDataSeq|0!")
    head = bytearray(data[:first])
    key = "uiBpc".encode("utf-16-le") + b"\0\0"
    at = head.find(key)
    while at > 0:
        if bits:
            struct.pack_into("<I", head, at + len(key), bits)
        else:  # same length, another name: nothing says the bit depth
            head[at : at + len(key)] = "uiBpX".encode("utf-16-le") + b"\0\0"
        at = head.find(key, at + 1)
    p, _, e = next(c for c in chunks(data) if c[1] == b"ImageTextInfoLV!")
    return bytes(head), data[p + 16 + HEADER.unpack_from(data, p)[1] : e]


def image_chunk(at: int, seq: int, frame: np.ndarray, time_ms: float,
                stride: int | None = None) -> bytes:
    rows = frame.tobytes()
    if stride is not None:  # rows padded with zeros to ``stride`` bytes
        w = frame.shape[1] * frame.itemsize
        rows = b"".join(rows[r * w : (r + 1) * w].ljust(stride, b"\0")
                        for r in range(frame.shape[0]))
    return chunk(at, f"ImageDataSeq|{seq}!".encode(), struct.pack("<d", time_ms) + rows)


def synthetic_nd2(frames: list[np.ndarray], bits: int = 16, stride: int | None = None) -> bytes:
    """A whole file: a real head (a time loop, one channel), these frames (500 ms apart), and
    a trailing chunk (no chunk map: ``nd2`` cannot open it, as while NIS writes)."""
    head, tail = head_and_tail(bits)
    out = bytearray(head)
    for k, f in enumerate(frames):
        out += image_chunk(len(out), k, f, 500.0 * k, stride)
    out += chunk(len(out), b"ImageTextInfoLV!", tail)
    return bytes(out)


def cell_image(rng: np.random.Generator, shape: tuple[int, int], photons: float,
               bits: int = 16) -> np.ndarray:
    """Confocal-like: blurred sparse random structure (PSF about 2.5 px), Poisson noise, an
    offset, clipped to the bit depth."""
    obj = ndimage.gaussian_filter(rng.random(shape) ** 8, 2.5, mode="wrap")
    obj = obj / obj.max() * photons
    img = rng.poisson(obj) * 8 + 20
    return np.clip(img, 0, 2 ** bits - 1).astype(np.uint8 if bits <= 8 else np.uint16)


def _rescue_s(path: Path, shape: tuple[int, int]) -> float:
    import nd2

    t0 = time.perf_counter()
    with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
        for _ in nd2.rescue_nd2(path, frame_shape=(*shape, 1), dtype="uint16", verbose=False):
            pass
    return time.perf_counter() - t0


def run(frames: int, size: int, folder: Path) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    pool = [cell_image(rng, (size, size), 50.0) for _ in range(4)]
    head, _ = head_and_tail()
    path = folder / "growing.nd2"
    path.write_bytes(head)
    live = nd2live.LiveND2(path)
    marks = sorted({1, 10, 100, frames // 2, frames} - {0})
    rows: list[dict[str, object]] = []
    window: list[tuple[float, int]] = []
    with path.open("ab") as fh:
        for k in range(frames):
            fh.write(image_chunk(fh.tell(), k, pool[k % 4], 500.0 * k))
            fh.flush()
            before = live.bytes_read
            t0 = time.perf_counter()
            got = live.poll(settled=True)
            window.append((time.perf_counter() - t0, live.bytes_read - before))
            assert len(got) == 1 and np.array_equal(got[0].planes[0], pool[k % 4])
            if k + 1 in marks:
                ms = [w[0] * 1000 for w in window]
                rows.append({
                    "frames in file": k + 1,
                    "file size (MB)": round(fh.tell() / 1e6, 1),
                    "scan per new frame, median (ms)": float(np.median(ms)),
                    "max (ms)": float(np.max(ms)),
                    "bytes read per new frame": int(np.median([w[1] for w in window])),
                    "frame bytes": pool[0].nbytes + 8,
                    "nd2.rescue_nd2 over the file (ms)": (
                        _rescue_s(path, (size, size)) * 1000 if k + 1 <= 100 else "-"),
                })
                window = []
    path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    a = parse_script('nd2scan', argv, __doc__)
    with tempfile.TemporaryDirectory(dir=a.folder) as tmp:
        rows = run(a.frames, a.size, Path(tmp))
    body = (f"Live ND2 scan cost, {a.size} x {a.size} 16-bit frames, a file grown frame by frame "
            f"to {rows[-1]['file size (MB)']} MB (`python -m benchmarks.nd2scan --frames "
            f"{a.frames} --size {a.size}`); {machine()}.\n\n" + table(rows))
    emit("nd2-scan", body, a.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
