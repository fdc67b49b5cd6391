"""Reading an ND2 file while NIS-Elements writes it (every loop structure, any frame shape).

The layout of an ND2 (version 3) file, studied byte by byte on real files (docs/architecture.md):

* a sequence of chunks, each ``magic 0x0ABECEDA (u32) | name length (u32) | data length (u64) |
  name | data``; the name is padded with zeros so that the data ends on a 4096-byte boundary,
  and a chunk starts where the previous one ends (the 112-byte signature chunk at offset 0 is
  followed by zeros up to 4096);
* NIS-Elements writes, in this order: the signature; the experiment (``ImageMetadataLV!``,
  the loops), the calibration (``ImageCalibrationLV|0!``) and the picture metadata
  (``ImageMetadataSeqLV|0!``: channels, camera/scanner settings); then one
  ``ImageDataSeq|<n>!`` chunk per sequence frame, in order, each ``acquisition time in ms
  (f64) | rows``, all channels interleaved per pixel; then text info, custom data, the image
  attributes (``ImageAttributesLV!``: width, height, bit depth) and the chunk map. ``nd2``
  needs the chunk map, so it opens the file only once it is finished.

:class:`LiveND2` walks the chunks incrementally (a scan reads only the chunk headers and frames
added since the last one: its cost does not grow with the file) and hands on each frame whose
chunk is complete, i.e. its whole length is on disk and either a later chunk has begun or the
file is settled (quiet, or closed by the writer).

What is established before the first frame is handed on, and from where:

* loops and their order: the experiment chunk, parsed by ``nd2``'s own experiment parser (the
  one it uses for the finished file, :mod:`.nd2private`); sequence frame ``n`` runs through the
  loops like nested for-loops, the outermost one (a time loop) open-ended;
* channels: the picture metadata's plane count and names; components per pixel must equal
  the channel count (RGB is refused, as for finished files);
* bytes per component: the picture metadata's camera/scanner bit depth (``Bpc``; up to 8 bits
  -> 1 byte, up to 16 -> 2); without it, 12/14-bit data in 16-bit words are recognised by
  their high bytes; otherwise, or if contradictory, not read live;
* frame width and height: the image chunk's length fixes ``height x row bytes``; the width is
  taken from the picture metadata's frame size (camera ROI / binning) when it fits that length
  exactly, otherwise from the image content: every row length that fits the length is tried;
  the right one makes vertically neighbouring pixels as alike as horizontal neighbours
  (``EXCESS_OK``) while every shorter one makes them as unlike as unrelated pixels
  (``EXCESS_BAD``), and the frames must have structure at all (``SIGNIFICANCE``). Rows padded
  with a constant cannot be told from a constant image edge: such files wait. Never a square
  guess. Each later frame with structure is checked again;
* pixel size (calibration), Z step (Z loop), channel names, time stamps (the chunk's first 8
  bytes): as ``nd2`` reads them from the finished file.

When any of it cannot be established (legacy JPEG-2000 ND2, compressed frames, no bit depth,
an ambiguous width, an experiment ``nd2`` cannot parse, chunks out of order) the reason is
given once (:attr:`LiveND2.refused`) and the file is read when complete. A wrong frame is never
handed on; on completion :mod:`.folder` checks every live frame against the finished file.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tcan_live.frame import Frame, StackInfo, make_frame
from tcan_live.sources import nd2private

log = logging.getLogger(__name__)

MAGIC = 0x0ABECEDA
HEADER = struct.Struct("<IIQ")
PAGE = 4096
SIGNATURE = b"ND2 FILE SIGNATURE CHUNK NAME01!"
META_CHUNKS = (b"ImageMetadataLV!", b"ImageCalibrationLV|0!", b"ImageMetadataSeqLV|0!")
END_CHUNKS = (b"ND2 FILEMAP SIGNATURE", b"ND2 CHUNK MAP SIGNATURE")
MIN_SIDE = 16  # smallest frame edge tried
SIGNIFICANCE = 20.0  # content test: neighbours must differ less than unrelated pixels by this
# many standard errors (the frame has structure)
EXCESS_OK = 0.2  # vertical neighbours this close to horizontal ones (0) = the row length
EXCESS_BAD = 0.5  # every shorter row length must be at least this far from it
PIXELS_MAX = 1 << 20  # pixels of a frame the content test looks at
FRAMES_TO_DECIDE = 8  # frames the content test may wait for before giving up


@dataclass(frozen=True)
class Geometry:
    height: int
    width: int
    stride: int  # bytes per row (rows may be padded)
    channels: int
    dtype: str  # "uint8" | "uint16"
    source: str  # "metadata" | "content"


@dataclass(frozen=True)
class LiveFrame:
    seq: int
    loop_index: dict[str, int]  # T/P/Z, as nd2 gives the finished file
    planes: np.ndarray  # (C, Y, X)
    time_s: float | None


@dataclass
class FileMeta:
    pixel_size_um: float | None = None
    z_step_um: float | None = None
    channel_names: tuple[str, ...] = ()
    loops: list[nd2private.Loop] = field(default_factory=list)


@dataclass
class _Image:
    seq: int
    data_at: int
    data_len: int


class Refused(Exception):
    """The file cannot be read live (the reason is final for this file)."""


def _pow_ok(bits: int) -> str | None:
    return "uint8" if 0 < bits <= 8 else "uint16" if bits <= 16 else None


def _find(d: object, key: str) -> list[object]:
    """All values of ``key`` anywhere in a nested dict."""
    out: list[object] = []
    stack = [d]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                if k == key:
                    out.append(v)
                stack.append(v)
    return out


class LiveND2:
    """Follows one ND2 file as it grows; :meth:`poll` returns the frames completed since the
    last call. Raises :class:`Refused` (once, then always) when the file cannot be read live."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        self.offset = 0  # where the next chunk header is expected
        self.meta_raw: dict[bytes, bytes] = {}
        self.images: list[_Image] = []
        self.trusted = 0  # images[:trusted] are complete and followed by another chunk
        self.handed = start  # sequence frames handed on (a restarted daemon: from its journal)
        self.geometry: Geometry | None = None
        self.meta: FileMeta | None = None
        self.refused: str | None = None
        self.finished = False  # the chunk map began: the normal reader takes over
        self._head: dict[str, object] = {}
        self.info: StackInfo | None = None  # set by stack_info() once the geometry is known
        self.checksums: dict[int, int] = {}  # seq -> crc32 of the frame's bytes handed on
        self.bytes_read = 0  # for the scan-cost benchmark

    # -- walking -----------------------------------------------------------------------------
    def _read(self, fh: BinaryIO, at: int, n: int) -> bytes:
        fh.seek(at)
        b = fh.read(n)
        self.bytes_read += len(b)
        return b

    def _walk(self, fh: BinaryIO, size: int) -> None:
        if self.offset == 0:
            head = self._read(fh, 0, 112)
            if len(head) < 112:
                return
            magic, name_len, data_len = HEADER.unpack_from(head)
            if magic != MAGIC or head[16:16 + len(SIGNATURE)] != SIGNATURE:
                raise Refused("not an ND2 version 3 file (legacy ND2 files are read when "
                              "complete)")
            version = head[48:112].split(b"\0", 1)[0]
            if not version.startswith(b"Ver3"):
                raise Refused(f"ND2 {version.decode('ascii', 'replace')} is read when complete "
                              "(live reading knows version 3)")
            self.offset = 16 + name_len + data_len
        while self.offset + HEADER.size <= size:
            hdr = self._read(fh, self.offset, HEADER.size)
            magic, name_len, data_len = HEADER.unpack(hdr)
            if magic != MAGIC:
                aligned = -(-self.offset // PAGE) * PAGE
                if aligned != self.offset and not hdr.strip(b"\0"):
                    self.offset = aligned  # zero padding up to the next page
                    continue
                if not hdr.strip(b"\0"):
                    return  # not written yet
                raise Refused(f"unexpected bytes at offset {self.offset} (not a chunk header)")
            if name_len > 1 << 16:
                raise Refused(f"implausible chunk header at offset {self.offset}")
            if self.offset + HEADER.size + name_len > size:
                return
            name = self._read(fh, self.offset + HEADER.size, min(name_len, 256))
            name = name.split(b"!", 1)[0] + b"!"
            if name.startswith(END_CHUNKS):
                self.finished = True
                self.trusted = len(self.images)
                return
            # a chunk header after an image: that image is complete
            self.trusted = len(self.images)
            data_at = self.offset + HEADER.size + name_len
            end = data_at + data_len
            if end > size:
                return
            if name.startswith(b"ImageDataSeq|"):
                try:
                    seq = int(name[len(b"ImageDataSeq|"):-1])
                except ValueError:
                    raise Refused(f"unreadable image chunk name {name!r}") from None
                if seq != len(self.images):
                    raise Refused(f"image chunks out of order (frame {seq} after "
                                  f"{len(self.images)} frames)")
                if self.images and data_len != self.images[0].data_len:
                    raise Refused("frames of different lengths (compressed ND2): read when "
                                  "complete")
                self.images.append(_Image(seq, data_at, data_len))
            elif name in META_CHUNKS and not self.images:
                self.meta_raw[name] = self._read(fh, data_at, data_len)
            self.offset = end

    # -- what the head says ------------------------------------------------------------------
    def _file_meta(self) -> tuple[FileMeta, dict[str, object]]:
        if b"ImageMetadataSeqLV|0!" not in self.meta_raw:
            raise Refused("no picture metadata (ImageMetadataSeqLV|0!) before the first frame")
        if not nd2private.available():
            raise Refused("this nd2 version's internals are not the tested ones "
                          "(tcan_live/sources/nd2private.py)")
        loops: list[nd2private.Loop] | None = []
        if b"ImageMetadataLV!" in self.meta_raw:  # absent: one frame, no loops
            loops = nd2private.experiment_loops(self.meta_raw[b"ImageMetadataLV!"])
        if loops is None:
            raise Refused("the experiment chunk does not parse")
        if any(lp.axis not in ("T", "P", "Z") for lp in loops):
            raise Refused("a custom loop (nd2 gives it no axis)")
        if any(lp.axis == "T" for lp in loops[1:]) and loops[0].axis == "T":
            raise Refused("two time loops")
        pic = nd2private.decode(self.meta_raw[b"ImageMetadataSeqLV|0!"]) or {}
        pic = pic.get("SLxPictureMetadata", pic)
        planes = pic.get("PicturePlanes", {}) if isinstance(pic, dict) else {}
        if not isinstance(planes, dict):
            raise Refused("no picture planes in the metadata")
        comp = int(planes.get("CompCount", 0) or 0)
        count = int(planes.get("Count", 0) or 0)
        if comp <= 0 or (count and count != comp):
            raise Refused(f"{comp} components for {count} channels (RGB or unknown)")
        plane_d = planes.get("Plane", planes.get("PlaneNew", {}))
        names = []
        if isinstance(plane_d, dict):
            for k in sorted(plane_d, key=lambda s: int(s) if str(s).isdigit() else 0):
                v = plane_d[k]
                names.append(str(v.get("Description", "")) if isinstance(v, dict) else "")
        px = None
        if pic.get("Calibrated", True) and float(pic.get("Calibration", 0) or 0) > 0:
            px = float(pic["Calibration"])
        elif b"ImageCalibrationLV|0!" in self.meta_raw:
            cal = (nd2private.decode(self.meta_raw[b"ImageCalibrationLV|0!"]) or {})
            cal = cal.get("SLxCalibration", cal)
            if isinstance(cal, dict) and cal.get("Valid", True) and cal.get("Calibration"):
                px = float(cal["Calibration"])
        z = next((abs(lp.z_step_um) for lp in loops if lp.z_step_um), None)
        meta = FileMeta(px, z, tuple(names[:comp]) if len(names) >= comp else (), loops)
        return meta, {"pic": pic, "comp": comp}

    @staticmethod
    def _dtype(pic: object, frames: list[bytes]) -> str:
        """Bytes per component: the metadata's bit depth (``Bpc``); without one, 16-bit words
        are recognised by their high bytes (12- or 14-bit data, the usual point-scanner depths:
        every odd byte below 64 while the even bytes are clearly larger); else refused."""
        bits = {int(b) for b in _find(pic, "Bpc") if isinstance(b, (int, float)) and b > 0}
        dtypes = {_pow_ok(b) for b in bits}
        if len(dtypes) == 1 and None not in dtypes:
            return str(dtypes.pop())
        if bits:
            raise Refused(f"bit depths {sorted(bits)} in the metadata")
        raw = np.concatenate([np.frombuffer(f, np.uint8, len(f) - 8, 8) for f in frames])
        raw = raw[: raw.size // 2 * 2]
        low, high = raw[0::2].astype(np.float64), raw[1::2].astype(np.float64)
        if high.max() < 64 and low.mean() > 4 * high.mean() + 1:
            return "uint16"
        raise Refused("the bit depth is not in the metadata before the first frame, and the "
                      "pixels do not show it")

    @staticmethod
    def _metadata_sizes(pic: object) -> set[tuple[int, int]]:
        """(height, width) the camera/scanner settings announce: ROI / binning."""
        out = set()
        for roi in _find(pic, "ROI"):
            if not isinstance(roi, dict) or not {"Left", "Right", "Top", "Bottom"} <= set(roi):
                continue
            w, h = int(roi["Right"]) - int(roi["Left"]), int(roi["Bottom"]) - int(roi["Top"])
            bins = [b for b in _find(pic, "BinningX") if isinstance(b, (int, float)) and b > 0]
            for b in set(bins) or {1.0}:
                if w > 0 and h > 0 and w % b == 0 and h % b == 0:
                    out.add((int(h // b), int(w // b)))
        return out

    # -- geometry ----------------------------------------------------------------------------
    @staticmethod
    def _strides(data_len: int, bpp: int) -> list[tuple[int, int]]:
        """(height, row bytes) that fit ``data_len - 8`` bytes, narrowest rows first."""
        total = data_len - 8
        out = [(total // h, h) for h in range(MIN_SIDE, total // (MIN_SIDE * bpp) + 1)
               if total % h == 0]
        return [(h, stride) for stride, h in sorted(out)]

    @staticmethod
    def _lag_stats(raws: list[bytes], dtype: str, comp: int, shapes: list[tuple[int, int]],
                   bpp: int) -> tuple[np.ndarray, float, float, bool]:
        """Per (height, stride): mean |difference| of vertically neighbouring pixels under that
        row length; and of horizontally neighbouring (lag 1) and unrelated (half a frame
        apart) pixels. Summed over frames and channels, the first PIXELS_MAX of each frame."""
        vert = np.zeros(len(shapes))
        near = far = 0.0
        n = 0
        for raw in raws:
            flat = np.frombuffer(raw, np.uint8, len(raw) - 8, 8)
            for k, (h, stride) in enumerate(shapes):
                w = stride // bpp
                rows = min(h, max(2, PIXELS_MAX // max(w, 1)))
                px = flat[: rows * stride].reshape(rows, stride)[:, : w * bpp].copy()
                img = px.view(dtype).reshape(rows, w, comp).astype(np.float64)
                vert[k] += float(np.mean(np.abs(np.diff(img, axis=0)), axis=(0, 1)).sum())
            s = flat[: (flat.size // bpp) * bpp].copy().view(dtype).reshape(-1, comp)
            s = s[:PIXELS_MAX].astype(np.float64)
            n += s.size
            near += float(np.mean(np.abs(np.diff(s, axis=0)), axis=0).sum())
            half = s.shape[0] // 2
            far += float(np.mean(np.abs(s[half : 2 * half] - s[:half]), axis=0).sum())
        # neighbours clearly more alike than unrelated pixels: the mean |difference| of n
        # pixels is known to about mean / sqrt(n); ask for SIGNIFICANCE of those
        structured = far - near > SIGNIFICANCE * near / np.sqrt(max(n, 1))
        return vert, near, far, bool(structured)

    @staticmethod
    def _padding_free(raws: list[bytes], h: int, stride: int, bpp: int) -> bool:
        """True when the last pixel of the rows varies (pixel data, not zero padding)."""
        for raw in raws:
            rows = np.frombuffer(raw, np.uint8, h * stride, 8).reshape(h, stride)
            if (rows[:, stride - bpp :] != rows[0, stride - bpp :]).any():
                return True
        return False

    def _decide(self, fh: BinaryIO, pic: object, comp: int) -> Geometry | None:
        frames = [self._read(fh, im.data_at, im.data_len)
                  for im in self.images[: min(self.trusted, FRAMES_TO_DECIDE)]]
        if not frames:
            return None
        dtype = self._dtype(pic, frames)
        bpp = comp * np.dtype(dtype).itemsize
        data_len = self.images[0].data_len
        shapes = [(h, s) for h, s in self._strides(data_len, bpp) if s // bpp >= MIN_SIDE]
        if not shapes:
            raise Refused(f"a frame of {data_len - 8} bytes fits no frame size of "
                          f"{comp} x {dtype}")
        vert, near, far, structured = self._lag_stats(frames, dtype, comp, shapes, bpp)
        excess = (vert - near) / max(far - near, 1e-12)  # 0: like neighbours; 1: unrelated
        meta = [k for k, (h, s) in enumerate(shapes)
                if s == (w := s // bpp) * bpp and (h, w) in self._metadata_sizes(pic)]
        if len(meta) == 1:
            k = meta[0]
            if structured and excess[k] > EXCESS_BAD:
                raise Refused(f"the metadata's frame size {shapes[k][1] // bpp} x "
                              f"{shapes[k][0]} is contradicted by the pixels")
            return self._geometry(frames, shapes[k], comp, dtype, bpp, "metadata")
        if structured:
            for k, _ in enumerate(shapes):
                if excess[k] < EXCESS_OK:
                    if all(excess[:k] > EXCESS_BAD):
                        return self._geometry(frames, shapes[k], comp, dtype, bpp, "content")
                    break
        if len(frames) >= FRAMES_TO_DECIDE:
            raise Refused(f"the frame size is not in the metadata and the first "
                          f"{len(frames)} frames do not establish it (dim or featureless)")
        return None  # wait for more frames

    def _geometry(self, frames: list[bytes], shape: tuple[int, int], comp: int, dtype: str,
                  bpp: int, source: str) -> Geometry:
        h, stride = shape
        if stride % bpp or not self._padding_free(frames, h, stride, bpp):
            raise Refused(f"rows of {stride} bytes: cannot tell the frame width from row "
                          "padding (the last column is constant)")
        return Geometry(h, stride // bpp, stride, comp, dtype, source)

    def _contradicts(self, raw: bytes) -> bool:
        """A frame with structure whose vertical neighbours are unlike its horizontal ones."""
        g = self.geometry
        assert g is not None
        bpp = g.channels * np.dtype(g.dtype).itemsize
        vert, near, far, structured = self._lag_stats([raw], g.dtype, g.channels,
                                                      [(g.height, g.stride)], bpp)
        if not structured:
            return False  # featureless: says nothing
        return bool((vert[0] - near) / max(far - near, 1e-12) > EXCESS_BAD)

    # -- frames ------------------------------------------------------------------------------
    def _loop_index(self, seq: int) -> dict[str, int]:
        assert self.meta is not None
        loops = self.meta.loops
        if not loops and seq > 0:
            raise Refused("more than one frame but no experiment (loops) before the first")
        counts = [max(lp.count, 1) for lp in loops]
        inner = int(np.prod(counts[1:])) if counts else 1
        if counts:
            counts[0] = max(counts[0], seq // inner + 1)  # the outer loop may run on
        idx = np.unravel_index(seq, counts) if counts else ()
        out: dict[str, int] = {}
        for lp, i in zip(loops, idx, strict=True):
            out[lp.axis] = int(i)
        return out

    def poll(self, settled: bool) -> list[LiveFrame]:
        """Frames completed since the last call. Raises :class:`Refused`."""
        if self.refused:
            raise Refused(self.refused)
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, 2)
                self._walk(fh, size)
                if settled:
                    self.trusted = len(self.images)
                if self.geometry is None:
                    if not self.images or self.trusted == 0:
                        return []
                    if self.meta is None:
                        self.meta, self._head = self._file_meta()
                    geom = self._decide(fh, self._head["pic"], int(self._head["comp"]))  # type: ignore[call-overload]
                    if geom is None:
                        return []
                    self.geometry = geom
                    log.info("%s: live ND2 frame %d x %d, %d channel(s), %s (size from the "
                             "%s)", self.path, geom.width, geom.height, geom.channels,
                             geom.dtype, geom.source)
                return self._frames(fh)
        except Refused as err:
            self.refused = str(err)
            raise

    def _frames(self, fh: BinaryIO) -> list[LiveFrame]:
        g = self.geometry
        assert g is not None
        out = []
        for im in self.images[self.handed : self.trusted]:
            raw = self._read(fh, im.data_at, im.data_len)
            if len(raw) != im.data_len:
                break
            if self._contradicts(raw):
                raise Refused(f"frame {im.seq} contradicts the frame size {g.width} x "
                              f"{g.height}")
            rows = np.frombuffer(raw, np.uint8, g.height * g.stride, 8)
            rows = rows.reshape(g.height, g.stride)[:, : g.width * g.channels *
                                                    np.dtype(g.dtype).itemsize]
            pix = rows.copy().view(g.dtype).reshape(g.height, g.width, g.channels)
            planes = np.ascontiguousarray(np.moveaxis(pix, -1, 0))
            (ms,) = struct.unpack_from("<d", raw)
            self.checksums[im.seq] = zlib.crc32(planes.tobytes())
            out.append(LiveFrame(im.seq, self._loop_index(im.seq), planes,
                                 float(ms) / 1000.0 if np.isfinite(ms) else None))
            self.handed += 1
        return out


def stack_info(live: LiveND2) -> StackInfo:
    """The growing file described like a finished one (the readers' :class:`StackInfo`, so that
    live frames are built, named and calibrated by the same code as complete ones). Built once
    per file, when its geometry is decided."""
    if live.info is None:
        live.info = _stack_info(live)
    return live.info


def _stack_info(live: LiveND2) -> StackInfo:
    g, meta = live.geometry, live.meta
    assert g is not None and meta is not None
    axes = "".join(lp.axis for lp in meta.loops) + ("C" if g.channels > 1 else "")
    shape = tuple(max(lp.count, 1) for lp in meta.loops) + ((g.channels,) if g.channels > 1
                                                             else ())
    period = next((lp.period_ms / 1000.0 for lp in meta.loops if lp.period_ms), None)
    return StackInfo(path=live.path, format="nd2", axes=axes, shape=shape,
                     plane_shape=(g.height, g.width), dtype=np.dtype(g.dtype),
                     pixel_size_um=meta.pixel_size_um, channel_names=meta.channel_names,
                     time_increment_s=period, z_step_um=meta.z_step_um if "Z" in axes else None,
                     extra={"index_source": "nd2-live"})


def frames_of(live: LiveND2, frame: LiveFrame) -> list[Frame]:
    """One sequence frame's planes as Frames, indexed as nd2 indexes the finished file."""
    info = stack_info(live)
    out = []
    for c, plane in enumerate(frame.planes):
        pos = {**frame.loop_index, "C": c}
        idx = tuple(int(pos.get(a, 0)) for a in info.axes)
        out.append(make_frame(info, idx, plane, frame.time_s))
    return out
