"""TCAN network: generator (U-net branch || DFCAN branch, summed) and discriminator.

Pure architecture, following "Two-channel attention network" (TCAN, PhotoniX 2023), sections
"Generative model" and "Discriminative model". No I/O, device logic or training code here.

Generator
    input conv block (Conv + LeakyReLU 0.1)
    -> U-net branch: 4 downsampling blocks (3 conv blocks + residual from the zero-padded block
       input, then 2x2 average pooling), a bottom conv, 4 upsampling blocks (nearest x2, concat
       with the matching downsampling output, 3 conv blocks), last conv to ``branch_out`` channels
    -> DFCAN branch: Conv + GELU, residual groups of Fourier channel attention blocks (FCAB) with a
       skip, Conv + GELU to ``branch_out`` channels
    -> the two branch outputs summed -> output conv block (Conv + LeakyReLU 0.1) -> 1 channel.

The output has the input's height and width for any size: the input is padded to a multiple of
16 (four poolings) and the result cropped back.

Discriminator
    conv -> 5 blocks of 2 x (Conv + LeakyReLU) with 2x2 average pooling between them ->
    adaptive average pooling to a fixed grid (so any input size works) -> 3 fully connected
    layers -> one logit per image (use with ``BCEWithLogitsLoss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1
UNET_DEPTH = 4


# ---------------------------------------------------------------------------------------------
# helpers


def _conv(c_in: int, c_out: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2)


def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad ``x`` along the channel axis to ``channels`` channels."""
    extra = channels - x.shape[1]
    if extra <= 0:
        return x
    return F.pad(x, (0, 0, 0, 0, 0, extra))


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad H and W at the bottom/right to a multiple; reflect where possible."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, h, w
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), h, w


# ---------------------------------------------------------------------------------------------
# blocks


class ConvBlock(nn.Sequential):
    """Conv + LeakyReLU(0.1): the paper's convolutional block."""

    def __init__(self, c_in: int, c_out: int, *, k: int = 3) -> None:
        super().__init__(_conv(c_in, c_out, k), nn.LeakyReLU(LEAKY_SLOPE))


class DownBlock(nn.Module):
    """d_k = pad(d_{k-1}) + 3 conv blocks(d_{k-1}); returns the pre-pool map and the pooled map."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.out_channels = c_out
        self.body = nn.Sequential(
            ConvBlock(c_in, c_out), ConvBlock(c_out, c_out), ConvBlock(c_out, c_out)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = _pad_channels(x, self.out_channels) + self.body(x)
        return d, F.avg_pool2d(d, 2)


class UpBlock(nn.Module):
    """u_k = 3 conv blocks(concat(skip, nearest-x2(u_{k-1})))."""

    def __init__(self, c_skip: int, c_below: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(c_skip + c_below, c_out), ConvBlock(c_out, c_out), ConvBlock(c_out, c_out)
        )

    def forward(self, skip: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(below, scale_factor=2.0, mode="nearest")
        return self.body(torch.cat([skip, up], dim=1))


class UNetBranch(nn.Module):
    def __init__(self, *, c_in: int, widths: tuple[int, ...], bottom: int, c_out: int) -> None:
        super().__init__()
        if len(widths) != UNET_DEPTH:
            raise ValueError(f"U-net needs {UNET_DEPTH} widths, got {widths!r}")
        ins = (c_in, *widths[:-1])
        self.down = nn.ModuleList(DownBlock(a, b) for a, b in zip(ins, widths, strict=True))
        self.bottom = ConvBlock(widths[-1], bottom)
        belows = (bottom, *reversed(widths[1:]))
        self.up = nn.ModuleList(
            UpBlock(skip, below, skip)
            for skip, below in zip(reversed(widths), belows, strict=True)
        )
        self.last = _conv(widths[0], c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            d, x = block(x)
            skips.append(d)
        u = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            u = block(skip, u)
        return self.last(u)


def _dft_magnitude(y: torch.Tensor) -> torch.Tensor:
    """|FFT2(y)| (ortho), fft-shifted, with real DFT matrices: the same numbers as
    ``torch.fft`` but only real operations, so that the graph exports to ONNX."""
    h, w = y.shape[-2], y.shape[-1]

    def cos_sin(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.arange(n, device=y.device, dtype=torch.float32)
        ang = (2 * torch.pi / n) * torch.outer(k, k)
        return torch.cos(ang), torch.sin(ang)

    ch, sh = cos_sin(h)
    cw, sw = cos_sin(w)
    a, b = ch @ y, sh @ y
    re = a @ cw - b @ sw
    im = b @ cw + a @ sw
    mag = torch.sqrt(re * re + im * im) / (h * w) ** 0.5
    return torch.roll(mag, shifts=(h // 2, w // 2), dims=(-2, -1))


def _checkerboard(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(-1)^(m+n) on an h x w grid."""
    rows = 1 - 2 * (torch.arange(h, device=like.device) % 2)
    cols = 1 - 2 * (torch.arange(w, device=like.device) % 2)
    return (rows[:, None] * cols[None, :]).to(like.dtype)


