"""Write benchmark results into a marked section of docs/benchmarks.md, with the machine."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), GPU: {gpu}, Python {platform.python_version()}")


def write_section(name: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) one marked section of ``path`` (the benchmarks live in the source
    checkout only, never in the installed package, so this never writes beside an installed
    ``tcan_live``)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def emit(section: str, body: str, write_docs: bool) -> None:
    """Print a benchmark's result and, on request, write it into its section of the docs."""
    print(body)
    if write_docs:
        write_section(section, body)


Panel = tuple[str, np.ndarray, str, tuple[float, float] | None]  # title, image, cmap, limits


def save_panels(panels: list[Panel], title: str, path: Path) -> None:
    """One row of images (limits None: the image's 0.5-99.7th percentiles), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (name, img, cmap, limits) in zip(axes, panels, strict=True):
        lo, hi = limits or tuple(np.percentile(img, [0.5, 99.7]))
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r[k]) for k in keys) + " |")
    return "\n".join(out)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
