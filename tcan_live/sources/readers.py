"""Readers: ND2 (nd2), TIFF / OME-TIFF / ImageJ / Micro-Manager MMStack (tifffile), NDTiff
(ndstorage). Each yields 2-D frames with their indices and metadata.

A reader describes its stack with :class:`StackInfo`: the leading axes in array order (letters
from ``PTCZ``: position, time, channel, z; the plane is always YX) and their sizes, so that a
writer can reproduce the layout. :meth:`StackReader.planes` yields ``(array index, Frame)`` in
the file's natural order; ``start`` skips planes already seen (the daemon uses this).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from tcan_live.errors import ReadError, UnsupportedInputError
from tcan_live.frame import Frame, StackInfo, make_frame
from tcan_live.sources import tiffmeta

log = logging.getLogger(__name__)
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32",
                    "float64")


class StackReader(Protocol):
    info: StackInfo

    def planes(self, start: int = 0) -> Iterator[tuple[tuple[int, ...], Frame]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


MAX_PLANE_PIXELS = 2**28  # 16384 x 16384: a header claiming more is refused before reading


def check_plane_size(path: Path, shape: tuple[int, int], dtype: np.dtype[Any]) -> None:
    """Refuse absurd frame sizes from a header before anything is allocated."""
    n = int(shape[0]) * int(shape[1])
    if n > MAX_PLANE_PIXELS or min(shape) < 1:
        raise UnsupportedInputError(path, f"frame of {shape[0]} x {shape[1]} px: outside "
                                          f"1 .. {MAX_PLANE_PIXELS} px per frame")


def check_dtype(path: Path, dtype: np.dtype[Any]) -> None:
    if dtype.name not in SUPPORTED_DTYPES:
        raise UnsupportedInputError(path, f"pixel type {dtype} is not supported "
                                          f"(expected one of {', '.join(SUPPORTED_DTYPES)})")


class _Closing:
    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# ND2


class ND2Reader(_Closing):
    def __init__(self, path: Path) -> None:
        import nd2

        self.path = path
        try:
            self._f = nd2.ND2File(path)
        except Exception as err:
            raise ReadError(path, f"not a readable ND2 file ({type(err).__name__}: {err})") from err
        try:
            self.info = self._describe()
        except UnsupportedInputError:
            self._f.close()
            raise
        except Exception as err:
            self._f.close()
            reason = ("incomplete ND2 (no chunk map at the end: truncated or still being written)"
                      if "ChunkMap" in str(err) else f"corrupt ND2 ({type(err).__name__}: {err})")
            raise ReadError(path, reason) from err

    def _describe(self) -> StackInfo:
        f = self._f
        sizes = dict(f.sizes)
        if sizes.get("S", 1) > 1:
            raise UnsupportedInputError(self.path, "RGB ND2 files are not supported")
        check_dtype(self.path, np.dtype(f.dtype))
        unknown = set(sizes) - {"T", "P", "Z", "C", "Y", "X", "S"}
        if unknown:
            raise UnsupportedInputError(self.path, f"unsupported ND2 axes {sorted(unknown)}")
        axes = "".join(a for a in sizes if a in "TPZC")
        vox = f.voxel_size()
        names = tuple(c.channel.name for c in (f.metadata.channels or []))
        period = None
        for loop in f.experiment:
            if loop.type == "TimeLoop":
                period = (loop.parameters.periodDiff.avg or loop.parameters.periodMs) / 1000.0
        return StackInfo(
            path=self.path, format="nd2", axes=axes, shape=tuple(sizes[a] for a in axes),
            plane_shape=(sizes["Y"], sizes["X"]), dtype=np.dtype(f.dtype),
            pixel_size_um=float(vox.x) if vox.x and vox.x > 0 else None, channel_names=names,
            time_increment_s=period or None, z_step_um=float(vox.z) if "Z" in axes else None,
        )

    def planes(self, start: int = 0) -> Iterator[tuple[tuple[int, ...], Frame]]:
        info = self.info
        n_c = info.shape[info.axes.index("C")] if "C" in info.axes else 1
        for seq, loop in enumerate(self._f.loop_indices):
            if (seq + 1) * n_c <= start:
                continue
            # copy: nd2 returns a view into its memory map, invalid once the file is closed
            frame = np.array(self._f.read_frame(seq)).reshape(n_c, *info.plane_shape)
            for c in range(n_c):
                if seq * n_c + c < start:
                    continue
                pos = {**loop, "C": c}
                idx = tuple(int(pos.get(a, 0)) for a in info.axes)
                yield idx, make_frame(info, idx, frame[c], self._time(seq, c))

    def sequence_checksum(self, seq: int) -> int | None:
        """crc32 of sequence frame ``seq`` as (C, Y, X) bytes (checks live-read frames)."""
        try:
            info = self.info
            n_c = info.shape[info.axes.index("C")] if "C" in info.axes else 1
            frame = np.array(self._f.read_frame(seq)).reshape(n_c, *info.plane_shape)
        except Exception:
            return None
        return zlib.crc32(np.ascontiguousarray(frame).tobytes())

    def _time(self, seq: int, c: int) -> float | None:
        try:
            meta: Any = self._f.frame_metadata(seq)
            return float(meta.channels[c].time.relativeTimeMs) / 1000.0
        except (IndexError, AttributeError, KeyError, ValueError):
            return None

    def close(self) -> None:
        self._f.close()


# ---------------------------------------------------------------------------------------------
# TIFF family


class TiffReader(_Closing):
    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series
        except Exception as err:
            reason = f"not a readable TIFF file ({type(err).__name__}: {err})"
            raise ReadError(path, reason) from err
        if not series:
            self._tif.close()
            raise ReadError(path, "TIFF file holds no images")
        if not tiffmeta.first_header_on_disk(self._tif):
            self._tif.close()  # still being written or copied: its layout is not known yet
            raise ReadError(path, "the first image header's values (e.g. its description) "
                                  "are not all on disk yet")
        try:
            self.info, self._n_series = tiffmeta.describe(path, self._tif)
            check_plane_size(path, self.info.plane_shape, self.info.dtype)
            check_dtype(path, self.info.dtype)
        except Exception:
            self._tif.close()
            raise

    def _data_end(self, k: int) -> float | None:
        """Byte just past page ``k``'s pixel data (None: the page names no pixel data; inf:
        the page's own header (IFD) is not all on disk yet, as while a writer appends it)."""
        try:
            page: Any = self._tif.pages[k]
        except Exception:  # tifffile: "corrupted IFD structure" for an IFD cut by the file end
            return math.inf
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)]
        return max(ends) if ends else None

    def incomplete_page(self) -> str | None:
        """Why the first page whose pixel data is not all on disk is incomplete, or None."""
        size = self._tif.filehandle.size
        for k in range(len(self._tif.pages)):
            end = self._data_end(k)
            if end is None or end > size:
                if end == math.inf:
                    return f"truncated: the header of page {k} is cut by the file's end"
                return (f"truncated: the pixel data of page {k} ends at byte "
                        f"{end if end is not None else '?'}, the file has {size} bytes")
        return None

    def ready_planes(self, settled: bool) -> int:
        """How many leading planes of a file that may still grow are complete on disk.

        A page counts when all its pixel bytes lie within the file; the last page present also
        needs ``settled`` (no change for the settle window, or the writer closed the file),
        because the writer may still update it.
        """
        n_pages = len(self._tif.pages)
        size = self._tif.filehandle.size
        ready = 0
        for k in range(min(self.info.n_planes, n_pages)):
            end = self._data_end(k)
            if end is None or end > size or (k == n_pages - 1 and not settled):
                break
            ready = k + 1
        return ready

    def planes(self, start: int = 0,
               stop: int | None = None) -> Iterator[tuple[tuple[int, ...], Frame]]:
        info = self.info
        per_series = info.n_planes // self._n_series
        times = info.extra.get("plane_times", {})
        for k in range(start, info.n_planes if stop is None else stop):
            s, key = divmod(k, per_series)
            try:
                data = self._tif.series[s].asarray(key=key)
            except Exception as err:
                raise ReadError(self.path, f"plane {k} unreadable ({type(err).__name__}: "
                                           f"{err})") from err
            idx = tuple(int(i) for i in np.unravel_index(k, info.shape)) if info.shape else ()
            data = np.asarray(data).reshape(info.plane_shape)
            yield idx, make_frame(info, idx, data, times.get(idx))

    def close(self) -> None:
        self._tif.close()


