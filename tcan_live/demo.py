"""``tcan-live demo``: the main job on built-in defaults, with nothing but this package.

A simulated microscope writes a live time-lapse (one TIFF per frame, at a realistic interval)
into a temporary acquisition folder; the daemon watches it with the default model, and a Python
subscriber receives raw and enhanced frames. Ends with a summary and a montage PNG.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.commands import DemoOptions
from tcan_live.settings import Settings


def run_demo(args: DemoOptions) -> int:
    from tcan_live.daemon import Daemon
    from tcan_live.sim.timelapse import TimelapseSpec, write_timelapse
    from tcan_live.transport.subscriber import FrameSubscriber

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tcan-demo-") as tmp:
        acq = Path(tmp) / "acquisition"
        acq.mkdir()
        daemon = Daemon(Settings(folder=acq, output=out / "enhanced", model=args.model,
                                 device=args.device, tile=args.tile, precision=args.precision,
                                 restore=args.restore,
                                 endpoint="tcp://127.0.0.1:*", settle_s=1.0))
        print(f"demo: simulated acquisition in {acq}, {args.frames} frames of "
              f"{args.size}x{args.size} px every {args.interval:g} s")
        daemon.start()
        try:
            frames = _acquire_and_collect(daemon, args, acq, write_timelapse, TimelapseSpec,
                                          FrameSubscriber)
        finally:
            daemon.stop()
    status = daemon.status()
    montage = out / "montage.png"
    save_montage(frames, montage)
    n = len(frames["enhanced"])
    print(f"demo: {n}/{args.frames} frames enhanced with model {status['model']} on "
          f"{status['device']}; latency detected -> published p50 "
          f"{status['latency_ms_p50']:.0f} ms, p95 {status['latency_ms_p95']:.0f} ms; "
          f"processing p50 {status['processing_ms_p50']:.0f} ms per frame")
    print(f"demo: wrote {montage} and {out / 'enhanced'}")
    return 0 if n == args.frames else 1


def _acquire_and_collect(daemon: Any, args: DemoOptions, acq: Path, write_timelapse: Any,
                         spec_cls: Any, subscriber_cls: Any) -> dict[str, dict[int, Any]]:
    frames: dict[str, dict[int, Any]] = {"raw": {}, "enhanced": {}}
    endpoint = _endpoint(daemon)
    with subscriber_cls(endpoint, kinds=("raw", "enhanced")) as sub:
        time.sleep(0.3)  # let the subscription reach the publisher
        spec = spec_cls(frames=args.frames, size=args.size, interval_s=args.interval, seed=7,
                        name="cells")
        writer = threading.Thread(target=write_timelapse, args=(acq, spec), daemon=True)
        writer.start()
        deadline = time.monotonic() + args.frames * args.interval + 120
        while len(frames["enhanced"]) < args.frames and time.monotonic() < deadline:
            msg = sub.receive(1.0)
            if msg is not None:
                frames[msg.kind][msg.header["index"]["t"]] = (msg.array.copy(), msg.header)
        writer.join()
    return frames


def _endpoint(daemon: Any) -> str:
    for _ in range(100):
        if daemon.publisher is not None:
            return str(daemon.publisher.endpoint)
        time.sleep(0.05)
    raise RuntimeError("daemon did not open its publisher")


def save_montage(frames: dict[str, dict[int, Any]], path: Path, n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = sorted(set(frames["raw"]) & set(frames["enhanced"]))
    ts = [ts[int(i)] for i in np.linspace(0, len(ts) - 1, min(n, len(ts)))] if ts else []
    fig, axes = plt.subplots(2, max(len(ts), 1), figsize=(3 * max(len(ts), 1), 6.2),
                             squeeze=False)
    for col, t in enumerate(ts):
        for row, kind in enumerate(("raw", "enhanced")):
            img, head = frames[kind][t]
            lo, hi = np.percentile(img, [1, 99.8])
            ax = axes[row, col]
            ax.imshow(img, cmap="magma", vmin=lo, vmax=hi)
            ax.set_title(f"{kind} t={t}" + (f"  trust {head['trust']['score']:.2f}"
                                            if kind == "enhanced" else ""), fontsize=9)
            ax.axis("off")
    fig.suptitle("tcan-live demo: confocal (top) and TCAN-enhanced (bottom)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
