"""The error head: turns the resampled-noise spread into a predicted error (issue 16).

The spread of the enhancement over noise redraws (sr/uncertainty.py) sees where the *noise*
moves the output; it cannot see the model's bias (detail the data do not show, which the model
gets wrong the same way every time). The error head is a small convolutional network, trained
per model on simulated pairs with known truth (``tcan-live calibrate``), that reads the input,
the output and the spread and predicts the expected absolute error of each output pixel, as a
fraction of the output's dynamic range (a Laplace scale: trained by the negative
log-likelihood ``log b + |error| / b``). The map is then in the output's units and its mean over
the range is an estimate of the frame's mean error.

The head runs on the model's pixel size (50 nm for the shipped models): a frame on another
grid is resampled to it and the prediction back. It lives in the model folder
(``error_head.safetensors``, never pickle), described by the card's ``[error_head]``; a model
without one keeps the plain spread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tcan_live.errors import ModelError
from tcan_live.resample import resample_to_shape, same_grid
from tcan_live.sr.card import ErrorHeadCard, sha256_file
from tcan_live.sr.model import load_state, save_state

HEAD_FILE = "error_head.safetensors"
DILATIONS = (1, 2, 4, 8, 1)  # receptive field 33 px (1.65 um at 50 nm)
SPREAD_FLOOR = 1e-3  # the spread enters as log10(spread / range + floor)
INIT_LOG_ERROR = -3.0  # exp(-3) = 5% of the range: the order of a typical pixel's error


class ErrorHead(nn.Module):
    """Dilated 3x3 convolutions -> log of the predicted absolute error (fraction of range)."""

    def __init__(self, width: int = 16, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for d in DILATIONS:
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d, padding_mode="reflect"),
                       nn.LeakyReLU(0.1)]  # a plain ReLU layer died in training (measured)
            c = width
        last = nn.Conv2d(width, 1, 1)
        assert last.bias is not None
        nn.init.constant_(last.bias, INIT_LOG_ERROR)  # start near typical errors, not at 1
        layers.append(last)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.body(x))


def _unit(a: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = np.percentile(a, [0.1, 99.9])
    rng = max(float(hi - lo), 1e-12)
    return (a - lo) / rng, float(lo), rng


def head_inputs(raw: np.ndarray, enhanced: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """The head's three channels (all on one grid): input and output scaled to their
    0.1-99.9th percentiles, and log10 of the spread over the output's range."""
    raw = np.asarray(raw, np.float64)
    out = np.asarray(enhanced, np.float64)
    if raw.shape != out.shape:
        raw = resample_to_shape(raw, out.shape).astype(np.float64)
    r, _, _ = _unit(raw)
    o, _, rng = _unit(out)
    s = np.log10(np.clip(np.asarray(spread, np.float64), 0, None) / rng + SPREAD_FLOOR) + 2.0
    return np.stack([r, o, s]).astype(np.float32)


def output_range(enhanced: np.ndarray) -> float:
    """The output's 0.1-99.9th percentile range: the unit of the head's prediction."""
    return _unit(np.asarray(enhanced, np.float64))[2]


def error_fraction(head: ErrorHead, x: np.ndarray) -> np.ndarray:
    """The head's predicted absolute error (fraction of the output's range) for inputs ``x``
    (:func:`head_inputs`, on the head's grid)."""
    with torch.inference_mode():
        b = torch.exp(head(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None]))
    return np.asarray(b[0, 0].numpy(), np.float32)


def laplace_nll(log_b: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of |error| under a Laplace scale exp(log_b) (constants off)."""
    return (log_b + error.abs() / torch.exp(log_b)).mean()


class LoadedHead:
    """A trained head with its card entry, applied to one frame at a time on the CPU."""

    def __init__(self, head: ErrorHead, card: ErrorHeadCard, model_px_um: float) -> None:
        self.head = head.eval()
        self.card = card
        self.model_px_um = model_px_um

    def predict(self, raw: np.ndarray, enhanced: np.ndarray, spread: np.ndarray,
                pixel_size_um: float) -> np.ndarray:
        """Predicted absolute error per pixel of ``enhanced`` (its shape and units);
        ``pixel_size_um`` is that of ``enhanced``."""
        shape = enhanced.shape
        x = head_inputs(raw, enhanced, spread)
        on_grid = same_grid(pixel_size_um, self.model_px_um)
        if not on_grid:
            f = pixel_size_um / self.model_px_um
            grid = (max(round(shape[0] * f), 8), max(round(shape[1] * f), 8))
            x = np.stack([resample_to_shape(c, grid) for c in x])
        frac = error_fraction(self.head, x)
        if not on_grid:
            frac = np.clip(resample_to_shape(frac, shape), 0, None)
        return np.asarray(frac * output_range(enhanced), np.float32)


def save_head(folder: Path, head: ErrorHead) -> str:
    """Write the head's weights atomically; returns their sha256."""
    path = folder / HEAD_FILE
    save_state(head, path, "tcan-live-error-head")
    return sha256_file(path)


def load_head(folder: Path, card: ErrorHeadCard, model_px_um: float) -> LoadedHead:
    path = folder / card.file
    if path.name != card.file or not path.is_file():
        raise ModelError(path, "the card names an error head that is not in the model folder")
    if sha256_file(path) != card.sha256:
        raise ModelError(path, "checksum does not match the card's [error_head] sha256")
    head = ErrorHead(card.width)
    load_state(head, path, "[error_head]")
    return LoadedHead(head, card, model_px_um)