# ---------------------------------------------------------------------------------------------
# NDTiff (Micro-Manager 2 / pycromanager)

NDTIFF_AXES = {"position": "P", "time": "T", "channel": "C", "z": "Z"}


class NDTiffReader(_Closing):
    def __init__(self, path: Path) -> None:
        from ndstorage import Dataset

        self.path = path
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ndstorage prints progress
                self._ds = Dataset(str(path))
        except Exception as err:
            raise ReadError(path, f"not a readable NDTiff dataset ({type(err).__name__}: "
                                  f"{err})") from err
        try:
            self.info = self._describe()
        except (ReadError, UnsupportedInputError):
            self._ds.close()
            raise
        except Exception as err:  # e.g. a dataset still being written
            self._ds.close()
            raise ReadError(path, f"NDTiff dataset not readable yet ({type(err).__name__}: "
                                  f"{err})") from err

    def _describe(self) -> StackInfo:
        ds = self._ds
        keys = self._keys()
        if not keys:
            raise ReadError(self.path, "NDTiff dataset holds no images yet")
        seen: dict[str, list[Any]] = {}
        for key in keys:
            for name, value in key:
                if value not in seen.setdefault(name, []):
                    seen[name].append(value)
        bad = [k for k, v in seen.items() if k not in NDTIFF_AXES and len(v) > 1]
        if bad:
            raise UnsupportedInputError(self.path, f"unsupported NDTiff axes {bad}")
        names = [k for k in NDTIFF_AXES if k in seen]
        # numbers index themselves; names (channels) are numbered in order of first appearance,
        # so the numbering of a growing dataset never changes
        self._index: dict[str, dict[Any, int]] = {
            k: ({v: int(v) for v in seen[k]} if all(isinstance(v, int) for v in seen[k])
                else {v: i for i, v in enumerate(seen[k])}) for k in names}
        first = ds.read_metadata(**dict(keys[0]))
        # while a dataset is being written the summary may lack the image size: use an image
        first_image = np.asarray(ds.read_image(**dict(keys[0])))
        px = first.get("PixelSizeUm") or ds.summary_metadata.get("PixelSize_um")
        channels = tuple(str(c) for c in seen.get("channel", []))
        return StackInfo(
            path=self.path, format="ndtiff", axes="".join(NDTIFF_AXES[k] for k in names),
            shape=tuple(max(self._index[k].values()) + 1 for k in names),
            plane_shape=(int(first_image.shape[0]), int(first_image.shape[1])),
            dtype=first_image.dtype, pixel_size_um=float(px) if px else None,
            channel_names=channels,
            time_increment_s=_ms(ds.summary_metadata.get("Interval_ms")),
        )

    def _keys(self) -> list[tuple[tuple[str, Any], ...]]:
        """Image keys in the order of the index (acquisition order)."""
        return [tuple(sorted(dict(k).items())) for k in self._ds.index]

    def planes(self, start: int = 0) -> Iterator[tuple[tuple[int, ...], Frame]]:
        names = [k for k in NDTIFF_AXES if k in self._index]
        for key in self._keys()[start:]:
            axes = dict(key)
            idx = tuple(self._index[n].get(axes.get(n), 0) for n in names)
            data = np.array(self._ds.read_image(**axes))  # copy out of the memory map
            meta = self._ds.read_metadata(**axes)
            yield idx, make_frame(self.info, idx, data, _ms(meta.get("ElapsedTime-ms")))

    def close(self) -> None:
        self._ds.close()


