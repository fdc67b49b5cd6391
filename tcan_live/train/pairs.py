"""Training pairs on disk: confocal (LR) / STED (HR) images, and the simulator's writer.

Two layouts are read:

* **split folders**: ``PAIRS/lr/NAME`` and ``PAIRS/hr/NAME`` (also ``confocal/``+``sted/``), matched
  by identical file name; files present on one side only are reported and skipped;
* **pair stacks**: every ``*.tif``/``*.tiff`` in ``PAIRS`` (or ``PAIRS`` itself) holds the confocal
  and STED images as planes of one multi-page TIFF; ``planes=(0, 1)`` by default (confocal first),
  which is what the simulator writes and what the TA-GAN files in shared/data/confocal_sted use.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from tcan_live.errors import ReadError
from tcan_live.sim.simulate import PairImage
from tcan_live.sources.formats import TIFF_SUFFIXES

if TYPE_CHECKING:
    from tcan_live.sim.domain import BroadPair

log = logging.getLogger(__name__)
SPLIT_NAMES = (("lr", "hr"), ("confocal", "sted"))


@dataclass(frozen=True)
class Pair:
    name: str
    confocal: np.ndarray  # float32 (Y, X)
    sted: np.ndarray  # float32 (Y, X)
    pixel_size_um: float | None = None


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)


def _pixel_size(tif: tifffile.TiffFile) -> float | None:
    """The file's pixel size in um, units honoured (the readers' one rule)."""
    from tcan_live.sources.tiffmeta import describe

    try:
        info, _ = describe(Path(tif.filehandle.path), tif)
    except Exception:  # an odd layout: the pixel size is then unknown, the pixels still read
        return None
    return info.pixel_size_um


def _plane(path: Path) -> tuple[np.ndarray, float | None]:
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            px = _pixel_size(tif)
    except Exception as err:  # tifffile raises many types for broken files
        raise ReadError(path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ReadError(path, f"expected one 2-D image, found shape {data.shape}")
    return data.astype(np.float32), px


def read_pair_stack(path: Path, planes: Sequence[int] = (0, 1)) -> Pair:
    try:
        with tifffile.TiffFile(path) as tif:
            data = np.squeeze(tif.asarray())
            px = _pixel_size(tif)
    except Exception as err:
        raise ReadError(path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
    if data.ndim != 3 or data.shape[0] <= max(planes):
        raise ReadError(path, f"expected a stack with planes {tuple(planes)}, found {data.shape}")
    conf, sted = (data[i].astype(np.float32) for i in planes)
    return Pair(path.name, conf, sted, px)


def iter_pairs(path: Path, planes: Sequence[int] = (0, 1)) -> Iterator[Pair]:
    path = Path(path)
    if path.is_file():
        yield read_pair_stack(path, planes)
        return
    if not path.is_dir():
        raise ReadError(path, "no such file or folder")
    for lr_name, hr_name in SPLIT_NAMES:
        lr_dir, hr_dir = path / lr_name, path / hr_name
        if lr_dir.is_dir() and hr_dir.is_dir():
            yield from _iter_split(lr_dir, hr_dir)
            return
    for f in _tiffs(path):
        yield read_pair_stack(f, planes)


def _iter_split(lr_dir: Path, hr_dir: Path) -> Iterator[Pair]:
    lr = {p.name: p for p in _tiffs(lr_dir)}
    hr = {p.name: p for p in _tiffs(hr_dir)}
    for name in sorted(set(lr) ^ set(hr)):
        log.warning("pair %s has no partner in %s; skipped", name, hr_dir if name in lr else lr_dir)
    for name in sorted(set(lr) & set(hr)):
        conf, px = _plane(lr[name])
        sted, _ = _plane(hr[name])
        if conf.shape != sted.shape:
            raise ReadError(hr[name], f"shape {sted.shape} differs from LR shape {conf.shape}")
        yield Pair(name, conf, sted, px)


def load_pairs(path: Path, planes: Sequence[int] = (0, 1)) -> list[Pair]:
    pairs = list(iter_pairs(path, planes))
    if not pairs:
        raise ReadError(path, "no training pairs found (see the layouts in docs/training.md)")
    return pairs


# ---------------------------------------------------------------------------------------------
# writing (simulator output)


def write_pair_stack(path: Path, pair: PairImage | BroadPair) -> None:
    """An OME-TIFF with planes (confocal, sted), pixel size and channel names; atomic."""
    px = pair.optics.pixel_size_um
    tmp = path.with_name(path.name + ".part")
    tifffile.imwrite(
        tmp,
        np.stack([pair.confocal, pair.sted]).astype(np.float32),
        ome=True,
        metadata={
            "axes": "CYX",
            "PhysicalSizeX": px,
            "PhysicalSizeY": px,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
            "Channel": {"Name": ["confocal", "sted"]},
            "Description": json.dumps(pair.params()),
        },
    )
    os.replace(tmp, path)


def write_manifest(folder: Path, rows: list[dict[str, object]]) -> Path:
    path = folder / "manifest.csv"
    flat = [_flatten(r) for r in rows]
    keys = sorted({k for r in flat for k in r})
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
    return path


def _flatten(d: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = " ".join(map(str, v)) if isinstance(v, list | tuple) else v
    return out
