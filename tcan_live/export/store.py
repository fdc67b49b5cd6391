"""OutputStore: enhanced frames saved crash-safely and append-only, one output per source stack.

Every enhanced plane is written as its own chunk of the stream's **plane store**, an OME-Zarr
image (``export/omezarr.py``: one chunk per plane, so the bytes written per plane do not depend
on how many the stream already has) and fsync'd; then one line is appended to
``<out>/.tcan-live/journal.jsonl`` (and fsync'd). The journal is the truth: on start-up its
lines (a torn last line is ignored) say which (stream, t, c, z, p) are done; planes found in a
plane store but not in the journal (written just before a crash) are removed, and journaled
planes missing from it are forgotten (so processed again). A frame is therefore either fully
saved and never processed again, or not saved at all and processed again.

The plane store is always current (a viewer can open it during the acquisition). Where it lives
depends on the output format:

- ``ome-zarr``: it *is* the output, ``<name>_tcan.ome.zarr``;
- ``ome-tiff`` (the default): it is ``<out>/.tcan-live/live/<name>_tcan.ome.zarr``, and the
  OME-TIFF ``<name>_tcan.ome.tif`` is written from it, atomically, once the stream has been
  quiet for ``max(idle_s, 2 x the longest gap between its frames so far)`` and at shutdown, so a
  steady acquisition writes its OME-TIFF once, at the end, not after every frame.

OME-TIFF axes are those of the indices seen (T, C, Z with size > 1; positions as separate OME
images); OME-Zarr has all of T, C, Z (positions as one multiscale each). Planes never processed
(``latest`` mode) are NaN.

Output names (:func:`output_relpath`, the one rule): the source's path relative to the watched
folder with its image suffix replaced by ``_tcan`` and the format's suffix; pushed streams
(``ingest:<name>``) go to ``ingest/<name>_tcan...``. Every component is made safe (no ``..``, no
empty or control characters, at most :data:`MAX_NAME_BYTES` bytes: a longer name is cut and
given a hash), so an output is never outside the output folder. Two streams whose names map to
one file (``x.tif``, ``x.ome.tif``, ``x_t0000.tif``) get distinct files: the later one gets a
hash of its stream in its name. The name chosen is recorded in the journal, so it survives
restarts.

One daemon per output folder: ``.tcan-live/lock`` is locked (``flock`` / ``msvcrt``) by the
daemon's store and holds its PID; a second daemon on the same folder is refused. Other tools
(``record --fill-from``) only read the journal and the plane stores (:func:`read_journal`).

Journals of earlier versions, whose planes were appended to ``.tcan-live/parts/<id>.f32``, are
taken over: their planes are copied into plane stores once, then the parts files are removed.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from tcan_live.errors import ConfigError
from tcan_live.export.formats import output_suffix, strip_output_suffix
from tcan_live.export.ometiff import OmeMeta, write_ome_tiff
from tcan_live.export.omezarr import ZARR_SUFFIX, PlaneStore, ZarrMeta
from tcan_live.frame import Frame, FrameIndex
from tcan_live.sources.folder import STATE_DIR
from tcan_live.sources.naming import strip_image_suffix
from tcan_live.transport.ingest import INGEST_STREAM_PREFIX

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
    ``output`` (the saved file, a path), ``planes`` (its plane store, a path: current during
    the acquisition), ``done`` (the saved indices) and ``frames`` (their count). Writes
    nothing."""
    found: dict[str, dict[str, Any]] = {}
    records, _ = _journal_records(Path(out) / STATE_DIR / "journal.jsonl")
    for _, rec in records:
        entry = found.setdefault(rec["stream"], {"done": set()})
        entry.update(_record_meta(rec))
        if "meta_update" not in rec:
            entry["done"].add(FrameIndex(**rec["index"]))
    for stream, entry in found.items():
        rel = entry.get("output") or str(output_relpath(stream, None))
        entry["output"] = Path(out) / rel
        entry["planes"] = Path(out) / (entry.get("planes") or _planes_relpath(rel))
        entry["frames"] = len(entry["done"])
    return found


def _legacy_parts_name(stream: str) -> str:
    """The parts file name of output folders written before the plane stores (frozen: it
    must find those files whatever the wire's topic ids become)."""
    return hashlib.sha1(stream.encode("utf-8", "surrogateescape")).hexdigest()[:12] + ".f32"