def _ms(value: Any) -> float | None:
    try:
        return float(value) / 1000.0 if value is not None else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------


def is_ndtiff_dir(path: Path) -> bool:
    return path.is_dir() and (path / "NDTiff.index").is_file()


def open_stack(path: str | Path) -> StackReader:
    """Open an ND2 file, a TIFF-family file, an NDTiff dataset folder or a zarr dataset
    (``*.zarr``, ``*.ome.zarr``: sources/zarrsrc.py)."""
    from tcan_live.sources.formats import input_kind

    path = Path(path)
    if not path.exists():
        raise ReadError(path, "no such file")
    kind = input_kind(path)
    if kind == "zarr" and path.is_dir():
        from tcan_live.sources.zarrsrc import ZarrReader

        return ZarrReader(path)
    if kind == "ndtiff":
        return NDTiffReader(path if path.is_dir() else path.parent)
    if path.is_dir():
        raise UnsupportedInputError(path, "a folder that is neither an NDTiff dataset nor a "
                                          "*.zarr dataset")
    if path.stat().st_size == 0:
        raise ReadError(path, "file is empty (0 bytes)")
    if kind == "nd2":
        return ND2Reader(path)
    if kind == "tiff":
        return TiffReader(path)
    raise UnsupportedInputError(path, f"unsupported file type {path.suffix or '(none)'!r}; "
                                      "expected .nd2, .tif/.tiff, an NDTiff folder or a *.zarr "
                                      "dataset")


def read_frames(path: str | Path, start: int = 0) -> Iterator[Frame]:
    reader = open_stack(path)
    try:
        for _, frame in reader.planes(start):
            yield frame
    finally:
        reader.close()
