"""``tcan-live bench``: FLOPs, time per frame, effective GFLOP/s against the measured peak of the
model's dominant operation (a 3x3 convolution at the model's width), stage breakdown, memory."""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def conv_time_s(c_in: int, c_out: int, k: int, shape: tuple[int, int, int], device: torch.device,
                dtype: torch.dtype | None, seconds: float) -> tuple[float, float]:
    """(FLOPs, seconds) of one call of a k x k convolution on an (N, c_in, H, W) input, timed
    for ``seconds`` after a warm-up call."""
    n_batch, h, w = shape
    conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2).to(device).eval()
    x = torch.randn(n_batch, c_in, h, w, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        conv(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            n += 1
        _sync(device)
        per = (time.perf_counter() - t0) / n
    return float(2 * k * k * c_in * c_out * h * w * n_batch), per


def conv_peak_gflops(channels: int, size: int, device: torch.device,
                     dtype: torch.dtype | None, seconds: float = 2.0) -> float:
    """Measured GFLOP/s of a C->C 3x3 convolution on a (4, C, size, size) batch."""
    flops, per = conv_time_s(channels, channels, 3, (4, size, size), device, dtype, seconds)
    return flops / per / 1e9


def conv_roofline_s(generator: torch.nn.Module, tile: int, device: torch.device,
                    dtype: torch.dtype | None, seconds: float = 0.4) -> tuple[float, float]:
    """(FLOPs, seconds) of one tile's convolutions if each ran at the speed measured for that
    exact layer shape on its own: the time the model would take if everything but the
    convolutions were free and every convolution ran at this machine's speed for it."""
    shapes: dict[tuple[int, int, int, int, int], int] = {}

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        assert isinstance(mod, torch.nn.Conv2d)
        key = (mod.in_channels, mod.out_channels, mod.kernel_size[0], *inp[0].shape[-2:])
        shapes[key] = shapes.get(key, 0) + 1

    handles = [m.register_forward_hook(hook) for m in generator.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        generator(torch.zeros(1, 1, tile, tile, device=device))
    for handle in handles:
        handle.remove()
    flops = total = 0.0
    for (cin, cout, k, h, w), count in shapes.items():
        f, per = conv_time_s(cin, cout, k, (1, h, w), device, dtype, seconds)
        flops += f * count
        total += per * count
    return flops, total


def frame_flops(enhancer: Any, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        enhancer.enhance(np.zeros((size, size), np.float32), enhancer.pixel_size_um)
    return float(counter.get_total_flops())


def stage_times(enhancer: Any, size: int, repeats: int) -> dict[str, float]:
    """Median ms per stage for one frame, the real code paths (tifffile read, Enhancer stages,
    trust check, fsync'd OutputStore save, wire encode + publish on a socket)."""
    import tifffile

    from tcan_live.export.store import OutputStore
    from tcan_live.frame import Frame, FrameIndex
    from tcan_live.sr.trust import trust_check
    from tcan_live.transport.publisher import ZmqPublisher

    rng = np.random.default_rng(0)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.tif"
        tifffile.imwrite(path, rng.integers(0, 4000, (size, size), dtype=np.uint16))
        store = OutputStore(Path(tmp) / "out")
        pub = ZmqPublisher("tcp://127.0.0.1:*")
        try:
            for r in range(repeats):
                t0 = time.perf_counter()
                raw = tifffile.imread(path)
                read = time.perf_counter() - t0
                res = enhancer.enhance(raw, enhancer.pixel_size_um)
                t1 = time.perf_counter()
                trust_check(raw.astype(np.float32), res.image, enhancer.pixel_size_um)
                t2 = time.perf_counter()
                store.add(Frame(raw, FrameIndex(t=r), stream="s"), res.image, 0.05)
                t3 = time.perf_counter()
                pub.publish("raw", "s", {"seq": r}, raw)
                pub.publish("enhanced", "s", {"seq": r}, res.image)
                t4 = time.perf_counter()
                rows.append({"read": 1000 * read, **res.timings_ms, "trust": 1000 * (t2 - t1),
                             "write": 1000 * (t3 - t2), "encode+publish": 1000 * (t4 - t3)})
        finally:
            pub.close()
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


def bench(model: str | None, sizes: list[int], device: str, repeats: int,
          tile: int | None) -> tuple[list[dict[str, object]], list[dict[str, object]],
                                     dict[str, Any]]:
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(model, device=device, tile=tile)
    arch = enh.card.architecture
    dev = enh.device
    shapes = {(arch.dfcan_width, enh.tile), (arch.unet_widths[0], enh.tile),
              (arch.unet_widths[1], enh.tile // 2), (arch.unet_widths[2], enh.tile // 4),
              (64, 256)}
    peaks = {f"conv3x3 {c}ch @{s}px": conv_peak_gflops(c, s, dev, enh.dtype)
             for c, s in sorted(shapes)}
    best = max(peaks.values())  # the model's convs run at several widths; use the best of them
    conv_flops, conv_s = conv_roofline_s(enh.generator, enh.tile, dev, enh.dtype)
    rows, stages = [], []
    for size in sizes:
        flops = frame_flops(enh, size)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, fwd = [], []
        for _ in range(repeats):
            img = np.random.default_rng(size).random((size, size)).astype(np.float32)
            _sync(dev)
            t0 = time.perf_counter()
            res = enh.enhance(img, enh.pixel_size_um)
            _sync(dev)
            times.append(time.perf_counter() - t0)
            fwd.append(res.timings_ms["forward"] / 1000)
        t, f = float(np.median(times)), float(np.median(fwd))
        mem = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        tiles = flops / conv_flops  # tiles' worth of convolution work in this frame
        rows.append({"frame": f"{size}x{size}", "GFLOP/frame": flops / 1e9, "s/frame": t,
                     "frames/s": 1 / t, "GFLOP/s (forward)": flops / f / 1e9,
                     "GFLOP/s (frame)": flops / t / 1e9,
                     "ratio to best conv peak": flops / f / 1e9 / best,
                     "ratio to conv roofline": tiles * conv_s / f,
                     "peak memory MB": mem})
        stages.append({"frame": f"{size}x{size}", **{k: round(v, 1) for k, v in
                                                      stage_times(enh, size, repeats).items()}})
    info = {"model": enh.model_id, "device": str(dev), "tile": enh.tile, "overlap": enh.overlap,
            "precision": str(enh.dtype or torch.float32), "peaks": peaks,
            "roofline": conv_flops / conv_s / 1e9, "batch": enh.batch}
    return rows, stages, info


def bench_from_cli(args: argparse.Namespace) -> int:
    from tcan_live.bench.report import emit, machine, table

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, stages, info = bench(args.model, sizes, args.device, args.repeats, args.tile)
    peaks = ", ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in info["peaks"].items())
    body = "\n".join([
        f"`tcan-live bench --sizes {args.sizes} --repeats {args.repeats}` on {machine()}.",
        f"Model {info['model']} on {info['device']}, tile {info['tile']} (overlap "
        f"{info['overlap']}), batch {info['batch']}, {info['precision']}. Measured 3x3-conv "
        f"throughput in the same run (batch 4): {peaks}. Conv roofline: every convolution layer "
        f"of one tile timed on its own at its real shape and batch 1 gives "
        f"{info['roofline']:.1f} GFLOP/s; 'ratio to conv roofline' = that ideal time / the "
        "measured forward time (1.0 = nothing but convolutions costs time). FLOPs from torch's "
        "FlopCounterMode (convolutions and matmuls; FFT, activations and pooling not counted).",
        "", table(rows), "", "Stage breakdown (median ms per frame):", "", table(stages)])
    emit(f"bench-{info['device'].split(':')[0]}", body, args.write_docs)
    return 0
