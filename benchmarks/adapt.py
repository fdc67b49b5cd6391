"""Does ``tcan-live adapt`` help? Before/after adaptation against Richardson-Lucy, on structure
families that the model never saw, with known truth.

For each held-out family and photon level: one simulated acquisition (fixed optics and
detector, 50 nm pixels), ``--frames`` fields of view to adapt on (confocal only) and
``--test`` further fields; the model is adapted for ``--budget-min`` minutes on this CPU, then
the initial model, the adapted model and Richardson-Lucy are scored against the STED truth on
the adaptation frames themselves (the real use: enhance what you adapted on) and on the unseen
fields: SSIM and the detail-band error (docs/training.md), and the uncertainty frame score.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cli import parse_script


def _scores(enh: Any, pairs: list[Any], px: float, fwhm: float) -> dict[str, float]:
    from tcan_live.sr.uncertainty import frame_score
    from tcan_live.train.metrics import detail_band_error, fidelity

    ssim, dbe, unc = [], [], []
    for p in pairs:
        out = enh.enhance(p.confocal, px).image
        ssim.append(fidelity(out, p.sted)["ssim"])
        dbe.append(detail_band_error(out, p.sted, p.confocal, px))
        unc.append(frame_score(enh.uncertainty(p.confocal, px), out))
    return {"ssim": float(np.median(ssim)), "dbe": float(np.median(dbe)),
            "uncertainty": float(np.median(unc))}


def _rl(pairs: list[Any], px: float, fwhm: float) -> dict[str, float]:
    from tcan_live.train.metrics import detail_band_error, fidelity, richardson_lucy

    outs = [richardson_lucy(p.confocal, fwhm, px) for p in pairs]
    return {"ssim": float(np.median([fidelity(o, p.sted)["ssim"]
                                     for o, p in zip(outs, pairs, strict=True)])),
            "dbe": float(np.median([detail_band_error(o, p.sted, p.confocal, px)
                                    for o, p in zip(outs, pairs, strict=True)]))}


def run_case(family: str, photons: float, frames: int, test: int, size: int, budget: float,
             seed: int, model: str, prior: float, lr: float) -> dict[str, Any]:
    from tcan_live.sim import domain
    from tcan_live.sr.card import resolve_model
    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.train.adapt import AdaptConfig, Adapter, Inputs

    rng = np.random.default_rng([seed, int(photons)])
    acq = domain.random_acquisition(rng, photons=photons, pixel_nm=50.0)
    d = acq.detector  # the user sets the gain so that the brightest pixels fill half the ADC
    acq = replace(acq, detector=replace(d, gain=0.5 * (d.max_count - d.offset) / photons))
    sample = domain.Sample((family,), regions=False)  # type: ignore[arg-type]
    pairs = [domain.image_pair(rng, size, acq, sample) for _ in range(frames + test)]
    adapt_on, unseen = pairs[:frames], pairs[frames:]
    px = domain.MODEL_PX_NM / 1000
    fwhm = domain.fwhm_nm(domain.confocal_psf(acq.confocal), domain.FINE_NM)
    init = resolve_model(model)
    before = Enhancer(model=str(init), device="cpu")
    row: dict[str, Any] = {"family": family, "photons": photons, "frames": frames,
                           "budget_min": budget}
    for name, sel in (("own", adapt_on), ("unseen", unseen)):
        b = _scores(before, sel, px, fwhm)
        rl = _rl(sel, px, fwhm)
        row.update({f"{name} ssim before": b["ssim"], f"{name} ssim RL": rl["ssim"],
                    f"{name} dbe before": b["dbe"], f"{name} dbe RL": rl["dbe"],
                    f"{name} unc before": b["uncertainty"]})
    inputs = Inputs([p.confocal for p in adapt_on], px, [f"{family}-{k}" for k in
                                                         range(frames)])
    # the user knows their confocal PSF (objective, wavelength, pinhole): here the simulated one
    adapter = Adapter(init, inputs, AdaptConfig(budget_min=budget, prior_weight=prior,
                                                seed=seed, lr=lr, confocal_fwhm_nm=fwhm))
    t0 = time.perf_counter()
    result = adapter.run()
    row["steps"] = result.steps
    row["seconds"] = round(time.perf_counter() - t0)
    row["gain est/true"] = result.photon_transfer.gain / (acq.detector.gain *
                                                          acq.detector.excess)
    with tempfile.TemporaryDirectory() as tmp:
        adapter.save(Path(tmp) / "m", "adapted", init.name, result)
        after = Enhancer(model=str(Path(tmp) / "m"), device="cpu")
        for name, sel in (("own", adapt_on), ("unseen", unseen)):
            a = _scores(after, sel, px, fwhm)
            row.update({f"{name} ssim after": a["ssim"], f"{name} dbe after": a["dbe"],
                        f"{name} unc after": a["uncertainty"]})
    return row


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import emit, machine, table

    args = parse_script("adapt", argv, __doc__)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for fam in args.families.split(","):
        for ph in (float(p) for p in args.photons.split(",")):
            for frames in (int(f) for f in args.frames.split(",")):
                for budget in (float(b) for b in args.budget_min.split(",")):
                    row = run_case(fam, ph, frames, args.test, args.size, budget, args.seed,
                                   args.model, args.prior, args.lr)
                    print(row, flush=True)
                    rows.append(row)
    keys = ["family", "photons", "frames", "budget_min", "steps", "own ssim before",
            "own ssim after", "own ssim RL", "own dbe before", "own dbe after", "own dbe RL",
            "unseen ssim before", "unseen ssim after", "unseen ssim RL", "unseen dbe before",
            "unseen dbe after", "own unc before", "own unc after", "gain est/true"]
    body = "\n".join([
        f"`python -m benchmarks.adapt --families {args.families} --photons {args.photons} "
        f"--frames {args.frames} --budget-min {args.budget_min} --test {args.test} "
        f"--size {args.size} --prior {args.prior} --lr {args.lr}` on {machine()}, model "
        f"{args.model}. "
        "'own': the frames adapted on; 'unseen': other fields of the same acquisition; "
        "medians; SSIM after the affine fit; dbe = detail-band error (below 1: added detail "
        "more right than wrong); unc = uncertainty frame score.", "",
        table([{k: r[k] for k in keys} for r in rows])])
    emit("adapt", body, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
