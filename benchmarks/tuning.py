"""Measure the CPU/GPU settings the Enhancer could use, one change at a time.

``python -m benchmarks.tuning [--model M] [--size 512] [--repeats 3] [--compile]
[--write-docs]``

Each row is the median time of ``Enhancer.enhance`` on one simulated frame with a single setting
changed from the default (threads, largest tile side, tile batch, fused forward, memory format,
oneDNN, bf16, grad mode, and with ``--compile`` torch.compile); then the glibc malloc tuning in
fresh processes (Linux), and the generator alone in PyTorch and in ONNX Runtime on the same
tile when the ``onnx`` extra is installed. The table is what the Enhancer's
defaults are chosen from; it is written into docs/benchmarks.md by ``--write-docs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from benchmarks.cli import parse_script


def _frame(size: int) -> np.ndarray:
    from tcan_live.sim.simulate import Camera, Optics, Scene, simulate_pair

    rng = np.random.default_rng(size)
    return simulate_pair(rng, (size, size), Optics(), Camera(photons=80),
                         Scene(structures=("filaments", "beads"))).confocal


def _interleaved_s(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin (one call of each in
    turn, ``repeats`` rounds, after one warm-up call each) so that a machine that speeds up or
    slows down during the run biases no setting."""
    for fn in fns.values():
        fn()  # warm-up (allocations, oneDNN primitive cache)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def enhancer_rows(model: str | None, size: int, repeats: int,
                  compile_model: bool = False) -> list[dict[str, object]]:
    from tcan_live.sr.enhancer import Enhancer

    img = _frame(size)
    base = Enhancer(model, device="cpu")
    px = base.pixel_size_um
    variants: dict[str, Callable[[], object]] = {}

    def add(setting: str, enh: Enhancer,
            ctx: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
            ) -> None:
        def run() -> object:
            with ctx():
                return enh.enhance(img, px)
        variants[setting] = run

    n = torch.get_num_threads()
    add(f"default (tiles <= {base.tile} px, batch {base.batch}, {n} threads, channels_last, "
        "fp32, oneDNN on)", base)
    if n > 1:
        add("1 thread", base, lambda: _threads(1))
    for tile in (128, 256, 384, 512):
        if tile != base.tile and tile <= size:
            add(f"tiles <= {tile} px", Enhancer(model, device="cpu", tile=tile, warmup=False))
    add("tile batch 4", Enhancer(model, device="cpu", batch=4, warmup=False))
    unfused = Enhancer(model, device="cpu", fused=False, warmup=False)
    add("unfused forward (the modules' own: one pass per op)", unfused)
    add("oneDNN off (unfused)", unfused, lambda: torch.backends.mkldnn.flags(enabled=False))
    add("NCHW instead of channels_last (unfused)",
        Enhancer(model, device="cpu", channels_last=False, warmup=False))
    add("bf16 autocast" + ("" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else
                           " (no native bf16 on this CPU)"),
        Enhancer(model, device="cpu", precision="bf16", warmup=False))
    if compile_model:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant weights: lets inductor fold and fuse them
        comp = Enhancer(model, device="cpu", fused=False, warmup=False)
        comp.forward_module = torch.compile(comp.generator)  # type: ignore[assignment]
        add("torch.compile (inductor, freezing; compiled before timing)", comp)
    # grad mode: the Enhancer's forward runs under inference_mode; the same under no_grad
    nograd = Enhancer(model, device="cpu", warmup=False)
    nograd.grad_mode = torch.no_grad  # type: ignore[assignment]
    add("no_grad instead of inference_mode", nograd)
    times = _interleaved_s(variants, repeats)
    ref = next(iter(times.values()))
    return [{"setting": k, "s/frame": t, "relative to default": t / ref} for k, t in times.items()]


def default_times_s(model: str | None, size: int, repeats: int) -> list[float]:
    """Seconds per frame of the default Enhancer, ``repeats`` frames after a warm-up."""
    from tcan_live.sr.enhancer import Enhancer

    img = _frame(size)
    enh = Enhancer(model, device="cpu")
    enh.enhance(img)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        enh.enhance(img)
        times.append(time.perf_counter() - t0)
    return times


