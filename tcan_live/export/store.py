"""OutputStore: enhanced frames saved crash-safely, one OME-TIFF per source stack.

Every enhanced plane is appended to ``<out>/.tcan-live/parts/<stream id>.f32`` and fsync'd; then
one line is appended to ``<out>/.tcan-live/journal.jsonl`` (and fsync'd). The journal is the
truth: on start-up its lines (a torn last line is ignored) say which (stream, t, c, z, p) are
done, and each parts file is cut back to its last journaled plane. A frame is therefore either
fully saved and never processed again, or not saved at all and processed again.

The OME-TIFF of a stream (``<out>/<path relative to the watched folder>_tcan.ome.tif``) is
rebuilt from the parts file, atomically (temporary name + rename), when the stream has been quiet
for a moment, periodically while it grows, and at shutdown. Axes are those of the indices seen
(T, C, Z with size > 1; positions as separate OME images); planes never processed (``latest``
mode) are NaN.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.export.ometiff import OmeMeta, write_ome_tiff
from tcan_live.frame import Frame, FrameIndex
from tcan_live.transport.wire import stream_id

log = logging.getLogger(__name__)
STATE_DIR = ".tcan-live"


@dataclass
class _Stream:
    stream: str
    shape: tuple[int, int]
    meta: dict[str, Any]
    planes: dict[FrameIndex, int] = field(default_factory=dict)  # index -> plane number
    dirty: bool = False
    last_add: float = 0.0
    last_flush: float = 0.0


def _fsync_append(path: Path, data: bytes) -> int:
    """Append and fsync; returns the offset where ``data`` starts."""
    with path.open("ab") as fh:
        offset = fh.tell()
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return offset


class OutputStore:
    def __init__(self, out: Path, root: Path | None = None, *, model_id: str = "") -> None:
        self.out, self.root, self.model_id = Path(out), root, model_id
        self.state = self.out / STATE_DIR
        (self.state / "parts").mkdir(parents=True, exist_ok=True)
        self.journal = self.state / "journal.jsonl"
        self.streams: dict[str, _Stream] = {}
        self._recover()

    # -- recovery ----------------------------------------------------------------------------
    def _recover(self) -> None:
        if not self.journal.is_file():
            return
        good: list[str] = []
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("journal: ignoring a torn line (crash while writing it)")
                break
            good.append(line)
            st = self.streams.get(rec["stream"])
            if st is None:
                st = self.streams[rec["stream"]] = _Stream(rec["stream"], tuple(rec["shape"]),
                                                          rec.get("meta", {}))
            st.planes[FrameIndex(**rec["index"])] = rec["plane"]
        self.journal.write_text("".join(g + "\n" for g in good), encoding="utf-8")
        for st in self.streams.values():
            parts = self._parts(st.stream)
            keep = (max(st.planes.values()) + 1) * st.shape[0] * st.shape[1] * 4
            if parts.exists() and parts.stat().st_size > keep:
                with parts.open("r+b") as fh:
                    fh.truncate(keep)
            st.dirty = True
        log.info("journal: %d frames in %d streams already saved",
                 sum(len(s.planes) for s in self.streams.values()), len(self.streams))

    # -- per frame ---------------------------------------------------------------------------
    def is_done(self, stream: str, index: FrameIndex) -> bool:
        st = self.streams.get(stream)
        return st is not None and index in st.planes

    def add(self, frame: Frame, enhanced: np.ndarray, pixel_size_um: float | None) -> None:
        st = self.streams.get(frame.stream)
        if st is None:
            meta: dict[str, Any] = {"pixel_size_um": pixel_size_um, "source": frame.source,
                                    "channels": {}}
            st = self.streams[frame.stream] = _Stream(frame.stream, enhanced.shape, meta)
        if tuple(enhanced.shape) != tuple(st.shape):
            raise ValueError(f"{frame.source}: frame shape {enhanced.shape} differs from the "
                             f"stream's {st.shape}")
        if frame.index in st.planes:
            return
        if frame.channel_name:
            st.meta["channels"][str(frame.index.c)] = frame.channel_name
        i = frame.index
        if frame.time_s is not None and i.t < 2 and i.c == i.z == i.p == 0:
            st.meta.setdefault("times", {})[str(i.t)] = frame.time_s
        plane = len(st.planes)
        _fsync_append(self._parts(frame.stream),
                      np.ascontiguousarray(enhanced, np.float32).tobytes())
        rec = {"stream": frame.stream, "index": frame.index.as_dict(), "plane": plane,
               "shape": list(st.shape), "meta": st.meta}
        _fsync_append(self.journal, (json.dumps(rec) + "\n").encode("utf-8"))
        st.planes[frame.index] = plane
        st.dirty, st.last_add = True, time.monotonic()

    # -- OME-TIFF files ----------------------------------------------------------------------
    def _parts(self, stream: str) -> Path:
        return self.state / "parts" / f"{stream_id(stream)}.f32"

    def output_path(self, stream: str) -> Path:
        p = Path(stream)
        rel = Path(p.name)
        if self.root is not None:
            try:
                rel = p.relative_to(self.root)
            except ValueError:
                rel = Path(p.name)
        name = rel.name
        for suffix in (".tif", ".tiff", ".ome", ".nd2"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        if name.lower().endswith(".ome"):
            name = name[:-4]
        return self.out / rel.parent / f"{name}_tcan.ome.tif"

    def flush(self, *, idle_s: float = 0.0, every_s: float = float("inf")) -> list[Path]:
        """Rewrite the OME-TIFF of streams that changed and were quiet for ``idle_s`` (or were
        last written more than ``every_s`` ago)."""
        now = time.monotonic()
        written = []
        for st in self.streams.values():
            if st.dirty and (now - st.last_add >= idle_s or now - st.last_flush >= every_s):
                written.append(self._write(st))
                st.dirty, st.last_flush = False, now
        return written

    def _write(self, st: _Stream) -> Path:
        idx = list(st.planes)
        size = {a: max(getattr(i, a) for i in idx) + 1 for a in "tczp"}
        axes = "".join(a.upper() for a in "ptcz" if size[a] > 1)
        shape = tuple(size[a.lower()] for a in axes)
        parts = np.memmap(self._parts(st.stream), np.float32, "r",
                          shape=(len(st.planes), *st.shape))
        data = np.full((*shape, *st.shape), np.nan, np.float32)
        for i, plane in st.planes.items():
            data[tuple(getattr(i, a.lower()) for a in axes)] = parts[plane]
        del parts
        chans = st.meta.get("channels", {})
        names = [chans.get(str(c), f"C{c}") for c in range(size["c"])]
        times = st.meta.get("times", {})
        dt = times["1"] - times["0"] if {"0", "1"} <= set(times) else None
        meta = OmeMeta(axes=axes, pixel_size_um=st.meta.get("pixel_size_um"),
                       channel_names=names, time_increment_s=dt if dt and dt > 0 else None,
                       description=f"Enhanced live by tcan-live (model {self.model_id}) from "
                                   f"{st.meta.get('source', st.stream)}")
        path = self.output_path(st.stream)
        write_ome_tiff(path, data, meta)
        log.info("saved %d frames to %s", len(st.planes), path)
        return path
