"""Typed options of the file-producing commands (pydantic): the command line parses into these
and the library takes them, so no ``argparse`` namespace goes below ``_cli.py`` for
``enhance``, ``export``, ``record`` and ``demo`` (``watch`` has
:class:`tcan_live.settings.Settings`, ``train`` its ``TrainConfig``).
Bounds live here once (``tile`` >= 32 for every command, positive pixel sizes, ...); a value out
of bounds is a one-line :class:`ConfigError` naming the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tcan_live.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Format = Literal["ome-tiff", "ome-zarr"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelOptions(_Options):
    model: str | None = None
    device: str = "auto"
    tile: int | None = Field(None, ge=32)
    precision: Precision = "auto"


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
    address: str = "tcp://127.0.0.1:5557"
    output: Path
    kind: Literal["enhanced", "raw"] = "enhanced"
    frames: int | None = Field(None, ge=1)
    duration: float | None = Field(None, gt=0)
    idle: float = Field(30.0, gt=0)
    fill_from: Path | None = None
    curve_keys: Path | None = None


T = TypeVar("T", bound=_Options)


def parse_options(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from the command line's values (only the fields it has); a bad value is a
    :class:`ConfigError` naming the option as typed on the command line."""
    try:
        return cls.model_validate({k: v for k, v in values.items() if k in cls.model_fields})
    except ValidationError as err:
        first = err.errors()[0]
        name = "--" + "-".join(str(p) for p in first["loc"][:1]).replace("_", "-")
        raise ConfigError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
