"""Overlapping tiles and smooth blending.

Tiles are all the same size (so they batch) and spread evenly: ``tile`` is the largest side
allowed, and the planner picks the fewest tiles per axis that keep at least ``overlap`` pixels
shared between neighbours, then the smallest (aligned) side that covers the axis with them. A
512 px axis with tile 320 and overlap 48 takes two tiles of 288, where a fixed 256 px tile with
the last one pushed against the edge took three: less redundant work. Each tile's output is
weighted by a separable window that ramps from ~0 to 1 over the overlap on edges shared with
another tile (raised cosine) and is flat on the image border, and the weighted outputs are
summed and divided by the summed weights. The plan is plain Python; padding and blending are
torch, on the device the network runs on (tiles are slices of the frame there).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_axis(length: int, tile: int, overlap: int, align: int = 1) -> tuple[int, list[int]]:
    """(side, starts) of the tiles along one axis: the fewest tiles of side <= ``tile`` whose
    neighbours share >= ``overlap`` pixels, sides and starts multiples of ``align``."""
    if length <= tile:
        return length, [0]
    overlap = min(overlap, tile // 2)
    n = max(-(-(length - overlap) // max(tile - overlap, 1)), 2)
    side = min(round_up(-(-(length + (n - 1) * overlap) // n), align), length)
    while True:
        span = length - side
        starts = [round(i * span / (n - 1) / align) * align for i in range(n)]
        starts[-1] = span  # a multiple of align: length and side both are
        if all(b - a <= side - overlap for a, b in itertools.pairwise(starts)):
            return side, starts
        side += align  # rounding the starts cost a few pixels of overlap: widen and retry


def plan_tiles(shape: tuple[int, int], tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering ``shape``; with ``align`` > 1 every start and side is a multiple of
    ``align``.

    The TCAN U-net pools four times, so its output is shift-equivariant only for shifts that are
    multiples of 16: tiles aligned on that grid see the same pooling phase as the whole image.
    ``shape`` must then be a multiple of ``align`` (pad first, see :func:`pad_to`).
    """
    th, ys = plan_axis(shape[0], tile, overlap, align)
    tw, xs = plan_axis(shape[1], tile, overlap, align)
    return [Tile(y, x, th, tw) for y in ys for x in xs]


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad a 2-D frame bottom/right to a multiple, reflecting like the network's own padding
    (numpy's and torch's 'reflect' agree); 'replicate' where the frame is too small."""
    h, w = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x[None, None], (0, pw, 0, ph), mode=mode)[0, 0]


def _ramp(n: int, overlap: int, start_edge: bool, end_edge: bool) -> np.ndarray:
    wgt = np.ones(n, np.float32)
    r = min(overlap, n // 2)
    if r > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)).astype(np.float32)
        if not start_edge:
            wgt[:r] = ramp
        if not end_edge:
            wgt[n - r :] = ramp[::-1]
    return wgt


@functools.lru_cache(maxsize=36)
def _window(h: int, w: int, overlap: int, edges: tuple[bool, bool, bool, bool],
            device: torch.device) -> torch.Tensor:
    """A tile's blending window on ``device``, flat on the ``edges`` (top, left, bottom,
    right) that touch the image border. Cached: a frame size has at most nine kinds, and the
    next frame of that size reuses them (no per-frame upload)."""
    wy = _ramp(h, overlap, edges[0], edges[2])
    wx = _ramp(w, overlap, edges[1], edges[3])
    return torch.from_numpy(wy[:, None] * wx[None, :]).to(device)


class Stitcher:
    """Accumulates weighted tile outputs into the full image, on ``device``."""

    def __init__(self, shape: tuple[int, int], overlap: int,
                 device: torch.device | str = "cpu") -> None:
        self.shape, self.overlap, self.device = shape, overlap, torch.device(device)
        self.acc = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.norm = torch.zeros(shape, dtype=torch.float32, device=self.device)

    def _weight(self, t: Tile) -> torch.Tensor:
        edges = (t.y == 0, t.x == 0, t.y + t.h >= self.shape[0], t.x + t.w >= self.shape[1])
        return _window(t.h, t.w, self.overlap, edges, self.device)

    def add(self, t: Tile, out: torch.Tensor) -> None:
        wgt = self._weight(t)
        self.acc[t.slices].addcmul_(out.float(), wgt)
        self.norm[t.slices] += wgt

    def result(self) -> torch.Tensor:
        return self.acc / self.norm.clamp_min(1e-12)
