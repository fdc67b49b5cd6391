"""Does sr/restore.py change anything it should not? The Enhancer with and without it on every
structure family of the broad simulator (training and held-out), unseen seeds.

    python -m benchmarks.restore [--n 3] [--seed 9100] [--figure PNG] [--write-docs]

For each image the restored output is compared with the network's own (``restore=False``):
how often it acted, and the SSIM and detail-band error against the truth with and without it,
on the images where it acted (on all others the two outputs are identical by construction;
tests/test_restore.py checks that). Then a probe: a field of puncta on a hexagonal or square
lattice of each period in ``--periods`` (Gaussian confocal PSF of the card's FWHM, Poisson
noise, ``--probe-photons``), SSIM of the input, the network alone and with the restore; and
the time of ``restore_measured`` on a 2048 px frame.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks.cli import parse_script
from tcan_live.sim.simulate import sigma_px

PX_UM = 0.05  # the probe's grid (the shipped models')


def lattice_field(n: int, period_nm: float, angle: float, hexa: bool,
                  rng: np.random.Generator) -> np.ndarray:
    """Puncta on a 2-D lattice (50 nm pixels), slightly jittered (the probe's and the tests')."""
    g = np.zeros((n, n))
    p = period_nm / (PX_UM * 1000)
    m = int(1.5 * n / p)
    i, j = np.mgrid[-m:m, -m:m].reshape(2, -1).astype(float)
    u = np.array([np.cos(angle), np.sin(angle)]) * p
    b = angle + (np.pi / 3 if hexa else np.pi / 2)
    v = np.array([np.cos(b), np.sin(b)]) * p
    pts = n / 2 + i[:, None] * u + j[:, None] * v + rng.normal(0, 0.05 * p, (i.size, 2))
    pts = pts[(pts >= 0).all(1) & (pts < n - 1).all(1)]
    np.add.at(g, (np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)), 1.0)
    return g


def confocal_field(truth: np.ndarray, photons: float, rng: np.random.Generator,
                   fwhm_nm: float = 230.0) -> np.ndarray:
    """``truth`` through a Gaussian confocal PSF, ``photons`` at the brightest pixel, 2 of
    background, Poisson noise."""
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(truth, sigma_px(fwhm_nm, PX_UM), mode="wrap")
    return rng.poisson(blurred / blurred.max() * photons + 2.0).astype(np.float32)


def probe(on: Any, off: Any, periods: list[float], photons: float) -> list[dict[str, Any]]:
    from scipy import ndimage

    from tcan_live.train.metrics import fidelity

    rows = []
    for hexa in (True, False):
        for period in periods:
            rng = np.random.default_rng(int(period))
            truth = lattice_field(160, period, 0.4, hexa, rng)
            frame = confocal_field(truth, photons, rng, on.card.confocal_fwhm_nm)
            sted = ndimage.gaussian_filter(truth, sigma_px(on.card.target_fwhm_nm, PX_UM),
                                           mode="wrap")
            res = on.enhance(frame, PX_UM)
            rows.append({"lattice": "hexagonal" if hexa else "square", "period nm": period,
                         "SSIM input": fidelity(frame, sted)["ssim"],
                         "SSIM network": fidelity(off.enhance(frame, PX_UM).image, sted)["ssim"],
                         "SSIM restored": fidelity(res.image, sted)["ssim"],
                         "coefficients": res.restored})
    return rows


def restore_seconds(size: int = 2048, repeats: int = 3) -> float:
    """Best of ``repeats`` for restore_measured alone on a random frame (after one warm call
    that builds the cached grid)."""
    import torch

    from tcan_live.sr.restore import restore_measured

    x = torch.rand(size, size, generator=torch.Generator().manual_seed(0))
    y = x * 0.1
    restore_measured(x, y, PX_UM, 230.0)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        restore_measured(x, y, PX_UM, 230.0)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.honesty import simulated_cases
    from benchmarks.report import emit, machine, save_panels, table
    from tcan_live.sim.domain import FAMILIES, HELDOUT_FAMILIES
    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.train.metrics import detail_band_error, fidelity

    a = parse_script("restore", argv, __doc__)
    if a.threads:
        torch.set_num_threads(a.threads)
    families: list[str] = [*HELDOUT_FAMILIES, *FAMILIES]
    photons = [float(p) for p in a.photons.split(",")]
    on = Enhancer(a.model, device="cpu")
    off = Enhancer(a.model, device="cpu", restore=False)
    t0 = time.perf_counter()
    cases = simulated_cases(families, photons, a.n, a.size, a.seed)
    rows: list[dict[str, Any]] = []
    best: tuple[float, Any, np.ndarray, np.ndarray] | None = None  # the largest SSIM change
    for i, case in enumerate(cases):
        res = on.enhance(case.confocal, case.px)
        print(f"\r{i + 1}/{len(cases)} images", end="", file=sys.stderr, flush=True)
        if not res.restored:
            continue
        plain = off.enhance(case.confocal, case.px).image

        def figs(img: np.ndarray, c: Any = case) -> tuple[float, float]:
            return (fidelity(img, c.sted)["ssim"],
                    detail_band_error(img, c.sted, c.confocal, c.px))

        (s_in, _), (s_off, d_off), (s_on, d_on) = (figs(case.confocal), figs(plain),
                                                   figs(res.image))
        if best is None or abs(s_on - s_off) > best[0]:
            best = (abs(s_on - s_off), case, plain, res.image)
        rows.append({"image": case.name, "coefficients": res.restored, "SSIM input": s_in,
                     "SSIM network": s_off, "SSIM restored": s_on, "dbe network": d_off,
                     "dbe restored": d_on})
    print(file=sys.stderr)
    if a.figure and best is not None:
        _, case, plain, restored = best
        save_panels([("confocal input", case.confocal, "gray", None),
                     ("network alone", plain, "gray", None),
                     ("with sr/restore.py", restored, "gray", None),
                     ("STED truth", case.sted, "gray", None)],
                    f"{case.name}: a pattern the input shows, erased and put back", a.figure)
    worse = sum(r["SSIM restored"] < r["SSIM network"] - 0.01 for r in rows)
    probe_rows = probe(on, off, [float(p) for p in a.periods.split(",")], a.probe_photons)
    seconds = restore_seconds()
    body = "\n".join([
        f"`python -m benchmarks.restore --n {a.n} --seed {a.seed} --photons {a.photons} "
        f"--size {a.size}` on {machine()}, model {on.model_id}, "
        f"{time.perf_counter() - t0:.0f} s: {len(cases)} simulated images ({len(families)} "
        f"families x {len(photons)} photon levels x {a.n}); sr/restore.py acted on "
        f"{len(rows)}, SSIM worse by more than 0.01 on {worse} of them. On every other image "
        "the output is the network's, bit for bit. dbe = detail-band error.", "",
        table(rows) if rows else "(it acted on none)", "",
        f"Probe: lattices at {a.probe_photons:g} photons, 50 nm pixels, the card's confocal "
        "FWHM:", "", table(probe_rows), "",
        f"restore_measured alone on a 2048 px frame: {seconds:.2f} s (best of 3, "
        f"{torch.get_num_threads()} threads)."])
    emit("restore", body, a.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
