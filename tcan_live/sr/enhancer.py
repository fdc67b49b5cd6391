"""Enhancer: the resident TCAN engine (model loaded once, kept on the device).

Per frame: percentile normalisation -> resample to the model's pixel size -> overlapping tiles
-> generator (batched) -> blended stitch -> resample back to the input grid (unless asked to keep
the model grid) -> denormalisation to the input's intensity units. A frame on the model's grid
goes to the device as it is and every step runs there (sr/device.py, sr/tiling.py); a frame on
another grid is normalised and resampled by numpy/scipy, and its result resampled back. On
CUDA the forward is replayed from CUDA graphs (``cuda_graphs``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tcan_live.errors import ConfigError, UnsupportedInputError
from tcan_live.resample import check_factor, resample, resample_to_shape, same_grid
from tcan_live.sr.card import Card, resolve_model
from tcan_live.sr.device import (
    GraphedForward,
    affine_on_device,
    denormalize_on_device,
    download,
    graphs_available,
    normalize_on_device,
    sync,
    upload,
)
from tcan_live.sr.error_head import LoadedHead, load_head
from tcan_live.sr.fused import FusedCPUGenerator, fused_available
from tcan_live.sr.hostmem import retain_freed_memory
from tcan_live.sr.model import load_generator
from tcan_live.sr.network import UNET_DEPTH
from tcan_live.sr.normalize import Affine, denormalize, normalize, percentile_affine
from tcan_live.sr.restore import restore_measured
from tcan_live.sr.tiling import Stitcher, Tile, pad_to, plan_tiles, round_up
from tcan_live.sr.trust import TrustResult, trust_check, trust_normalised
from tcan_live.sr.uncertainty import DEFAULT_PASSES, uncertainty_map

log = logging.getLogger(__name__)
MIN_TILE = 64
ALIGN = 2**UNET_DEPTH  # pooling period of the U-net
# pixels of the frame mirrored on every side before the tiles: the network's outermost pixel
# rows were its worst (a dark or bright line along the frame's edge: error 2.05x the
# interior's, median of 248 simulated images; 1.03x with 8 px; python -m benchmarks.edge)
MARGIN = 8


def frame_margin(shape: tuple[int, int], margin: int = MARGIN) -> int:
    """The mirrored margin for a frame of ``shape`` (less where the frame is tiny)."""
    return max(min(margin, shape[0] - 1, shape[1] - 1), 0)


def tiled_shape(shape: tuple[int, int], margin: int = MARGIN) -> tuple[int, int]:
    """The shape the tiles cover for a frame on the model's grid: margin, then ALIGN."""
    m = frame_margin(shape, margin)
    return round_up(shape[0] + 2 * m, ALIGN), round_up(shape[1] + 2 * m, ALIGN)


