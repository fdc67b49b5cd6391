"""A fused CPU inference path for the TCAN generator: the same numbers in fewer memory passes.

Eager PyTorch runs each convolution, activation, residual add and concatenation as its own pass
over a multi-megabyte activation. On a CPU about half of the forward time went to those passes
(docs/benchmarks.md). :class:`FusedCPUGenerator` computes the generator's forward from the very
same parameters with:

- convolution + LeakyReLU / GELU / ReLU in one oneDNN primitive (a post-op:
  ``torch.ops.mkldnn._convolution_pointwise``, the op inductor's CPU freezing pass emits);
- the Fourier attention's spectrum from the network's own function (under inference it is
  written straight into the channels_last layout its convolution reads), ``y + y_o * a`` as one
  ``addcmul``, squeeze/excite on the pooled vector as matrix products;
- the U-net's skip and nearest-x2 upsampling written into one buffer (no interpolate + cat),
  the down blocks' zero-padded residual added in place.

Inference only (no autograd), float32, CPU. :func:`fused_available` says whether this PyTorch
build has the op; the Enhancer falls back to the modules' own forward otherwise, for other
precisions and on GPUs. tests/test_fused.py checks it against ``Generator.forward``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from tcan_live.sr.network import (
    FCAB,
    LEAKY_SLOPE,
    UNET_DEPTH,
    DFCANBranch,
    DownBlock,
    FourierChannelAttention,
    Generator,
    ResidualGroup,
    UNetBranch,
    UpBlock,
    _pad_to_multiple,
)


def fused_available() -> bool:
    """True if this PyTorch has oneDNN's fused convolution op and oneDNN is usable."""
    try:
        ok = hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False
    return bool(ok and torch.backends.mkldnn.is_available())


def _conv_act(conv: nn.Module, x: torch.Tensor, act: str,
              scalars: tuple[float, ...] = (), algorithm: str = "") -> torch.Tensor:
    c = cast(nn.Conv2d, conv)
    return cast(torch.Tensor, torch.ops.mkldnn._convolution_pointwise(
        x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups, act,
        list(scalars), algorithm))


def _leaky(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _conv_act(conv, x, "leaky_relu", (LEAKY_SLOPE,))


def _gelu(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _conv_act(conv, x, "gelu", (), "none")  # exact (erf) GELU, as nn.GELU()


def _blocks(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for block in seq:  # ConvBlock = (Conv2d, LeakyReLU)
        x = _leaky(cast(nn.Sequential, block)[0], x)
    return x


def _attention(att: FourierChannelAttention, y: torch.Tensor) -> torch.Tensor:
    a = _conv_act(att.spectral, att._spectrum(y), "relu").mean((2, 3))
    a = F.relu(F.linear(a, att.squeeze.weight.flatten(1), att.squeeze.bias))
    a = torch.sigmoid(F.linear(a, att.excite.weight.flatten(1), att.excite.bias))
    return a[:, :, None, None]


def _fcab(block: FCAB, y: torch.Tensor, *, in_place: bool) -> torch.Tensor:
    """y + y_o * attention(y_o); written into ``y`` itself when the caller no longer needs it
    (no new activation-sized buffer per block)."""
    conv1, _, conv2, _ = block.body
    y_o = _gelu(conv2, _gelu(conv1, y))
    a = _attention(block.attention, y_o)
    return y.addcmul_(y_o, a) if in_place else torch.addcmul(y, y_o, a)


def _dfcan(branch: DFCANBranch, x: torch.Tensor) -> torch.Tensor:
    y = _gelu(branch.head[0], x)
    for group in branch.groups:
        z = y
        for i, block in enumerate(cast(ResidualGroup, group).body):
            # in place from the second block on: the group's input y is kept for its skip
            z = _fcab(cast(FCAB, block), z, in_place=i > 0)
        y = z.add_(y)
    return _gelu(branch.tail[0], y)


def _down(block: DownBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = _blocks(block.body, x)
    d[:, : x.shape[1]] += x  # = zero-pad x to d's channels, then add
    return d, F.avg_pool2d(d, 2)


def _up(block: UpBlock, skip: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    n, cs, h, w = skip.shape
    cb = below.shape[1]
    buf = torch.empty((n, cs + cb, h, w), dtype=skip.dtype, device=skip.device,
                      memory_format=torch.channels_last)
    buf[:, :cs] = skip
    # nearest x2: every pixel of ``below`` into a 2 x 2 block of the upper channels
    buf[:, cs:].view(n, cb, h // 2, 2, w // 2, 2).copy_(
        below[:, :, :, None, :, None].expand(n, cb, h // 2, 2, w // 2, 2))
    return _blocks(block.body, buf)


def _unet(branch: UNetBranch, x: torch.Tensor) -> torch.Tensor:
    skips = []
    for block in branch.down:
        d, x = _down(cast(DownBlock, block), x)
        skips.append(d)
    u = _leaky(branch.bottom[0], x)
    for block, skip in zip(branch.up, reversed(skips), strict=True):
        u = _up(cast(UpBlock, block), skip, u)
    return cast(torch.Tensor, branch.last(u))


class FusedCPUGenerator(nn.Module):
    """Inference-only forward of ``generator`` (shares its parameters; no copy)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("FusedCPUGenerator is for inference: use no_grad/inference_mode")
        g = self.generator
        x, h, w = _pad_to_multiple(x.contiguous(memory_format=torch.channels_last),
                                   2**UNET_DEPTH)
        s = _leaky(g.stem[0], x)
        y = _leaky(g.head[0], _unet(g.unet, s) + _dfcan(g.dfcan, s))
        return y[..., :h, :w]
