"""OME-Zarr (NGFF 0.5, zarr v3) output: whole images at once, and a store that grows plane by plane.

The layout, the same for both (documented in docs/architecture.md):

- the root group is an NGFF image; its ``multiscales`` list has one entry per stage position
  (``name`` "position <p>"), whose single dataset is the array ``p<p>``: viewers that show one
  image show position 0; tools that read every multiscale see them all;
- every array has the axes ``t, c, z, y, x`` (size 1 where the stack has no such axis), float32,
  fill value NaN (a plane never written reads as NaN, as in the OME-TIFF), and **one chunk per
  plane** ``(1, 1, 1, Y, X)``: writing a plane writes one file, whatever the array's length;
- scales: the time increment (s), 1 for channels, the Z step and the pixel size (um), each with
  its unit where known (1 and no unit where not); channel names in ``omero.channels``; what made
  the file in the attribute ``tcan_live`` (outside ``ome``).

Metadata are built as ``ome_zarr_models`` objects and every finished file is validated by the
same library; arrays are zarr's. zarr's local store writes each file atomically (temporary name,
then rename), so a crash leaves a plane either whole or absent.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.frame import FrameIndex

AXES = "tczyx"
ZARR_SUFFIX = ".ome.zarr"


def _zarr() -> Any:
    import zarr  # a heavy import, deferred: only the saving paths need it

    return zarr


@dataclass
class ZarrMeta:
    """What the NGFF attributes say; ``None`` = unknown."""

    pixel_size_um: float | None = None
    z_step_um: float | None = None
    time_increment_s: float | None = None
    channel_names: Sequence[str] = ()
    description: str | None = None
    positions: Sequence[int] = (0,)
    extra: dict[str, Any] = field(default_factory=dict)


def dataset_path(p: int) -> str:
    return f"p{p}"


def ngff_attrs(meta: ZarrMeta) -> dict[str, Any]:
    """The root group's ``ome`` attribute, built and checked by ``ome_zarr_models``."""
    from ome_zarr_models.v05.axes import Axis
    from ome_zarr_models.v05.image import ImageAttrs
    from ome_zarr_models.v05.multiscales import Dataset, Multiscale

    def ok(v: float | None) -> bool:
        return v is not None and math.isfinite(v) and v > 0

    space = "micrometer" if ok(meta.pixel_size_um) else None
    axes = [Axis(name="t", type="time", unit="second" if ok(meta.time_increment_s) else None),
            Axis(name="c", type="channel"),
            Axis(name="z", type="space", unit="micrometer" if ok(meta.z_step_um) else None),
            Axis(name="y", type="space", unit=space),
            Axis(name="x", type="space", unit=space)]
    def value(v: float | None) -> float:
        return float(v) if v is not None and ok(v) else 1.0

    scale = [value(meta.time_increment_s), 1.0, value(meta.z_step_um),
             *[value(meta.pixel_size_um)] * 2]
    multiscales = [Multiscale(axes=axes, name=f"position {p}",
                              datasets=(Dataset.build(path=dataset_path(p), scale=scale,
                                                      translation=None),))
                   for p in sorted(meta.positions)]
    attrs = ImageAttrs(version="0.5", multiscales=multiscales)
    out: dict[str, Any] = attrs.model_dump(mode="json", exclude_none=True)
    if meta.channel_names:
        out["omero"] = {"channels": [{"label": str(n)} for n in meta.channel_names]}
    return out


def root_attrs(meta: ZarrMeta) -> dict[str, Any]:
    extra = dict(meta.extra)
    if meta.description:
        extra["description"] = meta.description
    return {"ome": ngff_attrs(meta), "tcan_live": extra}


def validate(path: Path) -> None:
    """Raise if ``path`` is not a valid NGFF 0.5 image (``ome_zarr_models``' own validation)."""
    from ome_zarr_models.v05.image import Image

    Image.from_zarr(_zarr().open_group(str(path), mode="r"))


def _create_array(group: Any, p: int, shape: tuple[int, ...]) -> Any:
    return group.create_array(dataset_path(p), shape=shape, chunks=(1, 1, 1, *shape[3:]),
                              dtype="float32", fill_value=float("nan"),
                              dimension_names=list(AXES), compressors=None)


