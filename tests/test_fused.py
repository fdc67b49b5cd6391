"""The fused CPU inference path computes what the generator's modules compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcan_live.sr.card import PRESETS, Architecture
from tcan_live.sr.fused import FusedCPUGenerator, fused_available
from tcan_live.sr.model import build_generator
from tcan_live.sr.network import _shifted_magnitude_pow

pytestmark = pytest.mark.skipif(not fused_available(),
                                reason="this PyTorch build has no oneDNN fused convolution")

# widths of the shipped model's kind, but only 2 residual groups: fast, and every block type
SMALLISH = Architecture(stem_width=8, unet_widths=(8, 16, 16, 32), unet_bottom=32,
                        dfcan_width=16, dfcan_groups=2, fcab_per_group=2,
                        attention_reduction=4)


def _randomised(arch: Architecture, seed: int) -> torch.nn.Module:
    """A generator whose every parameter is random (biases too), so that no block can be
    skipped or swapped without changing the output."""
    torch.manual_seed(seed)
    g = build_generator(arch).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0.0, 0.3 if p.ndim == 1 else 1.5 / np.sqrt(p[0].numel()))
    return g


@pytest.mark.parametrize("arch", [PRESETS["tiny"], SMALLISH], ids=["tiny", "smallish"])
@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 33, 47), (1, 96, 128), (1, 5, 5)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_forward_equals_the_modules(arch: Architecture, shape: tuple[int, int, int],
                                          channels_last: bool) -> None:
    g = _randomised(arch, seed=sum(shape))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = g.to(memory_format=fmt)  # type: ignore[call-overload]
    x = torch.rand(shape[0], 1, *shape[1:]).contiguous(memory_format=fmt)
    with torch.inference_mode():
        ref = g(x)
        got = FusedCPUGenerator(g)(x)
    assert got.shape == ref.shape == x.shape
    scale = float(ref.abs().max())
    assert scale > 1e-3  # a live network, not a constant
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("hw", [(2, 2), (8, 6), (64, 64), (32, 96)])
def test_inference_spectrum_is_channels_last_and_equals_the_autograd_one(
        hw: tuple[int, int]) -> None:
    """The fused path's attention reads the inference spectrum: written into channels_last
    (its convolution's layout) and equal to the autograd path's roll/flip/cat form."""
    torch.manual_seed(hw[0] * 100 + hw[1])
    y = torch.randn(2, 5, *hw).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = _shifted_magnitude_pow(y, 0.8)
    ref = _shifted_magnitude_pow(y, 0.8)  # grad mode: the other branch
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_fused_forward_refuses_autograd() -> None:
    f = FusedCPUGenerator(build_generator(PRESETS["tiny"]))
    with pytest.raises(RuntimeError, match="inference"):
        f(torch.rand(1, 1, 16, 16))


def test_enhancer_uses_it_by_default_on_cpu_fp32_only(tiny_model: Path) -> None:
    from tcan_live.sr.enhancer import Enhancer

    rng = np.random.default_rng(3)
    img = rng.random((200, 170)).astype(np.float32) * 1000
    fused = Enhancer(tiny_model, device="cpu", warmup=False)
    plain = Enhancer(tiny_model, device="cpu", fused=False, warmup=False)
    assert fused.fused and isinstance(fused.forward_module, FusedCPUGenerator)
    assert not plain.fused and plain.forward_module is plain.generator
    a, b = fused.enhance(img).image, plain.enhance(img).image
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
    assert not Enhancer(tiny_model, device="cpu", precision="bf16", warmup=False).fused
    assert not Enhancer(tiny_model, device="cpu", channels_last=False, warmup=False).fused
    with pytest.raises(ValueError, match="fused"):
        Enhancer(tiny_model, device="cpu", precision="bf16", fused=True, warmup=False)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_fused_forward_equals_the_modules_for_every_preset(preset: str) -> None:
    """Every shipped architecture (the paper's widths included), random weights."""
    g = _randomised(PRESETS[preset], seed=7).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.rand(1, 1, 48, 40).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, got = g(x), FusedCPUGenerator(g)(x)
    scale = float(ref.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * scale)


def test_without_the_fused_op_the_enhancer_falls_back_to_the_plain_forward(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PyTorch without oneDNN's fused convolution: the plain forward, same numbers."""
    import tcan_live.sr.enhancer as enhancer_mod
    from tcan_live.sr.enhancer import Enhancer

    img = np.random.default_rng(4).random((96, 80)).astype(np.float32) * 500
    with_op = Enhancer(tiny_model, device="cpu", warmup=False)
    monkeypatch.setattr(enhancer_mod, "fused_available", lambda: False)
    without = Enhancer(tiny_model, device="cpu", warmup=False)
    assert with_op.fused and not without.fused
    assert without.forward_module is without.generator
    a, b = with_op.enhance(img).image, without.enhance(img).image
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
