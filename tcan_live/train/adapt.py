"""``tcan-live adapt``: fit a model to the user's own sample from its confocal frames alone.

Self-supervised and physics-informed (docs/training.md, "Adapting to your sample"):

- **Photon transfer.** Gain and offset of the detector are measured from the frames
  (:func:`photon_transfer`: the local-variance / local-mean line of every frame, pooled by the
  median; ``variance = gain * (mean - offset)``, read noise folded into the offset).
- **Two independent views of one frame** by splitting its photons (:func:`split_counts`,
  binomial thinning of the effective photons; a new split every step). Recorrupted views
  (:func:`split_views`, Pang et al. 2021: ``y + a z`` and ``y - z / a``) are the older
  alternative: uncorrelated but, at a few photons, not independent.
- **Loss** = consistency + prior. Consistency: the output for ``y1``, blurred back to confocal
  resolution (Gaussian of FWHM sqrt(confocal^2 - target^2), the trust check's kernel), must
  predict ``y2`` (MSE, normalised units; the model keeps flux, so no fitted affine). It can
  only be met by the sample's content, not by ``y1``'s noise. Prior: the output for ``y1``
  stays close to the initial model's output for the whole frame ``y`` (MSE;
  ``prior_input="frame"``, self-distillation: detail the blur cannot see is drawn as the
  initial model draws it from twice the photons; ``"view"``, the prior of sessions 10-16,
  shows the initial model ``y1``). ``prior_band="high"``: held only in the band the blur
  removes, the output minus its blurred self, leaving what the data see to the consistency;
  measured and not the default, docs/training.md. Floor (:func:`floor_loss`): the output may
  not go below the frame's background (:func:`background_floor`) where the initial model's
  did not; a STED-like image is the background plus non-negative light, and without it a
  weak prior let the consistency buy dark halos beside the structure (session 20).
- **A held-out check** (:class:`HeldOutCheck`): frames kept out of training tell, without a
  truth, whether the adapted model is closer to the sample at confocal resolution.

Inputs that cannot support it are refused: too few photons, saturated frames, no pixel size.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from tcan_live.commands import (
    ADAPT_FLOOR_WEIGHT,
    ADAPT_RELAXED_PRIOR,
    ADAPT_STEPS,
    AdaptOptions,
)
from tcan_live.errors import ConfigError, UnsupportedInputError
from tcan_live.resample import resample
from tcan_live.sr.card import Card
from tcan_live.sr.model import load_generator, save_model
from tcan_live.sr.normalize import Affine, normalize, percentile_affine
from tcan_live.sr.uncertainty import noise_line
from tcan_live.train.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)

log = logging.getLogger(__name__)

MIN_PEAK_PHOTONS = 3.0  # brightest pixels (99.9th percentile) below this: refused
SATURATED_FRACTION = 0.01  # more pixels than this at the ADC's top: the frame is refused
ADC_TOPS = tuple(float(2**b - 1) for b in (8, 10, 12, 14, 16))
FLOOR_PERCENTILE = 1.0  # of the frame smoothed to confocal resolution: its background level


class AdaptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_min: float = Field(10.0, gt=0)
    steps: int = Field(ADAPT_STEPS, ge=1)  # the stop; budget_min only bounds the time
    patch: int = Field(96, ge=32)
    batch: int = Field(4, ge=1)
    lr: float = Field(1e-4, gt=0)
    warmup: int = Field(50, ge=0)  # steps of linearly rising learning rate: Adam's first steps
    # move every weight by about lr whatever its gradient, which costs a fine-tuned model
    # the two views of a frame: "split" splits the photons (split_counts, the first view's
    # share split_p; independent views, which the held-out check needs); "recorrupt" adds
    # Gaussian noise (y + alpha z, y - z / alpha; sessions 10-14: at a few photons its views
    # depend on each other, docs/training.md)
    views: Literal["recorrupt", "split"] = "split"
    alpha: float = Field(0.5, gt=0)
    # (0.3, a harder task for the model than the teacher's, was measured in session 19: more on
    # three acquisitions, less on the next three and on honeycomb, docs/training.md)
    split_p: float = Field(0.5, gt=0, lt=1)
    prior_weight: float = Field(1.0, ge=0)
    # where the prior holds the initial model: "all" the whole output (the default: on three
    # fresh acquisitions it lost less SSIM than "high", docs/training.md); "high" only the band
    # the blur removes, leaving what the data see to the consistency
    prior_band: Literal["high", "all"] = "all"
    # what the initial model is shown for the prior's target: "frame" (the default since
    # session 17) the whole crop, whose photons the two views split (self-distillation: the
    # adapted model learns to draw from half the photons what the initial model draws from all
    # of them; on held-out families it gained about twice what "view" gained,
    # docs/training.md); "view" the same input view as the adapted model (sessions 10-16: the
    # output is held where it was)
    prior_input: Literal["view", "frame"] = "frame"
    # with prior_input "frame", prior_bank > 0: the teacher's output is computed once for each
    # of prior_bank fixed crops of the training frames (the crop, the teacher's input, does
    # not change from step to step; the views are split anew each time a crop is drawn),
    # averaged over the 8 quarter turns and mirrors with prior_tta. Measured in session 19
    # and not the default: on three acquisitions it changed the SSIM gain by -0.006 to
    # +0.006, hardly faster (docs/training.md). 0: the teacher runs on each step's crops
    prior_bank: int = Field(0, ge=0)
    prior_tta: bool = True
    # a second run from the initial model with this prior weight (None: none), kept instead of
    # the first only where the held-out frames say the initial model is wrong at confocal
    # resolution: its held-out improvement at least relax_margin times the first run's, and
    # beyond noise against the first run's model (prefer_relaxed; docs/training.md, session 18)
    relaxed_prior_weight: float | None = Field(ADAPT_RELAXED_PRIOR, ge=0)
    # the floor: the output may not go below the frame's background level (background_floor)
    # where the initial model did not (floor_loss); a STED-like image is the background plus
    # the sample's non-negative light, so a dark halo beside the structure is an artefact the
    # consistency pays for (session 20, docs/training.md). 0: off
    floor_weight: float = Field(ADAPT_FLOOR_WEIGHT, ge=0)
    # relax_margin: 2 until session 19 (chosen on six cases without the floor); with the floor
    # the held-out gain ratio was 1.08-1.30 on the three acquisitions where the first run was
    # better and 1.42-2.09 on the five where the relaxed one was: 1.35 is set between them
    # (session 20, docs/training.md; a narrow gap, fitted on those eight)
    relax_margin: float = Field(1.35, ge=1)
    confocal_fwhm_nm: float | None = Field(None, gt=0)  # None: the model card's
    # frames held out of training for the check (HeldOutCheck): this fraction, at least one
    # when there are two or more frames
    holdout: float = Field(0.25, ge=0, lt=1)
    # the check's tiles: non-overlapping squares of check_tile model pixels, at most
    # check_tiles of them (evenly chosen), each scored on check_draws photon splits
    check_tile: int = Field(48, ge=24)
    check_tiles: int = Field(64, ge=2)
    check_draws: int = Field(2, ge=1)
    # the check's photon split (its input view's share), fixed whatever split_p the training
    # uses, so that its verdict and the two runs' gains (prefer_relaxed) mean what they meant
    check_split_p: float = Field(0.5, gt=0, lt=1)
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 0


@dataclass(frozen=True)
class PhotonTransfer:
    """``variance = gain * (counts - offset)`` (+ read noise, folded into the offset): gain in
    detector units per detected photon (times the excess noise factor of a PMT/GaAsP)."""

    gain: float
    offset: float
    slope: float  # the fitted line, detector units
    intercept: float

    def photons(self, counts: np.ndarray | float) -> np.ndarray:
        return np.asarray((np.asarray(counts, np.float64) - self.offset) / self.gain)

    def variance(self, mean: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(self.slope * mean + self.intercept, 1e-6, None))


def photon_transfer(frames: Sequence[np.ndarray], source: str = "") -> PhotonTransfer:
    """Gain and offset from the frames themselves (the median of each frame's photon-transfer
    line). The offset is where the line reaches zero variance: read noise is folded into it
    (an error of read_variance / gain detector units)."""
    lines = [ln for f in frames if (ln := noise_line(f)) is not None]
    if not lines or np.median([s for s, _ in lines]) <= 0:
        raise UnsupportedInputError(Path(source or "input"), "no photon noise found in the "
                                    "frames (processed or synthetic data?): adaptation needs "
                                    "raw detector frames")
    slope = float(np.median([s for s, _ in lines]))
    intercept = float(np.median([i for _, i in lines]))
    return PhotonTransfer(gain=slope, offset=-intercept / slope, slope=slope,
                          intercept=intercept)


def saturated(frame: np.ndarray) -> float:
    """The fraction of pixels at the frame's maximum when that maximum is an ADC's top value
    (8-16 bit) or the dtype's; 0 otherwise."""
    top = float(np.max(frame))
    tops = ADC_TOPS + ((float(np.iinfo(frame.dtype).max),) if frame.dtype.kind in "ui" else ())
    if not any(abs(top - t) < 0.5 for t in tops):
        return 0.0
    return float(np.mean(frame >= top - 0.5))