def _shifted_magnitude_pow(y: torch.Tensor, gamma: float) -> torch.Tensor:
    """fftshift(|FFT2(y)| (ortho)) ** gamma (+1e-8 before the power), computed fast.

    The same numbers as ``(fftshift(fft2(y)).abs() + 1e-8) ** gamma`` (float rounding apart;
    tests/test_network.py compares them), at about a quarter of the cost on a CPU:
    - for even sizes, multiplying by (-1)^(m+n) before the transform *is* the fftshift after
      it (shift theorem), so no complex roll is needed;
    - the input is real, so the spectrum is conjugate-symmetric, |Z(k)| = |Z(-k)|: a real FFT
      gives the left half plus one column, and the right half is the mirrored magnitude;
    - abs and the fractional power (the costly part) run on that half only.
    Column c > w/2 of row r holds |Z(r, c)| = |Z(-r mod h, w - c)|: row 0 mirrored along W,
    rows 1.. mirrored along both axes. Under inference the magnitude is computed in place,
    straight into an output in ``y``'s memory format (channels_last in, channels_last out: the
    layout the attention's convolution reads, no copy). Odd sizes (never produced by the
    network, which pads to a multiple of 16) take the plain path.
    """
    h, w = y.shape[-2], y.shape[-1]
    if h % 2 or w % 2:
        spec = torch.fft.fftshift(torch.fft.fft2(y, norm="ortho"), dim=(-2, -1))
        return (spec.abs() + 1e-8).pow(gamma)
    half = torch.fft.rfft2(y * _checkerboard(h, w, y), norm="ortho")  # columns 0 .. w/2
    if torch.is_grad_enabled():  # complex abs: its gradient is defined (0) at a zero spectrum
        mag = (half.abs() + 1e-8).pow(gamma)
        rest = torch.roll(mag[..., 1 : w // 2].flip(-2, -1), 1, dims=-2)
        return torch.cat([mag, rest], dim=-1)
    # inference: 2.5x faster than complex abs on a CPU, and no layout copy afterwards
    nhwc = y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    out = torch.empty(y.shape, dtype=half.real.dtype, device=y.device, memory_format=fmt)
    left = out[..., : w // 2 + 1]
    torch.mul(half.real, half.real, out=left)
    left.addcmul_(half.imag, half.imag).sqrt_().add_(1e-8).pow_(gamma)
    out[..., 0, w // 2 + 1 :] = left[..., 0, 1 : w // 2].flip(-1)
    out[..., 1:, w // 2 + 1 :] = left[..., 1:, 1 : w // 2].flip(-2, -1)
    return out


class FourierChannelAttention(nn.Module):
    """Channel weights from |FFT(y)|^gamma: conv, ReLU, global pool, conv, ReLU, conv, sigmoid.

    The FFT uses ``norm="ortho"`` so that the pooled spectrum statistics do not grow with the
    image size (tiles of different sizes see comparable attention). ``real_dft = True`` computes
    the same magnitude with real matrix products (for ONNX export; slower).
    """

    def __init__(self, channels: int, *, gamma: float, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gamma = gamma
        self.real_dft = False
        self.spectral = _conv(channels, channels)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        mag = self._spectrum(y.float()).to(y.dtype)
        a = F.relu(self.spectral(mag))
        a = F.adaptive_avg_pool2d(a, 1)
        a = F.relu(self.squeeze(a))
        return torch.sigmoid(self.excite(a))

    def _spectrum(self, y: torch.Tensor) -> torch.Tensor:
        """fftshift(|FFT2(y)|)^gamma."""
        if self.real_dft:
            return (_dft_magnitude(y) + 1e-8).pow(self.gamma)
        return _shifted_magnitude_pow(y, self.gamma)


class FCAB(nn.Module):
    """Fourier channel attention block: y + y_o * attention(y_o).

    y_o = GELU(Conv(GELU(Conv(y)))).
    """

    def __init__(self, channels: int, *, gamma: float, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels), nn.GELU(), _conv(channels, channels), nn.GELU()
        )
        self.attention = FourierChannelAttention(channels, gamma=gamma, reduction=reduction)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y_o = self.body(y)
        return y + y_o * self.attention(y_o)


class ResidualGroup(nn.Module):
    def __init__(self, channels: int, *, n_fcab: int, gamma: float, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(FCAB(channels, gamma=gamma, reduction=reduction) for _ in range(n_fcab))
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.body(y)


class DFCANBranch(nn.Module):
    def __init__(
        self,
        *,
        c_in: int,
        width: int,
        groups: int,
        fcab_per_group: int,
        gamma: float,
        reduction: int,
        c_out: int,
    ) -> None:
        super().__init__()
        self.head = nn.Sequential(_conv(c_in, width), nn.GELU())
        self.groups = nn.Sequential(
            *(
                ResidualGroup(width, n_fcab=fcab_per_group, gamma=gamma, reduction=reduction)
                for _ in range(groups)
            )
        )
        self.tail = nn.Sequential(_conv(width, c_out), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.groups(self.head(x)))


# ---------------------------------------------------------------------------------------------
# models


class Generator(nn.Module):
    """TCAN generator: 1-channel image in, 1-channel image of the same size out."""

    def __init__(
        self,
        *,
        stem_width: int = 32,
        unet_widths: tuple[int, ...] = (32, 64, 128, 256),
        unet_bottom: int = 512,
        dfcan_width: int = 64,
        dfcan_groups: int = 5,
        fcab_per_group: int = 2,
        gamma: float = 0.8,
        attention_reduction: int = 16,
        branch_out: int = 1,
    ) -> None:
        super().__init__()
        self.stem = ConvBlock(1, stem_width)
        self.unet = UNetBranch(
            c_in=stem_width, widths=tuple(unet_widths), bottom=unet_bottom, c_out=branch_out
        )
        self.dfcan = DFCANBranch(
            c_in=stem_width,
            width=dfcan_width,
            groups=dfcan_groups,
            fcab_per_group=fcab_per_group,
            gamma=gamma,
            reduction=attention_reduction,
            c_out=branch_out,
        )
        self.head = ConvBlock(branch_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = _pad_to_multiple(x, 2**UNET_DEPTH)
        s = self.stem(x)
        y = self.head(self.unet(s) + self.dfcan(s))
        return y[..., :h, :w]


class Discriminator(nn.Module):
    """TCAN discriminator: (conditioning input, candidate) images -> one logit per image."""

    def __init__(
        self,
        *,
        in_channels: int = 2,
        width: int = 32,
        blocks: int = 5,
        fc_hidden: tuple[int, int] = (256, 64),
        pooled: int = 4,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, width)]
        c = width
        for i in range(blocks):
            c_out = min(width * 2**i, 8 * width)
            if i > 0:
                layers.append(nn.AvgPool2d(2, ceil_mode=True))
            layers += [ConvBlock(c, c_out), ConvBlock(c_out, c_out)]
            c = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pooled))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * pooled * pooled, fc_hidden[0]),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(fc_hidden[0], fc_hidden[1]),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(fc_hidden[1], 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(1)
