"""The bad and odd input corpus of issue 21: 30 kinds, each with the daemon's documented
treatment (docs/operations.md, "Bad and odd input")."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile


def build(acq: Path, nd2: Path) -> dict[str, str]:
    """name -> expected: 'report' or 'enhance' or 'ignore'."""
    rng = np.random.default_rng(7)
    exp = {}

    def w(name, arr, kind, **kw):
        tifffile.imwrite(acq / name, arr, **kw)
        exp[name] = kind

    (acq / "zero.tif").write_bytes(b"")
    exp["zero.tif"] = "report"
    full = acq / "_full.tmp"
    tifffile.imwrite(full, rng.integers(0, 4000, (64, 64), np.uint16))
    b = full.read_bytes()
    full.unlink()
    (acq / "truncated.tif").write_bytes(b[: len(b) // 2])
    exp["truncated.tif"] = "report"
    (acq / "garbage_after_header.tif").write_bytes(
        b[:8] + rng.integers(0, 255, 4000, np.uint8).tobytes()
    )
    exp["garbage_after_header.tif"] = "report"
    (acq / "random.tif").write_bytes(rng.integers(0, 255, 3000, np.uint8).tobytes())
    exp["random.tif"] = "report"
    (acq / "random.nd2").write_bytes(rng.integers(0, 255, 3000, np.uint8).tobytes())
    exp["random.nd2"] = "report"
    nb = nd2.read_bytes()
    (acq / "truncated.nd2").write_bytes(nb[: len(nb) // 3])
    exp["truncated.nd2"] = "report"
    bad = bytearray(nb)
    bad[-2000:] = rng.integers(0, 255, 2000, np.uint8).tobytes()
    (acq / "chunkmap.nd2").write_bytes(bytes(bad))
    exp["chunkmap.nd2"] = "report"
    five = acq / "_five.tmp"
    tifffile.imwrite(
        five, rng.integers(0, 4000, (5, 32, 32), np.uint16), metadata={"axes": "TYX"}, imagej=False
    )
    fb = five.read_bytes()
    five.unlink()
    (acq / "five_cut_in_page4.tif").write_bytes(fb[: 8 + 32 * 32 * 2 * 3 + 1000])
    exp["five_cut_in_page4.tif"] = "report"
    huge = acq / "_huge.tmp"
    with tifffile.TiffWriter(huge, bigtiff=True) as tw:
        tw.write(shape=(100000, 100000), dtype=np.uint8)
    with huge.open("r+b") as fh:
        fh.truncate(4096)
    os.replace(huge, acq / "header_100000.tif")
    exp["header_100000.tif"] = "report"
    w("rgb.tif", np.zeros((16, 16, 3), np.uint8), "report", photometric="rgb")
    w("complex.tif", np.zeros((8, 8), np.complex64), "report")
    w("bool.tif", rng.random((16, 16)) > 0.5, "report")
    w("one.tif", np.array([[7]], np.uint16), "enhance")
    w("three.tif", rng.integers(0, 99, (3, 3), np.uint16), "enhance")
    w("line.tif", rng.integers(0, 99, (1, 300), np.uint16), "enhance")
    w("zeros.tif", np.zeros((32, 32), np.uint16), "enhance")
    w("constant.tif", np.full((32, 32), 5.5, np.float32), "enhance")
    w(
        "nan.tif",
        np.where(rng.random((32, 32)) < 0.1, np.nan, rng.random((32, 32))).astype(np.float32),
        "enhance",
    )
    w("allnan.tif", np.full((32, 32), np.nan, np.float32), "report")
    w(
        "inf.tif",
        np.where(rng.random((32, 32)) < 0.1, np.inf, rng.random((32, 32))).astype(np.float32),
        "enhance",
    )
    w("int32.tif", rng.integers(-5, 99, (32, 32)).astype(np.int32), "enhance")
    w("float64.tif", rng.random((32, 32)), "enhance")
    w(
        "px_zero.ome.tif",
        np.ones((32, 32), np.uint16),
        "enhance",
        metadata={"PhysicalSizeX": 0.0, "PhysicalSizeY": 0.0},
    )
    w(
        "px_negative.ome.tif",
        np.ones((32, 32), np.uint16),
        "enhance",
        metadata={"PhysicalSizeX": -0.1, "PhysicalSizeY": -0.1},
    )
    w(
        "px_absurd.ome.tif",
        np.ones((32, 32), np.uint16),
        "enhance",
        metadata={"PhysicalSizeX": 1e9, "PhysicalSizeY": 1e9},
    )
    w(
        "five_d.tif",
        rng.integers(0, 99, (2, 2, 2, 16, 16), np.uint16),
        "enhance",
        imagej=True,
        metadata={"axes": "TZCYX"},
    )
    (acq / "dir.tif").mkdir()
    exp["dir.tif"] = "ignore"
    w(".hidden.tif", np.ones((8, 8), np.uint16), "ignore")
    w("temp.tif.part", np.ones((8, 8), np.uint16), "ignore")
    w("big6000.tif", rng.integers(0, 255, (6000, 6000), np.uint8), "enhance")
    return exp
