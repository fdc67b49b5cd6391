"""Sources -> bounded queue -> one worker (model, sockets, writers) -> sinks.

``all`` mode: a FIFO with a bound; a full queue blocks the source (backpressure), nothing is
dropped and frames of a stream stay in order. ``latest`` mode: one slot per stream; a newer frame
replaces a waiting one (counted as skipped), so a slow enhancer always works on the newest frame.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from tcan_live.errors import TcanError
from tcan_live.frame import Frame

log = logging.getLogger(__name__)


class FrameQueue(Protocol):
    skipped: int

    def put(self, frame: Frame) -> None: ...

    def get(self, timeout: float) -> Frame | None: ...

    def depth(self) -> int: ...


class AllQueue:
    def __init__(self, maxsize: int, stop: threading.Event) -> None:
        self._q: queue.Queue[Frame] = queue.Queue(maxsize)
        self._stop = stop
        self.skipped = 0

    def put(self, frame: Frame) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(frame, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self, timeout: float) -> Frame | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def depth(self) -> int:
        return self._q.qsize()


class LatestQueue:
    """One slot per stream, at most ``max_streams`` slots: when more streams wait, the one that
    has waited longest is dropped (counted as skipped), so memory stays bounded however many
    streams a run has."""

    def __init__(self, max_streams: int = 256) -> None:
        self._slots: OrderedDict[str, Frame] = OrderedDict()
        self._cond = threading.Condition()
        self.skipped = 0
        self.max_streams = max_streams

    def put(self, frame: Frame) -> None:
        with self._cond:
            if frame.stream in self._slots:
                self.skipped += 1
                del self._slots[frame.stream]
            self._slots[frame.stream] = frame
            while len(self._slots) > self.max_streams:
                self._slots.popitem(last=False)
                self.skipped += 1
            self._cond.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._slots and not self._cond.wait_for(lambda: bool(self._slots), timeout):
                return None
            _, frame = self._slots.popitem(last=False)
            return frame

    def depth(self) -> int:
        with self._cond:
            return len(self._slots)


@dataclass
class Stats:
    frames_in: int = 0
    frames_done: int = 0
    errors: int = 0
    last_error: str = ""
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    processing_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    started: float = field(default_factory=time.time)

    def percentiles(self, values: deque[float]) -> tuple[float, float]:
        if not values:
            return (float("nan"), float("nan"))
        p50, p95 = np.percentile(np.fromiter(values, float), [50, 95])
        return float(p50), float(p95)


class FrameSource(Protocol):
    """Hands frames to the daemon (``emit``) from threads of its own."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def threads(self) -> list[threading.Thread]: ...


@dataclass(frozen=True)
class Processed:
    """A frame after the enhancement step: what every sink gets."""

    frame: Frame
    result: Any  # sr.enhancer.EnhanceResult (image, pixel size, trust, timings)
    header: dict[str, Any]  # the wire header (docs/protocol.md)
    pixel_size_um: float | None  # the input pixel size used
    enhancer: Any = None  # the sr.enhancer.Enhancer that made it (watch --adapt switches)


class FrameSink(Protocol):
    """Receives every processed frame, in order, in the worker thread (tcan_live/sinks.py)."""

    def open(self) -> None: ...

    def put(self, item: Processed) -> None: ...

    def idle(self) -> None: ...

    def close(self) -> None: ...


ProcessFn = Callable[[Frame], Processed]


class Worker:
    """The one thread that runs the model and owns sockets and writers.

    ``process`` turns a frame into a :class:`Processed` (the enhancement step); each of
    ``sinks`` gets it, in order (publisher, store, ...); between frames every sink's ``idle``
    runs, then ``idle`` (status). Sinks are opened in the worker thread (resources are created
    by their owner) and closed there, last opened first closed.
    """

    def __init__(self, q: FrameQueue, process: ProcessFn, sinks: Sequence[FrameSink] = (), *,
                 stats: Stats, on_error: Callable[[Frame, str], None],
                 idle: Callable[[], None] = lambda: None,
                 on_death: DeathFn = lambda reason: None) -> None:
        self.q, self.process, self.sinks, self.stats = q, process, list(sinks), stats
        self.on_error, self.idle = on_error, idle
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.setup_error: BaseException | None = None
        self.thread = threading.Thread(target=guarded("tcan-worker", self._run, on_death),
                                       name="tcan-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()
        if self.setup_error is not None:
            self.thread.join()
            raise self.setup_error

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=120)

    def _run(self) -> None:
        opened: list[FrameSink] = []
        try:
            for sink in self.sinks:
                sink.open()
                opened.append(sink)
        except BaseException as err:  # reported to start()
            self.setup_error = err
            with contextlib.suppress(Exception):
                self._close(opened)
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self.stop_event.is_set():
                frame = self.q.get(timeout=0.05)
                if frame is not None:
                    self._one(frame)
                self._idle()
        finally:
            self._close(opened)

    @staticmethod
    def _close(opened: list[FrameSink]) -> None:
        errors = []
        for sink in reversed(opened):
            try:
                sink.close()
            except Exception as err:  # the others still close
                log.exception("closing %s", type(sink).__name__)
                errors.append(err)
        if errors:
            raise errors[0]

    def _idle(self) -> None:
        for step in [*(s.idle for s in self.sinks), self.idle]:
            try:
                step()
            except Exception as err:  # housekeeping of one stream must not stop the others
                log.exception("error between frames")
                self.stats.errors += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"

    def _one(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        try:
            item = self.process(frame)
            for sink in self.sinks:
                sink.put(item)
        except TcanError as err:
            self._error(frame, str(err))
            return
        except Exception as err:  # a bad frame must not stop the daemon
            log.debug("processing failed", exc_info=True)
            self._error(frame, f"{frame.source}: {type(err).__name__}: {err}")
            return
        self.stats.frames_done += 1
        self.stats.processing_ms.append(1000 * (time.perf_counter() - t0))
        seen = frame.extra.get("seen_at")
        if seen is not None:
            self.stats.latencies_ms.append(1000 * (time.time() - seen))

    def _error(self, frame: Frame, reason: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = reason
        self.on_error(frame, reason)


DeathFn = Callable[[str], None]


def guarded(name: str, body: Callable[[], None], on_death: DeathFn) -> Callable[[], None]:
    """A thread body that reports its own death: per-item errors are contained inside ``body``;
    anything that still escapes it (or a body that returns while it should run) is a dead
    thread, and ``on_death`` makes the daemon exit non-zero so that the service manager restarts
    it (never alive and idle)."""

    def run() -> None:
        try:
            body()
        except BaseException as err:
            log.critical("thread %s died: %s: %s", name, type(err).__name__, err, exc_info=True)
            on_death(f"thread {name} died: {type(err).__name__}: {err}")

    return run


def stamp_seen(frame: Frame) -> Frame:
    return replace(frame, extra={**frame.extra, "seen_at": time.time()})
