"""A separate process playing the microscope (used by the daemon tests).

    python tests/microscope.py grow SRC DST CHUNK DELAY   # write SRC's bytes into DST, CHUNK
                                                        # bytes at a time (an ND2 being written)
    python tests/microscope.py copy SRC DST DELAY         # copy a file or folder in, then wait
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path


def grow(src: Path, dst: Path, chunk: int, delay: float) -> None:
    data = src.read_bytes()
    with dst.open("wb") as fh:
        for start in range(0, len(data), chunk):
            fh.write(data[start : start + chunk])
            fh.flush()
            time.sleep(delay)


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "grow":
        grow(Path(argv[1]), Path(argv[2]), int(argv[3]), float(argv[4]))
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
