"""Daemon settings: validated, from defaults < TOML file < TCAN_LIVE_* environment < flags.

The TOML file holds the same keys as :class:`Settings` (see service/tcan-live.example.toml).
Environment variables are the upper-cased keys with a ``TCAN_LIVE_`` prefix, e.g.
``TCAN_LIVE_ENDPOINT=tcp://127.0.0.1:6000`` or ``TCAN_LIVE_SETTLE_S=3``.

One namespace: every ``TCAN_LIVE_*`` variable is either a setting (:func:`setting_env_names`) or
a process variable read elsewhere (:data:`PROCESS_ENV`, documented in docs/operations.md). Any
other ``TCAN_LIVE_*`` variable is reported with a warning and otherwise ignored, so a typo or a
variable meant for another tool never stops the daemon.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tcan_live.commands import ADAPT_STEPS, DEFAULT_ENDPOINT
from tcan_live.errors import ConfigError

log = logging.getLogger(__name__)
ENV_PREFIX = "TCAN_LIVE_"
# process variables: read where they act, not daemon settings (docs/operations.md lists them)
PROCESS_ENV = {
    "TCAN_LIVE_MALLOC_TUNING": "0 turns off the glibc malloc tuning (sr/hostmem.py)",
    "TCAN_LIVE_MODELS": "extra model folders, os.pathsep-separated (sr/card.py)",
    "TCAN_LIVE_SHARED": "the shared data folder the test suite reads (tests/conftest.py)",
}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: Path | None = None
    output: Path | None = Field(None, description="default: <folder>_tcan next to the folder")
    model: str | None = None
    device: str = "auto"
    tile: int | None = Field(None, ge=32)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    restore: bool = Field(True, description="put back measured periodic detail that the "
                          "network erased (sr/restore.py)")
    pixel_size_um: float | None = Field(None, gt=0, description="overrides the files' value")
    endpoint: str = DEFAULT_ENDPOINT
    allow_remote: bool = False
    insecure: bool = Field(False, description="allow_remote without curve_keys (warns)")
    curve_keys: Path | None = None
    ingest: str | None = None
    mode: Literal["all", "latest"] = "all"
    poll: bool = False
    settle_s: float = Field(2.0, ge=0)
    give_up_s: float = Field(60.0, gt=0)
    queue_size: int = Field(8, ge=1)
    status_interval_s: float = Field(2.0, gt=0)
    output_format: Literal["ome-tiff", "ome-zarr"] = Field(
        "ome-tiff", description="of the saved stacks (export/formats.py)")
    flush_idle_s: float = Field(3.0, ge=0, description="an OME-TIFF is written once its "
                                "stream is quiet this long (and 2x its longest gap)")
    # accepted so that configuration files of earlier versions still start the service
    flush_every_s: float | None = Field(None, description="no longer used (the output is "
                                        "append-only since issue 19); ignored with a warning")
    replay_topics: int = Field(128, ge=0, description="newest frames kept for late joiners")
    replay_mb: float = Field(256.0, ge=0, description="their memory bound (MiB)")
    log_file: Path | None = None
    panel: bool = True
    uncertainty: bool = Field(False, description="also compute, publish and save each "
                              "frame's uncertainty map (4 extra forward passes per frame)")
    adapt: bool = Field(False, description="adapt the model to the first frames of the "
                        "acquisition in the background, then switch to it (tcan-live adapt)")
    adapt_frames: int = Field(8, ge=1, description="frames collected for adapt")
    adapt_budget_min: float = Field(10.0, gt=0, description="minutes of adaptation")
    adapt_check: bool = Field(True, description="switch only if the adapted model is closer "
                              "to the sample than the initial one on held-out frames (a "
                              "truth-free check, docs/training.md)")
    adapt_steps: int = Field(ADAPT_STEPS, ge=1,
                             description="at most this many adaptation steps")

    @field_validator("flush_every_s")
    @classmethod
    def _retired(cls, value: float | None) -> float | None:
        if value is not None:
            log.warning("setting flush_every_s is no longer used (the output is written "
                        "append-only, docs/operations.md); ignored")
        return value

    def output_folder(self) -> Path:
        if self.output is not None:
            return self.output
        if self.folder is None:
            return Path("tcan-output")
        folder = self.folder.resolve()
        return folder.parent / f"{folder.name}_tcan"


def setting_env_names() -> dict[str, str]:
    """``TCAN_LIVE_<KEY>`` -> setting key, for every daemon setting."""
    return {f"{ENV_PREFIX}{name.upper()}": name for name in Settings.model_fields}


def known_env_names() -> set[str]:
    return set(setting_env_names()) | set(PROCESS_ENV)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    names = setting_env_names()
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key in names:
            out[names[key]] = value
        elif key.startswith(ENV_PREFIX) and key not in PROCESS_ENV:
            log.warning("environment variable %s is not a tcan-live setting; ignored "
                        "(settings: %s; process variables: %s)", key,
                        ", ".join(sorted(names)), ", ".join(sorted(PROCESS_ENV)))
    return out


def load_settings(file: Path | None = None, env: Mapping[str, str] | None = None,
                  **flags: Any) -> Settings:
    """Merge defaults < file < environment < flags (flags that are None are not given)."""
    merged: dict[str, Any] = {}
    source = "defaults"
    if file is not None:
        try:
            merged.update(tomllib.loads(Path(file).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{file}: cannot read settings ({err})") from err
        source = str(file)
    env_values = _from_env(os.environ if env is None else env)
    merged.update(env_values)
    merged.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        where = ("flag" if key in flags and flags[key] is not None else
                 f"environment {ENV_PREFIX}{key.upper()}" if key in env_values else source)
        raise ConfigError(f"setting {key!r} from {where}: {first['msg']} "
                          f"(got {first.get('input')!r})") from err
