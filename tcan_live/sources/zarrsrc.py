"""Zarr acquisitions (OME-Zarr / NGFF 0.4 and 0.5, plain zarr v2/v3 arrays with named axes), read
whole or while they grow.

What is understood, all through ``zarr`` (no format code here):

- an NGFF image group: one stack position per ``multiscales`` entry (its first, full-resolution
  dataset), axes by name from the metadata, the pixel size and Z step from the dataset's scale
  and the axes' units, the time increment from the time axis, channel names from ``omero``
  (pymmcore-plus's ``OMEZarrWriter`` writes this, one multiscale per position ``p<k>``);
- a plain array at the root whose axes are named (zarr v3 ``dimension_names``, zarr v2
  ``_ARRAY_DIMENSIONS``), as pymmcore-plus's ``TensorStoreHandler`` writes it (``driver=
  "zarr3"``); its per-frame metadata (pixel size, channel names), written when the
  acquisition ends, is taken then.

Axis names: ``t``/``time``, ``c``/``channel``, ``z``, ``p``/``position``, then ``y``, ``x``
(case ignored); other axes of size 1 are dropped, larger ones refused.

**While it grows** a plane counts when every chunk that holds it exists on disk (zarr and
tensorstore write each chunk file atomically). Chunks that hold several planes (or shards)
cannot say whether all their planes are written: such planes are read only once the dataset
has been quiet for a while (the folder source's ``give_up_s``). zarr does not store a chunk
that equals the fill value everywhere, so an all-fill plane is never seen as written.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.errors import ReadError, UnsupportedInputError
from tcan_live.frame import Frame, StackInfo, make_frame
from tcan_live.sources.formats import ZARR_DIR_SUFFIX
from tcan_live.sources.readers import SUPPORTED_DTYPES, check_plane_size
from tcan_live.sources.tiffmeta import ENHANCED_MARKERS, TIME_TO_S, UNIT_TO_UM

METADATA_FILES = ("zarr.json", ".zgroup", ".zarray")
_AXIS = {"t": "T", "time": "T", "c": "C", "channel": "C", "ch": "C", "z": "Z", "p": "P",
         "position": "P", "pos": "P"}


def dataset_root(path: Path, below: Path | None = None) -> Path | None:
    """The zarr dataset a path belongs to: its outermost folder named ``*.zarr`` (below
    ``below`` when given), or None."""
    path = Path(path)
    found = None
    for d in [path, *path.parents]:
        if below is not None and (d == below or below not in d.parents):
            break
        if d.name.lower().endswith(ZARR_DIR_SUFFIX):
            found = d
    return found


def metadata_file(root: Path) -> Path | None:
    """The dataset's root metadata file (its stat says when the dataset's layout changed)."""
    return next((root / n for n in METADATA_FILES if (root / n).is_file()), None)


@dataclass
class _Image:
    array: Any
    dims: list[str]  # "T", "C", "Z", "P" or "" (a dropped axis of size 1) per leading dim


class ZarrReader:
    """A zarr acquisition as a stack (``StackReader``), plus :meth:`written_planes` for one
    still being written."""

    def __init__(self, path: Path) -> None:
        import zarr

        self.path = Path(path)
        if metadata_file(self.path) is None:
            raise ReadError(self.path, "no zarr metadata (zarr.json / .zgroup / .zarray) yet")
        try:
            node = zarr.open(str(self.path), mode="r")
        except Exception as err:  # zarr's errors for a half-written or foreign folder vary
            raise ReadError(self.path, f"not readable as zarr ({type(err).__name__}: {err})") \
                from err
        self.images, meta = self._images(node)
        self.info = self._describe(meta)
        ours = dict(node.attrs).get("tcan_live")
        # tcan-live's own output (export/omezarr.py writes this attribute): never enhanced again
        self.enhanced = isinstance(ours, dict) and any(
            m in str(ours.get("description", "")) for m in ENHANCED_MARKERS)
        self.info.extra["written_by_tcan_live"] = isinstance(ours, dict)

    # -- layout -------------------------------------------------------------------------------
    def _images(self, node: Any) -> tuple[list[_Image], dict[str, Any]]:
        attrs = dict(node.attrs)
        ome = attrs.get("ome", attrs)  # NGFF 0.5 nests its metadata under "ome"
        if isinstance(ome, dict) and ome.get("multiscales"):
            images, meta = [], {"omero": ome.get("omero"), "scale": None}
            for ms in ome["multiscales"]:
                ds = ms["datasets"][0]
                names = [a["name"] if isinstance(a, dict) else str(a) for a in ms["axes"]]
                images.append(_Image(node[ds["path"]], self._dims(names, node[ds["path"]])))
                if meta["scale"] is None:
                    meta.update(scale=_scale(ds, ms), axes=ms["axes"])
            return images, meta
        if hasattr(node, "shape"):  # a plain array at the root
            names = list(getattr(node.metadata, "dimension_names", None) or
                         attrs.get("_ARRAY_DIMENSIONS") or [])
            if not names:
                raise UnsupportedInputError(self.path, "a zarr array without axis names "
                                                       "(dimension_names)")
            if "frame_metadatas" not in attrs and (self.path / ".zattrs").is_file():
                # pymmcore-plus's TensorStoreHandler writes its frame metadata to .zattrs at the
                # end, also beside a zarr v3 array (whose attributes zarr reads from zarr.json)
                with contextlib.suppress(ValueError, OSError):
                    attrs = {**attrs, **json.loads((self.path / ".zattrs").read_text("utf-8"))}
            return [_Image(node, self._dims(names, node))], {"frames": attrs}
        raise UnsupportedInputError(self.path, "a zarr group that is not an OME-Zarr image "
                                               "(no multiscales)")

    def _dims(self, names: list[str], array: Any) -> list[str]:
        if len(names) != array.ndim or array.ndim < 2:
            raise UnsupportedInputError(self.path, f"axes {names} do not fit an array of "
                                                   f"{array.ndim} dimensions")
        if [n.lower() for n in names[-2:]] != ["y", "x"]:
            raise UnsupportedInputError(self.path, f"the last two axes are {names[-2:]}, not y, "
                                                   "x")
        dims = []
        for name, size in zip(names[:-2], array.shape[:-2], strict=True):
            letter = _AXIS.get(str(name).lower(), "")
            if not letter and size > 1:
                raise UnsupportedInputError(self.path, f"unsupported axis {name!r} "
                                                       f"(size {size})")
            dims.append(letter)
        if len([d for d in dims if d]) != len({d for d in dims if d}):
            raise UnsupportedInputError(self.path, f"axes {names} name one axis twice")
        return dims

    def _describe(self, meta: dict[str, Any]) -> StackInfo:
        first = self.images[0].array
        dtype = np.dtype(first.dtype)
        if dtype.name not in SUPPORTED_DTYPES:
            raise UnsupportedInputError(self.path, f"unsupported pixel type {dtype}")
        plane = (int(first.shape[-2]), int(first.shape[-1]))
        check_plane_size(self.path, plane, dtype)
        letters = [a for a in "TCZ" if any(a in im.dims for im in self.images)]
        sizes = {a: max(im.array.shape[im.dims.index(a)] for im in self.images if a in im.dims)
                 for a in letters}
        axes = ("P" if len(self.images) > 1 or any("P" in im.dims for im in self.images)
                else "") + "".join(letters)
        if "P" in axes:
            sizes["P"] = sum(im.array.shape[im.dims.index("P")] if "P" in im.dims else 1
                             for im in self.images)
        px = z = dt = None
        names: tuple[str, ...] = ()
        if meta.get("scale"):
            px, z, dt = meta["scale"]
            channels = (meta.get("omero") or {}).get("channels") or []
            names = tuple(str(c.get("label", f"C{i}")) for i, c in enumerate(channels))
        elif meta.get("frames"):
            px, names = _mm_frame_metadata(meta["frames"])
        return StackInfo(path=self.path, format="zarr", axes=axes,
                         shape=tuple(int(sizes[a]) for a in axes), plane_shape=plane,
                         dtype=dtype, pixel_size_um=px, channel_names=names,
                         time_increment_s=dt, z_step_um=z)

    # -- planes -------------------------------------------------------------------------------
    def _coords(self) -> Iterator[tuple[tuple[int, ...], _Image, tuple[int, ...]]]:
        """(stack index in ``info.axes`` order, image, array index of the plane), in order."""
        p0 = 0
        for im in self.images:
            lead = im.array.shape[:-2]
            for aidx in itertools.product(*(range(n) for n in lead)):
                pos = {d: i for d, i in zip(im.dims, aidx, strict=True) if d}
                p = p0 + pos.get("P", 0)
                idx = tuple(p if a == "P" else pos.get(a, 0) for a in self.info.axes)
                yield idx, im, aidx
            p0 += im.array.shape[im.dims.index("P")] if "P" in im.dims else 1

    def _frame(self, idx: tuple[int, ...], im: _Image, aidx: tuple[int, ...]) -> Frame:
        data = np.asarray(im.array[aidx])
        return make_frame(self.info, idx, data, None)

    def planes(self, start: int = 0) -> Iterator[tuple[tuple[int, ...], Frame]]:
        for idx, im, aidx in itertools.islice(self._coords(), start, None):
            yield idx, self._frame(idx, im, aidx)

    def one_plane_per_chunk(self) -> bool:
        return all(getattr(im.array, "shards", None) is None and
                   all(n == 1 for n in im.array.chunks[:-2]) for im in self.images)

    def _written(self, im: _Image, aidx: tuple[int, ...]) -> bool:
        arr = im.array
        cy, cx = (shards if (shards := getattr(arr, "shards", None)) else arr.chunks)[-2:]
        lead = tuple(i // c for i, c in zip(aidx, arr.chunks[:-2], strict=True))
        tiles = itertools.product(range(math.ceil(arr.shape[-2] / cy)),
                                  range(math.ceil(arr.shape[-1] / cx)))
        base = self.path / arr.path if arr.path else self.path
        return all((base / arr.metadata.encode_chunk_key((*lead, ty, tx))).is_file()
                   for ty, tx in tiles)

    def written_planes(self, skip: set[tuple[int, ...]], *, multi_ok: bool
                       ) -> Iterator[tuple[tuple[int, ...], Frame]]:
        """The planes whose chunks are all on disk, except those in ``skip``. Planes in
        chunks holding several planes only with ``multi_ok`` (the dataset has been quiet)."""
        if not (multi_ok or self.one_plane_per_chunk()):
            return
        for idx, im, aidx in self._coords():
            if idx not in skip and self._written(im, aidx):
                yield idx, self._frame(idx, im, aidx)

    def close(self) -> None:
        pass

    def __enter__(self) -> ZarrReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scale(ds: dict[str, Any], ms: dict[str, Any]) -> tuple[float | None, float | None,
                                                             float | None]:
    """(pixel size um, Z step um, time increment s) from an NGFF dataset's scale and units;
    None where the unit is missing or unknown."""
    scale = None
    for tr in [*(ds.get("coordinateTransformations") or []),
               *(ms.get("coordinateTransformations") or [])]:
        if tr.get("type") == "scale":
            scale = [float(v) * (scale[i] if scale else 1.0) for i, v in enumerate(tr["scale"])]
    if scale is None:
        return None, None, None
    out: dict[str, float | None] = {"x": None, "z": None, "t": None}
    for k, axis in enumerate(ms["axes"]):
        if not isinstance(axis, dict):
            continue
        name, unit = str(axis.get("name", "")).lower(), str(axis.get("unit") or "").lower()
        if name in ("x", "z") and unit in UNIT_TO_UM:
            out[name] = scale[k] * UNIT_TO_UM[unit]
        elif name in ("t", "time") and unit in TIME_TO_S:
            out["t"] = scale[k] * TIME_TO_S[unit]
    return out["x"], out["z"], out["t"]


def _mm_frame_metadata(attrs: dict[str, Any]) -> tuple[float | None, tuple[str, ...]]:
    """pymmcore-plus's per-frame metadata (written when the acquisition ends): the pixel size
    and the channel names in index order."""
    frames = attrs.get("frame_metadatas")
    if not isinstance(frames, list) or not frames:
        return None, ()
    px = frames[0].get("pixel_size_um") if isinstance(frames[0], dict) else None
    names: dict[int, str] = {}
    for f in frames:
        event = f.get("mda_event", {}) if isinstance(f, dict) else {}
        c = event.get("index", {}).get("c")
        config = (event.get("channel") or {}).get("config")
        if isinstance(c, int) and config:
            names.setdefault(c, str(config))
    ordered = tuple(names[c] for c in range(len(names))) if set(names) == set(range(len(names))) \
        else ()
    return (float(px) if isinstance(px, int | float) else None), ordered