def write_ome_zarr(path: Path, data: np.ndarray, axes: str, meta: ZarrMeta) -> Path:
    """Write ``data`` (leading axes ``axes``, letters of PTCZ, then YX) to ``path`` atomically:
    built under a temporary name beside it, validated, then renamed over any old one."""
    if data.ndim != len(axes) + 2:
        raise ValueError(f"data has {data.ndim} dims, axes {axes!r}+YX need {len(axes) + 2}")
    full = "PTCZ"
    order = [axes.index(a) for a in full if a in axes]
    block = np.transpose(data, [*order, data.ndim - 2, data.ndim - 1])
    present = "".join(a for a in full if a in axes)
    expand = tuple(i for i, a in enumerate(full) if a not in present)
    block = np.expand_dims(block, expand)  # (P, T, C, Z, Y, X)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tcan-{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        group = _zarr().open_group(str(tmp), mode="w-", zarr_format=3)
        positions = list(range(block.shape[0]))
        group.attrs.update(root_attrs(ZarrMeta(**{**meta.__dict__, "positions": positions})))
        for p in positions:
            arr = _create_array(group, p, block.shape[1:])
            arr[...] = np.asarray(block[p], np.float32)
        validate(tmp)
        _replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace_dir(new: Path, path: Path) -> None:
    """Put directory ``new`` at ``path``; an old one there is moved aside first, then removed."""
    old = None
    if path.exists():
        old = path.with_name(f".tcan-old-{uuid.uuid4().hex[:8]}.part")
        os.replace(path, old)
    os.replace(new, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class PlaneStore:
    """A growing OME-Zarr image, one chunk per plane (see the module doc).

    ``write`` puts one plane in place (growing the array's shape first when the plane lies
    beyond it: a rewrite of the array's small ``zarr.json``) and fsyncs its chunk, so bytes
    written per plane do not depend on how many planes exist. The root attributes are rewritten
    only when what they say changes (a new position, a learnt pixel size, channel names)."""

    def __init__(self, path: Path, plane_shape: tuple[int, ...], *,
                 read_only: bool = False) -> None:
        self.path, self.plane_shape = Path(path), tuple(int(n) for n in plane_shape)
        zarr = _zarr()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(str(self.path), mode="r" if read_only else "a",
                                     zarr_format=3)
        self.arrays: dict[int, Any] = {}
        for name, arr in self.group.arrays():
            if name.startswith("p") and name[1:].isdigit():
                self.arrays[int(name[1:])] = arr
        self._meta: ZarrMeta | None = None

    @classmethod
    def open_read_only(cls, path: Path, plane_shape: tuple[int, ...]) -> PlaneStore:
        """Another process's store (a daemon may be writing it): read, never written."""
        return cls(path, plane_shape, read_only=True)

    def set_meta(self, meta: ZarrMeta) -> None:
        meta = ZarrMeta(**{**meta.__dict__, "positions": sorted(self.arrays) or [0]})
        if meta != self._meta:  # built and written only when what it says changed
            self.group.attrs.put(root_attrs(meta))
            self._meta = meta

    def _array(self, p: int, tcz: tuple[int, int, int]) -> Any:
        arr = self.arrays.get(p)
        if arr is None:
            shape = (*(n + 1 for n in tcz), *self.plane_shape)
            arr = self.arrays[p] = _create_array(self.group, p, shape)
        elif any(i >= n for i, n in zip(tcz, arr.shape[:3], strict=True)):
            arr.resize((*(max(i + 1, n) for i, n in zip(tcz, arr.shape[:3], strict=True)),
                        *self.plane_shape))
        return arr

    def write(self, index: FrameIndex, plane: np.ndarray) -> None:
        if tuple(plane.shape) != self.plane_shape:
            raise ValueError(f"{self.path}: plane shape {plane.shape} differs from the "
                             f"stream's {self.plane_shape}")
        tcz = (index.t, index.c, index.z)
        arr = self._array(index.p, tcz)
        arr[tcz] = np.asarray(plane, np.float32)
        self._fsync(arr, (*tcz, 0, 0))

    def _fsync(self, arr: Any, coords: tuple[int, ...]) -> None:
        """Make the plane's chunk durable (a kill -9 cannot lose it anyway; a power cut can)."""
        key = arr.metadata.encode_chunk_key(coords)
        chunk = self.path / arr.path / key
        # Windows' fsync (_commit) needs a handle opened for writing; POSIX syncs any handle
        flags = os.O_RDWR if sys.platform == "win32" else os.O_RDONLY
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(chunk, flags | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, index: FrameIndex) -> np.ndarray:
        arr = self.arrays.get(index.p)
        if arr is None or any(i >= n for i, n in zip((index.t, index.c, index.z), arr.shape[:3],
                                                       strict=True)):
            return np.full(self.plane_shape, np.nan, np.float32)
        return np.asarray(arr[index.t, index.c, index.z])

    def written(self) -> set[FrameIndex]:
        """The planes with a chunk on disk."""
        found = set()
        for p, arr in self.arrays.items():
            for t, c, z in np.ndindex(*arr.shape[:3]):
                key = arr.metadata.encode_chunk_key((t, c, z, 0, 0))
                if (self.path / arr.path / key).is_file():
                    found.add(FrameIndex(t, c, z, p))
        return found

    def keep_only(self, keep: Iterable[FrameIndex]) -> int:
        """Remove every plane not in ``keep`` (planes written before a crash but never
        journaled) and temporary files left by one; returns how many planes were removed."""
        keep = set(keep)
        removed = 0
        for index in self.written() - keep:
            arr = self.arrays[index.p]
            key = arr.metadata.encode_chunk_key((index.t, index.c, index.z, 0, 0))
            (self.path / arr.path / key).unlink()
            removed += 1
        for tmp in self.path.rglob("*.partial"):
            tmp.unlink()
        return removed

    def block(self, p: int, size: tuple[int, int, int]) -> np.ndarray:
        """Position ``p`` as a (T, C, Z, Y, X) array of ``size`` (NaN where not written)."""
        out = np.full((*size, *self.plane_shape), np.nan, np.float32)
        arr = self.arrays.get(p)
        if arr is not None:
            n = [min(a, b) for a, b in zip(size, arr.shape[:3], strict=True)]
            out[: n[0], : n[1], : n[2]] = arr[: n[0], : n[1], : n[2]]
        return out
