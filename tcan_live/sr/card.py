"""Model cards: a model is a folder with ``model.toml`` (this card) and safetensors weights.

Pure data and validation (pydantic); no torch here.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tcan_live.errors import ModelError, NoModelError

CARD_NAME = "model.toml"
CARD_FORMAT = "tcan-live-model"
CARD_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    """Generator widths. Defaults are the paper's ("tcan"); see PRESETS for narrower ones."""

    name: Literal["tcan"] = "tcan"
    stem_width: int = Field(32, ge=1)
    unet_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    unet_bottom: int = Field(512, ge=1)
    dfcan_width: int = Field(64, ge=1)
    dfcan_groups: int = Field(5, ge=1)
    fcab_per_group: int = Field(2, ge=1)
    gamma: float = Field(0.8, gt=0, le=2)
    attention_reduction: int = Field(16, ge=1)
    branch_out: int = Field(1, ge=1)


PRESETS: dict[str, Architecture] = {
    "tcan": Architecture(),
    "small": Architecture(
        stem_width=16, unet_widths=(16, 32, 64, 128), unet_bottom=256, dfcan_width=16
    ),
    "tiny": Architecture(
        stem_width=4, unet_widths=(4, 4, 8, 8), unet_bottom=8, dfcan_width=4, dfcan_groups=1,
        fcab_per_group=1, attention_reduction=4,
    ),
}


class Normalization(_Strict):
    method: Literal["percentile"] = "percentile"
    low: float = Field(1.0, ge=0, lt=100)
    high: float = Field(99.9, gt=0, le=100)


class Tiling(_Strict):
    # largest tile side: 512 measured fastest with the fused CPU forward at 512, 1024 and 2048
    # px frames (docs/benchmarks.md); the plan uses fewer, balanced tiles where it can
    tile: int = Field(512, ge=32)
    overlap: int = Field(48, ge=0)


class Weights(_Strict):
    file: str = "weights.safetensors"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ErrorHeadCard(_Strict):
    """The model's error head (sr/error_head.py), written by ``tcan-live calibrate``."""

    file: str = Field("error_head.safetensors", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(16, ge=1, le=256)
    passes: int = Field(4, ge=2, description="noise redraws of the spread it was trained on")
    trained_on: dict[str, Any] = {}
    metrics: dict[str, Any] = {}


class Card(_Strict):
    format: Literal["tcan-live-model"] = "tcan-live-model"
    format_version: int = CARD_VERSION
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    architecture: Architecture = Architecture()
    pixel_size_um: float = Field(0.05, gt=0, description="training pixel size")
    confocal_fwhm_nm: float = Field(230.0, gt=0, description="PSF of the training inputs")
    target_fwhm_nm: float = Field(80.0, gt=0, description="PSF of the training targets")
    normalization: Normalization = Normalization()
    tiling: Tiling = Tiling()
    weights: Weights
    provenance: dict[str, Any] = {}
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    error_head: ErrorHeadCard | None = None  # optional: models without one use the plain spread

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != CARD_VERSION:
            raise ValueError(f"format_version {v} is not supported (expected {CARD_VERSION})")
        return v


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_card(folder: Path) -> Card:
    path = folder / CARD_NAME
    if not path.is_file():
        raise ModelError(path, f"missing model card (expected {CARD_NAME} in the model folder)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return Card.model_validate(raw)
    except tomllib.TOMLDecodeError as err:
        raise ModelError(path, f"not valid TOML: {err}") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelError(path, f"invalid card field {where!r}: {first['msg']}") from err


def write_card(folder: Path, card: Card) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CARD_NAME
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(card.model_dump(mode="json", exclude_none=True)), "utf-8")
    os.replace(tmp, path)
    return path


def verified_weights_path(folder: Path, card: Card) -> Path:
    """The weights file of a card, after checking that it exists and its sha256 matches."""
    path = folder / card.weights.file
    if not path.is_file():
        raise ModelError(path, "weights file missing (named in the card's [weights] table)")
    found = sha256_file(path)
    if found != card.weights.sha256:
        raise ModelError(
            path, f"sha256 mismatch: expected {card.weights.sha256[:16]}..., found {found[:16]}..."
        )
    return path


# ---------------------------------------------------------------------------------------------
# where models live


def model_dirs() -> list[Path]:
    """Search path: $TCAN_LIVE_MODELS (os.pathsep-separated), the installed package's models, and
    the source checkout's top-level models/ folder."""
    dirs = [Path(p) for p in os.environ.get("TCAN_LIVE_MODELS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent.parent
    dirs += [here / "models", here.parent / "models"]
    return [d for d in dirs if d.is_dir()]


def installed_models() -> list[tuple[Path, Card | ModelError]]:
    found: list[tuple[Path, Card | ModelError]] = []
    seen: set[str] = set()
    for d in model_dirs():
        for folder in sorted(p for p in d.iterdir() if (p / CARD_NAME).is_file()):
            if folder.name in seen:
                continue
            seen.add(folder.name)
            try:
                found.append((folder, read_card(folder)))
            except ModelError as err:
                found.append((folder, err))
    return found


DEFAULT_MODEL_FILE = "DEFAULT"


def resolve_model(spec: str | Path | None) -> Path:
    """A model folder from a path, an installed id, or (None) the default model."""
    if spec is not None and (Path(spec) / CARD_NAME).is_file():
        return Path(spec)
    if spec is not None and (Path(spec).exists() or os.sep in str(spec) or "/" in str(spec)):
        raise NoModelError(Path(spec), f"not a model folder (no {CARD_NAME} inside)")
    wanted = str(spec) if spec is not None else _default_id()
    for folder, _ in installed_models():
        if folder.name == wanted:
            return folder
    searched = ", ".join(str(d) for d in model_dirs()) or "(no model folders found)"
    if wanted is None:
        raise NoModelError(Path("models"), f"no default model installed; searched {searched}")
    raise NoModelError(Path(wanted), f"no installed model with this id; searched {searched}")


def _default_id() -> str | None:
    for d in model_dirs():
        marker = d / DEFAULT_MODEL_FILE
        if marker.is_file():
            return marker.read_text(encoding="utf-8").strip() or None
    return None
