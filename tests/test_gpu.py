"""The accelerator path (sr/gpu.py): tiles on the device and CUDA graphs.

The device stitcher and the on-device tiling run on any torch device, so they are checked on
the CPU against the host path here; the CUDA-graph and CUDA-precision tests need a GPU and are
skipped without one (they are run on a lent GPU machine, see docs/benchmarks.md, and are not
counted as passing where they skip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcan_live.sr.enhancer import Enhancer
from tcan_live.sr.gpu import DeviceStitcher
from tcan_live.sr.tiling import Stitcher, plan_tiles

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", [(96, 96), (208, 144), (400, 272)])
def test_device_stitcher_equals_the_host_one(shape: tuple[int, int],
                                             rng: np.random.Generator) -> None:
    tiles = plan_tiles(shape, 96, 32, 16)
    host, dev = Stitcher(shape, 32), DeviceStitcher(shape, 32, torch.device("cpu"))
    for t in tiles:
        out = rng.standard_normal((t.h, t.w)).astype(np.float32)
        host.add(t, out)
        dev.add(t, torch.from_numpy(out))
    np.testing.assert_allclose(dev.result().numpy(), host.result(), rtol=1e-5, atol=1e-6)
    assert len(dev._weights) <= 9  # cached per window kind (corner, edge, inner), not per tile


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("dtype", "pixel_um"), [(np.float32, 0.05), (np.uint16, 0.05),
                                                 (np.float32, 0.065), (np.int32, 0.05)])
def test_frames_on_the_device_equal_frames_through_the_host(
        tiny_model: Path, fused: bool, dtype: type, pixel_um: float,
        rng: np.random.Generator) -> None:
    """On the model's grid the whole frame goes to the device (8/16-bit as is: histogram
    percentiles counted there); off it, numpy resamples and the tiles go to the device."""
    img = rng.gamma(2.0, 300.0, (300, 233)).astype(dtype)  # several tiles, ragged edges
    if dtype == np.float32:
        img[3, 4] = np.nan
    host = Enhancer(str(tiny_model), device="cpu", fused=fused, batch=2)
    dev = Enhancer(str(tiny_model), device="cpu", fused=fused, batch=2, device_tiles=True)
    assert not host.device_tiles and dev.device_tiles
    a, b = host.enhance(img, pixel_um), dev.enhance(img, pixel_um)
    assert a.tile == b.tile and b.image.shape == img.shape and b.image.dtype == np.float32
    assert (b.affine.lo, b.affine.hi) == pytest.approx((a.affine.lo, a.affine.hi), rel=1e-12)
    assert b.pixel_size_um == a.pixel_size_um == pixel_um
    np.testing.assert_allclose(b.image, a.image, rtol=1e-5, atol=1e-5 * a.affine.scale)
    assert set(b.timings_ms) == set(a.timings_ms)


def test_cuda_graphs_are_refused_without_cuda(tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        Enhancer(str(tiny_model), device="cpu", cuda_graphs=True, warmup=False)
    assert Enhancer(str(tiny_model), device="cpu", warmup=False).graphed is None


# --- on a GPU ------------------------------------------------------------------------------


def _frame(size: int, seed: int) -> np.ndarray:
    from tcan_live.train.simulate import Camera, Optics, Scene, simulate_pair

    return simulate_pair(np.random.default_rng(seed), (size, size), Optics(),
                         Camera(photons=80), Scene(structures=("filaments", "beads"))).confocal


@pytest.mark.gpu
@needs_cuda
def test_cuda_defaults_match_the_cpu() -> None:
    """The shipped model on a GPU (bf16 autocast, graphs, device tiles: the defaults) and in
    fp32 (TF32 convolutions) against the CPU's fp32 forward, on a frame of several tiles."""
    img = _frame(600, 1)
    ref = Enhancer(device="cpu").enhance(img, 0.05).image
    gpu = Enhancer(device="cuda")
    assert gpu.dtype == torch.bfloat16 and gpu.graphed is not None and gpu.device_tiles
    fp32 = Enhancer(device="cuda", precision="fp32")
    for _ in range(2):  # the second call replays the graphs captured by the first
        assert _rel(fp32.enhance(img, 0.05).image, ref) < 5e-3
        assert _rel(gpu.enhance(img, 0.05).image, ref) < 3e-2


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphs_and_device_tiles_equal_the_eager_host_path(precision: str) -> None:
    """Frames of three sizes in turn (several graphs sharing one memory pool, the remainder
    batch included), each twice: every output equals the eager, host-tiled one."""
    eager = Enhancer(device="cuda", precision=precision, cuda_graphs=False, device_tiles=False,
                     batch=3)
    fast = Enhancer(device="cuda", precision=precision, batch=3)
    assert fast.graphed is not None and eager.graphed is None
    frames = [_frame(s, s) for s in (512, 1000, 256)]
    refs = [eager.enhance(f, 0.05).image for f in frames]
    for _ in range(2):
        for f, ref in zip(frames, refs, strict=True):
            out = fast.enhance(f, 0.05).image
            assert np.isfinite(out).all()
            assert _rel(out, ref) < (2e-3 if precision == "fp32" else 1e-2)
    assert len(fast.graphed.graphs) >= 3


@pytest.mark.gpu
@needs_cuda
def test_out_of_memory_halves_the_batch_and_recaptures(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    img = _frame(1000, 3)
    full = Enhancer(device="cuda", batch=4)
    side = plan_tiles((1008, 1008), full.tile, full.overlap, 16)[0].h
    tight = Enhancer(device="cuda", batch=4, memory_budget_px=2 * side * side)
    with caplog.at_level("WARNING"):
        out = tight.enhance(img, 0.05)
    assert "retrying with tile" in caplog.text and ", batch 2" in caplog.text
    assert _rel(out.image, full.enhance(img, 0.05).image) < 1e-2


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_trust_check_on_the_gpu_equals_the_numpy_one(dtype: type) -> None:
    from tcan_live.sr.trust import trust_check, trust_check_on_device

    raw = (_frame(700, 5) * 50).astype(dtype)
    out = Enhancer(device="cuda").enhance(raw, 0.05)
    want = trust_check(raw, out.image, 0.05, affine=out.affine, residual=False)
    got = trust_check_on_device(raw, out.image, 0.05, torch.device("cuda"), affine=out.affine)
    assert (got.score, got.nrmse) == pytest.approx((want.score, want.nrmse), rel=1e-5)
