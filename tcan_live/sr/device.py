"""The Enhancer's torch side, on whatever device the network runs on: frames up and down
(page-locked on CUDA), their percentiles, normalisation and denormalisation there (the numpy
functions' numbers; tests compare them), and the forward replayed from CUDA graphs.

* A frame crosses the host-device link twice (the frame up, 16-bit frames as they are, and the
  result down); tiles are slices of the frame in device memory and are blended there
  (:class:`tcan_live.sr.tiling.Stitcher`).
* :class:`GraphedForward` captures the generator's forward once per input shape into a CUDA
  graph and replays it: one launch instead of several hundred kernel launches from Python per
  batch. Shapes are few (the batch of full tiles, the remainder batch, the warm-up tile), the
  graphs share one memory pool, and every replay's output is consumed (accumulated or copied)
  before the next replay, which is what makes the shared pool safe.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from tcan_live.sr.normalize import Affine, affine_from_cumulative

log = logging.getLogger(__name__)


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously), so that a host clock
    times what it ran; nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- per-frame maths on the device (the numpy versions' numbers; tests compare them) --------


def upload(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """A frame on ``device`` as uint8, uint16 (camera frames, half the bytes of float32) or
    float32; through page-locked memory on CUDA, so the copy runs at the link's speed."""
    if image.dtype not in (np.uint8, np.uint16, np.float32):  # also big-endian ones
        image = image.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def download(t: torch.Tensor) -> np.ndarray:
    """A float32 host copy, through page-locked memory on CUDA."""
    if t.device.type != "cuda":
        return t.float().numpy()
    host = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(t)
    return host.numpy()


def affine_on_device(t: torch.Tensor, low: float, high: float) -> Affine:
    """:func:`~tcan_live.sr.normalize.percentile_affine` of an 8/16-bit frame on the device:
    the histogram is counted there, and only its cumulative sum comes back."""
    cum = torch.bincount(t.flatten().to(torch.int32)).cumsum(0)
    return affine_from_cumulative(cum.cpu().numpy(), low, high)


def normalize_on_device(t: torch.Tensor, affine: Affine) -> torch.Tensor:
    """:func:`~tcan_live.sr.normalize.normalize` (float32 arithmetic, NaN/Inf -> 0)."""
    lo, scale = float(np.float32(affine.lo)), float(np.float32(affine.scale))
    out = (t.float() - lo) / scale
    return torch.nan_to_num_(out, nan=0.0, posinf=0.0, neginf=0.0) if t.is_floating_point() \
        else out


def denormalize_on_device(t: torch.Tensor, affine: Affine) -> torch.Tensor:
    return t.float() * float(np.float32(affine.scale)) + float(np.float32(affine.lo))


class GraphedForward:
    """``module(x)`` under autocast, replayed from a CUDA graph captured per input shape.

    The returned tensor is the graph's static output: it is overwritten by the next call, so
    callers must use it (accumulate, copy to the host) first. A shape whose capture fails for a
    reason other than memory runs eagerly from then on (logged once).
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype | None,
                 max_graphs: int = 8) -> None:
        self.module, self.dtype, self.max_graphs = module, dtype, max_graphs
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                                 torch.Tensor]] = {}
        self.eager_shapes: set[tuple[int, ...]] = set()
        self.pool: Any = None  # torch.cuda.graph_pool_handle(), shared by the graphs

    def _eager(self, x: torch.Tensor, cache: bool = True) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None, cache_enabled=cache):
            out: torch.Tensor = self.module(x)
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(x.device):  # captures and replays on the input's card
            return self._call(x)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key in self.eager_shapes:
            return self._eager(x)
        if key not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                self.reset()  # many shapes (odd frame sizes): start over rather than grow
            try:
                self.graphs[key] = self._capture(x)
            except torch.OutOfMemoryError:
                self.reset()
                raise
            except RuntimeError as err:  # an op that cannot be captured: stay correct
                log.warning("CUDA graph capture failed for input %s (%s); running it eagerly",
                            key, err)
                self.eager_shapes.add(key)
                torch.cuda.synchronize(x.device)
                return self._eager(x)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                                   torch.Tensor]:
        static_in = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up: cuDNN picks its algorithms, cuFFT its plans
            for _ in range(2):
                self._eager(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self._eager(static_in, cache=False)
        log.info("captured a CUDA graph for input %s", tuple(x.shape))
        return graph, static_in, static_out

    def reset(self) -> None:
        """Drop every graph and its memory (after running out of memory, or too many shapes)."""
        self.graphs.clear()
        self.pool = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda" and hasattr(torch.cuda, "CUDAGraph")

