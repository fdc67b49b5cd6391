"""Indices from file names (image-per-file saving) and which files to ignore.

``cells_c1_t0003.tif`` and Micro-Manager's ``img_channel001_position000_time000000003_z000.tif``
both belong to one stream (the name with the index tokens removed) at t=3, c=1.
"""

from __future__ import annotations

import re
from pathlib import Path

from tcan_live.frame import FrameIndex

_TOKEN = re.compile(
    r"(?P<sep>^|[_\-. ])(?P<key>time|frame|t|channel|ch|c|slice|z|position|pos|p)(?P<num>\d+)"
    r"(?=$|[_\-. ])",
    re.IGNORECASE,
)
_FIELD = {"time": "t", "frame": "t", "t": "t", "channel": "c", "ch": "c", "c": "c", "slice": "z",
          "z": "z", "position": "p", "pos": "p", "p": "p"}
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~", ".lock")


def is_ignored(path: Path) -> bool:
    """Hidden and temporary names (written-then-renamed files show up under their final name)."""
    name = path.name
    return name.startswith((".", "~$")) or name.lower().endswith(TEMP_SUFFIXES)


# image suffixes, longest first: the one rule for turning a file name into a stem
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".btf", ".nd2", ".zarr")


def strip_image_suffix(name: str) -> str:
    low = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_name(path: Path) -> tuple[str, FrameIndex, bool]:
    """(stream name, index from the name, whether the name held index tokens)."""
    stem = strip_image_suffix(path.name)
    found: dict[str, int] = {}

    def take(m: re.Match[str]) -> str:
        found[_FIELD[m.group("key").lower()]] = int(m.group("num"))
        return m.group("sep") if m.group("sep") in ("", " ") else ""

    base = _TOKEN.sub(take, stem)
    while base != (b2 := _TOKEN.sub(take, base)):
        base = b2
    base = base.strip("_-. ") or "frames"
    return str(path.parent / base), FrameIndex(**found), bool(found)
