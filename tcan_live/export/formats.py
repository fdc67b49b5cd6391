"""Output formats: the one place that knows them, their suffixes and how to write each.

``ome-tiff`` (``.ome.tif``, the default) and ``ome-zarr`` (``.ome.zarr``, NGFF 0.5). An output
name selects its format by its suffix; a name with any other suffix is refused, never renamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tcan_live.errors import ConfigError
from tcan_live.export.ometiff import OmeMeta, write_ome_tiff
from tcan_live.export.omezarr import ZARR_SUFFIX, ZarrMeta, write_ome_zarr

FORMATS = ("ome-tiff", "ome-zarr")
OME_TIFF_SUFFIXES = (".ome.tif", ".ome.tiff")
_SUFFIX = {"ome-tiff": ".ome.tif", "ome-zarr": ZARR_SUFFIX}


def output_suffix(fmt: str) -> str:
    if fmt not in _SUFFIX:
        raise ConfigError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _SUFFIX[fmt]


def format_of(path: Path | str) -> str | None:
    """The format an output name asks for, by its suffix; None if it names none."""
    name = str(path).rstrip("/\\").lower()
    if name.endswith(OME_TIFF_SUFFIXES):
        return "ome-tiff"
    if name.endswith(ZARR_SUFFIX):
        return "ome-zarr"
    return None


def check_output_path(path: Path, fmt: str | None = None) -> tuple[Path, str]:
    """An output file name must end in a known format's suffix (and agree with ``fmt`` when
    one is given): anything else is refused, never renamed. Returns the path and its format."""
    found = format_of(path)
    if found is None:
        raise ConfigError(f"{path}: unknown output suffix; expected a name ending in "
                          f"{', '.join(OME_TIFF_SUFFIXES)} (OME-TIFF) or {ZARR_SUFFIX} (OME-Zarr)")
    if fmt is not None and fmt != found:
        raise ConfigError(f"{path}: the name says {found} but --format says {fmt}")
    return path, found


def strip_output_suffix(name: str) -> str:
    """A name without its output format's suffix."""
    low = name.lower()
    for ext in (*OME_TIFF_SUFFIXES, ZARR_SUFFIX):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def write_image(path: Path, data: np.ndarray, meta: OmeMeta) -> Path:
    """Write ``data`` (leading axes ``meta.axes`` + YX) in the format its name selects."""
    _, fmt = check_output_path(path)
    if fmt == "ome-tiff":
        return write_ome_tiff(path, data, meta)
    return write_ome_zarr(path, data, meta.axes, ZarrMeta(
        pixel_size_um=meta.pixel_size_um, z_step_um=meta.z_step_um,
        time_increment_s=meta.time_increment_s, channel_names=list(meta.channel_names),
        description=meta.description))
