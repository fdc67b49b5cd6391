"""The rich live status panel shown by ``tcan-live watch`` on a terminal."""

from __future__ import annotations

import threading
from typing import Any

from rich.live import Live
from rich.table import Table


def render(status: dict[str, Any], title: str) -> Table:
    t = Table(title=title, show_header=False, expand=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("frames in / out", f"{status['frames_in']} / {status['frames_done']}"),
        ("skipped / errors", f"{status['skipped']} / {status['errors']}"),
        ("queue", str(status["queue"])),
        ("latency p50 / p95",
         f"{status['latency_ms_p50']:.0f} / {status['latency_ms_p95']:.0f} ms"),
        ("processing p50", f"{status['processing_ms_p50']:.0f} ms"),
        ("device / model", f"{status['device']} / {status['model']}"),
        ("mode", str(status["mode"])),
        ("last error", str(status["last_error"] or "-")[:90]),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


def run_panel(daemon: Any, stop: threading.Event) -> None:
    s = daemon.settings
    title = f"tcan-live watching {s.folder} -> {s.endpoint}"
    with Live(render(daemon.status(), title), refresh_per_second=2, transient=False) as live:
        while not stop.wait(0.5):
            live.update(render(daemon.status(), title))