def allocator_rows(model: str | None, size: int, repeats: int) -> list[dict[str, object]]:
    """The default in fresh processes with and without the glibc malloc tuning (sr/hostmem.py;
    process-wide, so it cannot be switched inside one process): two processes each,
    alternating, the median over all their frames."""
    from tcan_live.sr.hostmem import ENV

    cmd = [sys.executable, "-m", "benchmarks.tuning", "--default-only", "--size",
           str(size), "--repeats", str(repeats)] + (["--model", model] if model else [])
    times: dict[str, list[float]] = {"1": [], "0": []}
    for _ in range(2):
        for tuning in times:
            out = subprocess.run(cmd, env={**os.environ, ENV: tuning}, capture_output=True,
                                 text=True, check=True).stdout
            times[tuning] += json.loads(out.strip().splitlines()[-1])
    on, off = (float(np.median(times[k])) for k in ("1", "0"))
    return [{"setting": "default, fresh process (malloc tuning on)", "s/frame": on,
             "relative": 1.0},
            {"setting": f"glibc malloc defaults ({ENV}=0), fresh process", "s/frame": off,
             "relative": off / on}]


def precision_difference(model: str | None, size: int, device: str = "cpu",
                         precision: str = "bf16") -> dict[str, float]:
    """How far a reduced precision on ``device`` moves the output of one frame from the CPU's
    fp32 forward, in % of the fp32 output's 0.1-99.9 percentile range."""
    from tcan_live.sr.enhancer import Enhancer

    img = _frame(size)
    ref = Enhancer(model, device="cpu", warmup=False).enhance(img, None).image
    out = Enhancer(model, device=device, precision=precision, warmup=False).enhance(img, None)
    diff = np.abs(out.image - ref)
    span = float(np.percentile(ref, 99.9) - np.percentile(ref, 0.1)) or 1.0
    return {"rms %": 100 * float(np.sqrt(np.mean(diff**2))) / span,
            "p99.9 %": 100 * float(np.percentile(diff, 99.9)) / span,
            "max %": 100 * float(diff.max()) / span}


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def gpu_rows(model: str | None, size: int, repeats: int) -> list[dict[str, object]]:
    """The accelerator's settings, one at a time, each Enhancer built, warmed (first-shape
    set-up and graph capture untimed, reported as 'first frame s') and timed in turn, then
    freed; the default is timed again last to show the drift of the run."""
    from tcan_live.sr.device import sync
    from tcan_live.sr.enhancer import Enhancer

    img = _frame(size)
    rows: list[dict[str, object]] = []
    ref: list[float] = []

    def row(setting: str, ctx: Callable[[], contextlib.AbstractContextManager[Any]] =
            contextlib.nullcontext, **options: Any) -> None:
        with ctx():
            enh = Enhancer(model, device="cuda", **options)
            t0 = time.perf_counter()
            enh.enhance(img, enh.pixel_size_um)
            sync(enh.device)
            first = time.perf_counter() - t0
            times, fwd = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = enh.enhance(img, enh.pixel_size_um)
                sync(enh.device)
                times.append(time.perf_counter() - t0)
                fwd.append(res.timings_ms["forward"] / 1000)
        t = float(np.median(times))
        if not ref:
            ref.append(t)
        rows.append({"setting": setting, "s/frame": t, "forward s": float(np.median(fwd)),
                     "first frame s": first, "relative to default": t / ref[0],
                     "peak GPU memory GB": torch.cuda.max_memory_allocated() / 2**30})
        del enh
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    base = Enhancer(model, device="cuda", warmup=False)
    row(f"default (bf16 autocast, tiles <= {base.tile} px, batch {base.batch}, CUDA graphs, "
        "channels_last)")
    row("CUDA graphs off", cuda_graphs=False)
    row("NCHW instead of channels_last", channels_last=False)
    row("fp16 autocast", precision="fp16")
    row("fp32 (TF32 convolutions, PyTorch's default)", precision="fp32")
    row("fp32, TF32 off", _no_tf32, precision="fp32")
    for batch in (1, 4, 16):
        if batch != base.batch:
            row(f"tile batch {batch}", batch=batch)
    for tile in (256, 1024, 2048):
        if tile != base.tile and tile <= size:
            row(f"tiles <= {tile} px" + (" (one tile: the output differs at tile seams)"
                                         if tile >= size else ""), tile=tile)
    row("default, again (drift of this run)")
    return rows


