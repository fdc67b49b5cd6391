"""The training configuration (pydantic, no torch): ``tcan-live train`` parses into it and its
defaults are the command's defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tcan_live.sr.card import PRESETS, Architecture, Normalization, Tiling


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = "tcan-custom"
    architecture: Architecture = PRESETS["small"]
    steps: int = Field(20000, ge=1)
    batch: int = Field(2, ge=1)
    patch: int = Field(256, ge=16)
    lr_g: float = Field(1e-4, gt=0)
    lr_d: float = Field(5e-5, gt=0)
    w_pixel: float = Field(1.0, ge=0)
    w_adv: float = Field(0.01, ge=0)
    w_ssim: float = Field(1.0, ge=0)
    pixel_loss: Literal["mse", "l1"] = "mse"
    disc_width: int = Field(16, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    val_every: int = Field(250, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    ema: float = Field(0.999, ge=0, lt=1)
    seed: int = 0
    max_hours: float | None = Field(None, gt=0)
    pixel_size_um: float = Field(0.05, gt=0)
    normalization: Normalization = Normalization()
    tiling: Tiling = Tiling()