def tile_plan(shape: tuple[int, int], tile: int, overlap: int, margin: int = MARGIN
              ) -> list[Tile]:
    """The tiles for a frame of ``shape`` on the model's grid (:func:`tiled_shape`): at most
    ``tile`` px plus the margin on both sides, so the margin costs no extra tile (a 512 px frame
    stays one tile of 528 px, not four of 288)."""
    m = frame_margin(shape, margin)
    return plan_tiles(tiled_shape(shape, margin), round_up(tile + 2 * m, ALIGN),
                      min(overlap, tile // 2), ALIGN)


class _OutOfMemory(RuntimeError):
    """A batch did not fit: real CUDA OOM, or the configured pixel budget was exceeded."""


@dataclass
class EnhanceResult:
    image: np.ndarray  # float32, input intensity units
    pixel_size_um: float | None  # of ``image``
    affine: Affine
    timings_ms: dict[str, float] = field(default_factory=dict)
    tile: int = 0
    trust: TrustResult | None = None  # with enhance(..., trust=True); no residual map
    # Fourier coefficients of measured detail that the network erased and sr/restore.py put
    # back (0 = the network's output as it was)
    restored: int = 0


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine "
                          "(use cpu or auto)")
    return dev


class Enhancer:
    """Load a model once; :meth:`enhance` 2-D frames of any size and pixel size."""

    def __init__(
        self, model: str | Path | None = None, *, device: str = "auto", tile: int | None = None,
        overlap: int | None = None, batch: int | None = None, precision: str = "auto",
        memory_budget_px: int | None = None, warmup: bool = True,
        channels_last: bool | None = None, fused: bool | None = None,
        cuda_graphs: bool | None = None, restore: bool = True, margin: int = MARGIN,
    ) -> None:
        """``restore``: put back measured periodic detail that the network erased
        (sr/restore.py; on by default, measured in docs/evaluation/honesty.md). ``margin``:
        pixels mirrored on every side of the frame before the tiles (:data:`MARGIN`; 0 = the
        network on the frame alone, as the bioimage.io package runs it)."""
        retain_freed_memory()  # activations reuse heap memory, tile after tile (see hostmem)
        self.folder = resolve_model(model)
        card, generator = load_generator(self.folder)
        self.card: Card = card
        adapted = card.training.get("adapt")
        check = adapted.get("held_out_check") if isinstance(adapted, dict) else None
        if isinstance(check, dict) and check.get("accepted") is False:  # found no better
            log.warning("%s failed its held-out check when it was adapted (consistency %s -> "
                        "%s): it may be no better than the model it was adapted from",
                        self.folder, check.get("before"), check.get("after"))
        self._head: LoadedHead | None = None
        self.device = pick_device(device)
        self.tile = round_up(int(tile or card.tiling.tile), ALIGN)
        self.overlap = round_up(int(card.tiling.overlap if overlap is None else overlap), ALIGN)
        # measured on a 2-core CPU: one tile per call is fastest (cache); GPUs want batches
        self.batch = max(int(batch), 1) if batch else (8 if self.device.type == "cuda" else 1)
        self.memory_budget_px = memory_budget_px
        self.restore = bool(restore)
        self.margin = max(int(margin), 0)
        self.dtype = self._autocast_dtype(precision)
        self.generator = generator.to(self.device).eval()
        # default channels_last (NHWC), measured (docs/benchmarks.md, tuning tables): on the
        # CPU oneDNN saves a layout reorder per convolution (5-9% faster); on an H100 cuDNN's
        # bf16 tensor-core convolutions run NHWC natively (a 2048 px frame 1.09x faster)
        if channels_last is None:
            channels_last = self.device.type in ("cpu", "cuda")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = self.generator.to(  # type: ignore[call-overload]
            memory_format=self.memory_format)
        # default: fused CPU forward (conv + activation in one oneDNN call, fewer passes;
        # docs/benchmarks.md) where it applies: CPU, float32, channels_last, op available
        applies = (self.device.type == "cpu" and self.dtype is None and channels_last
                   and fused_available())
        if fused and not applies:
            raise ValueError("the fused forward needs a CPU, fp32, channels_last and a "
                             "PyTorch with oneDNN's fused convolution")
        self.fused = applies if fused is None else bool(fused)
        self.forward_module: torch.nn.Module = (
            FusedCPUGenerator(self.generator) if self.fused else self.generator)
        # on CUDA the forward is replayed from CUDA graphs (docs/benchmarks.md, tuning-gpu)
        self.grad_mode = torch.inference_mode  # the tuning bench compares no_grad
        if cuda_graphs and not graphs_available(self.device):
            raise ValueError("CUDA graphs need a CUDA device")
        self.graphed: GraphedForward | None = None
        if graphs_available(self.device) if cuda_graphs is None else cuda_graphs:
            self.graphed = GraphedForward(self.forward_module, self.dtype)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # tiles have few fixed shapes
        if warmup:
            self.warmup()

    # -- set-up --------------------------------------------------------------------------
    def _autocast_dtype(self, precision: str) -> torch.dtype | None:
        """auto: bf16 autocast on CUDA, fp32 on CPU. On a CPU with native oneDNN bf16
        (AVX512-BF16, AMX) bf16 is 1.05-1.22x faster per frame than the fused fp32 forward (it
        runs the unfused one) but moves single pixels by up to several percent of the range
        (docs/benchmarks.md), so it is offered, not the default."""
        if precision == "fp32" or (precision == "auto" and self.device.type != "cuda"):
            return None
        if precision not in ("bf16", "fp16", "auto"):
            raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        if self.device.type == "cpu":
            check = (torch.ops.mkldnn._is_mkldnn_fp16_supported if dtype == torch.float16
                     else torch.ops.mkldnn._is_mkldnn_bf16_supported)
            if not check():
                log.warning("%s on this CPU has no native oneDNN support: expect it slower "
                            "than fp32", precision)
        return dtype

    @property
    def model_id(self) -> str:
        return self.card.id

    @property
    def pixel_size_um(self) -> float:
        return self.card.pixel_size_um

    def warmup(self) -> None:
        t0 = time.perf_counter()
        with self.grad_mode():
            self._tiled(torch.zeros((self.tile, self.tile), device=self.device), {})
        log.info("model %s warmed up on %s in %.0f ms", self.model_id, self.device,
                 1000 * (time.perf_counter() - t0))

    # -- per frame -----------------------------------------------------------------------
    def enhance(
        self, image: np.ndarray, pixel_size_um: float | None = None, *,
        keep_model_grid: bool = False, source: str = "", trust: bool = False,
    ) -> EnhanceResult:
        """``trust``: also the trust check (score and NRMSE, sr/trust.py) against the input,
        computed where the network ran, on the tensors already there when the frame is on the
        model's grid (the daemon's per-frame check, timed as the 'trust' stage)."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise UnsupportedInputError(source or "<frame>",
                                        f"expected a 2-D plane, found shape {image.shape}")
        times: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            sync(self.device)
            now = time.perf_counter()
            times[name] = 1000 * (now - clock)
            clock = now

        norm = self.card.normalization
        model_px = self.card.pixel_size_um
        src_px = pixel_size_um if pixel_size_um else model_px
        if pixel_size_um is None:
            log.debug("%s: no pixel size, assuming the model's %.4g um", source, model_px)
        check_factor(src_px / model_px, src_px, model_px, source)
        on_grid = same_grid(src_px, model_px)
        with self.grad_mode():
            if on_grid:  # the frame goes to the device as it is (16-bit: half the bytes)
                frame = upload(image, self.device)
                affine = (percentile_affine(image, norm.low, norm.high)
                          if frame.is_floating_point()
                          else affine_on_device(frame, norm.low, norm.high))
                x = normalize_on_device(frame, affine)
                lap("normalise")
                times["resample"] = 0.0
            else:  # numpy (scipy) resamples, then the frame goes to the device
                affine = percentile_affine(image, norm.low, norm.high)
                xn = normalize(image, affine)
                lap("normalise")
                x = upload(resample(xn, src_px, model_px), self.device)
                lap("resample")
            y, tile = self._tiled(x, times)
            restored = 0
            if self.restore:
                clock = time.perf_counter()
                fixed = restore_measured(x, y, model_px, self.card.confocal_fwhm_nm,
                                         source_pixel_size_um=src_px)
                y, restored = fixed.image, fixed.bins
                lap("restore")
                if restored:
                    log.info("%s: %d erased Fourier coefficients of measured detail put back",
                             source or "frame", restored)
            clock = time.perf_counter()
            if on_grid:
                times["resample_back"] = 0.0
                result = download(denormalize_on_device(y, affine))
                out_px = model_px if keep_model_grid else src_px
            else:
                ym = download(y)
                if keep_model_grid:
                    out, out_px = ym, model_px
                else:
                    out, out_px = resample_to_shape(ym, image.shape), src_px
                lap("resample_back")
                result = denormalize(out, affine)
            lap("denormalise")
            check = None
            if trust:
                conf, target = self.card.confocal_fwhm_nm, self.card.target_fwhm_nm
                if on_grid:  # the normalised frame and output are on the device already
                    score, nrmse, _ = trust_normalised(x, y, src_px, confocal_fwhm_nm=conf,
                                                       target_fwhm_nm=target)
                    check = TrustResult(score, nrmse, None)
                else:  # on the input's grid: the resampled-back output goes up again
                    check = trust_check(image, result, src_px, confocal_fwhm_nm=conf,
                                        target_fwhm_nm=target, affine=affine, residual=False,
                                        device=self.device)
                lap("trust")
        return EnhanceResult(result, out_px if pixel_size_um else None, affine, times, tile,
                             check, restored)

    def uncertainty(self, image: np.ndarray, pixel_size_um: float | None = None, *,
                    keep_model_grid: bool = False, passes: int = DEFAULT_PASSES, seed: int = 0,
                    source: str = "", enhanced: np.ndarray | None = None) -> np.ndarray:
        """The per-pixel uncertainty map of :meth:`enhance`'s output (same shape and grid,
        the output's units; larger = less certain). With the model's error head (card
        ``[error_head]``): the predicted absolute error; without: the spread over noise
        redraws (method and cost in sr/uncertainty.py and sr/error_head.py). ``enhanced``:
        the output already computed for this frame (saves one pass)."""
        px = pixel_size_um or self.pixel_size_um
        spread = self.spread(image, pixel_size_um, keep_model_grid=keep_model_grid,
                             passes=passes, seed=seed, source=source)
        head = self.error_head
        if head is None:
            return spread
        if enhanced is None:
            enhanced = self.enhance(image, pixel_size_um, keep_model_grid=keep_model_grid,
                                    source=source).image
        out_px = self.pixel_size_um if keep_model_grid else px
        return head.predict(np.asarray(image), np.asarray(enhanced), spread, out_px)

    def spread(self, image: np.ndarray, pixel_size_um: float | None = None, *,
               keep_model_grid: bool = False, passes: int = DEFAULT_PASSES, seed: int = 0,
               source: str = "") -> np.ndarray:
        """Standard deviation of the output over ``passes`` noise redraws under flips and
        rotations (sr/uncertainty.py): the error head's input, and the map of a model
        without one."""
        return uncertainty_map(
            lambda a: self.enhance(a, pixel_size_um, keep_model_grid=keep_model_grid,
                                   source=source).image,
            np.asarray(image), pixel_size_um or self.pixel_size_um,
            confocal_fwhm_nm=self.card.confocal_fwhm_nm, passes=passes, seed=seed)

    @property
    def uncertainty_method(self) -> str:
        """What :meth:`uncertainty` computes (the status channel and saved files name it)."""
        return ("error-head(noise-redraw+dihedral)" if self.card.error_head is not None
                else "noise-redraw+dihedral")

    @property
    def error_head(self) -> LoadedHead | None:
        """The model's error head (loaded and checked on first use), None if it has none."""
        if self.card.error_head is None:
            return None
        if self._head is None:
            self._head = load_head(self.folder, self.card.error_head, self.pixel_size_um)
        return self._head

    def _tiled(self, x: torch.Tensor, times: dict[str, float]) -> tuple[torch.Tensor, int]:
        """Tiles through the network, with the out-of-memory fallbacks."""
        tile, batch = self.tile, self.batch
        while True:
            try:
                return self._run_tiles(x, tile, batch, times), tile
            except _OutOfMemory:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch //= 2
                elif tile // 2 >= MIN_TILE:
                    tile //= 2
                else:
                    raise
                log.warning("out of memory: retrying with tile %d, batch %d", tile, batch)

    def _run_tiles(self, frame: torch.Tensor, tile: int, batch: int,
                   times: dict[str, float]) -> torch.Tensor:
        """A normalised frame on the device -> the network's output for it, there: mirrored
        by :data:`MARGIN` on every side, padded to ALIGN, tiles sliced from it in batches,
        outputs blended (:class:`Stitcher`), cropped."""
        overlap = min(self.overlap, tile // 2)
        t0 = time.perf_counter()
        m = frame_margin((int(frame.shape[0]), int(frame.shape[1])), self.margin)
        framed = F.pad(frame[None, None], (m, m, m, m), mode="reflect")[0, 0] if m else frame
        x = pad_to(framed, ALIGN)
        shape = (int(x.shape[0]), int(x.shape[1]))
        tiles = tile_plan((int(frame.shape[0]), int(frame.shape[1])), tile, overlap, self.margin)
        assert (tiles[-1].y + tiles[-1].h, tiles[-1].x + tiles[-1].w) == shape
        stitcher = Stitcher(shape, overlap, self.device)
        sync(self.device)
        times["tile"] = 1000 * (time.perf_counter() - t0)
        fwd = stitch = 0.0
        for i in range(0, len(tiles), batch):
            group: list[Tile] = tiles[i : i + batch]
            t1 = time.perf_counter()
            stack = torch.stack([x[t.slices] for t in group])[:, None]
            out = self._forward_tensor(stack.contiguous(memory_format=self.memory_format))
            sync(self.device)
            t2 = time.perf_counter()
            for t, o in zip(group, out[:, 0], strict=True):
                stitcher.add(t, o)
            sync(self.device)
            fwd += t2 - t1
            stitch += time.perf_counter() - t2
        t3 = time.perf_counter()
        result = stitcher.result()[m:m + frame.shape[0], m:m + frame.shape[1]]
        sync(self.device)
        times["forward"] = 1000 * fwd
        times["stitch"] = 1000 * (stitch + time.perf_counter() - t3)
        return result

    def _forward_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) normalised tiles on the device -> (N, 1, H, W) outputs; the tensor
        may be a CUDA graph's static output, valid until the next call."""
        if self.memory_budget_px is not None and t.numel() > self.memory_budget_px:
            raise _OutOfMemory(f"{t.numel()} px exceed the budget of {self.memory_budget_px}")
        try:
            if self.graphed is not None:
                return self.graphed(t)
            with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                enabled=self.dtype is not None):
                y: torch.Tensor = self.forward_module(t)
            return y
        except torch.OutOfMemoryError as err:
            raise _OutOfMemory(str(err)) from err
