"""Does ``tcan-live adapt`` help? Before/after adaptation against Richardson-Lucy, on structure
families that the model never saw, with known truth.

For each held-out family and photon level: one simulated acquisition (fixed optics and
detector, 50 nm pixels), ``--frames`` fields of view to adapt on (confocal only) and
``--test`` further fields; the model is adapted for ``--budget-min`` minutes on this CPU, then
the initial model, the adapted model and Richardson-Lucy are scored against the STED truth on
the adaptation frames themselves (the real use: enhance what you adapted on) and on the unseen
fields: SSIM and the detail-band error (docs/training.md), and the frame score of the spread
over noise redraws (sr/uncertainty.py; the adapted model has no error head, so the spread is
what compares like with like).
"""

from __future__ import annotations

import tempfile
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
        # the spread, which both models have (an adapted model has no error head): like
        # is compared with like
        unc.append(frame_score(enh.spread(p.confocal, px), out))
    return {"ssim": float(np.median(ssim)), "dbe": float(np.median(dbe)),
            "uncertainty": float(np.median(unc))}


def _rl(pairs: list[Any], px: float, fwhm: float) -> dict[str, float]:
    from tcan_live.train.metrics import detail_band_error, fidelity, richardson_lucy

    outs = [richardson_lucy(p.confocal, fwhm, px) for p in pairs]
    return {"ssim": float(np.median([fidelity(o, p.sted)["ssim"]
                                     for o, p in zip(outs, pairs, strict=True)])),
            "dbe": float(np.median([detail_band_error(o, p.sted, p.confocal, px)
                                    for o, p in zip(outs, pairs, strict=True)]))}


def figure(pair: Any, px: float, fwhm: float, before: Any, after: Any, title: str,
           path: Path) -> None:
    """Input, Richardson-Lucy, the model before and after (each with its uncertainty map, on one
    scale relative to its output's range), and the STED truth, for one unseen field."""
    from benchmarks.report import Panel, save_panels
    from tcan_live.train.metrics import richardson_lucy

    outs = {"before": before.enhance(pair.confocal, px).image,
            "after": after.enhance(pair.confocal, px).image}
    rel = {k: e.spread(pair.confocal, px) / max(float(np.ptp(np.percentile(
        outs[k], [1.0, 99.9]))), 1e-12) for k, e in (("before", before), ("after", after))}
    top = max(float(np.percentile(r, 99.7)) for r in rel.values())
    panels: list[Panel] = [
        ("confocal (input)", pair.confocal, "gray", None),
        ("Richardson-Lucy", richardson_lucy(pair.confocal, fwhm, px), "gray", None),
        ("model before", outs["before"], "gray", None),
        (f"uncertainty before (0-{top:.2f})", rel["before"], "inferno", (0.0, top)),
        ("adapted", outs["after"], "gray", None),
        (f"uncertainty after (0-{top:.2f})", rel["after"], "inferno", (0.0, top)),
        ("STED (truth)", pair.sted, "gray", None)]
    save_panels(panels, title, path)


def run_case(family: str, photons: float, frames: int, test: int, size: int, budget: float,
             seed: int, model: str, prior: float, lr: float,
             figures: Path | None = None) -> dict[str, Any]:
    from tcan_live.sim import domain

    rng = np.random.default_rng([seed, int(photons)])
    acq = domain.random_acquisition(rng, photons=photons, pixel_nm=50.0)
    d = acq.detector  # the user sets the gain so that the brightest pixels fill half the ADC
    acq = replace(acq, detector=replace(d, gain=0.5 * (d.max_count - d.offset) / photons))
    sample = domain.Sample((family,), regions=False)  # type: ignore[arg-type]
    pairs = [domain.image_pair(rng, size, acq, sample) for _ in range(frames + test)]
    fwhm = domain.fwhm_nm(domain.confocal_psf(acq.confocal), domain.FINE_NM)
    row = adapt_and_score(family, pairs[:frames], pairs[frames:], domain.MODEL_PX_NM / 1000,
                          fwhm, budget, seed, model, prior, lr, figures,
                          f"{family}, {photons:g} photons", f"{family}_{photons:g}ph_{frames}f")
    gain = row.pop("gain")
    return {"family": family, "photons": photons, **row,
            "gain est/true": gain / (acq.detector.gain * acq.detector.excess)}


