"""FolderSource: watch an acquisition folder and emit every new frame once it is complete.

watchdog (native events, or polling for network shares) only marks paths as dirty; one scanner
thread owns all file reading and decides when frames are ready:

* a page of a multi-page TIFF / OME-TIFF / MMStack is ready when a later page exists and its
  pixel bytes are all on disk; the last page, and single-frame files, need the file to be quiet
  for ``settle_s`` seconds or a close-after-write event (Linux), and to decode;
* an ND2 being written is read best-effort (see :mod:`tcan_live.sources.nd2live`), completely
  once it opens normally;
* an NDTiff dataset is re-read when its index grows;
* a zarr dataset (a folder ``*.zarr``: OME-Zarr, pymmcore-plus's writers) hands on each plane
  once all its chunks are on disk (:mod:`tcan_live.sources.zarrsrc`).
The scanner runs every ``scan_interval_s`` (0.1 s) and at once when a file is closed after
writing, so a closed frame does not wait for the next tick.
A file that does not decode and stays unchanged for ``give_up_s`` is reported once and left
alone until it changes again. Frames already processed (the journal's ``is_done``) are skipped,
so a restarted daemon resumes where it stopped.

What is never read (the exclusion rule, docs/operations.md): the folders in ``exclude`` (the
daemon passes its output folder), any folder holding a tcan-live state folder (``.tcan-live/``:
some daemon's output), the state folders themselves, folders reached through a symbolic link
(symlinked folders are not followed, so a link loop cannot repeat frames), hidden and temporary
names, and TIFF files that tcan-live wrote (recognised by the Software tag or the OME
description that :mod:`tcan_live.export.ometiff` writes). Each excluded folder or file is
logged once.

Memory: ``_tracked`` holds only files still being followed; a finished (complete or reported)
file moves to ``_finished``, a record of (size, mtime, planes handed on) kept for the newest
:data:`FINISHED_MAX` files. A finished file that changes is followed again from where it was;
one evicted from that record is re-read from its start and the journal's ``is_done`` keeps its
frames from being processed twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcan_live.errors import ReadError, TcanError, UnsupportedInputError
from tcan_live.frame import Frame, FrameIndex, resolve_pixel_size
from tcan_live.sources.formats import ZARR_DIR_SUFFIX, input_kind, kind_by_name
from tcan_live.sources.naming import is_ignored, split_name
from tcan_live.sources.zarrsrc import ZarrReader, dataset_root, metadata_file

if TYPE_CHECKING:
    from tcan_live.sources.readers import ND2Reader

log = logging.getLogger(__name__)
STATE_DIR = ".tcan-live"  # the daemon's state folder inside its output folder (export/store.py)
FINISHED_MAX = 20_000  # finished files remembered
DIR_CACHE_MAX = 4096  # folder verdicts cached
EmitFn = Callable[[Frame], None]
ErrorFn = Callable[[Path, str], None]
DoneFn = Callable[[str, FrameIndex], bool]
Layout = tuple[str, tuple[int, ...]]
LayoutFn = Callable[[str], "Layout | None"]


def kept_index(layout: Layout, k: int) -> FrameIndex:
    """Plane ``k`` of a file under a kept layout; planes beyond it extend the slowest axis."""
    axes, shape = layout
    idx = np.unravel_index(k, (max(shape[0], k + 1), *shape[1:]))
    fields = {"T": "t", "C": "c", "Z": "z", "P": "p"}
    return FrameIndex(**{fields[a]: int(i) for a, i in zip(axes, idx, strict=True)})


@dataclass
class Tracked:
    path: Path
    size: int = -1
    mtime: float = -1.0
    last_change: float = field(default_factory=time.monotonic)
    closed: bool = False
    emitted: int = 0  # planes (ND2: sequence frames) already handed on
    complete: bool = False
    failed: str | None = None
    reported: bool = False
    generation: int = 0  # incremented by every event; a scan only concludes on its generation
    noted: str | None = None  # an incomplete-but-quiet state already reported
    layout: tuple[str, tuple[int, ...]] | None = None  # (axes, shape) first published
    relayout_logged: bool = False
    live: Any = None  # an ND2 being written: its nd2live.LiveND2


class FolderSource:
    def __init__(
        self, root: Path, *, emit: EmitFn, on_error: ErrorFn, is_done: DoneFn | None = None,
        settle_s: float = 2.0, give_up_s: float = 60.0, poll: bool = False,
        scan_interval_s: float = 0.1, pixel_size_um: float | None = None,
        exclude: Sequence[Path] = (), on_death: Callable[[str], None] | None = None,
        layout_of: LayoutFn | None = None,
        on_metadata: Callable[[str, dict[str, float]], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.exclude = tuple(Path(os.path.abspath(p)) for p in exclude)
        self._dir_verdicts: OrderedDict[Path, str | None] = OrderedDict()
        self._finished: OrderedDict[Path, tuple[int, float, int]] = OrderedDict()
        self._logged: OrderedDict[Path, None] = OrderedDict()
        self.emit, self.on_error = emit, on_error
        self.is_done = is_done or (lambda s, i: False)
        self.settle_s, self.give_up_s, self.poll = settle_s, give_up_s, poll
        self.scan_interval_s = scan_interval_s
        self.pixel_size_um = pixel_size_um
        self._tracked: dict[Path, Tracked] = {}
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a writer closed a file: scan now, not at the next tick
        self._thread: threading.Thread | None = None
        self._observer: object | None = None
        self.frames_emitted = 0
        self.on_death = on_death or (lambda reason: None)
        self.layout_of: LayoutFn = layout_of or (lambda stream: None)
        self.on_metadata = on_metadata or (lambda stream, meta: None)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        if not self.root.is_dir():
            raise ReadError(self.root, "acquisition folder does not exist")
        # tifffile warns on every poll of an OME file whose declared pages are not written yet
        logging.getLogger("tifffile").setLevel(logging.ERROR)
        observer = PollingObserver(timeout=0.5) if self.poll else Observer()
        observer.schedule(_Handler(self), str(self.root), recursive=True)  # type: ignore[arg-type]
        observer.daemon = True
        observer.start()
        self._observer = observer
        for e in self.exclude:
            if self.root in e.parents:
                self._log_once(e, f"output folder {e} is inside the watched folder: not read")
        for p in self._existing():  # what is already there (e.g. after a restart)
            self.touch(p)
        from tcan_live.pipeline import guarded

        self._thread = threading.Thread(
            target=guarded("tcan-folder-scan", self._run, self.on_death),
            name="tcan-folder-scan", daemon=True)
        self._thread.start()
        log.info("watching %s (%s)", self.root, "polling" if self.poll else "native events")

    def threads(self) -> list[threading.Thread]:
        """The threads that must stay alive while the source runs (for the daemon's check)."""
        out = [self._thread] if self._thread is not None else []
        return out + ([self._observer] if isinstance(self._observer, threading.Thread) else [])

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]
            self._observer.join(timeout=5)  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _existing(self) -> list[Path]:
        """Files below the root, symlinked and excluded folders not entered."""
        found: list[Path] = []
        for top, dirs, files in os.walk(self.root, followlinks=False):
            here = Path(top)
            dirs[:] = sorted(d for d in dirs if self._dir_excluded(here / d) is None)
            found += [here / f for f in sorted(files)]
        return found

    # -- exclusion -------------------------------------------------------------------------------
    def _dir_excluded(self, d: Path) -> str | None:
        """Why folder ``d`` (below the root) is not read, or None. Cached (bounded)."""
        with self._lock:
            if d in self._dir_verdicts:
                self._dir_verdicts.move_to_end(d)
                return self._dir_verdicts[d]
        reason: str | None = None
        if d.name == STATE_DIR:
            reason = "tcan-live state folder"
        elif os.path.islink(d):
            reason = "symbolic link to a folder (not followed)"
        elif any(d == e or e in d.parents for e in self.exclude):
            reason = "the daemon's output folder"
        elif os.path.isdir(d / STATE_DIR):
            reason = "holds tcan-live output (a .tcan-live state folder)"
        with self._lock:
            self._dir_verdicts[d] = reason
            while len(self._dir_verdicts) > DIR_CACHE_MAX:
                self._dir_verdicts.popitem(last=False)
        if reason is not None:
            self._log_once(d, f"not watching {d}: {reason}")
        return reason

    def folder_excluded(self, d: Path) -> str | None:
        """Why folder ``d`` is not entered: it or a folder on its way from the root is
        excluded; or None."""
        return self.excluded(d) or (self._dir_excluded(d) if d != self.root else None)

    def excluded(self, path: Path) -> str | None:
        """Why ``path`` is not read (a folder on its way from the root is excluded), or None."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return "outside the watched folder"
        d = self.root
        for part in rel.parts[:-1]:
            d = d / part
            reason = self._dir_excluded(d)
            if reason is not None:
                return reason
        return None

    def _log_once(self, key: Path, message: str, level: int = logging.INFO) -> None:
        with self._lock:
            if key in self._logged:
                return
            self._logged[key] = None
            while len(self._logged) > DIR_CACHE_MAX:
                self._logged.popitem(last=False)
        log.log(level, "%s", message)

    # -- events (watchdog thread): only mark paths --------------------------------------------
    def touch(self, path: Path, closed: bool = False) -> None:
        path = Path(path)
        if is_ignored(path) or kind_by_name(path) is None:
            return
        kind = kind_by_name(path)
        if kind == "ndtiff":
            path = path.parent  # the dataset folder is the unit
        elif kind == "zarr":
            root = dataset_root(path, below=self.root)
            if root is None or (root == path and not os.path.isdir(path)):
                return
            path = root  # the dataset folder is the unit
        elif os.path.isdir(path):
            return  # a folder named like an image (x.tif) is a folder, not an image
        if self.excluded(path) is not None:
            return
        if path in self._finished and not self._changed_since_finished(path):
            return
        with self._lock:
            t = self._tracked.get(path)
            if t is None:
                done = self._finished.pop(path, None)
                t = self._tracked[path] = Tracked(path, emitted=done[2] if done else 0)
            t.generation += 1
            t.last_change = time.monotonic()
            t.closed = t.closed or closed
            if t.failed:  # a changed file gets another chance
                t.failed, t.reported = None, False
            self._dirty.add(path)
        if closed:
            self._wake.set()

    # -- scanner thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # set again by an event during the scan: no wait after it
            with self._lock:
                todo = sorted(self._dirty)
            for path in todo:
                if self._stop.is_set():
                    return
                t = self._tracked.get(path)
                if t is None:
                    with self._lock:
                        self._dirty.discard(path)
                    continue
                try:
                    self._scan(t)
                except Exception as err:  # never let one file stop the source
                    log.exception("unexpected error scanning %s", path)
                    self._fail(t, f"{type(err).__name__}: {err}", final=True)
            self._wake.wait(self.scan_interval_s)

    def _scan(self, t: Tracked) -> None:
        gen = t.generation
        try:
            st = self._stat_path(t.path).stat()
        except FileNotFoundError:
            if t.path.is_dir():  # a zarr dataset whose metadata is not written yet
                return
            self._forget(t.path)
            return
        except PermissionError as err:  # on Windows also: still locked by the writer
            final = time.monotonic() - t.last_change >= self.give_up_s
            self._fail(t, f"permission denied ({err.strerror})", final=final)
            return
        now = time.monotonic()
        if (st.st_size, st.st_mtime) != (t.size, t.mtime):
            t.size, t.mtime, t.last_change = st.st_size, st.st_mtime, now
        settled = t.closed or now - t.last_change >= self.settle_s
        if t.failed and not t.reported and now - t.last_change >= self.give_up_s:
            self._fail(t, t.failed, final=True)
            return
        kind = input_kind(t.path)
        try:
            if kind == "nd2":
                self._scan_nd2(t, settled)
            elif kind == "zarr":
                self._scan_zarr(t, settled, quiet=now - t.last_change >= self.give_up_s)
            elif kind == "ndtiff":
                self._scan_ndtiff(t, settled)
            else:
                self._scan_tiff(t, settled)
            t.failed = None
        except UnsupportedInputError as err:
            # a half-written file can look unsupported (no complete IFD yet, ImageJ metadata
            # cut): final once the writer closed it, or it stayed quiet for give_up_s, and no
            # event came in meanwhile (a slow writer's pause longer than settle_s is not final)
            quiet = t.closed or now - t.last_change >= self.give_up_s
            if settled and quiet and gen == t.generation:
                self._fail(t, err.reason, final=True)
            else:
                t.failed = err.reason
        except (ReadError, OSError) as err:
            reason = err.reason if isinstance(err, ReadError) else f"{type(err).__name__}: {err}"
            if settled and st.st_size == 0:
                quiet = now - t.last_change >= self.give_up_s
                self._fail(t, "file is empty (0 bytes)", final=quiet)
            else:
                t.failed = reason  # maybe still being written: retry until give_up_s
        if t.noted and not t.complete:
            with self._lock:  # reported as incomplete: wait for the next change event
                if gen == t.generation:
                    self._dirty.discard(t.path)
        if t.complete or (t.failed and t.reported):
            with self._lock:
                if gen == t.generation and (now - t.last_change >= self.settle_s or t.complete):
                    self._dirty.discard(t.path)
                    if t.path not in self._dirty:
                        self._finish(t)

    def _incomplete(self, t: Tracked, reason: str) -> None:
        """A quiet file with missing pixel data: reported once when quiet for ``give_up_s``;
        the file stays followed (not final), so frames added later are still read."""
        if time.monotonic() - t.last_change >= self.give_up_s and t.noted != reason:
            t.noted = reason
            self.on_error(t.path, reason + " (still watched: frames written later are read)")

    def _fail(self, t: Tracked, reason: str, *, final: bool) -> None:
        t.failed = reason
        if final and not t.reported:
            if t.closed is False and time.monotonic() - t.last_change < self.settle_s:
                return  # changed while we looked: not final after all
            t.reported = True
            with self._lock:
                self._dirty.discard(t.path)
            self.on_error(t.path, reason)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._dirty.discard(path)
            self._tracked.pop(path, None)

    @staticmethod
    def _stat_path(path: Path) -> Path:
        """The file whose size and time say that a file or dataset changed."""
        if not path.is_dir():
            return path
        if path.name.lower().endswith(ZARR_DIR_SUFFIX):
            return metadata_file(path) or path / "zarr.json"
        return path / "NDTiff.index"

    def _stat_key(self, path: Path) -> tuple[int, float] | None:
        try:
            st = self._stat_path(path).stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime

    def _changed_since_finished(self, path: Path) -> bool:
        with self._lock:
            done = self._finished.get(path)
        return done is None or self._stat_key(path) != done[:2]

    def _finish(self, t: Tracked) -> None:
        """Stop following ``t`` (scanner thread, lock held): keep a small record of it."""
        self._tracked.pop(t.path, None)
        key = self._stat_key(t.path)
        if key is None:
            return
        self._finished[t.path] = (*key, t.emitted)
        self._finished.move_to_end(t.path)
        while len(self._finished) > FINISHED_MAX:
            self._finished.popitem(last=False)

    def tracked_count(self) -> tuple[int, int]:
        """(files followed, finished files remembered): both bounded, see the module doc."""
        with self._lock:
            return len(self._tracked), len(self._finished)

    # -- per kind ------------------------------------------------------------------------------
    def _hand_on(self, frame: Frame) -> None:
        px = resolve_pixel_size(self.pixel_size_um, frame.pixel_size_um, source=frame.source)
        if px != frame.pixel_size_um:
            frame = replace(frame, pixel_size_um=px)
        if not self.is_done(frame.stream, frame.index):
            self.emit(frame)
            self.frames_emitted += 1

    def _scan_tiff(self, t: Tracked, settled: bool) -> None:
        from tcan_live.sources.readers import TiffReader

        with TiffReader(t.path) as reader:
            if reader.info.format == "ndtiff-file":
                # the image file of an NDTiff dataset: read through the dataset's index (it
                # may come later), never as a TIFF of its own
                self._forget(t.path)
                return
            if reader.info.extra.get("written_by_tcan_live"):
                # tcan-live's own output (wherever it is): never enhanced again
                self._log_once(t.path, f"not reading {t.path}: written by tcan-live")
                t.complete = True
                return
            ready = reader.ready_planes(settled)
            if settled and ready < reader.info.n_planes:
                # quiet, and pages missing or cut: reported once (give_up_s), and followed on if
                # it grows again (a time-lapse with a long interval looks the same)
                incomplete = reader.incomplete_page()
                if incomplete is not None or ready == t.emitted:
                    self._incomplete(t, incomplete or (
                        f"incomplete: {ready} of {reader.info.n_planes} planes on disk"))
            stream, name_index, named = split_name(t.path)
            single = reader.info.n_planes == 1 and named
            now: Layout = (reader.info.axes or "T", tuple(reader.info.shape) or (1,))
            kept = self._layout(t, now)
            for _, frame in reader.planes(t.emitted, ready):
                if self._stop.is_set():
                    return
                if single:  # image-per-file: the index and the stream come from the name
                    frame = replace(frame, index=name_index, stream=stream)
                elif kept is not None:  # the layout first published is kept
                    frame = replace(frame, index=kept_index(kept, t.emitted))
                t.layout = t.layout or now  # fixed by the first plane handed on
                frame = replace(frame, extra={**frame.extra, "layout": t.layout})
                self._hand_on(frame)
                t.emitted += 1
            t.complete = settled and t.emitted >= reader.info.n_planes
            if t.complete and not single and self.pixel_size_um is None and \
                    reader.info.pixel_size_um is not None:
                # metadata that a writer adds only at close (a growing OME-TIFF's OME-XML)
                self.on_metadata(str(t.path), {"pixel_size_um": reader.info.pixel_size_um})

    def _layout(self, t: Tracked, now: Layout) -> Layout | None:
        """A frame's identity is decided once: the (axes, shape) under which a file's first
        planes were published (``t.layout``, set at the first hand-on or taken from the
        journal, so also across restarts) stays the file's layout. Returns it when the file now
        describes itself otherwise (e.g. a growing OME-TIFF that tifffile reads as T while it
        grows and as one OME Image per page, P, once closed), else None."""
        if t.layout is None:
            t.layout = self.layout_of(str(t.path))
        kept = t.layout
        if kept is None or kept == now:
            return None
        if kept[0] == now[0] and kept[1][1:] == now[1][1:]:  # the same layout, longer
            t.layout = now
            return None
        if not t.relayout_logged:
            t.relayout_logged = True
            log.warning("%s: its metadata now lays the planes out as %s %s, but planes were "
                        "already published as %s %s; keeping the first layout (a plane keeps "
                        "the index it was first published with)", t.path, now[0], now[1],
                        kept[0], kept[1])
        return kept

    def _scan_nd2(self, t: Tracked, settled: bool) -> None:
        from tcan_live.sources import nd2live
        from tcan_live.sources.readers import ND2Reader

        try:
            reader = ND2Reader(t.path)
        except ReadError:
            if t.live is None:
                t.live = nd2live.LiveND2(t.path, start=t.emitted)
            live: nd2live.LiveND2 = t.live
            try:
                done = live.poll(settled)
            except nd2live.Refused as err:
                self._log_once(t.path, f"{t.path}: not read while it is written ({err}); "
                                       "read once complete", logging.WARNING)
                raise ReadError(t.path, f"ND2 not complete yet (not read live: {err})") \
                    from None
            for sequence_frame in done:
                for frame in nd2live.frames_of(live, sequence_frame):
                    self._hand_on(frame)
                t.emitted += 1
            if live.finished or (settled and not done):
                self._incomplete(t, "ND2 without a readable chunk map (still being written, "
                                    f"truncated or damaged); {t.emitted} frames read from its "
                                    "image chunks")
            return
        with reader:
            if t.live is not None and t.live.checksums:
                self._verify_live(t, reader)
            n_c = reader.info.shape[reader.info.axes.index("C")] if "C" in reader.info.axes else 1
            for _, frame in reader.planes(t.emitted * n_c):
                self._hand_on(frame)
            t.emitted = reader.info.n_planes // n_c
            t.complete = True
            t.live = None

    def _verify_live(self, t: Tracked, reader: ND2Reader) -> None:
        """Every frame handed on while the file was written equals the finished file's."""
        assert t.live is not None
        bad = [seq for seq, crc in t.live.checksums.items()
               if reader.sequence_checksum(seq) != crc]
        t.live.checksums.clear()
        if bad:
            self.on_error(t.path, f"{len(bad)} frame(s) read while the file was written differ "
                                  f"from the finished file (sequence frames {bad[:5]}...); "
                                  "please report this file")

    def _scan_zarr(self, t: Tracked, settled: bool, quiet: bool) -> None:
        """A zarr dataset: every plane whose chunks are on disk, once (sources/zarrsrc.py)."""
        with ZarrReader(t.path) as reader:
            if reader.info.extra.get("written_by_tcan_live"):
                self._log_once(t.path, f"not reading {t.path}: written by tcan-live")
                t.complete = True
                return
            seen: set[tuple[int, ...]] = t.live if isinstance(t.live, set) else set()
            t.live = seen
            for idx, frame in reader.written_planes(seen, multi_ok=settled and quiet):
                self._hand_on(frame)
                seen.add(idx)
                t.emitted += 1
            t.complete = settled and len(seen) >= reader.info.n_planes
            if settled and not t.complete and not reader.one_plane_per_chunk() and not quiet:
                self._log_once(t.path, f"{t.path}: chunks hold several planes; they are read "
                                       f"once the dataset has been quiet for {self.give_up_s} s")

    def _scan_ndtiff(self, t: Tracked, settled: bool) -> None:
        from tcan_live.sources.readers import NDTiffReader

        with NDTiffReader(t.path) as reader:
            for _, frame in reader.planes(t.emitted):
                self._hand_on(frame)
                t.emitted += 1
            t.complete = settled and t.emitted >= reader.info.n_planes