def _planes_relpath(output_rel: str) -> str:
    """Where the plane store of an OME-TIFF output lives (``.tcan-live/live/``, see the module
    doc); an OME-Zarr output is its own plane store."""
    if output_rel.endswith(ZARR_SUFFIX):
        return output_rel
    return str(Path(STATE_DIR) / "live" / (strip_output_suffix(output_rel) + ZARR_SUFFIX))


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
    planes: set[FrameIndex] = field(default_factory=set)  # saved (journaled) indices
    times: dict[FrameIndex, float] = field(default_factory=dict)  # index -> time stamp (s)
    store: PlaneStore | None = None
    dirty: bool = False  # the OME-TIFF (or the OME-Zarr's time scale) is behind
    last_add: float = -math.inf  # when its last frame (or metadata) came
    longest_gap: float = 0.0  # between two of its frames, this run (s)
    time_increment: float | None = None
    n_channels: int = 1  # 1 + the largest channel index saved
    models: dict[FrameIndex, str] = field(default_factory=dict)  # which model made each plane


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
                 on_error: Any = None, tag: str = "tcan", fmt: str = "ome-tiff",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.root, self.model_id = Path(out), root, model_id
        self.clock = clock  # for the quiet-time rule (a benchmark runs hours of it in seconds)
        self.fmt = fmt
        self.suffix = f"_{tag}{output_suffix(fmt)}"  # of the output files' names
        self.state = self.out / STATE_DIR
        self.state.mkdir(parents=True, exist_ok=True)
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
        old_planes: dict[str, dict[FrameIndex, int]] = {}  # journals of the parts-file era
        for _, rec in records:
            st = self.streams.get(rec["stream"])
            if "meta_update" in rec:
                if st is not None:
                    st.meta.update(_record_meta(rec))
                continue
            if st is None:
                st = self.streams[rec["stream"]] = _Stream(rec["stream"], tuple(rec["shape"]), {})
            st.meta.update(_record_meta(rec))
            index = FrameIndex(**rec["index"])
            st.planes.add(index)
            st.n_channels = max(st.n_channels, index.c + 1)
            if "plane" in rec:
                old_planes.setdefault(st.stream, {})[index] = int(rec["plane"])
            if isinstance(rec.get("time_s"), int | float):
                st.times[index] = float(rec["time_s"])
            st.models[index] = str(rec.get("model") or self.model_id)
        lost: set[tuple[str, FrameIndex]] = set()
        for st in self.streams.values():
            self._claim(st)
            store = self._store(st)
            if st.stream in old_planes:
                self._take_over_parts(st, store, old_planes[st.stream])
            removed = store.keep_only(st.planes)
            if removed:
                log.info("%s: %d plane(s) written but never journaled removed", st.stream,
                         removed)
            missing = st.planes - store.written()
            if missing:
                log.warning("%s: %d saved plane(s) missing from %s; they are processed again",
                            st.stream, len(missing), store.path)
                st.planes -= missing
                for i in missing:
                    st.models.pop(i, None)
                lost |= {(st.stream, i) for i in missing}
            st.time_increment = _time_increment(st.times)
            store.set_meta(self._zarr_meta(st))
            st.dirty = True
        keep = [raw for raw, rec in records
                if "meta_update" in rec or (rec["stream"], FrameIndex(**rec["index"])) not in lost]
        self.journal.write_bytes(b"".join(raw + b"\n" for raw in keep))
        log.info("journal: %d frames in %d streams already saved",
                 sum(len(s.planes) for s in self.streams.values()), len(self.streams))

    def _take_over_parts(self, st: _Stream, store: PlaneStore,
                         planes: dict[FrameIndex, int]) -> None:
        """A journal of an earlier version: its planes are in ``parts/<id>.f32`` (plane
        number in each record); copy them into the plane store once, then drop the file."""
        parts = self.state / "parts" / _legacy_parts_name(st.stream)
        if not parts.is_file():
            return
        n = parts.stat().st_size // (st.shape[0] * st.shape[1] * 4)
        data = np.memmap(parts, np.float32, "r", shape=(n, *st.shape))
        have = store.written()
        for index, plane in planes.items():
            if plane < n and index not in have:
                store.write(index, np.asarray(data[plane]))
        del data
        parts.unlink()
        log.info("%s: %d planes taken over from %s", st.stream, len(planes), parts)

    # -- per frame ---------------------------------------------------------------------------
    def update_meta(self, stream: str, meta: dict[str, Any]) -> None:
        """Metadata learnt after a stream's planes were saved (a value that was unknown):
        journaled, and the stream's files updated."""
        st = self.streams.get(stream)
        if st is None:
            return
        new = self._learn(st, meta)
        if new:
            rec = {"stream": stream, "meta_update": new}
            _fsync_append(self.journal, (json.dumps(rec) + "\n").encode("utf-8"))
            self._store(st).set_meta(self._zarr_meta(st))
            st.dirty, st.last_add = True, self.clock()

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

    def add(self, frame: Frame, enhanced: np.ndarray, pixel_size_um: float | None,
            model: str | None = None) -> None:
        """Save one enhanced plane (``model``: the model that made it, if not the store's)."""
        model = model or self.model_id
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
        store = self._store(st)
        store.write(frame.index, enhanced)
        if model not in st.meta.setdefault("models", [self.model_id]):
            st.meta["models"] = [*st.meta["models"], model]  # a switch (watch --adapt)
        rec: dict[str, Any] = {"stream": frame.stream, "index": frame.index.as_dict(),
                               "shape": list(st.shape), "meta": st.meta, "model": model}
        if frame.time_s is not None and math.isfinite(frame.time_s):
            rec["time_s"] = frame.time_s  # each plane's own time stamp
            st.times[frame.index] = frame.time_s
            if len(st.times) <= 16 or len(st.times).bit_count() == 1:  # O(1) per frame
                st.time_increment = _time_increment(st.times)
        _fsync_append(self.journal, (json.dumps(rec) + "\n").encode("utf-8"))
        st.planes.add(frame.index)
        st.models[frame.index] = model
        st.n_channels = max(st.n_channels, frame.index.c + 1)
        store.set_meta(self._zarr_meta(st))  # rewritten only when what it says changed
        now = self.clock()
        if math.isfinite(st.last_add):
            st.longest_gap = max(st.longest_gap, now - st.last_add)
        st.dirty, st.last_add = True, now

    # -- files -------------------------------------------------------------------------------
    def _store(self, st: _Stream) -> PlaneStore:
        if st.store is None:
            rel = st.meta.get("planes") or _planes_relpath(st.meta["output"])
            st.meta["planes"] = rel
            st.store = PlaneStore(self.out / rel, st.shape)
        return st.store

    def _zarr_meta(self, st: _Stream, full: bool = False) -> ZarrMeta:
        """The OME-Zarr's metadata; ``full`` (when the stream's output is written, not after
        every frame) adds which model made each plane if more than one did."""
        chans = st.meta.get("channels", {})
        names = [chans.get(str(c), f"C{c}") for c in range(st.n_channels)]
        extra: dict[str, Any] = {"model": self.model_id, "stream": _printable(st.stream)}
        if len(st.meta.get("models", [])) > 1:
            extra["models"] = st.meta["models"]
            if full:
                extra["plane_models"] = self.plane_models(st)
        return ZarrMeta(pixel_size_um=st.meta.get("pixel_size_um"),
                        z_step_um=st.meta.get("z_step_um"),
                        time_increment_s=st.time_increment, channel_names=names,
                        description=self._description(st, full), extra=extra)

    @staticmethod
    def plane_models(st: _Stream) -> dict[str, list[list[int]]]:
        """Model id -> the [t, c, z, p] of every plane it made, in index order."""
        out: dict[str, list[list[int]]] = {}
        for i in sorted(st.models, key=lambda i: (i.p, i.t, i.c, i.z)):
            out.setdefault(st.models[i], []).append([i.t, i.c, i.z, i.p])
        return out

    def _description(self, st: _Stream, full: bool = False) -> str:
        models = st.meta.get("models", [self.model_id])
        text = (f"Enhanced live by tcan-live (model {models[0]}) from "
                f"{_printable(st.meta.get('source', st.stream))}")
        if len(models) > 1:
            text += "; switched to " + ", then ".join(models[1:]) + " (watch --adapt)"
            if full:
                text += "; planes [t, c, z, p] by model: " + json.dumps(self.plane_models(st))
        return text

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

    def flush(self, *, idle_s: float = 0.0) -> list[Path]:
        """Bring the outputs of streams that changed up to date once they have been quiet for
        ``max(idle_s, 2 x their longest gap)`` (``idle_s=0``: all of them now, as at
        shutdown): the OME-TIFF written from the plane store, or the OME-Zarr's time scale."""
        now = self.clock()
        written = []
        for st in self.streams.values():
            wait = max(idle_s, 2 * st.longest_gap) if idle_s > 0 else 0.0
            if st.dirty and now - st.last_add >= wait:
                st.dirty = False
                try:
                    written.append(self._write(st))
                except Exception as err:  # one stream's file must not stop the others
                    log.exception("could not write %s", self.output_path(st.stream))
                    self.on_error(self.output_path(st.stream),
                                  f"output not written: {type(err).__name__}: {err}")
        return written

    def _write(self, st: _Stream) -> Path:
        store = self._store(st)
        st.time_increment = _time_increment(st.times)
        store.set_meta(self._zarr_meta(st, full=True))
        path = self.output_path(st.stream)
        if path.name.endswith(ZARR_SUFFIX):
            return path  # the plane store is the output
        idx = list(st.planes)
        size = {a: max(getattr(i, a) for i in idx) + 1 for a in "tczp"}
        axes = "".join(a.upper() for a in "ptcz" if size[a] > 1)
        shape = tuple(size[a.lower()] for a in axes)
        data = np.full((*shape, *st.shape), np.nan, np.float32)
        for p in range(size["p"]):
            block = store.block(p, (size["t"], size["c"], size["z"]))  # T, C, Z, Y, X
            squeezed = block.reshape(*(size[a] for a in "tcz" if a.upper() in axes), *st.shape)
            if "P" in axes:
                data[p] = squeezed
            else:
                data[...] = squeezed
        zarr_meta = self._zarr_meta(st, full=True)
        plane_times = np.full(shape, np.nan)
        for i, when in st.times.items():
            plane_times[tuple(getattr(i, a.lower()) for a in axes)] = when
        meta = OmeMeta(axes=axes, pixel_size_um=zarr_meta.pixel_size_um,
                       channel_names=zarr_meta.channel_names,
                       time_increment_s=st.time_increment, z_step_um=zarr_meta.z_step_um,
                       plane_times_s=plane_times, description=self._description(st, full=True))
        write_ome_tiff(path, data, meta)
        log.info("saved %d frames to %s", len(st.planes), path)
        return path
