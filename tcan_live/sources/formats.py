"""What kind of input a path is: the one place that decides (the folder source and
``open_stack`` both ask here).

By name first (a file being written may have no bytes yet; folders have no content to read):
``*.zarr`` folders and everything inside them are zarr datasets, a folder (or a TIFF beside) with
``NDTiff.index`` is NDTiff, ``.nd2`` is ND2, :data:`TIFF_SUFFIXES` are TIFF. When a file's first
bytes are on disk they decide: an ND2 named ``.tif`` is read as ND2 and a TIFF named ``.nd2`` as
TIFF (the magic numbers: ND2 v3 chunk magic, JPEG 2000 signature of ND2 v1/v2, classic and Big
TIFF in either byte order).
"""

from __future__ import annotations

from pathlib import Path

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
ZARR_DIR_SUFFIX = ".zarr"
_ND2_MAGIC = (b"\xda\xce\xbe\x0a", b"\x00\x00\x00\x0cjP  ")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def kind_by_name(path: Path) -> str | None:
    """``zarr`` | ``ndtiff`` | ``nd2`` | ``tiff`` | None, from the path alone."""
    if any(d.name.lower().endswith(ZARR_DIR_SUFFIX) for d in (path, *path.parents)):
        return "zarr"
    if path.name == "NDTiff.index":
        return "ndtiff"
    suffix = path.suffix.lower()
    if suffix == ".nd2":
        return "nd2"
    if suffix in TIFF_SUFFIXES:
        return "ndtiff" if (path.parent / "NDTiff.index").exists() else "tiff"
    return None


def kind_by_content(path: Path) -> str | None:
    """``nd2`` | ``tiff`` | None, from the file's first bytes (None: too short, unreadable or
    neither)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return None
    if head.startswith(_ND2_MAGIC):
        return "nd2"
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    return None


def input_kind(path: Path) -> str | None:
    """The kind of an input file or dataset folder: the content decides between ND2 and TIFF
    where the first bytes are there, the name decides everything else."""
    path = Path(path)
    by_name = kind_by_name(path)
    if path.is_dir() or by_name in ("zarr", "ndtiff"):
        if path.is_dir() and by_name is None and (path / "NDTiff.index").is_file():
            return "ndtiff"
        return by_name
    return kind_by_content(path) or by_name
