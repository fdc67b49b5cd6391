"""The worker and its sinks (pipeline.Worker, tcan_live/sinks.py): every processed frame goes to
each sink in order; a sink that fails makes that frame an error and the next frames still flow;
sinks open in the worker thread and close there, last opened first closed, even when one fails."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from tcan_live.frame import Frame, FrameIndex
from tcan_live.pipeline import AllQueue, Processed, Stats, Worker


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, str, Any]], fail_on: int | None = None,
                 fail_close: bool = False) -> None:
        self.name, self.log, self.fail_on, self.fail_close = name, log, fail_on, fail_close
        self.thread: str | None = None

    def open(self) -> None:
        self.thread = threading.current_thread().name
        self.log.append((self.name, "open", None))

    def put(self, item: Processed) -> None:
        if item.frame.index.t == self.fail_on:
            raise RuntimeError(f"{self.name} cannot take t={self.fail_on}")
        self.log.append((self.name, "put", item.frame.index.t))

    def idle(self) -> None:
        pass

    def close(self) -> None:
        self.log.append((self.name, "close", None))
        if self.fail_close:
            raise OSError(f"{self.name} close failed")


def test_sinks_get_every_frame_in_order_and_failures_stay_per_frame() -> None:
    stop = threading.Event()
    q = AllQueue(16, stop)
    log: list[tuple[str, str, Any]] = []
    errors: list[tuple[int, str]] = []
    first, second = Recorder("publisher", log), Recorder("store", log, fail_on=2,
                                                         fail_close=True)

    def process(frame: Frame) -> Processed:
        return Processed(frame, None, {"seq": frame.index.t}, 0.05)

    w = Worker(q, process, [first, second], stats=Stats(),
               on_error=lambda f, why: errors.append((f.index.t, why)))
    w.start()
    for t in range(5):
        q.put(Frame(np.zeros((4, 4), np.float32), FrameIndex(t=t), source=f"f{t}"))
    deadline = time.monotonic() + 10
    while w.stats.frames_done + w.stats.errors < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop_event.set()
    w.thread.join(10)
    assert first.thread == second.thread == "tcan-worker"
    puts = [(n, t) for n, what, t in log if what == "put"]
    assert [t for n, t in puts if n == "publisher"] == [0, 1, 2, 3, 4]
    assert [t for n, t in puts if n == "store"] == [0, 1, 3, 4]
    assert errors == [(2, "f2: RuntimeError: store cannot take t=2")]
    assert w.stats.frames_done == 4
    assert [n for n, what, _ in log if what == "close"] == ["store", "publisher"]


def test_a_sink_that_cannot_open_fails_the_start_and_closes_the_others() -> None:
    log: list[tuple[str, str, Any]] = []

    class Broken(Recorder):
        def open(self) -> None:
            raise OSError("address in use")

    ok = Recorder("store", log)
    w = Worker(AllQueue(4, threading.Event()), lambda f: Processed(f, None, {}, None),
               [ok, Broken("publisher", log)], stats=Stats(), on_error=lambda f, why: None)
    with pytest.raises(OSError, match="address in use"):
        w.start()
    assert log == [("store", "open", None), ("store", "close", None)]