class _Handler:
    """watchdog event handler: translate events into :meth:`FolderSource.touch` calls."""

    def __init__(self, source: FolderSource) -> None:
        self.source = source

    WRITES = ("created", "modified", "moved", "closed")  # not opened / closed_no_write: reads

    def dispatch(self, event: object) -> None:
        try:
            self._dispatch(event)
        except Exception:  # one odd event (a name, a vanished folder) must not stop watching
            log.exception("ignored a file-system event: %r", event)

    def _dispatch(self, event: object) -> None:
        kind = getattr(event, "event_type", "")
        if kind not in self.WRITES:
            return
        if getattr(event, "is_directory", False) and kind != "moved":
            return
        path = getattr(event, "dest_path", "") or getattr(event, "src_path", "")
        if kind == "moved":
            path = getattr(event, "dest_path", "")
        if not path:
            return
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        # closed after writing (Linux), or renamed into place: the writer is done with it
        closed = kind in ("closed", "moved")
        p = Path(path)
        if p.is_dir():
            if self.source.folder_excluded(p) is not None:
                return
            for top, dirs, files in os.walk(p, followlinks=False):
                here = Path(top)
                dirs[:] = [d for d in dirs if self.source._dir_excluded(here / d) is None]
                for f in files:
                    self.source.touch(here / f)
        else:
            self.source.touch(p, closed=closed)


__all__ = ["FolderSource", "TcanError"]
