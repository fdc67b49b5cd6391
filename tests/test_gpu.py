"""The Enhancer's torch side (sr/device.py) and CUDA graphs.

The per-frame maths on the device and the two routes through the Enhancer (a frame on the
model's grid goes to the device as it is; one on another grid is normalised and resampled by
numpy first) run on any torch device and are checked on the CPU here; the CUDA-graph and CUDA
precision tests need a GPU and are skipped without one (they were run on a lent H100 with
tools/gpu_check.sh, see docs/benchmarks.md; they are not counted as passing where they skip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcan_live.sr.device import (
    affine_on_device,
    denormalize_on_device,
    download,
    normalize_on_device,
    upload,
)
from tcan_live.sr.enhancer import Enhancer, tile_plan
from tcan_live.sr.normalize import denormalize, normalize, percentile_affine

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CPU = torch.device("cpu")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int32, ">f4"])
def test_per_frame_maths_on_the_device_equal_numpys(dtype: str | type,
                                                    rng: np.random.Generator) -> None:
    img = rng.gamma(2.0, 60.0, (97, 203)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        img[3, 4] = np.nan
    t = upload(img, CPU)
    assert t.dtype in (torch.uint8, torch.uint16, torch.float32)
    want = percentile_affine(img, 1.0, 99.9)
    if not t.is_floating_point():
        got = affine_on_device(t, 1.0, 99.9)
        assert (got.lo, got.hi) == (want.lo, want.hi)
    np.testing.assert_array_equal(download(normalize_on_device(t, want)), normalize(img, want))
    y = rng.random((97, 203)).astype(np.float32)
    np.testing.assert_array_equal(download(denormalize_on_device(torch.from_numpy(y), want)),
                                  denormalize(y, want))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int32])
def test_both_routes_through_the_enhancer_agree(tiny_model: Path, fused: bool, dtype: type,
                                               rng: np.random.Generator) -> None:
    """A pixel size 3e-6 off the model's is not the same grid, so the frame takes the numpy
    route (normalise, resample, which at that factor keeps the shape and the pixels); on the
    grid it goes to the device as it is. Several tiles, ragged edges, NaN for floats."""
    img = rng.gamma(2.0, 300.0, (300, 233)).astype(dtype)
    if dtype == np.float32:
        img[3, 4] = np.nan
    enh = Enhancer(str(tiny_model), device="cpu", fused=fused, batch=2)
    a, b = enh.enhance(img, 0.05), enh.enhance(img, 0.05 * (1 + 3e-6))
    assert a.tile == b.tile and a.image.shape == img.shape and a.image.dtype == np.float32
    assert (a.affine.lo, a.affine.hi) == (b.affine.lo, b.affine.hi)
    np.testing.assert_allclose(a.image, b.image, rtol=1e-5, atol=1e-5 * a.affine.scale)
    assert set(a.timings_ms) == set(b.timings_ms)
    assert b.timings_ms["resample"] > 0 == a.timings_ms["resample"]


@pytest.mark.parametrize("pixel_um", [0.05, 0.065])
def test_enhancer_trust_check_equals_the_standalone_one(tiny_model: Path, pixel_um: float,
                                                        rng: np.random.Generator) -> None:
    """On the model's grid the Enhancer checks the tensors it holds (normalised input and
    output, no upload, no re-normalisation); off it, the resampled-back output. Either way the
    daemon gets trust_check's numbers."""
    from tcan_live.sr.trust import trust_check

    img = rng.gamma(2.0, 300.0, (160, 210)).astype(np.uint16)
    enh = Enhancer(str(tiny_model), device="cpu")
    res = enh.enhance(img, pixel_um, trust=True)
    want = trust_check(img, res.image, pixel_um, affine=res.affine, residual=False)
    assert res.trust is not None and res.trust.residual is None
    assert (res.trust.score, res.trust.nrmse) == pytest.approx((want.score, want.nrmse),
                                                               rel=1e-5)
    assert res.timings_ms["trust"] >= 0
    plain = enh.enhance(img, pixel_um)
    assert plain.trust is None and "trust" not in plain.timings_ms


def test_cuda_graphs_are_refused_without_cuda(tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        Enhancer(str(tiny_model), device="cpu", cuda_graphs=True, warmup=False)
    assert Enhancer(str(tiny_model), device="cpu", warmup=False).graphed is None


# --- on a GPU ------------------------------------------------------------------------------


def _frame(size: int, seed: int) -> np.ndarray:
    from tcan_live.sim.simulate import Camera, Optics, Scene, simulate_pair

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
    assert gpu.dtype == torch.bfloat16 and gpu.graphed is not None
    fp32 = Enhancer(device="cuda", precision="fp32")
    for _ in range(2):  # the second call replays the graphs captured by the first
        assert _rel(fp32.enhance(img, 0.05).image, ref) < 5e-3
        assert _rel(gpu.enhance(img, 0.05).image, ref) < 3e-2


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphs_equal_the_eager_forward(precision: str) -> None:
    """Frames of three sizes in turn (several graphs sharing one memory pool, the remainder
    batch included), each twice: every output equals the eager one."""
    eager = Enhancer(device="cuda", precision=precision, cuda_graphs=False, batch=3)
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
    side = tile_plan((1000, 1000), full.tile, full.overlap)[0].h
    tight = Enhancer(device="cuda", batch=4, memory_budget_px=2 * side * side)
    with caplog.at_level("WARNING"):
        out = tight.enhance(img, 0.05)
    assert "retrying with tile" in caplog.text and ", batch 2" in caplog.text
    assert _rel(out.image, full.enhance(img, 0.05).image) < 1e-2


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_trust_check_on_the_gpu_equals_the_cpu_one(dtype: type) -> None:
    from tcan_live.sr.trust import trust_check

    raw = (_frame(700, 5) * 50).astype(dtype)
    out = Enhancer(device="cuda").enhance(raw, 0.05)
    want = trust_check(raw, out.image, 0.05, affine=out.affine)
    got = trust_check(raw, out.image, 0.05, affine=out.affine, device="cuda")
    assert (got.score, got.nrmse) == pytest.approx((want.score, want.nrmse), rel=1e-5)
    assert want.residual is not None and got.residual is not None
    np.testing.assert_allclose(got.residual, want.residual,
                               atol=1e-5 * float(np.abs(want.residual).max()))
