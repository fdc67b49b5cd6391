"""Daemon overhead: everything except the network's forward pass, per frame.

A writer thread saves one-frame TIFFs (closed after writing, so detection is by the close event)
into a watched folder, slower than the daemon can process them (no queueing). For each frame:

    total    = enhanced frame published  - file closed by the writer
    forward  = the generator's forward time (Enhancer timings)
    overhead = total - forward  (detect, read, queue, normalise, resample, tile, stitch,
                                 trust check, fsync'd save + journal, encode, publish)

split into: detect+read (file closed -> frame queued by the folder source), in the worker
around the forward pass (normalise ... trust check), and the rest (queue hand-off, save +
journal, encode, publish).

    python -m benchmarks.daemon [--sizes 512,2048] [--frames 5] [--write-docs]
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import parse_script


def run(size: int, frames: int, model: str | None, interval_s: float) -> dict[str, object]:
    import tifffile

    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings
    from tcan_live.sim.simulate import Camera, Optics, Scene, simulate_pair
    from tcan_live.transport.subscriber import FrameSubscriber

    rng = np.random.default_rng(0)
    img = simulate_pair(rng, (size, size), Optics(), Camera(photons=60),
                        Scene(structures=("filaments", "beads"))).confocal.astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        acq = Path(tmp) / "acq"
        acq.mkdir()
        d = Daemon(Settings(folder=acq, output=Path(tmp) / "out", model=model,
                            endpoint="tcp://127.0.0.1:*", settle_s=2.0, flush_idle_s=3600))
        d.start()
        while d.publisher is None:
            time.sleep(0.01)
        closed: dict[int, float] = {}
        rows: list[tuple[float, float, float, float]] = []
        with FrameSubscriber(d.publisher.endpoint, kinds=("enhanced",)) as sub:
            time.sleep(0.3)

            def write() -> None:
                for t in range(frames):
                    tifffile.imwrite(acq / f"bench_t{t:04d}.tif", img,
                                     metadata={"axes": "YX"}, resolution=(2e5, 2e5),
                                     resolutionunit="CENTIMETER")
                    closed[t] = time.time()
                    time.sleep(interval_s)

            w = threading.Thread(target=write)
            w.start()
            while len(rows) < frames:
                msg = sub.receive(interval_s * frames + 600)
                if msg is None:
                    break
                h = msg.header
                t = h["index"]["t"]
                total = 1000 * (h["published_at"] - closed[t])
                detect = 1000 * (h["seen_at"] - closed[t])
                rows.append((total, h["timings_ms"]["forward"], h["processing_ms"], detect))
            w.join()
        d.stop()
    tot = np.array(rows)
    overhead = tot[:, 0] - tot[:, 1]
    return {"frame": f"{size}x{size}", "frames": len(rows),
            "total ms (median)": float(np.median(tot[:, 0])),
            "forward ms": float(np.median(tot[:, 1])),
            "overhead ms": float(np.median(overhead)),
            "overhead %": float(100 * np.median(overhead / tot[:, 0])),
            "detect+read ms": float(np.median(tot[:, 3])),
            "around forward ms": float(np.median(tot[:, 2] - tot[:, 1])),
            "rest ms": float(np.median(tot[:, 0] - tot[:, 3] - tot[:, 2]))}


def main(argv: list[str] | None = None) -> int:
    args = parse_script('daemon', argv, __doc__)
    from benchmarks.report import emit, machine, table

    rows = []
    for s in (int(x) for x in args.sizes.split(",")):
        from tcan_live.sr.enhancer import Enhancer

        probe = Enhancer(args.model)
        t0 = time.perf_counter()
        probe.enhance(np.zeros((s, s), np.float32), 0.05)
        per_frame = time.perf_counter() - t0
        del probe
        rows.append(run(s, args.frames, args.model, interval_s=per_frame * 1.5 + 0.5))
        print(rows[-1], flush=True)
    import torch

    from tcan_live.sr.card import resolve_model

    model = resolve_model(args.model).name
    cuda = torch.cuda.is_available()
    body = (f"Measured with `python -m benchmarks.daemon --sizes {args.sizes} --frames "
            f"{args.frames}{' --model M' if args.model else ''}` on {machine()}; model "
            f"{model} on {'cuda' if cuda else 'cpu'}.\n\n" + table(rows))
    emit("daemon-overhead" + ("-cuda" if cuda else ""), body, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