def split_views(rng: np.random.Generator, frame: np.ndarray, pt: PhotonTransfer,
                alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy views of ``frame`` with the same expectation and uncorrelated noise:
    ``y + alpha z`` and ``y - z / alpha``, ``z`` Gaussian with the frame's own variance at each
    pixel (from its photon-transfer line at the locally smoothed value)."""
    from scipy import ndimage

    y = np.asarray(frame, np.float64)
    local = ndimage.gaussian_filter(y, 1.0, mode="mirror")
    z = rng.standard_normal(y.shape) * np.sqrt(pt.variance(local))
    return (y + alpha * z).astype(np.float32), (y - z / alpha).astype(np.float32)


def split_counts(rng: np.random.Generator, frame: np.ndarray, pt: PhotonTransfer,
                 p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two views of ``frame`` by splitting its photons (binomial thinning): each detected photon
    goes to the first view with probability ``p``, else to the second. For Poisson counts the
    two are *independent* Poisson images, whatever the count (recorruption's views are only
    uncorrelated: at a few photons a network can still see a photon of ``y`` in both,
    tests/test_adapt.py). The frame is turned into effective photons by the photon-transfer
    line (``(y - offset) / gain``; the gain includes the excess noise factor, so their variance
    equals their mean), clipped at 0 and rounded stochastically (the mean kept; for a PMT or
    GaAsP, whose pulse heights vary, the rounding adds up to 1/4 photon^2 of variance that both
    views share: a small correlation, measured in the test). Each view is scaled back by
    ``1 / p`` (or ``1 / (1 - p)``) to detector units: both have the frame's expectation."""
    m = np.clip(pt.photons(frame), 0.0, None)
    whole = np.floor(m)
    n = (whole + (rng.random(m.shape) < m - whole)).astype(np.int64)
    n1 = rng.binomial(n, p)
    n2 = n - n1
    return ((pt.offset + pt.gain * n1 / p).astype(np.float32),
            (pt.offset + pt.gain * n2 / (1.0 - p)).astype(np.float32))


@dataclass
class Inputs:
    """The frames to adapt on (detector units, acquisition grid) and where they came from."""

    frames: list[np.ndarray]
    pixel_size_um: float
    names: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def check_inputs(inputs: Inputs) -> PhotonTransfer:
    """Refuse what cannot support adaptation (one clear line each); the photon transfer."""
    kept, names = [], []
    for frame, name in zip(inputs.frames, inputs.names or [""] * len(inputs.frames),
                           strict=True):
        sat = saturated(frame)
        if sat > SATURATED_FRACTION:
            inputs.refused.append(f"{name}: {100 * sat:.2g}% of its pixels are saturated")
            continue
        kept.append(frame)
        names.append(name)
    if not kept:
        raise UnsupportedInputError(Path(inputs.names[0] if inputs.names else "input"),
                                    "every frame is saturated (" + "; ".join(inputs.refused[:3])
                                    + "): lower the detector gain and acquire again")
    inputs.frames, inputs.names = kept, names
    pt = photon_transfer(kept, inputs.names[0] if inputs.names else "")
    peak = peak_photons(kept, pt)
    if peak < MIN_PEAK_PHOTONS:
        raise UnsupportedInputError(Path(inputs.names[0] if inputs.names else "input"),
                                    f"too few photons: the brightest pixels hold about "
                                    f"{peak:.1f} photons (at least {MIN_PEAK_PHOTONS:g} needed)")
    return pt


def peak_photons(frames: Sequence[np.ndarray], pt: PhotonTransfer) -> float:
    """The expected photons in the brightest pixels: the 99.9th percentile of each frame in
    photons, smoothed (sigma 1 px) so that noise does not count as signal; median over frames."""
    from scipy import ndimage

    return float(np.median([np.percentile(ndimage.gaussian_filter(pt.photons(f), 1.0), 99.9)
                            for f in frames]))


def _gaussian_kernel(fwhm_px: float) -> torch.Tensor:
    s = fwhm_px / (2 * math.sqrt(2 * math.log(2)))
    r = max(1, int(math.ceil(3 * s)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / s) ** 2)
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


@dataclass
class Batchmaker:
    """Random patches of the frames as (input view, target view) on the model grid,
    normalised with each whole frame's percentile affine (as the Enhancer normalises)."""

    inputs: Inputs
    pt: PhotonTransfer
    card: Card
    alpha: float
    patch: int  # model pixels
    views: Literal["recorrupt", "split"] = "recorrupt"
    split_p: float = 0.5
    whole: bool = False  # also return the whole crop (the prior's "frame" input)
    confocal_fwhm_nm: float | None = None  # given: each frame's background floor is measured

    def __post_init__(self) -> None:
        n = self.card.normalization
        self.affines = [percentile_affine(f, n.low, n.high) for f in self.inputs.frames]
        self.ratio = self.card.pixel_size_um / self.inputs.pixel_size_um  # acq px per model px
        self.side = int(math.ceil(self.patch * self.ratio))  # acquisition pixels
        self.floors = ([] if self.confocal_fwhm_nm is None else
                       [background_floor(f, a, self.confocal_fwhm_nm, self.inputs.pixel_size_um)
                        for f, a in zip(self.inputs.frames, self.affines, strict=True)])

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """A batch: input views ``x1``, target views ``x2``, with ``whole`` the whole crops,
        with floors measured each crop's frame's ``floor`` ((N, 1, 1, 1)), stacked."""
        got: list[list[np.ndarray]] = []
        ks: list[int] = []
        for _ in range(batch):
            k, crop = self._place(rng)
            ks.append(k)
            views: tuple[np.ndarray, ...] = self._views(rng, k, crop, self.views)
            if self.whole:
                views += (self._prepare(k, crop),)
            got.append(self._turned(rng, views))
        arrays = _stack(*(list(a) for a in zip(*got, strict=True)))
        return self._named(arrays, ("x1", "x2", "whole"), ks)

    def _named(self, arrays: Sequence[np.ndarray], names: Sequence[str], ks: Sequence[int]
               ) -> dict[str, np.ndarray]:
        out = dict(zip(names, arrays, strict=False))
        if self.floors:
            out["floor"] = np.asarray([self.floors[k] for k in ks],
                                      np.float32).reshape(-1, 1, 1, 1)
        return out

    def _turned(self, rng: np.random.Generator, arrays: Sequence[np.ndarray]
                ) -> list[np.ndarray]:
        """One item of a batch: its arrays under the same random quarter turn and mirror,
        cut to at most ``patch`` pixels."""
        turned = flip_rotate(rng, *arrays)
        h = min(self.patch, turned[0].shape[0], turned[0].shape[1])
        return [a[:h, :h] for a in turned]

    def crops(self, rng: np.random.Generator, n: int) -> list[tuple[int, np.ndarray]]:
        """``n`` random crops (frame index, the crop on the acquisition grid), placed as
        :meth:`sample` places them: the prior's fixed crops (``AdaptConfig.prior_bank``)."""
        return [self._place(rng) for _ in range(n)]

    def _place(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """One random crop: a frame, then a square of ``side`` acquisition pixels in it."""
        k = int(rng.integers(len(self.inputs.frames)))
        f = self.inputs.frames[k]
        side = min(self.side, *f.shape)
        i = int(rng.integers(f.shape[0] - side + 1))
        j = int(rng.integers(f.shape[1] - side + 1))
        return k, f[i:i + side, j:j + side]

    def sample_crops(self, rng: np.random.Generator, batch: int,
                     crops: Sequence[tuple[int, np.ndarray]], targets: Sequence[np.ndarray]
                     ) -> dict[str, np.ndarray]:
        """A batch of ``batch`` crops drawn from ``crops`` (their teacher outputs ``targets``,
        model grid): ``x1``, ``x2`` (new photon splits), ``target`` (the same random quarter
        turn and mirror as the views) and, as :meth:`sample`, ``floor``."""
        got: list[list[np.ndarray]] = []
        ks: list[int] = []
        for _ in range(batch):
            b = int(rng.integers(len(crops)))
            k, crop = crops[b]
            ks.append(k)
            got.append(self._turned(rng, (*self._views(rng, k, crop, self.views), targets[b])))
        arrays = _stack(*(list(a) for a in zip(*got, strict=True)))
        return self._named(arrays, ("x1", "x2", "target"), ks)

    def tiles(self, rng: np.random.Generator, tile: int, limit: int, draws: int
              ) -> tuple[np.ndarray, np.ndarray, int]:
        """Non-overlapping tiles of every frame (a grid of squares of ``tile`` model pixels; at
        most ``limit``, chosen evenly), each split ``draws`` times, no rotation: the held-out
        check's set. Returns the stacked views, tile after tile (its draws together), and the
        tile count. Tiles that do not overlap are about as independent as the sample lets them
        be, which the check's standard error assumes."""
        where = []
        for k, f in enumerate(self.inputs.frames):
            side = min(int(math.ceil(tile * self.ratio)), *f.shape)
            where += [(k, i, j, side) for i in range(0, f.shape[0] - side + 1, side)
                      for j in range(0, f.shape[1] - side + 1, side)]
        if len(where) > limit:
            where = [where[int(q)] for q in np.linspace(0, len(where) - 1, limit).round()]
        xs, ys = [], []
        for k, i, j, side in where:
            crop = self.inputs.frames[k][i:i + side, j:j + side]
            for _ in range(draws):
                x1, x2 = self._views(rng, k, crop, "split")
                xs.append(x1)
                ys.append(x2)
        x, y = _stack(xs, ys)
        return x, y, len(where)

    def _views(self, rng: np.random.Generator, k: int, crop: np.ndarray,
               views: Literal["recorrupt", "split"]) -> tuple[np.ndarray, np.ndarray]:
        """Two noisy views of a crop of frame ``k``, normalised with that whole frame's affine
        and resampled to the model grid (as the Enhancer prepares a frame)."""
        y1, y2 = (split_counts(rng, crop, self.pt, self.split_p) if views == "split"
                  else split_views(rng, crop, self.pt, self.alpha))
        return self._prepare(k, y1), self._prepare(k, y2)

    def _prepare(self, k: int, img: np.ndarray) -> np.ndarray:
        """Normalised with frame ``k``'s affine and resampled to the model grid."""
        return resample(normalize(img, self.affines[k]), self.inputs.pixel_size_um,
                        self.card.pixel_size_um)


def flip_rotate(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same random quarter turn and mirror for an input and its target(s)."""
    rot, flip = int(rng.integers(4)), bool(rng.integers(2))
    turned = tuple(np.rot90(a, rot) for a in arrays)
    return tuple(a[:, ::-1] for a in turned) if flip else turned


def dihedral_mean(model: torch.nn.Module, img: torch.Tensor) -> torch.Tensor:
    """``model``'s output for a square (N, 1, h, h) batch averaged over the 8 quarter turns
    and mirrors (each output turned back): the same for every turn and mirror of the input."""
    outs = []
    for rot in range(4):
        for flip in (False, True):
            x = torch.rot90(img, rot, (2, 3))
            x = torch.flip(x, (3,)) if flip else x
            y = model(x)
            y = torch.flip(y, (3,)) if flip else y
            outs.append(torch.rot90(y, -rot, (2, 3)))
    return torch.stack(outs).mean(dim=0)


def _stack(*lists: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Square crops of one common side (the smallest), as (N, 1, h, h) float32 arrays, one per
    list (inputs, targets, ...)."""
    h = min(min(x.shape[0], x.shape[1]) for x in lists[0])
    return tuple(np.stack([np.ascontiguousarray(x[:h, :h], np.float32) for x in xs])[:, None]
                 for xs in lists)


def background_floor(frame: np.ndarray, affine: Affine, confocal_fwhm_nm: float,
                     pixel_size_um: float) -> float:
    """The frame's background level in normalised units: the low percentile
    (``FLOOR_PERCENTILE``) of the normalised frame smoothed to confocal resolution. The
    noise-free confocal image is the background plus the blurred sample, so nowhere below the
    background; smoothing leaves a little noise, which puts this percentile a little below it
    (a lower bound where a frame has some empty field; where it has none, the darkest gap at
    confocal resolution)."""
    from scipy import ndimage

    from tcan_live.sim.simulate import sigma_px

    smooth = ndimage.gaussian_filter(normalize(frame, affine),
                                     sigma_px(confocal_fwhm_nm, pixel_size_um), mode="mirror")
    return float(np.percentile(smooth, FLOOR_PERCENTILE))


def floor_loss(out: torch.Tensor, ref: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """How far the output goes below the background floor where the initial model's output
    (``ref``) did not: mean of ``relu(min(ref, floor) - out)^2``. Zero for an output at or
    above the floor, and wherever it is no darker than the initial model's, so the adapted
    model may darken the initial model's haze down to the background, never below it."""
    return F.relu(torch.minimum(ref, floor) - out).pow(2).mean()


def prior_loss(out: torch.Tensor, ref: torch.Tensor, out_blurred: torch.Tensor,
               ref_blurred: torch.Tensor | None) -> torch.Tensor:
    """MSE between the output and the initial model's output; with the blurred versions, only
    in the band the blur removes (what the consistency cannot see), so that what the data do
    see is not held back."""
    if ref_blurred is None:
        return F.mse_loss(out, ref)
    return F.mse_loss(out - out_blurred, ref - ref_blurred)


@dataclass(frozen=True)
class HeldOutCheck:
    """Truth-free: is the adapted model closer to the sample than the initial one, on frames it
    was not adapted on? On the same split views of non-overlapping tiles of the held-out
    frames, the consistency loss of each model; with independent views its expectation is the
    error of the blurred output against the noise-free frame plus a constant (the views'
    noise), so the paired difference measures the change in error at confocal resolution.
    ``accepted``: lower by more than the one-sided 97.5% Student-t bound of the paired
    difference over tiles (``critical`` standard errors; 2.0 for many tiles, 12.7 for two)."""

    before: float  # consistency loss, initial model
    after: float  # consistency loss, adapted model
    se: float  # standard error of the mean paired difference over tiles
    tiles: int
    held_out: list[str]  # the frames it was measured on (training frames when none was kept)

    @property
    def critical(self) -> float:
        """How many standard errors the improvement must exceed (:func:`critical_t`)."""
        return critical_t(self.tiles)

    @property
    def accepted(self) -> bool:
        return self.after < self.before - self.critical * self.se

    def line(self) -> str:
        verdict = "better" if self.accepted else "not better"
        where = f"{len(self.held_out)} held-out frame(s)" if self.held_out else \
            "the adaptation frames (none held out)"
        return (f"held-out check on {where} ({self.tiles} tiles): consistency "
                f"{self.before:.5g} -> {self.after:.5g} (+-{self.se:.2g}): {verdict}")

    def record(self) -> dict[str, Any]:
        return {"before": round(self.before, 6), "after": round(self.after, 6),
                "se": round(self.se, 6), "tiles": self.tiles,
                # none when a single tile gives no verdict (JSON and TOML have no infinity)
                **({"critical": round(self.critical, 3)} if math.isfinite(self.critical)
                   else {}),
                "held_out": self.held_out, "accepted": self.accepted}


@dataclass
class AdaptResult:
    steps: int
    seconds: float
    loss_before: dict[str, float]
    loss_after: dict[str, float]
    photon_transfer: PhotonTransfer
    peak_photons: float
    check: HeldOutCheck | None = None
    # the two-run adaptation (adapt_model): the other run's record and which was kept
    relaxation: dict[str, Any] | None = None


def critical_t(tiles: int) -> float:
    """The held-out verdicts' bound: Student's t at 97.5% with tiles - 1 degrees of freedom,
    in standard errors of the mean paired difference (inf: no verdict from a single tile)."""
    if tiles < 2:
        return math.inf
    from scipy.stats import t

    return float(t.ppf(0.975, tiles - 1))


def paired_gain(better: np.ndarray, worse: np.ndarray, tiles: int) -> tuple[float, float, float]:
    """Mean over tiles of ``worse - better`` (per-view losses, draws averaged per tile), its
    standard error, and Student's t at 97.5% (inf for a single tile)."""
    diff = (worse - better).reshape(tiles, -1).mean(axis=1)
    if tiles < 2:
        return float(diff.mean()), 0.0, math.inf
    return (float(diff.mean()), float(np.std(diff, ddof=1) / math.sqrt(tiles)),
            critical_t(tiles))


def prefer_relaxed(first: HeldOutCheck, relaxed: HeldOutCheck, between: tuple[float, float, float],
                   margin: float) -> bool:
    """Keep the run with the weaker prior only on strong evidence: it passes its own check,
    it improves the held-out consistency by at least ``margin`` times what the first run
    improved, and it beats the first run's model on the same tiles beyond Student's t
    (``between``: paired_gain of the relaxed model over the first). The prior holds the detail
    finer than the PSF, which the check cannot see; weakening it costs there (on frames the
    initial model fits, SSIM fell by 0.04, docs/training.md), so it is given up only where the
    data show the initial model is wrong at the resolution they have."""
    return relaxed_wins(first.before - first.after, relaxed.before - relaxed.after,
                        relaxed.accepted, between, margin)


def relaxed_wins(gain_first: float, gain_relaxed: float, relaxed_accepted: bool,
                 between: tuple[float, float, float], margin: float) -> bool:
    """prefer_relaxed on its numbers (the benchmark replays it from recorded runs): each run's
    held-out consistency gain, the relaxed run's verdict, and ``between`` (mean, standard error,
    critical t) of the relaxed model over the first."""
    mean, se, critical = between
    return (relaxed_accepted and gain_relaxed >= margin * max(gain_first, 0.0)
            and mean > critical * se)


def held_out_indices(n: int, fraction: float) -> list[int]:
    """Which of ``n`` frames are held out of training: ``round(n * fraction)`` (at least one
    when ``n >= 2`` and ``fraction > 0``), spread evenly over the acquisition."""
    if n < 2 or fraction <= 0:
        return []
    k = min(max(1, round(n * fraction)), n - 1)
    return sorted({int((i + 0.5) * n / k) for i in range(k)})


class Adapter:
    """The fine-tuning loop: consistency + prior, Adam, a time budget, checkpoints."""

    def __init__(self, init: Path, inputs: Inputs, cfg: AdaptConfig, *, device: str = "cpu",
                 pt: PhotonTransfer | None = None) -> None:
        self.cfg, self.inputs = cfg, inputs
        self.pt = pt or check_inputs(inputs)
        self.card, gen = load_generator(init)
        self.device = torch.device(device)
        self.gen = gen.to(self.device).train()
        self.ref = copy.deepcopy(gen).to(self.device).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr)
        c = self.card
        conf = cfg.confocal_fwhm_nm or c.confocal_fwhm_nm
        fwhm_nm = math.sqrt(max(conf**2 - c.target_fwhm_nm**2, 1.0))
        self.kernel = _gaussian_kernel(fwhm_nm / (c.pixel_size_um * 1000)).to(self.device)
        held = held_out_indices(len(inputs.frames), cfg.holdout)
        names = inputs.names or [f"frame {k}" for k in range(len(inputs.frames))]
        self.held_out = [names[k] for k in held]
        train = [k for k in range(len(inputs.frames)) if k not in held]

        def part(idx: list[int]) -> Inputs:
            return Inputs([inputs.frames[k] for k in idx], inputs.pixel_size_um,
                          [names[k] for k in idx])

        self.batches = Batchmaker(part(train), self.pt, c, cfg.alpha, cfg.patch, cfg.views,
                                  cfg.split_p, whole=cfg.prior_input == "frame",
                                  confocal_fwhm_nm=conf if cfg.floor_weight > 0 else None)
        # the check always splits photons: its verdict needs independent views, whatever
        # views the training uses
        checker = Batchmaker(part(held or train), self.pt, c, cfg.alpha, cfg.patch, "split",
                             cfg.check_split_p)
        # the prior's fixed crops (prior_bank), placed by their own generator so that a resumed
        # run finds the same ones; their teacher outputs are computed when the run starts
        self.crops = (self.batches.crops(np.random.default_rng(cfg.seed + 20_000),
                                         cfg.prior_bank)
                      if cfg.prior_input == "frame" and cfg.prior_bank > 0 else [])
        self.targets: list[np.ndarray] = []
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        torch.manual_seed(cfg.seed)
        # a fixed check set: the same views of the same tiles of the held-out frames before and
        # after
        *self.val, self.val_tiles = checker.tiles(np.random.default_rng(cfg.seed + 10_000),
                                                  cfg.check_tile, cfg.check_tiles,
                                                  cfg.check_draws)

    def blur(self, img: torch.Tensor) -> torch.Tensor:
        """Back to confocal resolution (the consistency's kernel, reflect-padded)."""
        r = self.kernel.shape[-1] // 2
        return F.conv2d(F.pad(img, (r, r, r, r), mode="reflect"), self.kernel)

    def teacher(self, whole: np.ndarray) -> np.ndarray:
        """The initial model's output for one whole crop (model grid): the prior's target;
        averaged over turns and mirrors with ``prior_tta``."""
        x = torch.from_numpy(np.ascontiguousarray(whole, np.float32)[None, None]).to(self.device)
        with torch.no_grad():
            y = dihedral_mean(self.ref, x) if self.cfg.prior_tta else self.ref(x)
        return np.asarray(y[0, 0].cpu(), np.float32)

    def batch(self) -> dict[str, torch.Tensor]:
        """One training batch as tensors, by the names :meth:`losses` takes: ``x1``, ``x2``,
        the whole crop ``whole`` or, with the prior's fixed crops, the teacher's ``target``,
        and with the floor loss ``floor``."""
        if self.crops:
            if not self.targets:  # once per run (a resumed run computes the same again)
                self.targets = [self.teacher(self.batches._prepare(k, c)) for k, c in self.crops]
            got = self.batches.sample_crops(self.rng, self.cfg.batch, self.crops, self.targets)
        else:
            got = self.batches.sample(self.rng, self.cfg.batch)
        return {k: torch.from_numpy(a).to(self.device) for k, a in got.items()}

    def losses(self, x1: torch.Tensor, x2: torch.Tensor, whole: torch.Tensor | None = None,
               target: torch.Tensor | None = None, floor: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """``whole``: the whole crop, the initial model's input for the prior when
        ``prior_input`` is "frame" (else it sees ``x1``, as the adapted model does);
        ``target``: the prior's target given (the fixed crops' teacher outputs); ``floor``:
        each item's background floor, (N, 1, 1, 1) (:func:`floor_loss`; none: no floor term)."""
        out = self.gen(x1)
        with torch.no_grad():
            ref = target if target is not None else self.ref(whole if whole is not None
                                                             else x1)
        blurred = self.blur(out)
        cons = self._squared_error(blurred, x2).mean()
        prior = prior_loss(out, ref, blurred, self.blur(ref) if self.cfg.prior_band == "high"
                           else None)
        got = {"consistency": cons, "prior": prior,
               "total": cons + self.cfg.prior_weight * prior}
        if floor is not None and self.cfg.floor_weight > 0:
            got["floor"] = floor_loss(out, ref, floor)
            got["total"] = got["total"] + self.cfg.floor_weight * got["floor"]
        return got

    def validate(self) -> dict[str, float]:
        """The losses on the check's set (means over its views, 8 at a time)."""
        x1, x2 = (torch.from_numpy(a.copy()).to(self.device) for a in self.val)
        self.gen.eval()
        sums: dict[str, float] = {}
        with torch.no_grad():
            for i in range(0, len(x1), 8):
                for k, v in self.losses(x1[i:i + 8], x2[i:i + 8]).items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(x1[i:i + 8])
        self.gen.train()
        return {k: v / len(x1) for k, v in sums.items()}

    def _consistency(self, model: torch.nn.Module, x1: torch.Tensor,
                     x2: torch.Tensor) -> np.ndarray:
        """The consistency loss of each patch (the rim left out, as in training)."""
        err = self._squared_error(self.blur(model(x1)), x2)
        return np.asarray(err.mean(dim=(1, 2, 3)).cpu(), np.float64)

    def _squared_error(self, blurred: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The consistency's squared error, the rim (where reflect padding decides) left out:
        one rule for the training loss and the held-out check."""
        m = max(self.kernel.shape[-1] // 2, 4)
        return (blurred[..., m:-m, m:-m] - x2[..., m:-m, m:-m]) ** 2

    def held_out_losses(self, model: torch.nn.Module) -> np.ndarray:
        """``model``'s consistency loss on each of the check's fixed views (held-out frames)."""
        x1, x2 = (torch.from_numpy(a.copy()).to(self.device) for a in self.val)
        training = bool(getattr(model, "training", False))
        model.eval()
        with torch.no_grad():
            out = np.concatenate([self._consistency(model, x1[i:i + 8], x2[i:i + 8])
                                  for i in range(0, len(x1), 8)])
        if training:  # the adapter's own generator goes on training
            model.train()
        return out

    def check(self) -> HeldOutCheck:
        """The initial and the adapted model on the held-out frames' fixed views (HeldOutCheck)."""
        after, before = self.held_out_losses(self.gen), self.held_out_losses(self.ref)
        # one paired difference per tile (its draws averaged): tiles, not views, are the units
        _, se, _ = paired_gain(after, before, self.val_tiles)
        return HeldOutCheck(float(before.mean()), float(after.mean()), se, self.val_tiles,
                            list(self.held_out))

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"gen.{k}": v.detach().cpu() for k, v in self.gen.state_dict().items()}
        opt_t, groups = flatten_optimizer("opt", self.opt.state_dict())
        tensors.update(opt_t)
        return tensors, {"step": self.step, "groups": groups,
                         "rng": self.rng.bit_generator.state}

    def restore(self, folder: Path) -> bool:
        got = load_checkpoint(folder)
        if got is None:
            return False
        tensors, meta = got
        self.gen.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
        self.opt.load_state_dict(unflatten_optimizer("opt", tensors, meta["groups"]))
        self.rng.bit_generator.state = meta["rng"]
        self.step = int(meta["step"])
        return True

    def run(self, ckpt: Path | None = None,
            progress: Callable[[int, float, float], None] | None = None) -> AdaptResult:
        """Adapt until ``steps`` or the time budget; checkpoints into ``ckpt``."""
        if ckpt is not None and self.restore(ckpt):
            log.info("resumed at step %d", self.step)
        before = self.validate() if self.step == 0 else {}
        t0 = time.monotonic()
        budget = self.cfg.budget_min * 60
        while self.step < self.cfg.steps and time.monotonic() - t0 < budget:
            loss = self.losses(**self.batch())["total"]
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * min(1.0, (self.step + 1) / max(self.cfg.warmup, 1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            if ckpt is not None and self.step % self.cfg.checkpoint_every == 0:
                save_checkpoint(ckpt, *self.state())
            if progress is not None:
                progress(self.step, time.monotonic() - t0, budget)
        if ckpt is not None:
            save_checkpoint(ckpt, *self.state())
        return AdaptResult(self.step, time.monotonic() - t0, before, self.validate(), self.pt,
                           peak_photons(self.inputs.frames, self.pt), self.check())

    def loss_text(self) -> str:
        """The loss as the card records it."""
        cfg = self.cfg
        views = (f"y1, y2: the frame's photons split {cfg.split_p:g} / {1 - cfg.split_p:g}, "
                 "each scaled back to the frame's expectation" if cfg.views == "split" else
                 f"y1 = y + a z, y2 = y - z / a (a = {cfg.alpha:g}, z Gaussian of the frame's "
                 "variance)")
        seen = "y" if cfg.prior_input == "frame" else "y1"
        prior = (f"MSE((1 - blur) G(y1), (1 - blur) G0({seen}))" if cfg.prior_band == "high"
                 else f"MSE(G(y1), G0({seen}))")
        if cfg.prior_input == "frame":
            prior += " (y: the whole frame, whose photons y1 and y2 split"
            if cfg.prior_bank:
                prior += (f"; G0(y) computed once for each of {cfg.prior_bank} fixed crops"
                          + (", averaged over the 8 quarter turns and mirrors"
                             if cfg.prior_tta else ""))
            prior += ")"
        floor = (f" + {cfg.floor_weight:g} * mean(relu(min(G0, b) - G(y1))^2) (b: the frame's "
                 f"background, the {FLOOR_PERCENTILE:g}st percentile of the frame at confocal "
                 "resolution)" if cfg.floor_weight > 0 else "")
        return (f"MSE(blur(G(y1)), y2) + prior_weight * {prior}{floor}; {views}; blur: "
                "Gaussian FWHM sqrt(confocal^2 - target^2)")

    def save(self, out: Path, model_id: str, init: str, result: AdaptResult,
             extra: dict[str, Any] | None = None) -> None:
        c = self.card
        self.gen.eval()
        save_model(
            out, self.gen, id=model_id,
            description=f"{init} adapted with tcan-live adapt to {len(self.inputs.frames)} "
                        f"confocal frame(s) of the user's sample (no STED)",
            architecture=c.architecture, pixel_size_um=c.pixel_size_um,
            confocal_fwhm_nm=c.confocal_fwhm_nm, target_fwhm_nm=c.target_fwhm_nm,
            normalization=c.normalization, tiling=c.tiling,
            provenance={"trained_with": "tcan-live adapt", "init": init,
                        "inputs": self.inputs.names, "refused": self.inputs.refused,
                        "input_pixel_size_um": self.inputs.pixel_size_um},
            training={"adapt": {
                "loss": self.loss_text(),
                "config": self.cfg.model_dump(exclude_none=True), "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "photon_transfer": {k: round(v, 4)
                                    for k, v in asdict(result.photon_transfer).items()},
                "peak_photons": round(result.peak_photons, 2),
                "validation_before": result.loss_before,
                "validation_after": result.loss_after,
                **({"held_out_check": result.check.record()} if result.check else {}),
                **({"relaxation": result.relaxation} if result.relaxation else {}),
                **(extra or {})}},
            metrics=c.metrics)


def adapt_model(init: Path, inputs: Inputs, cfg: AdaptConfig, *, device: str = "cpu",
                pt: PhotonTransfer | None = None, ckpt: Path | None = None,
                progress: Callable[[int, float, float], None] | None = None,
                stage: Callable[[str], None] | None = None,
                finished: Callable[[str, Adapter], None] | None = None
                ) -> tuple[Adapter, AdaptResult]:
    """Adapt as ``tcan-live adapt`` and ``watch --adapt`` do: one run with ``prior_weight``;
    with ``relaxed_prior_weight`` set, half the budget for it and a second run from the
    initial model with the weaker prior in what is left, the second kept only where
    :func:`prefer_relaxed` says so (the result's ``relaxation`` records both). ``ckpt``: the
    first run's checkpoint folder (resumable); the second run's is its ``relaxed/``.
    ``finished``: called with "first" or "relaxed" and the adapter as each run ends (the
    benchmark scores the run that was not kept)."""
    relaxed_w = cfg.relaxed_prior_weight
    two = relaxed_w is not None and relaxed_w != cfg.prior_weight
    t0 = time.monotonic()
    first = Adapter(init, inputs, cfg.model_copy(update={"budget_min": cfg.budget_min / 2})
                    if two else cfg, device=device, pt=pt)
    res1 = first.run(ckpt, progress)  # resumes from ckpt where it holds a checkpoint
    if finished is not None:
        finished("first", first)
    if not two or res1.check is None:
        return first, res1
    record: dict[str, Any] = {"prior_weight": relaxed_w, "margin": cfg.relax_margin,
                              "first": {"prior_weight": cfg.prior_weight, "steps": res1.steps,
                                        "check": res1.check.record()}}
    left = cfg.budget_min - (time.monotonic() - t0) / 60
    if left < 0.1 * cfg.budget_min:  # the first run took the budget: no time for a second
        res1.relaxation = {**record, "kept": "first", "why": "no time left for the second run"}
        return first, res1
    if stage is not None:
        stage(f"second run from {init.name}, prior weight {relaxed_w:g}")
    second = Adapter(init, inputs, cfg.model_copy(update={"prior_weight": relaxed_w,
                                                          "budget_min": left}),
                     device=device, pt=first.pt)
    res2 = second.run(ckpt / "relaxed" if ckpt is not None else None, progress)
    if finished is not None:
        finished("relaxed", second)
    if res2.check is None:  # never: the same frames give the same check set
        return first, res1
    between = paired_gain(second.held_out_losses(second.gen),
                          second.held_out_losses(first.gen), second.val_tiles)
    keep = prefer_relaxed(res1.check, res2.check, between, cfg.relax_margin)
    record.update({"relaxed": {"steps": res2.steps, "check": res2.check.record()},
                   "relaxed_over_first": {"gain": round(between[0], 7),
                                          "se": round(between[1], 7)},
                   "kept": "relaxed" if keep else "first",
                   "seconds": round(time.monotonic() - t0, 1)})
    kept_adapter, kept = (second, res2) if keep else (first, res1)
    kept.relaxation = record
    return kept_adapter, kept


def relaxation_gains(record: dict[str, Any]) -> dict[str, float]:
    """Each run's held-out consistency gain (before - after) from an AdaptResult.relaxation
    record that holds both runs."""
    return {k: record[k]["check"]["before"] - record[k]["check"]["after"]
            for k in ("first", "relaxed")}


def kept_prior_weight(record: dict[str, Any]) -> float:
    """The prior weight of the run a relaxation record kept."""
    return float(record["first"]["prior_weight"] if record["kept"] == "first"
                 else record["prior_weight"])


def relaxation_line(record: dict[str, Any]) -> str:
    """One line on which of the two runs was kept (AdaptResult.relaxation)."""
    first = record["first"]
    if "relaxed" not in record:
        return f"kept the run with prior weight {first['prior_weight']:g}: {record['why']}"
    gain = relaxation_gains(record)
    return (f"kept the run with prior weight {kept_prior_weight(record):g}: "
            f"held-out consistency gain {gain['first']:.3g} (prior weight "
            f"{first['prior_weight']:g}) and {gain['relaxed']:.3g} (prior weight "
            f"{record['prior_weight']:g}); the weaker prior is kept only with at least "
            f"{record['margin']:g} times the gain, beyond noise")


def read_inputs(paths: Sequence[Path], pixel_size_um: float | None, max_frames: int,
                channel: int = 0) -> Inputs:
    """Up to ``max_frames`` 2-D planes (channel ``channel``) of the inputs, in order; the pixel
    size by the one precedence (flag > file); none known: refused."""
    from tcan_live.frame import resolve_pixel_size
    from tcan_live.sources.readers import open_stack

    frames: list[np.ndarray] = []
    names: list[str] = []
    px: float | None = None
    files = [q for p in paths for q in (_images_in(p) if p.is_dir() and not _is_dataset(p)
                                        else [p])]
    for path in files:
        if len(frames) >= max_frames:
            break
        with open_stack(path) as reader:
            info = reader.info
            got = resolve_pixel_size(pixel_size_um, info.pixel_size_um, None, str(path))
            if got is None:
                raise ConfigError(f"{path}: the file records no pixel size; give "
                                  "--pixel-size-um")
            if px is not None and abs(got - px) > 1e-6 * px:
                raise ConfigError(f"{path}: pixel size {got:g} um differs from the other "
                                  f"inputs' {px:g} um; adapt on one kind of acquisition")
            px = got
            for _, frame in reader.planes():
                if frame.index.c != channel:
                    continue
                frames.append(np.asarray(frame.data))
                names.append(f"{path.name}[t={frame.index.t},z={frame.index.z},"
                             f"p={frame.index.p}]")
                if len(frames) >= max_frames:
                    break
    if not frames or px is None:
        raise ConfigError("no frames found in the inputs")
    return Inputs(frames, px, names)


def _is_dataset(path: Path) -> bool:
    from tcan_live.sources.formats import input_kind

    return input_kind(path) in ("ndtiff", "zarr")


def _images_in(folder: Path) -> list[Path]:
    from tcan_live.sources.formats import input_kind

    return [q for q in sorted(folder.iterdir()) if input_kind(q) is not None]


def run_adapt(opts: AdaptOptions) -> int:
    """``tcan-live adapt``: read, check, adapt within the budget (resumable), write the model."""
    import sys

    from tcan_live.sr.card import resolve_model
    from tcan_live.sr.enhancer import pick_device

    init = resolve_model(opts.init)
    inputs = read_inputs(opts.inputs, opts.pixel_size_um, opts.max_frames, opts.channel)
    pt = check_inputs(inputs)
    for line in inputs.refused:
        print(f"refused {line}", file=sys.stderr)
    cfg = AdaptConfig(budget_min=opts.budget_min, steps=opts.steps,
                      prior_weight=opts.prior_weight,
                      relaxed_prior_weight=opts.relaxed_prior_weight,
                      floor_weight=opts.floor_weight, seed=opts.seed,
                      confocal_fwhm_nm=opts.confocal_fwhm_nm)
    peak = peak_photons(inputs.frames, pt)
    print(f"adapting {init.name} to {len(inputs.frames)} frame(s) at "
          f"{inputs.pixel_size_um:g} um/px: gain {pt.gain:.3g} per photon, offset "
          f"{pt.offset:.4g}, brightest pixels ~{peak:.0f} photons; budget "
          f"{opts.budget_min:g} min", file=sys.stderr)
    last = [0.0]
    start = [-1]  # the step each run began at (resumed or 0), taken at its first report
    runs = 1 if cfg.relaxed_prior_weight in (None, cfg.prior_weight) else 2
    run = [1]

    def progress(step: int, elapsed: float, budget: float) -> None:
        if start[0] < 0:
            start[0] = step - 1
        if elapsed - last[0] >= 15 or step == start[0] + 1:
            last[0] = elapsed
            rate = elapsed / max(step - start[0], 1)
            left = min(budget - elapsed, (cfg.steps - step) * rate)
            print(f"{f'run {run[0]} of {runs}, ' if runs > 1 else ''}step {step}: "
                  f"{elapsed / 60:.1f} min, about {max(left, 0) / 60:.1f} min left"
                  f"{' in this run' if run[0] < runs else ''}", file=sys.stderr)

    def stage(what: str) -> None:
        run[0], start[0], last[0] = run[0] + 1, -1, 0.0
        print(what, file=sys.stderr)

    ckpt = opts.out / "adapt"
    held = load_checkpoint(ckpt)
    if held is not None:
        print(f"resuming at step {held[1]['step']} ({ckpt})", file=sys.stderr)
    adapter, result = adapt_model(init, inputs, cfg, device=str(pick_device(opts.device)),
                                  pt=pt, ckpt=ckpt, progress=progress, stage=stage)
    if result.relaxation is not None:
        print(relaxation_line(result.relaxation), file=sys.stderr)
    model_id = opts.id or opts.out.name
    adapter.save(opts.out, model_id, init.name, result)
    if result.check is not None and not result.check.accepted:
        print(f"{opts.out}: {result.check.line()}: it may be no improvement on "
              f"{init.name}; keep using {init.name} unless you have checked it",
              file=sys.stderr)
        advice = f"not recommended over {init.name} (held-out check)"
    else:
        advice = f"use it with --model {opts.out}"
        if result.check is not None:
            print(result.check.line(), file=sys.stderr)
    print(f"wrote {opts.out}: {result.steps} steps in {result.seconds / 60:.1f} min; "
          f"{advice}")
    return 0
