"""A separate process playing the microscope (used by the daemon tests).

    python tests/microscope.py grow SRC DST CHUNK DELAY [HEAD]   # write SRC's bytes into DST,
        CHUNK bytes at a time (a file being written); the first HEAD bytes 16 at a time
    python tests/microscope.py tiffs DIR N SIZE DELAY   # N one-frame TIFFs written in place
    python tests/microscope.py copy SRC DST DELAY         # copy a file or folder in, then wait
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path


def grow(src: Path, dst: Path, chunk: int, delay: float, head: int = 0) -> None:
    """Write src into dst chunk by chunk; the first ``head`` bytes (headers, IFDs) in 16-byte
    pieces, so that readers see half-written headers."""
    data = src.read_bytes()
    with dst.open("wb") as fh:
        pos = 0
        while pos < len(data):
            step = 16 if pos < head else chunk
            fh.write(data[pos : pos + step])
            fh.flush()
            pos += step
            time.sleep(delay if step == chunk else delay / 4)


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "grow":
        grow(Path(argv[1]), Path(argv[2]), int(argv[3]), float(argv[4]),
             int(argv[5]) if len(argv) > 5 else 0)
    elif cmd == "tiffs":  # N big one-frame TIFFs written in place by tifffile
        import numpy as np
        import tifffile

        folder, n, size = Path(argv[1]), int(argv[2]), int(argv[3])
        img = np.random.default_rng(0).integers(0, 4000, (size, size), dtype=np.uint16)
        for t in range(n):
            tifffile.imwrite(folder / f"big_t{t:04d}.tif", img, metadata={"axes": "YX"},
                             resolution=(2e5, 2e5), resolutionunit="CENTIMETER")
            time.sleep(float(argv[4]))
    elif cmd == "copy":
        src, dst = Path(argv[1]), Path(argv[2])
        time.sleep(float(argv[3]))
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
