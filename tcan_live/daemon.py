"""The daemon: the composition root that names the concrete parts and wires them together.

    FolderSource / IngestSource (threads of their own) --put--> queue --get--> Worker thread:
        enhancement step (Enhancer, model resident on the device, with the trust check)
        -> sinks, in order (tcan_live/sinks.py): PublisherSink (raw, enhanced, status),
           StoreSink (journal + plane store + OME-TIFF per stack), UncertaintySink (optional)

Only the worker thread touches the model, the socket and the output files; sources and
callbacks only enqueue.
"""

from __future__ import annotations

import logging
import logging.handlers
import signal
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.errors import ConfigError, UnsupportedInputError
from tcan_live.frame import Frame, resolve_pixel_size
from tcan_live.pipeline import (
    AllQueue,
    FrameQueue,
    LatestQueue,
    Processed,
    Stats,
    Worker,
    stamp_seen,
)
from tcan_live.settings import Settings

log = logging.getLogger(__name__)
UNCERTAINTY_DIR = "uncertainty"  # inside the output folder: the saved uncertainty maps


class Daemon:
    def __init__(self, settings: Settings) -> None:
        if settings.folder is None and settings.ingest is None:
            raise ConfigError("nothing to watch: give a folder (or --ingest ENDPOINT)")
        self.settings = settings
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.run_id = uuid.uuid4().hex[:12]
        self.queue: FrameQueue = (LatestQueue() if settings.mode == "latest"
                                  else AllQueue(settings.queue_size, self.stop_event))
        self._pending_errors: deque[tuple[str, str]] = deque(maxlen=1000)
        self._seq = 0
        self._last_status = 0.0
        self.enhancer: Any = None
        self._publisher: Any = None  # sinks (tcan_live/sinks.py), made in start()
        self._store_sink: Any = None
        self._unc_sink: Any = None
        self.store: Any = None
        self.sources: list[Any] = []
        self.worker: Worker | None = None
        # set by SIGINT/SIGTERM (the CLI) or by a dead thread (fatal); the CLI waits on it
        self.stop_requested = threading.Event()
        self.failed: str | None = None
        self.unc_store: Any = None
        # watch --adapt: (channel, Enhancer of the adapted model) once switched; events of the
        # adaptation thread, published by the worker thread
        self.adapted: tuple[int, Any] | None = None
        self._events: deque[dict[str, Any]] = deque(maxlen=100)
        check_remote(settings)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from tcan_live.export.store import OutputStore
        from tcan_live.sinks import PublisherSink, StoreSink, UncertaintySink
        from tcan_live.sr.enhancer import Enhancer

        s = self.settings
        self.enhancer = Enhancer(s.model, device=s.device, tile=s.tile, precision=s.precision,
                                 restore=s.restore)
        self.store = OutputStore(s.output_folder(), s.folder.resolve() if s.folder else None,
                                 model_id=self.enhancer.model_id, on_error=self._file_error,
                                 fmt=s.output_format)
        self._publisher = PublisherSink(s.endpoint, allow_remote=s.allow_remote,
                                        curve_keys=s.curve_keys, replay_topics=s.replay_topics,
                                        replay_bytes=int(s.replay_mb * 2**20),
                                        final_status=self.status)
        self._store_sink = StoreSink(self.store, s.flush_idle_s)
        sinks: list[Any] = [self._publisher, self._store_sink]
        if s.uncertainty:
            # uncertainty maps: a store of their own (same frame identities, own journal), in
            # <output>/uncertainty/ (inside the output folder, so never watched)
            self.unc_store = OutputStore(s.output_folder() / UNCERTAINTY_DIR,
                                         s.folder.resolve() if s.folder else None,
                                         model_id=self.enhancer.model_id,
                                         on_error=self._file_error, tag="uncertainty",
                                         fmt=s.output_format)
            self._unc_sink = UncertaintySink(self.enhancer, self._publisher, self.unc_store,
                                             s.flush_idle_s)
            sinks.append(self._unc_sink)
        if s.adapt and not self._resume_adapted():
            sinks.append(self._adapt_sink())
        try:
            self._start_threads(sinks)
        except BaseException:
            self.stop()
            self.store.close()
            if self.unc_store is not None:
                self.unc_store.close()
            raise
        log.info("daemon %s running: model %s on %s, publishing on %s, saving to %s",
                 self.run_id, self.enhancer.model_id, self.enhancer.device, s.endpoint,
                 s.output_folder())

    def _adapted_dir(self) -> Path:
        from tcan_live.sources.folder import STATE_DIR

        return self.settings.output_folder() / STATE_DIR / "adapted"

    def _resume_adapted(self) -> bool:
        """A restart (same output folder, same initial weights): the adaptation in force before
        it takes over at once, instead of a new one on later frames of the run."""
        from tcan_live.errors import TcanError
        from tcan_live.sinks import read_adapted_record

        found = read_adapted_record(self._adapted_dir(), self.enhancer.card.weights.sha256)
        if found is None:
            return False
        try:
            self._switch(*found, resumed=True)
        except TcanError as err:  # a damaged folder: adapt anew, never stop
            log.warning("watch --adapt: cannot take back %s (%s); adapting anew", found[0], err)
            return False
        return True

    def _adapt_sink(self) -> Any:
        from tcan_live.sinks import AdaptSink
        from tcan_live.sr.card import resolve_model

        s = self.settings
        model_id = f"{self.enhancer.model_id}-adapted-{self.run_id}"
        return AdaptSink(init=resolve_model(s.model), n_frames=s.adapt_frames,
                         out=self._adapted_dir() / model_id,
                         model_id=model_id, budget_min=s.adapt_budget_min, steps=s.adapt_steps,
                         pixel_size_um=s.pixel_size_um, device=str(self.enhancer.device),
                         switch=self._switch, report=self._events.append,
                         check=s.adapt_check)

    def _switch(self, folder: Path, channel: int, resumed: bool = False) -> None:
        """Worker thread, between frames (or start(), ``resumed``): the adapted model takes
        over its channel; the output folder remembers it for a restart."""
        from tcan_live.sinks import write_adapted_record
        from tcan_live.sr.enhancer import Enhancer

        s = self.settings
        new = Enhancer(str(folder), device=str(self.enhancer.device), tile=s.tile,
                       precision=s.precision, restore=s.restore)
        self.adapted = (channel, new)
        if not resumed:
            try:
                write_adapted_record(self._adapted_dir(), folder.name, channel,
                                     self.enhancer.card.weights.sha256)
            except OSError as err:  # the switch stands; only a restart would adapt again
                log.warning("watch --adapt: could not record the adapted model: %s", err)
        log.info("watch --adapt: %s channel %d to %s from frame seq %d on",
                 "took back" if resumed else "switched", channel, new.model_id, self._seq)
        self._events.append({"event": "model-switched", "model": new.model_id,
                             "previous": self.enhancer.model_id, "channel": channel,
                             "from_seq": self._seq, "folder": str(folder),
                             "resumed": resumed})

    @property
    def publisher(self) -> Any:
        """The ZeroMQ publisher, once the worker thread has opened it."""
        return self._publisher.publisher if self._publisher is not None else None

    @property
    def last_uncertainty(self) -> float | None:
        return self._unc_sink.last_score if self._unc_sink is not None else None

    def _start_threads(self, sinks: list[Any]) -> None:
        s = self.settings
        self.worker = Worker(self.queue, self._process, sinks, stats=self.stats,
                             on_error=self._frame_error, idle=self._idle, on_death=self.fatal)
        self.worker.start()
        if s.folder is not None:
            from tcan_live.sources.folder import FolderSource

            src = FolderSource(s.folder.resolve(), emit=self.submit, on_error=self._file_error,
                               is_done=self.store.is_done, settle_s=s.settle_s,
                               give_up_s=s.give_up_s, poll=s.poll, pixel_size_um=s.pixel_size_um,
                               exclude=(s.output_folder().resolve(),), on_death=self.fatal,
                               layout_of=self.store.layout_of,
                               on_metadata=lambda st, m: self._store_sink.meta_updates.append(
                                   (st, m)))
            self.sources.append(src)
            src.start()
        if s.ingest is not None:
            from tcan_live.transport.ingest import IngestSource

            ing = IngestSource(s.ingest, emit=self.submit, on_error=self._file_error,
                               is_done=self.store.is_done, allow_remote=s.allow_remote,
                               curve_keys=s.curve_keys, on_death=self.fatal)
            self.sources.append(ing)
            ing.start()

    def fatal(self, reason: str) -> None:
        """A thread died: the process must exit non-zero (see :func:`run_until_stopped`)."""
        if self.failed is None:
            self.failed = reason
            log.critical("stopping: %s; the service manager should restart tcan-live (the "
                         "journal resumes where it stopped)", reason)
        self.stop_requested.set()

    def dead_threads(self) -> list[str]:
        """Threads that should run and do not (checked every second by the CLI's loop)."""
        threads = [self.worker.thread] if self.worker is not None else []
        for src in self.sources:
            threads += src.threads()
        return [t.name for t in threads if not t.is_alive()]

    def run_until_stopped(self, tick_s: float = 1.0) -> int:
        """Block until a stop is requested or a thread dies; 0, or 70 (EX_SOFTWARE) when a
        thread died, so that a service manager restarts the process."""
        while not self.stop_requested.wait(tick_s):
            dead = self.dead_threads()
            if dead:
                self.fatal(f"thread(s) {', '.join(dead)} no longer running")
        return 70 if self.failed else 0

    def stop(self) -> None:
        """Stop sources, let the worker finish its current frame, flush files, close sockets."""
        self.stop_event.set()
        for src in self.sources:
            src.stop()
        if self.worker is not None:
            self.worker.stop()

    def submit(self, frame: Frame) -> None:
        """Entry point for every source (called from source threads)."""
        self.stats.frames_in += 1
        self.queue.put(stamp_seen(frame))

    # -- worker thread -----------------------------------------------------------------------
    def _process(self, frame: Frame) -> Processed:
        """The enhancement step; the sinks (tcan_live/sinks.py) publish and save."""
        s = self.settings
        if frame.data.dtype.kind == "f" and not np.isfinite(frame.data).any():
            raise UnsupportedInputError(frame.source, "no finite pixel value (all NaN or Inf): "
                                                      "nothing to enhance")
        px = resolve_pixel_size(s.pixel_size_um, frame.pixel_size_um, source=frame.source)
        t0 = time.perf_counter()
        enh = (self.adapted[1] if self.adapted is not None
               and frame.index.c == self.adapted[0] else self.enhancer)
        # the trust check where the network ran, on the tensors already there (a few ms on a GPU)
        res = enh.enhance(frame.data, px, source=frame.source, trust=True)
        trust = res.trust
        assert trust is not None
        ms = 1000 * (time.perf_counter() - t0)
        header = {
            "seq": self._seq, "run": self.run_id, "stream": frame.stream, "source": frame.source,
            "index": frame.index.as_dict(), "channel_name": frame.channel_name,
            "pixel_size_in_um": px, "pixel_size_out_um": res.pixel_size_um,
            "acquired_s": frame.time_s, "seen_at": frame.extra.get("seen_at"),
            "model": enh.model_id, "processing_ms": round(ms, 2),
            "trust": {"score": round(trust.score, 4), "nrmse": round(trust.nrmse, 4)},
            "restored": res.restored,
            "timings_ms": {k: round(v, 2) for k, v in res.timings_ms.items()},
        }
        self._seq += 1
        return Processed(frame, res, header, px, enh)

    def _idle(self) -> None:
        """Between frames, after the sinks' own housekeeping: errors and periodic status."""
        s = self.settings
        while self._pending_errors:
            path, reason = self._pending_errors.popleft()
            self._publish_status(state="error", file=path, reason=reason)
        while self._events:
            self._publish_status(state="running", **self._events.popleft())
        if time.monotonic() - self._last_status >= s.status_interval_s:
            self._publish_status(state="running")

    def _publish_status(self, **extra: Any) -> None:
        self._last_status = time.monotonic()
        self._publisher.status({**self.status(), **extra})

    # -- errors (any thread) -----------------------------------------------------------------
    def _file_error(self, path: Path | str, reason: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{path}: {reason}"
        log.warning("skipped %s: %s", path, reason)
        self._pending_errors.append((str(path), reason))

    def _frame_error(self, frame: Frame, reason: str) -> None:
        log.warning("frame %s of %s not enhanced: %s", frame.index.as_dict(), frame.source, reason)
        self._pending_errors.append((frame.source, reason))

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        st = self.stats
        lat50, lat95 = st.percentiles(st.latencies_ms)
        pro50, pro95 = st.percentiles(st.processing_ms)
        enh = self.enhancer
        return {
            "seq_status": int(time.time() * 1000), "run": self.run_id,
            "frames_in": st.frames_in, "frames_done": st.frames_done,
            "skipped": self.queue.skipped, "errors": st.errors, "last_error": st.last_error,
            "queue": self.queue.depth(), "mode": self.settings.mode,
            "device": str(enh.device) if enh else None, "model": enh.model_id if enh else None,
            "latency_ms_p50": lat50, "latency_ms_p95": lat95,
            "processing_ms_p50": pro50, "processing_ms_p95": pro95,
            "uptime_s": round(time.time() - st.started, 1),
            "insecure": self.settings.allow_remote and self.settings.curve_keys is None,
            "failed": self.failed,
            "uncertainty_score": self.last_uncertainty,
            "adapted_model": self.adapted[1].model_id if self.adapted is not None else None,
        }


# ---------------------------------------------------------------------------------------------
# CLI


def _log_to_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=10 * 2**20, backupCount=5,
                                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def run_watch(settings: Settings) -> int:
    """``tcan-live watch``: run the daemon until SIGINT/SIGTERM or a dead thread."""
    if settings.log_file is not None:
        _log_to_file(settings.log_file)
    if not sys.stderr.isatty() or not settings.panel:
        logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO,
                                         logging.INFO))
    daemon = Daemon(settings)
    stop = daemon.stop_requested
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    daemon.start()
    code = 0
    try:
        if sys.stderr.isatty() and settings.panel:
            from tcan_live.panel import run_panel

            panel = threading.Thread(target=run_panel, args=(daemon, stop), daemon=True)
            panel.start()
        code = daemon.run_until_stopped()
    finally:
        if daemon.failed:
            # a wedged thread must not keep a failed process alive: bounded clean-up, then exit
            closer = threading.Thread(target=daemon.stop, daemon=True)
            closer.start()
            closer.join(10)
        else:
            daemon.stop()
    st = daemon.status()
    print(f"tcan-live: stopped after {st['frames_done']} frames "
          f"({st['skipped']} skipped, {st['errors']} errors)"
          + (f"; FAILED: {daemon.failed}" if daemon.failed else ""), file=sys.stderr)
    return code


def check_remote(settings: Settings) -> None:
    """Another interface than loopback needs CURVE keys, or an explicit --insecure."""
    if settings.allow_remote and settings.curve_keys is None and not settings.insecure:
        raise ConfigError("--allow-remote without --curve-keys would serve frames to (and, with "
                          "--ingest, accept frames from) anyone on the network; give "
                          "--curve-keys (see `tcan-live keys`), or --insecure to accept that")
