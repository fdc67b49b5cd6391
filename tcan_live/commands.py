"""Typed options of the commands (pydantic): the command line parses into these and the
library takes them, so no ``argparse`` namespace goes below ``tcan_live._cli`` (``watch`` has
:class:`tcan_live.settings.Settings`, ``train`` :class:`tcan_live.train.config.TrainConfig`
plus :class:`TrainOptions`).
Defaults and bounds live here once: the command line declares no default of its own (its
help shows these), ``tile`` >= 32 for every command, positive pixel sizes, ...; a value out of
bounds is a one-line :class:`ConfigError` naming the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tcan_live.errors import ConfigError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"  # where the daemon publishes (loopback only)
# Each adaptation run stops after this many steps (whatever time is left in its budget): on 24
# acquisitions of two held-out families (a GPU, session 18) 700-930 steps gained more than 400
# only on one family at 10 photons and made the output follow the noise more, and a longer run
# with recorrupted views drifted (docs/training.md "Adapting to your sample"); with the floor
# and the two runs (session 21) 800 steps per run gained +0.004 SSIM on average over 16 fresh
# acquisitions, but two runs of 800 do not fit a 2-core CPU's 10 minutes (ask with --steps on
# a GPU); the budget in minutes is only an upper bound.
ADAPT_STEPS = 400
# The prior weight of adaptation's second run (None: one run only). Both runs start from the
# initial model with half the budget each; the second is kept only where the held-out frames
# show the initial model wrong at confocal resolution (train/adapt.py prefer_relaxed): on
# frames it fits, a weaker prior cost up to 0.04 SSIM; where it misfits (a wider PSF than it
# expects, the real pairs) the weaker prior gained up to 0.14 (docs/training.md, session 18)
ADAPT_RELAXED_PRIOR: float | None = 0.1
# the weight of the floor loss (train/adapt.py floor_loss): the adapted output may not go
# below the frame's background level where the initial model did not. Without it a weak prior
# let the output buy consistency with dark halos beside the structure (docs/training.md,
# session 20)
ADAPT_FLOOR_WEIGHT = 100.0
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
Format = Literal["ome-tiff", "ome-zarr"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelOptions(_Options):
    model: str | None = None
    device: str = "auto"
    tile: int | None = Field(None, ge=32)
    precision: Precision = "auto"
    restore: bool = True  # put back measured periodic detail the network erased (sr/restore.py)


class ClusterOptions(_Options):
    scheduler: str | None = None
    workers: int | None = Field(None, ge=1)


class EnhanceOptions(ModelOptions, ClusterOptions):
    inputs: list[Path] = Field(min_length=1)
    output: Path
    format: Format | None = None  # None: OME-TIFF
    pixel_size_um: float | None = Field(None, gt=0)
    keep_model_grid: bool = False
    residual: bool = False
    uncertainty: bool = False


class ExportCommand(ModelOptions, ClusterOptions):
    input: Path
    output: Path
    format: Format | None = None  # None: what the output's suffix says
    drift_correct: bool = True
    reference: Literal["first", "previous", "running-mean"] = "first"
    drift_channel: int = Field(0, ge=0)
    drift_on: Literal["raw", "enhanced"] = "raw"
    smooth: int = Field(1, ge=1)
    pad: bool = False
    movie: Path | None = None
    save_raw: bool = False
    pixel_size_um: float | None = Field(None, gt=0)


class DemoOptions(ModelOptions):
    frames: int = Field(12, ge=1)
    size: int = Field(256, ge=32)
    interval: float = Field(1.0, ge=0)
    out: Path = Path("demo-output")


class RecordOptions(_Options):
    address: str = DEFAULT_ENDPOINT
    output: Path
    kind: Literal["enhanced", "raw"] = "enhanced"
    frames: int | None = Field(None, ge=1)
    duration: float | None = Field(None, gt=0)
    idle: float = Field(30.0, gt=0)
    fill_from: Path | None = None
    curve_keys: Path | None = None


class ViewOptions(_Options):
    address: str = DEFAULT_ENDPOINT
    buffer: int = Field(50, ge=1)
    fps: float = Field(10.0, gt=0)
    curve_keys: Path | None = None


class KeysOptions(_Options):
    folder: Path
    clients: str = "viewer"


class ModelsOptions(_Options):
    models_action: Literal["list", "export"] = "list"
    model: str | None = None
    onnx: bool = False
    bioimageio: Path | None = None
    out: Path | None = None
    size: int | None = Field(None, ge=32)


class SimulateOptions(_Options):
    out: Path
    n: int = Field(100, ge=1)
    size: int = Field(256, ge=16)
    seed: int = 0
    pixel_size_um: float = Field(0.05, gt=0)
    confocal_fwhm_nm: float = Field(230.0, gt=0)
    sted_fwhm_nm: float = Field(80.0, gt=0)
    photons: float | None = Field(None, gt=0)
    background: float = Field(2.0, ge=0)
    simulator: Literal["broad", "classic"] = "broad"
    families: str | None = None
    acq_pixel_nm: float | None = Field(None, gt=0)
    structures: str | None = None
    timelapse: bool = False
    frames: int = Field(20, ge=1)
    interval: float = Field(0.0, ge=0)
    drift: float = 0.3
    channels: int = Field(1, ge=1, le=2)
    layout: Literal["files", "ome-stack"] = "files"


class EvaluateOptions(_Options):
    pairs: Path
    model: str | None = None
    out: Path | None = None
    planes: str = "0,1"
    pixel_size_um: float | None = Field(None, gt=0)
    confocal_fwhm_nm: float = Field(230.0, gt=0)
    device: str = "auto"
    limit: int | None = Field(None, ge=1)
    uncertainty: bool = False
    write_card: str | None = None


class TrainOptions(_Options):
    """What ``train`` takes besides :class:`~tcan_live.train.config.TrainConfig`."""

    pairs: Path
    out: Path
    id: str | None = None
    preset: str = "small"
    planes: str = "0,1"
    init: Path | None = None
    restart: bool = False
    device: str = "auto"


class AdaptOptions(_Options):
    inputs: list[Path] = Field(min_length=1)
    out: Path
    id: str | None = None
    init: str | None = None  # None: the default model
    budget_min: float = Field(10.0, gt=0)
    steps: int = Field(ADAPT_STEPS, ge=1)
    max_frames: int = Field(64, ge=1)
    channel: int = Field(0, ge=0)
    pixel_size_um: float | None = Field(None, gt=0)
    prior_weight: float = Field(1.0, ge=0)
    relaxed_prior_weight: float | None = Field(ADAPT_RELAXED_PRIOR, ge=0)
    floor_weight: float = Field(ADAPT_FLOOR_WEIGHT, ge=0)
    confocal_fwhm_nm: float | None = Field(None, gt=0)
    device: str = "auto"
    seed: int = 0


class CalibrateOptions(_Options):
    model: str  # a model folder or id; its folder is written into
    images: int = Field(16, ge=1)  # simulated images per training family, and as many mixed
    steps: int = Field(3000, ge=1)
    width: int = Field(16, ge=1, le=256)
    passes: int = Field(4, ge=2)
    seed: int = 12000
    size: int = Field(160, ge=64)
    device: str = "auto"


T = TypeVar("T", bound=BaseModel)


def parse_options(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from the command line's values (only the fields it has); a bad value is a
    :class:`ConfigError` naming the option as typed on the command line."""
    try:
        return cls.model_validate({k: v for k, v in values.items() if k in cls.model_fields})
    except ValidationError as err:
        first = err.errors()[0]
        name = "--" + "-".join(str(p) for p in first["loc"][:1]).replace("_", "-")
        raise ConfigError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
