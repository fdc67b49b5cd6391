"""``tcan-live record ADDRESS -o OUT.ome.tif``: save what a daemon publishes, headless.

Frames of one kind (``enhanced`` by default) are kept by stream and index, then written as one
OME-TIFF per stream (TCZYX, pixel size, channel names, per-plane acquisition time ``DeltaT``);
the OME description holds the JSON headers of every frame received, so all metadata round-trips
through tifffile. Missing sequence numbers are reported. Publish/subscribe can lose frames by
design, so with ``--fill-from`` (the daemon's output folder) the missing planes of the
recorded range are taken from the daemon's journalled OME-TIFF of that stream.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.commands import RecordOptions
from tcan_live.export.formats import strip_output_suffix, write_image
from tcan_live.export.ometiff import OmeMeta
from tcan_live.transport.subscriber import FrameSubscriber

log = logging.getLogger(__name__)


@dataclass
class Recording:
    frames: dict[str, dict[tuple[int, int, int, int], tuple[np.ndarray, dict[str, Any]]]] = \
        field(default_factory=dict)
    gaps: int = 0
    filled: int = 0
    written: list[Path] = field(default_factory=list)


def receive(endpoint: str, *, kind: str = "enhanced", max_frames: int | None = None,
            duration_s: float | None = None, idle_s: float = 30.0,
            stop: threading.Event | None = None, curve_keys: Path | None = None) -> Recording:
    rec = Recording()
    stop = stop or threading.Event()
    deadline = time.monotonic() + duration_s if duration_s else float("inf")
    with FrameSubscriber(endpoint, kinds=(kind,), rcvhwm=10000, curve_keys=curve_keys) as sub:
        n = 0
        last = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            if max_frames is not None and n >= max_frames:
                break
            msg = sub.receive(0.2)
            if msg is None:
                if time.monotonic() - last > idle_s:
                    break
                continue
            last = time.monotonic()
            h = msg.header
            i = h.get("index", {})
            key = (int(i.get("t", 0)), int(i.get("c", 0)), int(i.get("z", 0)), int(i.get("p", 0)))
            assert msg.array is not None
            rec.frames.setdefault(str(h.get("stream", "")), {})[key] = (msg.array.copy(), h)
            n += 1
        rec.gaps = sum(sub.gaps.values())
    return rec


def fill_from(rec: Recording, saved: Path) -> None:
    """Take missing planes of each stream's recorded range from the daemon's saved output: its
    plane stores, read only (current while the daemon runs; see export/store.py)."""
    from tcan_live.export.omezarr import PlaneStore
    from tcan_live.export.store import read_journal
    from tcan_live.frame import FrameIndex

    journal = read_journal(saved)  # read only: the daemon may be running on that folder
    for stream, frames in rec.frames.items():
        entry = journal.get(stream)
        if not entry or not entry["planes"].is_dir():
            log.warning("no saved output for %s in %s", stream, saved)
            continue
        any_array, any_header = next(iter(frames.values()))
        store = PlaneStore.open_read_only(entry["planes"], any_array.shape)
        span = {a: range(max(k[j] for k in frames) + 1) for j, a in enumerate("tczp")}
        for t in span["t"]:
            for c in span["c"]:
                for z in span["z"]:
                    key = (t, c, z, 0)
                    index = FrameIndex(t, c, z, 0)
                    if key in frames or index not in entry["done"]:
                        continue
                    h = {**any_header, "index": index.as_dict(), "seq": None,
                         "filled_from": str(entry["output"])}
                    frames[key] = (store.read(index), h)
                    rec.filled += 1


def write(rec: Recording, out: Path) -> list[Path]:
    streams = sorted(rec.frames)
    for n, stream in enumerate(streams):
        frames = rec.frames[stream]
        keys = sorted(frames)
        size = {a: max(k[j] for k in keys) + 1 for j, a in enumerate("tcz")}
        shape = frames[keys[0]][0].shape
        data = np.full((size["t"], size["c"], size["z"], *shape), np.nan, np.float32)
        for k in keys:
            data[k[0], k[1], k[2]] = frames[k][0]
        headers = [frames[k][1] for k in keys]
        first = headers[0]
        names: list[str] = []
        for c in range(size["c"]):
            h = next((frames[k][1] for k in keys if k[1] == c), {})
            names.append(str(h.get("channel_name") or f"C{c}"))
        times = [h.get("acquired_s") for h in headers if h["index"]["c"] == h["index"]["z"] == 0]
        t0, t1 = (times + [None, None])[:2]
        dt = t1 - t0 if t0 is not None and t1 is not None else None
        desc = json.dumps({"recorded_by": "tcan-live record", "stream": stream,
                           "gaps": rec.gaps, "filled": rec.filled, "frames": headers})
        meta = OmeMeta(axes="TCZ", pixel_size_um=first.get("pixel_size_um"),
                       channel_names=names, time_increment_s=dt, description=desc)
        stem = strip_output_suffix(out.name)
        path = out if len(streams) == 1 else out.with_name(f"{stem}_{n}{out.name[len(stem):]}")
        rec.written.append(write_image(path, data, meta))
    return rec.written


def run_record(opts: RecordOptions) -> int:
    """``tcan-live record``: receive until stopped, fill gaps, write."""
    import signal

    from tcan_live.export.formats import check_output_path

    check_output_path(opts.output)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"recording {opts.kind} frames from {opts.address} (Ctrl+C to stop)", file=sys.stderr)
    rec = receive(opts.address, kind=opts.kind, max_frames=opts.frames,
                  duration_s=opts.duration, idle_s=opts.idle, stop=stop,
                  curve_keys=opts.curve_keys)
    n = sum(len(f) for f in rec.frames.values())
    if not n:
        print("nothing received", file=sys.stderr)
        return 1
    if opts.fill_from:
        fill_from(rec, opts.fill_from)
    for p in write(rec, opts.output):
        print(f"wrote {p}", file=sys.stderr)
    print(f"{n} frames received, {rec.gaps} missing by sequence number, {rec.filled} filled "
          "from the saved output", file=sys.stderr)
    return 0
