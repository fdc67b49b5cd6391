from __future__ import annotations

import pytest
import torch

from tcan_live.sr.card import PRESETS
from tcan_live.sr.model import build_generator, count_parameters
from tcan_live.sr.network import FCAB, Discriminator, Generator


@pytest.mark.parametrize("shape", [(64, 64), (33, 47), (1, 1), (17, 100), (128, 96)])
def test_generator_keeps_any_size(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    g = build_generator(PRESETS["tiny"]).eval()
    with torch.inference_mode():
        y = g(torch.randn(2, 1, *shape))
    assert y.shape == (2, 1, *shape)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(256, 256), (37, 53), (5, 5), (64, 128)])
def test_discriminator_one_logit_per_image(shape: tuple[int, int]) -> None:
    d = Discriminator(in_channels=2, width=4)
    assert d(torch.randn(3, 2, *shape)).shape == (3,)


def test_paper_configuration_size_matches_docs() -> None:
    """docs/architecture.md states 8,196,180 generator parameters for the paper widths."""
    g = build_generator(PRESETS["tcan"])
    assert count_parameters(g) == 8_196_180
    assert len(g.unet.down) == 4 and len(g.unet.up) == 4
    assert len(g.dfcan.groups) == 5
    assert all(len(rg.body) == 2 and isinstance(rg.body[0], FCAB) for rg in g.dfcan.groups)
    assert g.unet.down[0].out_channels == 32


def test_down_block_residual_is_zero_padded_input() -> None:
    """With the conv body zeroed, a down block returns its input padded with zero channels."""
    g = Generator(stem_width=4, unet_widths=(8, 8, 8, 8), unet_bottom=8, dfcan_width=4)
    block = g.unet.down[0]
    for p in block.body.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 8, 8)
    d, pooled = block(x)
    assert torch.equal(d[:, :4], x) and torch.count_nonzero(d[:, 4:]) == 0
    assert pooled.shape == (1, 8, 4, 4)


def test_eval_mode_is_deterministic() -> None:
    torch.manual_seed(1)
    g = build_generator(PRESETS["tiny"]).eval()
    x = torch.randn(1, 1, 48, 40)
    with torch.inference_mode():
        assert torch.equal(g(x), g(x))


def test_fourier_attention_is_comparable_across_tile_sizes() -> None:
    """The ortho-normalised FFT keeps the attention of stationary content independent of the
    tile size (tiles of 64 px and 256 px see about the same channel weights)."""
    torch.manual_seed(2)
    block = FCAB(8, gamma=0.8, reduction=2)
    with torch.no_grad():
        small = block.attention(torch.randn(1, 8, 64, 64))
        large = block.attention(torch.randn(1, 8, 256, 256))
    assert small.shape == (1, 8, 1, 1)
    assert torch.all((small > 0) & (small < 1))
    assert torch.allclose(small, large, atol=0.02)


@pytest.mark.parametrize("shape", [(16, 16), (64, 48), (2, 2), (37, 48), (33, 31), (256, 256)])
def test_fast_spectrum_equals_fftshift_of_fft(shape: tuple[int, int]) -> None:
    """The attention's half-spectrum shortcut gives the textbook fftshift(|fft2|)^gamma."""
    from tcan_live.sr.network import _shifted_magnitude_pow

    torch.manual_seed(1)
    y = torch.randn(2, 5, *shape)
    spec = torch.fft.fftshift(torch.fft.fft2(y, norm="ortho"), dim=(-2, -1))
    want = (spec.abs() + 1e-8).pow(0.8)
    got = _shifted_magnitude_pow(y, 0.8)  # the autograd path
    with torch.inference_mode():
        got_inference = _shifted_magnitude_pow(y, 0.8)  # the in-place path
    torch.testing.assert_close(got_inference, want, rtol=1e-5, atol=1e-5)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fast_spectrum_gradient_equals_textbook() -> None:
    from tcan_live.sr.network import _shifted_magnitude_pow

    torch.manual_seed(2)
    y = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    w = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    a = y.clone().requires_grad_(True)
    (_shifted_magnitude_pow(a, 0.8) * w).sum().backward()
    b = y.clone().requires_grad_(True)
    spec = torch.fft.fftshift(torch.fft.fft2(b, norm="ortho"), dim=(-2, -1))
    ((spec.abs() + 1e-8).pow(0.8) * w).sum().backward()
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-8)