def onnx_rows(model: str | None, repeats: int) -> list[dict[str, object]]:
    """Generator only, one tile per call: PyTorch eager vs ONNX Runtime (CPU EP)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    from tcan_live.sr.card import resolve_model
    from tcan_live.sr.model import load_generator
    from tcan_live.sr.onnx_export import export_onnx, sample_tiles

    folder = resolve_model(model)
    card, g = load_generator(folder)
    g = g.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    tiles = sample_tiles(card.tiling.tile)[:1]  # one tile per call, as the Enhancer runs on CPU
    with tempfile.TemporaryDirectory() as tmp:
        exp = export_onnx(folder, Path(tmp) / "m.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(exp.path), opts, providers=["CPUExecutionProvider"])

        def run_torch() -> object:
            with torch.inference_mode():
                return g(torch.from_numpy(tiles).contiguous(memory_format=torch.channels_last))
        t = _interleaved_s({"torch": run_torch,
                            "ort": lambda: sess.run(None, {"tiles": tiles})}, repeats)
        t_torch, t_ort = t["torch"], t["ort"]
    label = f"{len(tiles)} tile of {card.tiling.tile} px"
    return [{"setting": f"PyTorch eager (channels_last), {label}", "s/call": t_torch,
             "relative": 1.0},
            {"setting": f"ONNX Runtime CPU, {label}", "s/call": t_ort,
             "relative": t_ort / t_torch}]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import emit, machine, table
    from tcan_live.sr.hostmem import supported

    args = parse_script('tuning', argv, __doc__)
    if args.default_only:
        print(json.dumps(default_times_s(args.model, args.size, args.repeats)))
        return 0
    if args.device.startswith("cuda"):
        return gpu_main(args)
    rows = enhancer_rows(args.model, args.size, args.repeats, args.compile)
    alloc = allocator_rows(args.model, args.size, args.repeats) if supported() else []
    extra = onnx_rows(args.model, args.repeats)
    bf = precision_difference(args.model, args.size)
    body = "\n".join([
        f"Measured with `python -m benchmarks.tuning --size {args.size} --repeats "
        f"{args.repeats}{' --compile' if args.compile else ''}` on {machine()}. One "
        f"{args.size}x{args.size} frame through `Enhancer.enhance` (median; settings measured "
        "round-robin), one setting changed at a time; < 1.0 is faster.",
        "", table(rows), "",
        "bf16 against fp32 on the same frame, |difference| in % of the fp32 output's "
        f"0.1-99.9 percentile range: RMS {bf['rms %']:.3g}%, 99.9th percentile "
        f"{bf['p99.9 %']:.3g}%, largest {bf['max %']:.3g}%."])
    if alloc:
        body += ("\n\nThe glibc malloc tuning (process-wide, measured in fresh processes, "
                 "alternating):\n\n" + table(alloc))
    if extra:
        body += "\n\nGenerator alone (s per call; ONNX export verified against PyTorch first):"
        body += "\n\n" + table(extra)
    emit("tuning-cpu", body, args.write_docs)
    return 0


def gpu_main(args: SimpleNamespace) -> int:
    from benchmarks.model import random_model
    from benchmarks.report import emit, machine, table

    with tempfile.TemporaryDirectory() as tmp:
        model = str(random_model(args.preset, Path(tmp) / args.preset)) if args.preset \
            else args.model
        rows = gpu_rows(model, args.size, args.repeats)
    diffs = {p: precision_difference(args.model, 512, "cuda", p) for p in ("bf16", "fp16", "fp32")}
    preset = f" --preset {args.preset}" if args.preset else ""
    body = "\n".join([
        f"Measured with `python -m benchmarks.tuning --device cuda{preset} --size "
        f"{args.size} --repeats {args.repeats}` on {machine()}. One {args.size}x{args.size} "
        "frame through `Enhancer.enhance` (median s; the first frame, with cuDNN's algorithm "
        "search and the CUDA-graph capture, untimed and shown apart), "
        + (f"random weights of the '{args.preset}' widths, " if args.preset else "")
        + "one setting changed at a time; < 1.0 is faster.",
        "", table(rows), "",
        "Output on the GPU against the CPU's fp32 forward (the shipped model, one simulated "
        "512x512 frame), |difference| in % of the CPU output's 0.1-99.9 percentile range:", "",
        table([{"precision": p, **{k: round(v, 4) for k, v in d.items()}}
               for p, d in diffs.items()])])
    emit(f"tuning-gpu-{args.size}", body, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
