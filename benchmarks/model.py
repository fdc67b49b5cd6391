"""``python -m benchmarks.model``: FLOPs, time per frame, effective GFLOP/s against the measured
peak of the model's dominant operation (a 3x3 convolution at the model's width), stage
breakdown, memory."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cli import parse_script
from tcan_live.errors import ConfigError
from tcan_live.sr.device import sync


def _fastest_s(fn: Any, device: torch.device, seconds: float, bursts: int = 3) -> float:
    """Seconds per call of ``fn()``: after a warm-up call, ``bursts`` bursts of ``seconds /
    bursts``; the fastest counts, so that a stall of this shared machine cannot lower a peak
    (which would flatter every ratio to it)."""
    best = float("inf")
    fn()
    for _ in range(bursts):
        sync(device)
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds / bursts:
            fn()
            n += 1
        sync(device)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def conv_time_s(c_in: int, c_out: int, k: int, shape: tuple[int, int, int], device: torch.device,
                dtype: torch.dtype | None, seconds: float,
                memory_format: torch.memory_format = torch.contiguous_format,
                bursts: int = 3) -> tuple[float, float]:
    """(FLOPs, seconds) of one call of a k x k convolution on an (N, c_in, H, W) input, timed
    by :func:`_fastest_s`."""
    n_batch, h, w = shape
    conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2).to(device).eval()
    conv = conv.to(memory_format=memory_format)  # type: ignore[call-overload]
    x = torch.randn(n_batch, c_in, h, w, device=device).contiguous(memory_format=memory_format)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        best = _fastest_s(lambda: conv(x), device, seconds, bursts)
    return float(2 * k * k * c_in * c_out * h * w * n_batch), best


def conv_peak_gflops(channels: int, size: int, device: torch.device, dtype: torch.dtype | None,
                     seconds: float = 1.5, batches: tuple[int, ...] = (1, 4)) -> float:
    """Measured GFLOP/s of a C->C 3x3 convolution on a (size x size) input: the best of the
    ``batches`` (batch 1 and 4, and the Enhancer's tile batch), NCHW and channels_last."""
    best = 0.0
    for batch in batches:
        for fmt in (torch.contiguous_format, torch.channels_last):
            flops, per = conv_time_s(channels, channels, 3, (batch, size, size), device, dtype,
                                     seconds / (2 * len(batches)), fmt)
            best = max(best, flops / per / 1e9)
    return best


def conv_shapes(generator: torch.nn.Module, side: tuple[int, int],
                device: torch.device) -> dict[tuple[int, int, int, int, int], int]:
    """{(c_in, c_out, k, H, W): calls} of every convolution in one forward of a tile."""
    shapes: dict[tuple[int, int, int, int, int], int] = {}

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        assert isinstance(mod, torch.nn.Conv2d)
        key = (mod.in_channels, mod.out_channels, mod.kernel_size[0], *inp[0].shape[-2:])
        shapes[key] = shapes.get(key, 0) + 1

    handles = [m.register_forward_hook(hook) for m in generator.modules()
               if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            generator(torch.zeros(1, 1, *side, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def dominant_conv(shapes: dict[tuple[int, int, int, int, int], int]) -> tuple[int, int]:
    """(width, input side) of the C->C 3x3 convolution that carries the most FLOPs."""
    flops: dict[tuple[int, int], float] = {}
    for (cin, cout, k, h, w), count in shapes.items():
        if k == 3 and cin == cout:
            flops[(cin, h)] = flops.get((cin, h), 0.0) + 2 * 9 * cin * cout * h * w * count
    return max(flops, key=lambda key: flops[key])


def conv_roofline_s(shapes: dict[tuple[int, int, int, int, int], int], device: torch.device,
                    dtype: torch.dtype | None, memory_format: torch.memory_format,
                    seconds: float = 0.4, batch: int = 1) -> tuple[float, float]:
    """(FLOPs, seconds) of one tile's convolutions if each ran at the speed measured for that
    exact layer shape on its own, in batches of ``batch`` tiles (the Enhancer's): the time the
    model would take if everything but the convolutions were free and every convolution ran
    at this machine's speed for it."""
    flops = total = 0.0
    for (cin, cout, k, h, w), count in shapes.items():
        f, per = conv_time_s(cin, cout, k, (batch, h, w), device, dtype, seconds, memory_format)
        flops += f / batch * count
        total += per / batch * count
    return flops, total


def frame_flops(enhancer: Any, size: int) -> float:
    """FLOPs of one frame, counted through the generator's modules: the counter knows aten's
    convolutions, not oneDNN's fused op that the fused path calls for the same arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    fast, enhancer.forward_module = enhancer.forward_module, enhancer.generator
    graphed, enhancer.graphed = enhancer.graphed, None  # a graph's replay is invisible to it
    try:
        with FlopCounterMode(display=False) as counter:
            enhancer.enhance(np.zeros((size, size), np.float32), enhancer.pixel_size_um)
    finally:
        enhancer.forward_module, enhancer.graphed = fast, graphed
    return float(counter.get_total_flops())


def spectra_s(enhancer: Any, side: tuple[int, int], seconds: float = 0.4) -> tuple[float, float]:
    """(FFTs alone, whole spectra) in seconds per tile for the Fourier attention: the work the
    FLOP counter does not see. Timed on their own at the tile's shape and memory format, the
    spectra as the attention computes them under inference (FFT, magnitude, power, layout)."""
    from tcan_live.sr.network import FourierChannelAttention

    atts = [m for m in enhancer.generator.modules() if isinstance(m, FourierChannelAttention)]
    if not atts:
        return 0.0, 0.0
    batch = enhancer.batch  # per tile, in the batches the Enhancer runs
    y = torch.randn(batch, atts[0].spectral.in_channels, *side, device=enhancer.device)
    y = y.contiguous(memory_format=enhancer.memory_format)
    with torch.inference_mode():
        fft = _fastest_s(lambda: torch.fft.rfft2(y, norm="ortho"), enhancer.device, seconds)
        whole = _fastest_s(lambda: atts[0]._spectrum(y), enhancer.device, seconds)
    return fft * len(atts) / batch, whole * len(atts) / batch


def stage_times(enhancer: Any, size: int, repeats: int) -> dict[str, float]:
    """Median ms per stage for one frame, the real code paths (tifffile read, Enhancer stages,
    trust check, fsync'd OutputStore save, wire encode + publish on a socket)."""
    import tifffile

    from tcan_live.export.store import OutputStore
    from tcan_live.frame import Frame, FrameIndex
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
                res = enhancer.enhance(raw, enhancer.pixel_size_um, trust=True)  # as the
                t2 = time.perf_counter()  # daemon calls it: its 'trust' stage included
                pub.publish("raw", "s", {"seq": r}, raw)
                pub.publish("enhanced", "s", {"seq": r}, res.image)
                t3 = time.perf_counter()
                store.add(Frame(raw, FrameIndex(t=r), stream="s"), res.image, 0.05)
                t4 = time.perf_counter()
                rows.append({"read": 1000 * read, **res.timings_ms,
                             "encode+publish": 1000 * (t3 - t2), "write": 1000 * (t4 - t3)})
        finally:
            pub.close()
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


def random_model(preset: str, folder: Path) -> Path:
    """A model folder with random (seeded) weights of a preset's architecture and the default
    card otherwise: to time widths no trained model ships with (``--preset tcan``, the paper's).
    """
    from tcan_live.sr.card import PRESETS
    from tcan_live.sr.model import build_generator, save_model

    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} unknown; choose one of {sorted(PRESETS)}")
    torch.manual_seed(0)
    save_model(folder, build_generator(PRESETS[preset]), id=f"{preset}-random",
               architecture=PRESETS[preset],
               description=f"random weights, {preset} widths, for benchmarks only")
    return folder


def bench(model: str | None, sizes: list[int], device: str, repeats: int, tile: int | None,
          precision: str = "auto", **enhancer_options: Any,
          ) -> tuple[list[dict[str, object]], list[dict[str, object]], dict[str, Any]]:
    from tcan_live.sr.enhancer import Enhancer, tile_plan

    enh = Enhancer(model, device=device, tile=tile, precision=precision, **enhancer_options)
    dev, fmt = enh.device, enh.memory_format
    peaks: dict[str, float] = {}
    batches = tuple(sorted({1, 4, enh.batch}))

    def peak(channels: int, side: int) -> float:
        key = f"conv3x3 {channels}ch @{side}px"
        if key not in peaks:
            peaks[key] = conv_peak_gflops(channels, side, dev, enh.dtype, batches=batches)
        return peaks[key]

    for c, side in ((32, 128), (64, 64), (64, 128)):  # widths where a CPU's convs run best
        peak(c, side)
    plans = []  # per size: tiles, their (h, w), dominant conv, conv FLOPs and ideal seconds
    for size in sizes:
        tiles = tile_plan((size, size), enh.tile, enh.overlap)
        hw = (tiles[0].h, tiles[0].w)
        shapes = conv_shapes(enh.generator, hw, dev)
        width, at = dominant_conv(shapes)
        peak(width, at)
        plans.append((tiles, hw, width, at,
                      *conv_roofline_s(shapes, dev, enh.dtype, fmt, batch=enh.batch),
                      spectra_s(enh, hw)))
    best = max(peaks.values())
    rows, stages = [], []
    for size, (tiles, hw, width, at, conv_flops, conv_s, spec_s) in zip(sizes, plans,
                                                                        strict=True):
        flops = frame_flops(enh, size)
        useful = conv_flops * size * size / (hw[0] * hw[1])  # every pixel through once
        img = np.random.default_rng(size).random((size, size)).astype(np.float32)
        enh.enhance(img, enh.pixel_size_um)  # untimed: first-shape set-up (oneDNN, graphs)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, fwd = [], []
        for _ in range(repeats):
            sync(dev)
            t0 = time.perf_counter()
            res = enh.enhance(img, enh.pixel_size_um)
            sync(dev)
            times.append(time.perf_counter() - t0)
            fwd.append(res.timings_ms["forward"] / 1000)
        t, f = float(np.median(times)), float(np.median(fwd))
        mem = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        gflops = flops / f / 1e9
        rows.append({"frame": f"{size}x{size}", "tiles": f"{len(tiles)} x {hw[0]}x{hw[1]}",
                     "GFLOP/frame": flops / 1e9, "executed / useful": flops / useful,
                     "s/frame": t, "frames/s": 1 / t, "GFLOP/s (forward)": gflops,
                     "GFLOP/s (frame)": flops / t / 1e9, "dominant conv": f"{width}ch @{at}px",
                     "ratio to dominant-conv peak": gflops / peak(width, at),
                     "ratio to best conv peak": gflops / best,
                     "ratio to conv roofline": flops / conv_flops * conv_s / f,
                     "FFT / spectra ms/tile": f"{1000 * spec_s[0]:.3g} / {1000 * spec_s[1]:.3g}",
                     "ceiling: convs + FFTs": conv_flops / (conv_s + spec_s[0]) / 1e9
                     / peak(width, at),
                     "ceiling: convs + spectra": conv_flops / (conv_s + spec_s[1]) / 1e9
                     / peak(width, at),
                     "peak memory MB": mem})
        stages.append({"frame": f"{size}x{size}", **{k: round(v, 1) for k, v in
                                                      stage_times(enh, size, repeats).items()}})
    info = {"model": enh.model_id, "device": str(dev), "tile": enh.tile, "overlap": enh.overlap,
            "precision": str(enh.dtype or torch.float32).replace("torch.", ""),
            "memory_format": "channels_last" if fmt == torch.channels_last else "NCHW",
            "peaks": peaks, "roofline": [p[4] / p[5] / 1e9 for p in plans], "batch": enh.batch,
            "fused": enh.fused, "cuda_graphs": enh.graphed is not None}
    return rows, stages, info


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import emit, machine, table

    args = parse_script("model", argv, __doc__)

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.preset and args.model:
        raise ConfigError("--preset and --model exclude each other")
    with tempfile.TemporaryDirectory() as tmp:
        model = str(random_model(args.preset, Path(tmp) / args.preset)) if args.preset \
            else args.model
        rows, stages, info = bench(model, sizes, args.device, args.repeats, args.tile,
                                   args.precision)
    peaks = ", ".join(f"{k}: {v:.1f}" for k, v in info["peaks"].items())
    roof = ", ".join(f"{g:.0f}" for g in info["roofline"])
    flags = "".join(f" --{k} {getattr(args, k)}" for k in ("preset", "device", "precision",
                                                           "tile")
                    if getattr(args, k) not in (None, "auto"))
    body = "\n".join([
        f"`python -m benchmarks.model --sizes {args.sizes} --repeats {args.repeats}{flags}` on "
        f"{machine()}.",
        f"Model {info['model']} on {info['device']}, tiles up to {info['tile']} px (overlap "
        f"{info['overlap']}), batch {info['batch']}, {info['precision']}, "
        f"{info['memory_format']}, {'fused' if info['fused'] else 'unfused'} forward"
        + (f", CUDA graphs {'on' if info['cuda_graphs'] else 'off'}"
           if info["device"].startswith("cuda") else "") + ".",
        "",
        "Measured 3x3-convolution peaks in the same run (GFLOP/s; best of batch "
        f"{' and '.join(str(b) for b in sorted({1, 4, info['batch']}))}, NCHW "
        f"and channels_last, fastest of 3 bursts; {info['precision']}): {peaks}. The 'dominant "
        "conv' is the C->C 3x3 convolution that carries most of the model's FLOPs at the tile "
        "size used (the issue's 'peak for the model's dominant operation, a 3x3 convolution at "
        "the model's width'); 'best conv peak' is the fastest of all those measured, a "
        "stricter yardstick. Conv roofline: every convolution layer of one tile timed on its "
        f"own at its real shape, in batches of {info['batch']} tiles as the Enhancer runs them "
        f"({roof} GFLOP/s for the sizes in order); 'ratio to "
        "conv roofline' = that ideal time / the measured forward time (1.0 = nothing but "
        "convolutions costs time). FLOPs from torch's FlopCounterMode (convolutions and "
        "matmuls; FFT, activations and pooling not counted), as executed, tile overlaps "
        "included; 'executed / useful' is that over the FLOPs of every pixel through the "
        "network once. 'FFT / spectra ms/tile': the Fourier attention's real FFTs of one tile, "
        "and its whole spectra (FFT, magnitude, power, layout) as the Enhancer computes them, "
        "each timed on its own at the same batch: work the FLOP counter does not count. "
        "'ceiling: convs + FFTs' = the ratio to the dominant-conv peak if every convolution "
        "ran at its roofline speed, the FFTs cost what they cost alone and every other "
        "operation were free: no implementation of this model that uses this PyTorch's FFT "
        "can pass it on this machine; 'ceiling: convs + spectra' is the same with the spectra "
        "as computed here.",
        "", table(rows), "", "Stage breakdown (median ms per frame):", "", table(stages)])
    section = f"bench-{info['device'].split(':')[0]}" + (f"-{args.preset}" if args.preset else "")
    if info["precision"] != "float32":
        section += f"-{info['precision']}"
    emit(section, body, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
