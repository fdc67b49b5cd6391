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

Output names (:func:`output_relpath`, the one rule): the source's path relative to the watched
folder with its image suffix replaced by ``_tcan.ome.tif``; pushed streams (``ingest:<name>``)
go to ``ingest/<name>_tcan.ome.tif``. Every component is made safe (no ``..``, no empty or
control characters, at most :data:`MAX_NAME_BYTES` bytes: a longer name is cut and given a
hash), so an output is never outside the output folder. Two streams whose names map to one file
(``x.tif``, ``x.ome.tif``, ``x_t0000.tif``) get distinct files: the later one gets a hash of its
stream in its name. The name chosen is recorded in the journal, so it survives restarts.

One daemon per output folder: ``.tcan-live/lock`` is locked (``flock`` / ``msvcrt``) by the
daemon's store and holds its PID; a second daemon on the same folder is refused. Other tools
(``record --fill-from``) only read the journal (:func:`read_journal`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from tcan_live.errors import ConfigError
from tcan_live.export.ometiff import OmeMeta, write_ome_tiff
from tcan_live.frame import Frame, FrameIndex
from tcan_live.sources.folder import STATE_DIR
from tcan_live.sources.naming import strip_image_suffix
from tcan_live.transport.ingest import INGEST_STREAM_PREFIX
from tcan_live.transport.wire import stream_id

log = logging.getLogger(__name__)
OUTPUT_SUFFIX = "_tcan.ome.tif"
MAX_NAME_BYTES = 200  # file systems allow 255; room for temp and collision suffixes
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def _safe_component(name: str, budget: int = MAX_NAME_BYTES) -> str:
    """One path component that is neither special nor too long (bytes as the OS encodes it)."""
    clean = _UNSAFE.sub("_", name).strip(" ")
    if clean in ("", ".", "..") or clean.startswith("."):
        clean = "_" + clean.lstrip(".") if clean.strip(".") else "_"
    if len(os.fsencode(clean)) > budget:
        tag = "~" + _short_hash(name)
        raw = os.fsencode(clean)[: budget - len(tag)]
        clean = os.fsdecode(raw.decode("utf-8", "ignore").encode("utf-8")) + tag
    return clean


def output_relpath(stream: str, root: Path | None, tag: str = "",
                   suffix: str = OUTPUT_SUFFIX) -> Path:
    """The output file of a stream, relative to the output folder (see the module doc)."""
    if stream.startswith(INGEST_STREAM_PREFIX):
        rel = Path("ingest") / stream[len(INGEST_STREAM_PREFIX):]
    else:
        p = Path(stream)
        rel = Path(p.name)
        if root is not None:
            try:
                rel = p.relative_to(root)
            except ValueError:
                rel = Path(p.name)
    parts = [_safe_component(c) for c in rel.parts[:-1] if c not in ("", "/")]
    stem = strip_image_suffix(rel.name) + (f"_{tag}" if tag else "")
    name = _safe_component(stem, MAX_NAME_BYTES - len(suffix)) + suffix
    return Path(*parts, name)


def _journal_records(journal: Path) -> tuple[list[tuple[bytes, dict[str, Any]]], bool]:
    """The journal's complete lines, parsed, and whether a torn line ended it (a crash while
    writing it). Two kinds of record: a saved plane (``index``, ``plane``, ``shape``, the
    stream's ``meta`` at that time) and ``meta_update`` (metadata learnt later)."""
    good: list[tuple[bytes, dict[str, Any]]] = []
    if not journal.is_file():
        return good, False
    with journal.open("rb") as fh:
        for raw in fh:
            try:
                good.append((raw.rstrip(b"\n"), json.loads(raw)))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return good, True
    return good, False


def _record_meta(rec: dict[str, Any]) -> dict[str, Any]:
    """What a record says of its stream's metadata (the newest record wins)."""
    return dict(rec["meta_update"] if "meta_update" in rec else rec.get("meta") or {})


def read_journal(out: Path) -> dict[str, dict[str, Any]]:
    """Read-only view of a daemon's output folder: stream -> its latest journal meta, with
    ``output`` (the saved file, a path) and ``frames`` (count). Writes nothing."""
    found: dict[str, dict[str, Any]] = {}
    records, _ = _journal_records(Path(out) / STATE_DIR / "journal.jsonl")
    for _, rec in records:
        entry = found.setdefault(rec["stream"], {"frames": 0})
        entry.update(_record_meta(rec))
        entry["frames"] += "meta_update" not in rec
    for stream, entry in found.items():
        rel = entry.get("output") or str(output_relpath(stream, None))
        entry["output"] = Path(out) / rel
    return found


class _Lock:
    """An exclusive lock on ``path`` for this process's lifetime (released by the OS on exit or
    crash, so a kill -9 leaves no stale lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: IO[str] | None = open(path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            self._lock(self.fh)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "unknown"
            self.fh.close()
            self.fh = None
            raise ConfigError(f"output folder {path.parent.parent} is in use by another "
                              f"tcan-live daemon ({holder}); give each daemon its own "
                              "--output") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}\n")
        self.fh.flush()

    @staticmethod
    def _lock(fh: IO[str]) -> None:
        if sys.platform == "win32":  # pragma: no cover - Windows only
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing releases flock / msvcrt locks
            self.fh = None


@dataclass
class _Stream:
    stream: str
    shape: tuple[int, int]
    meta: dict[str, Any]
    planes: dict[FrameIndex, int] = field(default_factory=dict)  # index -> plane number
    times: dict[FrameIndex, float] = field(default_factory=dict)  # index -> time stamp (s)
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


def _time_increment(times: dict[FrameIndex, float]) -> float | None:
    """The median step between successive time points of the first channel/plane/position."""
    first = sorted((i.t, v) for i, v in times.items() if i.c == i.z == i.p == 0)
    steps = [(v1 - v0) / (t1 - t0) for (t0, v0), (t1, v1) in itertools.pairwise(first)]
    dt = float(np.median(steps)) if steps else None
    return dt if dt is not None and dt > 0 else None


def _printable(text: str) -> str:
    """Text for XML: undecodable bytes of a file name (surrogates) shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class OutputStore:
    def __init__(self, out: Path, root: Path | None = None, *, model_id: str = "",
                 on_error: Any = None, suffix: str = OUTPUT_SUFFIX) -> None:
        self.out, self.root, self.model_id = Path(out), root, model_id
        self.suffix = suffix  # of the output files' names (`_tcan.ome.tif`)
        self.state = self.out / STATE_DIR
        (self.state / "parts").mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(self.state / "lock")
        self.journal = self.state / "journal.jsonl"
        self.streams: dict[str, _Stream] = {}
        self._claimed: dict[Path, str] = {}  # output file (relative) -> stream
        self.on_error = on_error or (lambda path, reason: None)
        self._recover()

    def close(self) -> None:
        self._lock.release()

    # -- recovery ----------------------------------------------------------------------------
    def _recover(self) -> None:
        if not self.journal.is_file():
            return
        records, torn = _journal_records(self.journal)
        if torn:
            log.warning("journal: ignoring a torn line (crash while writing it)")
        for _, rec in records:
            st = self.streams.get(rec["stream"])
            if "meta_update" in rec:
                if st is not None:
                    st.meta.update(_record_meta(rec))
                continue
            if st is None:
                st = self.streams[rec["stream"]] = _Stream(rec["stream"], tuple(rec["shape"]), {})
            st.meta.update(_record_meta(rec))
            st.planes[FrameIndex(**rec["index"])] = rec["plane"]
            if isinstance(rec.get("time_s"), int | float):
                st.times[FrameIndex(**rec["index"])] = float(rec["time_s"])
        self.journal.write_bytes(b"".join(raw + b"\n" for raw, _ in records))
        for st in self.streams.values():
            self._claim(st)
            parts = self._parts(st.stream)
            keep = (max(st.planes.values()) + 1) * st.shape[0] * st.shape[1] * 4
            if parts.exists() and parts.stat().st_size > keep:
                with parts.open("r+b") as fh:
                    fh.truncate(keep)
            st.dirty = True
        log.info("journal: %d frames in %d streams already saved",
                 sum(len(s.planes) for s in self.streams.values()), len(self.streams))

    # -- per frame ---------------------------------------------------------------------------
    def update_meta(self, stream: str, meta: dict[str, Any]) -> None:
        """Metadata learnt after a stream's planes were saved (a value that was unknown):
        journaled, and the stream's file is rewritten."""
        st = self.streams.get(stream)
        if st is None:
            return
        new = self._learn(st, meta)
        if new:
            rec = {"stream": stream, "meta_update": new}
            _fsync_append(self.journal, (json.dumps(rec) + "\n").encode("utf-8"))
            st.dirty, st.last_add = True, time.monotonic()

    @staticmethod
    def _learn(st: _Stream, meta: dict[str, Any]) -> dict[str, Any]:
        """Take values the stream did not know yet (never overwrite one); returns them."""
        new = {k: v for k, v in meta.items() if st.meta.get(k) is None and v is not None}
        if new:
            st.meta.update(new)
            log.info("%s: %s learnt after its first planes", st.stream, new)
        return new

    def layout_of(self, stream: str) -> tuple[str, tuple[int, ...]] | None:
        """The layout a stream's planes were first saved under (see sources/folder.py)."""
        st = self.streams.get(stream)
        lay = st.meta.get("layout") if st is not None else None
        return (str(lay[0]), tuple(int(n) for n in lay[1])) if lay else None

    def is_done(self, stream: str, index: FrameIndex) -> bool:
        st = self.streams.get(stream)
        return st is not None and index in st.planes

    def add(self, frame: Frame, enhanced: np.ndarray, pixel_size_um: float | None) -> None:
        st = self.streams.get(frame.stream)
        if st is None:
            meta: dict[str, Any] = {"pixel_size_um": pixel_size_um, "source": frame.source,
                                    "channels": {}, "z_step_um": frame.z_step_um}
            st = self.streams[frame.stream] = _Stream(frame.stream, enhanced.shape, meta)
            self._claim(st)
        if tuple(enhanced.shape) != tuple(st.shape):
            raise ValueError(f"{frame.source}: frame shape {enhanced.shape} differs from the "
                             f"stream's {st.shape}")
        if frame.index in st.planes:
            return
        # a growing OME-TIFF states its pixel size only once closed: the stack takes it
        self._learn(st, {"pixel_size_um": pixel_size_um, "z_step_um": frame.z_step_um})
        layout = frame.extra.get("layout")
        if layout is not None and "layout" not in st.meta:
            st.meta["layout"] = [layout[0], list(layout[1])]
        if frame.channel_name:
            st.meta["channels"][str(frame.index.c)] = frame.channel_name
        plane = len(st.planes)
        _fsync_append(self._parts(frame.stream),
                      np.ascontiguousarray(enhanced, np.float32).tobytes())
        rec = {"stream": frame.stream, "index": frame.index.as_dict(), "plane": plane,
               "shape": list(st.shape), "meta": st.meta}
        if frame.time_s is not None and math.isfinite(frame.time_s):
            rec["time_s"] = frame.time_s  # each plane's own time stamp
            st.times[frame.index] = frame.time_s
        _fsync_append(self.journal, (json.dumps(rec) + "\n").encode("utf-8"))
        st.planes[frame.index] = plane
        st.dirty, st.last_add = True, time.monotonic()

    # -- OME-TIFF files ----------------------------------------------------------------------
    def _parts(self, stream: str) -> Path:
        return self.state / "parts" / f"{stream_id(stream)}.f32"

    def _claim(self, st: _Stream) -> None:
        """Give the stream its own output file (recorded in its meta, so in the journal)."""
        rel = st.meta.get("output")
        if rel is None:
            rel = str(output_relpath(st.stream, self.root, suffix=self.suffix))
            other = self._claimed.get(Path(rel))
            if other is not None and other != st.stream:
                rel = str(output_relpath(st.stream, self.root, tag=_short_hash(st.stream),
                                         suffix=self.suffix))
                log.warning("%s and %s map to one output name; the latter is saved as %s",
                            other, st.stream, rel)
            st.meta["output"] = rel
        self._claimed[Path(rel)] = st.stream

    def output_path(self, stream: str) -> Path:
        st = self.streams.get(stream)
        if st is not None and st.meta.get("output"):
            return self.out / st.meta["output"]
        return self.out / output_relpath(stream, self.root, suffix=self.suffix)

    def flush(self, *, idle_s: float = 0.0, every_s: float = float("inf")) -> list[Path]:
        """Rewrite the OME-TIFF of streams that changed and were quiet for ``idle_s`` (or were
        last written more than ``every_s`` ago)."""
        now = time.monotonic()
        written = []
        for st in self.streams.values():
            if st.dirty and (now - st.last_add >= idle_s or now - st.last_flush >= every_s):
                st.dirty, st.last_flush = False, now
                try:
                    written.append(self._write(st))
                except Exception as err:  # one stream's file must not stop the others
                    log.exception("could not write %s", self.output_path(st.stream))
                    self.on_error(self.output_path(st.stream),
                                  f"output not written: {type(err).__name__}: {err}")
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
        plane_times = np.full(shape, np.nan)
        for i, when in st.times.items():
            plane_times[tuple(getattr(i, a.lower()) for a in axes)] = when
        meta = OmeMeta(axes=axes, pixel_size_um=st.meta.get("pixel_size_um"),
                       channel_names=names, time_increment_s=_time_increment(st.times),
                       z_step_um=st.meta.get("z_step_um"), plane_times_s=plane_times,
                       description=f"Enhanced live by tcan-live (model {self.model_id}) from "
                                   f"{_printable(st.meta.get('source', st.stream))}")
        path = self.output_path(st.stream)
        write_ome_tiff(path, data, meta)
        log.info("saved %d frames to %s", len(st.planes), path)
        return path
