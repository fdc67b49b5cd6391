"""Measure the CPU/GPU settings the Enhancer could use, one change at a time.

``python -m tcan_live.bench.tuning [--model M] [--size 512] [--repeats 3] [--write-docs]``

Each row is the median time of ``Enhancer.enhance`` on one simulated frame with a single setting
changed from the default (threads, tile size, tile batch, memory format, oneDNN, grad mode), plus
the generator alone in PyTorch and in ONNX Runtime on the same batch of tiles when the ``onnx``
extra is installed. The table is what the Enhancer's defaults are chosen from; it is written into
docs/benchmarks.md by ``--write-docs``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _frame(size: int) -> np.ndarray:
    from tcan_live.train.simulate import Camera, Optics, Scene, simulate_pair

    rng = np.random.default_rng(size)
    return simulate_pair(rng, (size, size), Optics(), Camera(photons=80),
                         Scene(structures=("filaments", "beads"))).confocal


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive cache)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _mkldnn(enabled: bool) -> Iterator[None]:
    with torch.backends.mkldnn.flags(enabled=enabled):
        yield


def enhancer_rows(model: str | None, size: int, repeats: int) -> list[dict[str, object]]:
    from tcan_live.sr.enhancer import Enhancer

    img = _frame(size)
    base = Enhancer(model, device="cpu")
    px = base.pixel_size_um
    rows: list[dict[str, object]] = []

    def add(setting: str, enh: Enhancer, ctx: contextlib.AbstractContextManager[Any]) -> None:
        with ctx:
            t = _median_s(lambda: enh.enhance(img, px), repeats)
        rows.append({"setting": setting, "s/frame": t})

    n = torch.get_num_threads()
    add(f"default (tile {base.tile}, batch {base.batch}, {n} threads, NCHW, oneDNN on)", base,
        contextlib.nullcontext())
    if n > 1:
        add("1 thread", base, _threads(1))
    for tile in (128, 512):
        if tile != base.tile and tile <= size:
            add(f"tile {tile}", Enhancer(model, device="cpu", tile=tile, warmup=False),
                contextlib.nullcontext())
    add("tile batch 4", Enhancer(model, device="cpu", batch=4, warmup=False),
        contextlib.nullcontext())
    add("oneDNN off", base, _mkldnn(False))
    cl = Enhancer(model, device="cpu", warmup=False)
    cl.generator = cl.generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    add("channels_last weights", cl, contextlib.nullcontext())
    # grad mode: the Enhancer's forward runs under inference_mode; the same under no_grad
    nograd = Enhancer(model, device="cpu", warmup=False)
    raw_forward = inspect.unwrap(Enhancer._forward)

    def under_no_grad(stack: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = raw_forward(nograd, stack)
        return out
    nograd._forward = under_no_grad  # type: ignore[method-assign]
    add("no_grad instead of inference_mode", nograd, contextlib.nullcontext())
    ref = float(rows[0]["s/frame"])  # type: ignore[arg-type]
    for r in rows:
        r["relative to default"] = float(r["s/frame"]) / ref  # type: ignore[arg-type]
    return rows


def onnx_rows(model: str | None, repeats: int) -> list[dict[str, object]]:
    """Generator only, one batch of 4 tiles: PyTorch eager vs ONNX Runtime (CPU EP)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    from tcan_live.sr.card import resolve_model
    from tcan_live.sr.model import load_generator
    from tcan_live.sr.onnx_export import _test_tiles, export_onnx

    folder = resolve_model(model)
    card, g = load_generator(folder)
    g.eval()
    tiles = np.concatenate([_test_tiles(card.tiling.tile)] * 2)
    with tempfile.TemporaryDirectory() as tmp:
        exp = export_onnx(folder, Path(tmp) / "m.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(exp.path), opts, providers=["CPUExecutionProvider"])

        def run_torch() -> object:
            with torch.inference_mode():
                return g(torch.from_numpy(tiles))
        t_torch = _median_s(run_torch, repeats)
        t_ort = _median_s(lambda: sess.run(None, {"tiles": tiles}), repeats)
    label = f"{len(tiles)} tiles of {card.tiling.tile} px"
    return [{"setting": f"PyTorch eager, {label}", "s/batch": t_torch, "relative": 1.0},
            {"setting": f"ONNX Runtime CPU, {label}", "s/batch": t_ort,
             "relative": t_ort / t_torch}]


def main(argv: list[str] | None = None) -> int:
    from tcan_live.bench.report import machine, table, write_section

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args(argv)
    rows = enhancer_rows(args.model, args.size, args.repeats)
    extra = onnx_rows(args.model, args.repeats)
    body = "\n".join([
        f"Measured with `python -m tcan_live.bench.tuning --size {args.size} --repeats "
        f"{args.repeats}` on {machine()}. One {args.size}x{args.size} frame through "
        "`Enhancer.enhance` (median), one setting changed at a time; < 1.0 is faster.",
        "", table(rows)])
    if extra:
        body += "\n\nGenerator alone (s per batch; ONNX export verified against PyTorch first):"
        body += "\n\n" + table(extra)
    print(body)
    if args.write_docs:
        write_section("tuning-cpu", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
