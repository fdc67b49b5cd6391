"""What the Enhancer's mirrored frame margin (sr/enhancer.py ``MARGIN``) does: every image
enhanced with the margin and without it (``Enhancer(margin=0)``, the network on the frame
alone), on the honesty benchmark's simulated cases (same families, order and seeds, so
``--n 12`` gives the same 248 simulated images as ``python -m benchmarks.honesty --n 12``).

    python -m benchmarks.edge [--n 2] [--seed 9000] [--write-docs]

Per image: the mean error (:func:`tcan_live.train.metrics.error_map`, after the affine fit) of
the outermost pixel ring and of the interior (8 px in), and SSIM against the truth. Printed:
the medians of the ring/interior ratio and of the ring error by distance from the edge, and
how the SSIM moved.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks.cli import parse_script

RINGS = 4  # rings reported, counted from the frame's edge


def ring_errors(err: np.ndarray) -> list[float]:
    """Mean error of the rings 0..RINGS-1 (0 = the outermost pixels), then of the interior
    (8 px in)."""
    out = []
    for k in range(RINGS):
        inner = err[k:err.shape[0] - k, k:err.shape[1] - k]
        ring = np.concatenate([inner[0], inner[-1], inner[1:-1, 0], inner[1:-1, -1]])
        out.append(float(ring.mean()))
    return [*out, float(err[8:-8, 8:-8].mean())]


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.honesty import simulated_cases
    from benchmarks.report import emit, machine, table
    from tcan_live.sr.enhancer import MARGIN, Enhancer
    from tcan_live.train.metrics import error_map, fidelity

    a = parse_script("edge", argv, __doc__)
    if a.threads:
        torch.set_num_threads(a.threads)
    photons = [float(p) for p in a.photons.split(",")]
    methods = {f"margin {MARGIN} px": Enhancer(a.model, device="cpu"),
               "no margin": Enhancer(a.model, device="cpu", margin=0)}
    t0 = time.perf_counter()
    cases = simulated_cases(a.families.split(","), photons, a.n, a.size, a.seed)
    rings: dict[str, list[list[float]]] = {m: [] for m in methods}
    ssim: dict[str, list[float]] = {m: [] for m in methods}
    for i, case in enumerate(cases):
        for m, enh in methods.items():
            out = enh.enhance(case.confocal, case.px).image
            rings[m].append(ring_errors(error_map(out, case.sted)))
            ssim[m].append(fidelity(out, case.sted)["ssim"])
        print(f"\r{i + 1}/{len(cases)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for m in methods:
        r = np.array(rings[m])
        row: dict[str, Any] = {"enhancer": m,
                               "ring 0 / interior (median)": np.median(r[:, 0] / r[:, -1])}
        for k in range(RINGS):
            row[f"ring {k} error"] = np.median(r[:, k])
        row["interior error"] = np.median(r[:, -1])
        row["SSIM (median)"] = np.median(ssim[m])
        rows.append(row)
    with_m, without = (np.array(v) for v in ssim.values())
    d = with_m - without
    body = "\n".join([
        f"`python -m benchmarks.edge --n {a.n} --seed {a.seed} --photons {a.photons} --size "
        f"{a.size}` on {machine()}, {time.perf_counter() - t0:.0f} s: {len(cases)} simulated "
        "images of the honesty benchmark's families; error = |output - truth| after the affine "
        "fit, as a fraction of the truth's range; medians over images.", "",
        table(rows), "",
        f"SSIM with the margin minus without: median {np.median(d):+.4f}, better on "
        f"{int((d > 0.001).sum())}, worse on {int((d < -0.001).sum())} of {d.size} (by more "
        f"than 0.001), from {d.min():+.3f} to {d.max():+.3f}."])
    emit("edge", body, a.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