def adapt_and_score(name: str, adapt_on: list[Any], unseen: list[Any], px: float, fwhm: float,
                    budget: float, seed: int, model: str, prior: float, lr: float,
                    figures: Path | None, title: str, stem: str) -> dict[str, Any]:
    """Score the initial model, adapt on ``adapt_on`` (confocal only), score the adapted one;
    items have ``confocal`` and ``sted`` (truth) on the model grid."""
    from tcan_live.sr.card import resolve_model
    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.train.adapt import AdaptConfig, Adapter, Inputs

    init = resolve_model(model)
    before = Enhancer(model=str(init), device="cpu")
    sets = [("own", adapt_on), *([("unseen", unseen)] if unseen else [])]
    row: dict[str, Any] = {"frames": len(adapt_on), "budget_min": budget}
    for key, sel in sets:
        b = _scores(before, sel, px, fwhm)
        rl = _rl(sel, px, fwhm)
        row.update({f"{key} ssim before": b["ssim"], f"{key} ssim RL": rl["ssim"],
                    f"{key} dbe before": b["dbe"], f"{key} dbe RL": rl["dbe"],
                    f"{key} unc before": b["uncertainty"]})
    inputs = Inputs([p.confocal for p in adapt_on], px,
                    [f"{name}-{k}" for k in range(len(adapt_on))])
    # the user knows their confocal PSF (objective, wavelength, pinhole): here the true one
    adapter = Adapter(init, inputs, AdaptConfig(budget_min=budget, prior_weight=prior,
                                                seed=seed, lr=lr, confocal_fwhm_nm=fwhm))
    result = adapter.run()
    row["steps"] = result.steps
    row["gain"] = result.photon_transfer.gain
    with tempfile.TemporaryDirectory() as tmp:
        adapter.save(Path(tmp) / "m", "adapted", init.name, result)
        after = Enhancer(model=str(Path(tmp) / "m"), device="cpu")
        for key, sel in sets:
            a = _scores(after, sel, px, fwhm)
            row.update({f"{key} ssim after": a["ssim"], f"{key} dbe after": a["dbe"],
                        f"{key} unc after": a["uncertainty"]})
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
            shown = (unseen or adapt_on)[0]
            figure(shown, px, fwhm, before, after,
                   f"{title}: adapted on {len(adapt_on)} frames for {budget:g} min "
                   f"({result.steps} steps); {'an unseen field' if unseen else 'one of them'}",
                   figures / f"adapt_{stem}.png")
    return row


def run_real(folder: Path, budget: float, seed: int, model: str, prior: float, lr: float,
             figures: Path | None) -> dict[str, Any]:
    """The shared real confocal/STED pairs: adapt on all their confocal images together (the
    STED images unused), score each against its STED image."""
    from benchmarks.honesty import real_cases

    cases = real_cases(folder)
    if not cases:
        raise SystemExit(f"no real pairs in {folder}")
    row = adapt_and_score("real", cases, [], cases[0].px, cases[0].conf_fwhm_nm, budget, seed,
                          model, prior, lr, figures, "real pairs", "real")
    row.pop("gain")
    return {"family": "real (5 pairs)", "photons": "-", **row}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import emit, machine, table

    args = parse_script("adapt", argv, __doc__)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if args.real:
        row = run_real(Path(args.real), float(args.budget_min), args.seed, args.model,
                       args.prior, args.lr, Path(args.figures) if args.figures else None)
        print(row, flush=True)
        rows.append(row)
    for fam in (args.families.split(",") if args.families else []):
        for ph in (float(p) for p in args.photons.split(",")):
            for frames in (int(f) for f in args.frames.split(",")):
                for budget in (float(b) for b in args.budget_min.split(",")):
                    row = run_case(fam, ph, frames, args.test, args.size, budget, args.seed,
                                   args.model, args.prior, args.lr,
                                   Path(args.figures) if args.figures else None)
                    print(row, flush=True)
                    rows.append(row)
    keys = ["family", "photons", "frames", "budget_min", "steps", "own ssim before",
            "own ssim after", "own ssim RL", "own dbe before", "own dbe after", "own dbe RL",
            "unseen ssim before", "unseen ssim after", "unseen ssim RL", "unseen dbe before",
            "unseen dbe after", "own unc before", "own unc after", "gain est/true"]
    body = "\n".join([
        f"`python -m benchmarks.adapt --families {args.families} --photons {args.photons} "
        f"--frames {args.frames} --budget-min {args.budget_min} --test {args.test} "
        f"--size {args.size} --prior {args.prior} --lr {args.lr} --seed {args.seed}"
        + (f" --real {args.real}" if args.real else "") + f"` on {machine()}, model "
        f"{args.model}. "
        "'own': the frames adapted on; 'unseen': other fields of the same acquisition; "
        "medians; SSIM after the affine fit; dbe = detail-band error (below 1: added detail "
        "more right than wrong); unc = the frame score of the spread over noise redraws (both "
        "models have it; an adapted model has no error head).", "",
        table([{k: r.get(k, "-") for k in keys} for r in rows])])
    section = ("adapt-" + ("real-" if args.real else "") + args.budget_min.replace(",", "-")
               + "min" + ("" if args.frames == "8" else "-" + args.frames.replace(",", "-") + "f"))
    emit(section, body, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
