"""FolderSource: watch an acquisition folder and emit every new frame once it is complete.

watchdog (native events, or polling for network shares) only marks paths as dirty; one scanner
thread owns all file reading and decides when frames are ready:

* a page of a multi-page TIFF / OME-TIFF / MMStack is ready when a later page exists and its
  pixel bytes are all on disk; the last page, and single-frame files, need the file to be quiet
  for ``settle_s`` seconds or a close-after-write event (Linux), and to decode;
* an ND2 being written is read best-effort (see :mod:`tcan_live.sources.nd2live`), completely
  once it opens normally;
* an NDTiff dataset is re-read when its index grows.
The scanner runs every ``scan_interval_s`` (0.1 s) and at once when a file is closed after
writing, so a closed frame does not wait for the next tick.
A file that does not decode and stays unchanged for ``give_up_s`` is reported once and left
alone until it changes again. Frames already processed (the journal's ``is_done``) are skipped,
so a restarted daemon resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tcan_live.errors import ReadError, TcanError, UnsupportedInputError
from tcan_live.frame import Frame, FrameIndex
from tcan_live.sources.naming import is_ignored, split_name

log = logging.getLogger(__name__)
TIFF_SUFFIXES = (".tif", ".tiff", ".btf")
EmitFn = Callable[[Frame], None]
ErrorFn = Callable[[Path, str], None]
DoneFn = Callable[[str, FrameIndex], bool]


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


def kind_of(path: Path) -> str | None:
    if path.name == "NDTiff.index":
        return "ndtiff"
    suffix = path.suffix.lower()
    if suffix == ".nd2":
        return "nd2"
    if suffix in TIFF_SUFFIXES:
        return "ndtiff" if (path.parent / "NDTiff.index").exists() else "tiff"
    return None


class FolderSource:
    def __init__(
        self, root: Path, *, emit: EmitFn, on_error: ErrorFn, is_done: DoneFn | None = None,
        settle_s: float = 2.0, give_up_s: float = 60.0, poll: bool = False,
        scan_interval_s: float = 0.1, pixel_size_um: float | None = None,
    ) -> None:
        self.root = Path(root)
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
        for p in sorted(self.root.rglob("*")):  # what is already there (e.g. after a restart)
            self.touch(p)
        self._thread = threading.Thread(target=self._run, name="tcan-folder-scan", daemon=True)
        self._thread.start()
        log.info("watching %s (%s)", self.root, "polling" if self.poll else "native events")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]
            self._observer.join(timeout=5)  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- events (watchdog thread): only mark paths --------------------------------------------
    def touch(self, path: Path, closed: bool = False) -> None:
        path = Path(path)
        if is_ignored(path) or kind_of(path) is None:
            return
        if kind_of(path) == "ndtiff":
            path = path.parent  # the dataset folder is the unit
        with self._lock:
            t = self._tracked.setdefault(path, Tracked(path))
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
                try:
                    self._scan(self._tracked[path])
                except Exception as err:  # never let one file stop the source
                    log.exception("unexpected error scanning %s", path)
                    self._fail(self._tracked[path], f"{type(err).__name__}: {err}", final=True)
            self._wake.wait(self.scan_interval_s)

    def _scan(self, t: Tracked) -> None:
        gen = t.generation
        try:
            st = (t.path / "NDTiff.index").stat() if t.path.is_dir() else t.path.stat()
        except FileNotFoundError:
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
        kind = "ndtiff" if t.path.is_dir() else kind_of(t.path)
        try:
            if kind == "nd2":
                self._scan_nd2(t, settled)
            elif kind == "ndtiff":
                self._scan_ndtiff(t, settled)
            else:
                self._scan_tiff(t, settled)
            t.failed = None
        except UnsupportedInputError as err:
            # a half-written file can look unsupported (no complete IFD yet): final only once
            # the file has settled and no event came in meanwhile
            if settled and gen == t.generation:
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
        if t.complete or (t.failed and t.reported):
            with self._lock:
                if gen == t.generation and (now - t.last_change >= self.settle_s or t.complete):
                    self._dirty.discard(t.path)

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

    # -- per kind ------------------------------------------------------------------------------
    def _hand_on(self, frame: Frame) -> None:
        if self.pixel_size_um is not None:  # the user's value wins over the file's
            frame = replace(frame, pixel_size_um=self.pixel_size_um)
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
            ready = reader.ready_planes(settled)
            stream, name_index, named = split_name(t.path)
            single = reader.info.n_planes == 1 and named
            for _, frame in reader.planes(t.emitted, ready):
                if self._stop.is_set():
                    return
                if single:  # image-per-file: the index and the stream come from the name
                    frame = replace(frame, index=name_index, stream=stream)
                self._hand_on(frame)
                t.emitted += 1
            t.complete = settled and t.emitted >= reader.info.n_planes

    def _scan_nd2(self, t: Tracked, settled: bool) -> None:
        from tcan_live.sources import nd2live
        from tcan_live.sources.readers import ND2Reader

        try:
            reader = ND2Reader(t.path)
        except ReadError:
            if settled and t.emitted == 0:
                raise
            live = nd2live.read_live_frames(t.path, t.emitted)
            if live is None:
                raise
            geom, frames = live
            for i, planes in enumerate(frames):
                for c, plane in enumerate(planes):
                    self._hand_on(Frame(plane, FrameIndex(t=t.emitted + i, c=c),
                                        pixel_size_um=geom.pixel_size_um,
                                        stream=str(t.path), source=str(t.path),
                                        extra={"index_source": "nd2-sequence"}))
            t.emitted += len(frames)
            raise ReadError(t.path, "ND2 still being written") from None
        with reader:
            n_c = reader.info.shape[reader.info.axes.index("C")] if "C" in reader.info.axes else 1
            for _, frame in reader.planes(t.emitted * n_c):
                self._hand_on(frame)
            t.emitted = reader.info.n_planes // n_c
            t.complete = True

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
            path = path.decode()
        # closed after writing (Linux), or renamed into place: the writer is done with it
        closed = kind in ("closed", "moved")
        p = Path(path)
        if p.is_dir():
            for child in p.rglob("*"):
                self.source.touch(child)
        else:
            self.source.touch(p, closed=closed)


__all__ = ["FolderSource", "TcanError"]
