"""The daemon's frame sinks: where every enhanced frame goes, in order, in the worker thread.

- :class:`PublisherSink`: raw and enhanced frames (and status) on the ZeroMQ publisher;
- :class:`StoreSink`: the journalled output store (``export/store.py``), and the metadata
  learnt late by the sources;
- :class:`UncertaintySink`: the uncertainty map (``sr/uncertainty.py``), published and saved;
- :class:`AdaptSink` (``watch --adapt``): collects the first frames, adapts a model to them in
  a background thread (``train/adapt.py``) and hands it over to be switched to between frames.

Each sink is opened in the worker thread (sockets belong to the thread that made them), gets
:meth:`put` for every processed frame, :meth:`idle` between frames, and :meth:`close` at the
end (in reverse order: the publisher closes last, after the final status). A sink that raises in
:meth:`put` makes that frame an error (reported by name); the uncertainty sink never does (the
frame itself is out and saved by then).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.pipeline import Processed
from tcan_live.sr.uncertainty import DEFAULT_PASSES, frame_score
from tcan_live.transport.wire import DTYPES

log = logging.getLogger(__name__)


class PublisherSink:
    def __init__(self, endpoint: str, *, allow_remote: bool, curve_keys: Any,
                 replay_topics: int, replay_bytes: int,
                 final_status: Callable[[], dict[str, Any]]) -> None:
        self.endpoint, self.allow_remote, self.curve_keys = endpoint, allow_remote, curve_keys
        self.replay_topics, self.replay_bytes = replay_topics, replay_bytes
        self.final_status = final_status
        self.publisher: Any = None

    def open(self) -> None:
        from tcan_live.transport.publisher import ZmqPublisher

        if self.allow_remote and self.curve_keys is None:
            log.warning("INSECURE: publishing on %s without CURVE keys (--insecure): anyone who "
                        "can reach this port receives the frames", self.endpoint)
        self.publisher = ZmqPublisher(self.endpoint, allow_remote=self.allow_remote,
                                      curve_keys=self.curve_keys,
                                      replay_topics=self.replay_topics,
                                      replay_bytes=self.replay_bytes)

    def put(self, item: Processed) -> None:
        frame, header = item.frame, item.header
        raw = np.asarray(frame.data)
        if raw.dtype.name not in DTYPES:  # the wire's own list of what it carries
            raw = raw.astype(np.float32)
        self.publisher.publish("raw", frame.stream, {**header, "pixel_size_um": item.pixel_size_um},
                               raw)
        self.publisher.publish("enhanced", frame.stream,
                               {**header, "pixel_size_um": item.result.pixel_size_um},
                               item.result.image)

    def status(self, payload: dict[str, Any]) -> None:
        self.publisher.publish("status", "daemon", payload, cache=False)

    def idle(self) -> None:
        self.publisher.service()

    def close(self) -> None:
        try:
            self.status({**self.final_status(), "state": "stopped"})
        finally:
            self.publisher.close()


class StoreSink:
    """Saved after publishing: viewers do not wait for the fsync; a crash in between
    re-processes the frame on restart (published twice, saved once: the journal decides)."""

    def __init__(self, store: Any, flush_idle_s: float) -> None:
        self.store, self.flush_idle_s = store, flush_idle_s
        # metadata learnt late (source threads), applied here by the store's owner
        self.meta_updates: deque[tuple[str, dict[str, Any]]] = deque(maxlen=1000)

    def open(self) -> None:
        pass

    def put(self, item: Processed) -> None:
        self.store.add(item.frame, item.result.image, item.result.pixel_size_um,
                       model=item.header.get("model"))

    def idle(self) -> None:
        while self.meta_updates:
            self.store.update_meta(*self.meta_updates.popleft())
        self.store.flush(idle_s=self.flush_idle_s)

    def close(self) -> None:
        try:
            self.store.flush()
        finally:
            self.store.close()


class UncertaintySink(StoreSink):
    """After the frame is out: its uncertainty map, published as an ``uncertainty`` message
    (protocol version 2) with the frame score, and saved in its own store (kept like the
    enhanced frames' store: the same idle and close)."""

    def __init__(self, enhancer: Any, publisher: PublisherSink, store: Any,
                 flush_idle_s: float) -> None:
        super().__init__(store, flush_idle_s)
        self.enhancer, self.publisher = enhancer, publisher
        self.last_score: float | None = None  # the newest frame's uncertainty score

    def put(self, item: Processed) -> None:
        try:
            self._put(item)
        except Exception as err:  # the frame itself is out and saved: not a frame error
            log.warning("no uncertainty map for %s %s: %s: %s", item.frame.source,
                        item.frame.index.as_dict(), type(err).__name__, err)

    def _put(self, item: Processed) -> None:
        frame, res = item.frame, item.result
        t0 = time.perf_counter()
        enhancer = item.enhancer or self.enhancer  # the model that made the frame
        unc = enhancer.uncertainty(frame.data, item.pixel_size_um, source=frame.source,
                                   seed=item.header["seq"], enhanced=res.image)
        score = frame_score(unc, res.image)
        self.last_score = round(score, 5)
        self.publisher.publisher.publish("uncertainty", frame.stream, {
            **item.header, "pixel_size_um": res.pixel_size_um,
            "uncertainty": {"score": round(score, 5), "method": enhancer.uncertainty_method,
                            "passes": DEFAULT_PASSES,
                            "ms": round(1000 * (time.perf_counter() - t0), 2)}}, unc)
        self.store.add(frame, unc, res.pixel_size_um, model=item.header.get("model"))


ADAPTED_RECORD = "current.json"  # in <output>/.tcan-live/adapted/: the adaptation in force
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def write_adapted_record(folder: Path, model: str, channel: int, init_sha256: str) -> None:
    """Remember (atomically, JSON) which adapted model is in force for this output folder, for
    which channel, adapted from which initial weights."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ADAPTED_RECORD}.part"
    tmp.write_text(json.dumps({"model": model, "channel": int(channel),
                               "init_sha256": init_sha256}), encoding="utf-8")
    os.replace(tmp, folder / ADAPTED_RECORD)


def read_adapted_record(folder: Path, init_sha256: str) -> tuple[Path, int] | None:
    """The adapted model in force (its folder, its channel) when the record in ``folder`` is
    valid and was adapted from these initial weights; else None (then the daemon adapts anew).
    The record is data, never a path: the model's name must be a plain folder name inside
    ``folder``."""
    path = folder / ADAPTED_RECORD
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        name, channel, sha = rec["model"], rec["channel"], rec["init_sha256"]
        if not (isinstance(name, str) and _MODEL_NAME.match(name) and ".." not in name):
            raise ValueError(f"model name {name!r} is not a plain folder name")
        if not (isinstance(channel, int) and not isinstance(channel, bool) and channel >= 0):
            raise ValueError(f"channel {channel!r} is not a channel index")
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: unreadable (%s); adapting anew", path, err)
        return None
    if sha != init_sha256:
        log.info("%s: adapted from other weights than this model's; adapting anew", path)
        return None
    model = folder / name
    if not (model / "model.toml").is_file():
        log.warning("%s: names %s, which has no model.toml; adapting anew", path, name)
        return None
    return model, channel


class AdaptSink:
    """Collects the raw planes of the first ``n_frames`` frames of channel ``channel`` (the
    first stream that has them), then adapts the model to them in a background thread. When the
    adapted model is written, :meth:`idle` (worker thread, between frames) calls ``switch``
    with its folder and the channel, once - only if the adapted model passed the held-out
    check (train/adapt.py ``HeldOutCheck``) when ``check`` is on. A refusal (too few photons,
    saturated frames), a failed check or a failure is reported through ``report`` and the
    daemon keeps its model; it never stops the daemon."""

    def __init__(self, *, init: Any, n_frames: int, out: Path, model_id: str,
                 budget_min: float, steps: int, pixel_size_um: float | None, device: str,
                 switch: Callable[[Path, int], None], report: Callable[[dict[str, Any]], None],
                 check: bool, channel: int = 0) -> None:
        self.init, self.n_frames, self.out, self.model_id = init, n_frames, out, model_id
        self.budget_min, self.steps, self.device = budget_min, steps, device
        self.pixel_size_um, self.channel = pixel_size_um, channel
        self.switch, self.report, self.check = switch, report, check
        self.frames: list[np.ndarray] = []
        self.names: list[str] = []
        self.px: float | None = None
        self.stream: str | None = None
        self.thread: threading.Thread | None = None
        self.result: Path | None = None
        self.done = False  # switched, refused or failed: nothing more to do

    def open(self) -> None:
        pass

    def put(self, item: Processed) -> None:
        try:
            self._collect(item)
        except Exception:  # never a frame error: the frame is out and saved
            log.exception("watch --adapt: could not collect a frame")

    def _collect(self, item: Processed) -> None:
        f = item.frame
        if self.thread is not None or self.done or f.index.c != self.channel:
            return
        if item.pixel_size_um is None:  # no pixel size known: cannot adapt on it
            return
        if self.stream is None:
            self.stream, self.px = f.stream, item.pixel_size_um
        if f.stream != self.stream:
            return
        self.frames.append(np.array(f.data, copy=True))
        self.names.append(f"{Path(f.source).name}{f.index.as_dict()}")
        if len(self.frames) >= self.n_frames:
            self.report({"event": "adapt-started", "frames": len(self.frames)})
            self.thread = threading.Thread(target=self._adapt, name="tcan-adapt", daemon=True)
            self.thread.start()

    def _adapt(self) -> None:
        from tcan_live.errors import TcanError
        from tcan_live.train.adapt import AdaptConfig, Inputs, adapt_model

        try:
            inputs = Inputs(self.frames, float(self.px or 0.0), self.names)
            adapter, result = adapt_model(
                self.init, inputs, AdaptConfig(budget_min=self.budget_min, steps=self.steps),
                device=self.device, ckpt=self.out / "adapt")
            adapter.save(self.out, self.model_id, self.init.name, result)
            verdict = result.check.record() if result.check else None
            if self.check and result.check is not None and not result.check.accepted:
                log.warning("watch --adapt: %s; the model stays (the adapted one is kept in "
                            "%s for inspection)", result.check.line(), self.out)
                self.report({"event": "adapt-rejected", "reason": result.check.line(),
                             "check": verdict, "folder": str(self.out)})
                self.done = True
                return
            self.report({"event": "adapt-finished", "steps": result.steps, "check": verdict,
                         **({"relaxation": result.relaxation} if result.relaxation else {})})
            self.result = self.out
        except TcanError as err:
            log.warning("watch --adapt: adaptation refused: %s; the model stays", err)
            self.report({"event": "adapt-refused", "reason": str(err)})
            self.done = True
        except Exception as err:  # the live path goes on with its model
            log.exception("watch --adapt: adaptation failed; the model stays")
            self.report({"event": "adapt-failed", "reason": f"{type(err).__name__}: {err}"})
            self.done = True
        finally:
            self.frames = []

    def idle(self) -> None:
        if self.result is not None and not self.done:
            self.done = True
            self.switch(self.result, self.channel)

    def close(self) -> None:
        pass  # a running adaptation is a daemon thread: it ends with the process
