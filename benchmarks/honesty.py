"""Honesty of the picture (issue 16): does a model add detail that is right, and does its
uncertainty map find the detail that is wrong? Measured on data unlike the training data.

* **Held-out simulations** (broad simulator, ``sim/domain.py``): structure families x peak
  photons, ``--n`` images each, including the families training never sees
  (``HELDOUT_FAMILIES``). Per image and method (raw input, Richardson-Lucy with the true PSF
  width, each model): SSIM and NRMSE after the affine fit, the detail-band error (1 = no
  added detail, < 1 right, > 1 invented), the decorrelation resolution, for filament-like
  families the ridge CV (the coefficient of variation along the true structure: beads on a
  string raise it), and for each
  model the uncertainty map's AUROC for the top-10% error pixels and its frame score, whose
  Spearman correlation with the model's NRMSE says whether it ranks images by error.
* **Real pairs** (``../shared/data/confocal_sted``, skipped when absent): the same figures
  against the real STED image, and one figure per pair: input | each model | its uncertainty |
  STED.

    python -m benchmarks.honesty --model tcan-broad-small --model tcan-sim-small

prints the tables and writes them to ``docs/evaluation/honesty.md`` with the figures in
``docs/images/`` (``--out`` elsewhere). CPU: about 1 s per image and model (the map is 4 extra
passes).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cli import parse_script
from tcan_live.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
REAL_PAIRS = (("tagan_axonal_rings_train_axons_0.tif", (0, 1)),
              ("tagan_dendritic_factin_train_804.tif", (0, 1)),
              ("tagan_live_factin_train_CONFSTEDfull2_0.tif", (0, 1)),
              ("tagan_synprot_train_bassoon_homer_aCSF_01.tif", (0, 1)),
              ("tagan_synprot_train_bassoon_homer_aCSF_01.tif", (3, 4)))
REAL_PX_UM = 0.015  # not recorded in the files; the synaptic set's README states 15 nm
RIDGED = ("filaments", "asters", "honeycomb", "actin", "membranes")


@dataclass
class Case:
    name: str
    family: str
    photons: float | None
    confocal: np.ndarray
    sted: np.ndarray
    px: float
    conf_fwhm_nm: float


def flat(truth: np.ndarray) -> bool:
    """A field with no structure at all (a single-family sample can render none): every
    method scores a meaningless perfect SSIM there, so such a field is not a case. The draws
    are still made, so the other cases stay the same."""
    return float(np.ptp(truth)) <= 1e-6 * max(float(np.abs(truth).max()), 1e-12)


def simulated_cases(families: list[str], photons: list[float], n: int, size: int,
                    seed: int) -> list[Case]:
    from tcan_live.sim import domain

    cases = []
    for f_i, fam in enumerate(families):
        for p_i, ph in enumerate(photons):
            rng = np.random.default_rng([seed, f_i, p_i])
            for k in range(n):
                acq = domain.random_acquisition(rng, photons=ph)
                pair = domain.image_pair(rng, size, acq, domain.Sample(
                    (fam,), regions=False))  # type: ignore[arg-type]
                if flat(pair.sted):  # nothing in the field to be faithful to
                    continue
                fwhm = domain.fwhm_nm(domain.confocal_psf(acq.confocal), domain.FINE_NM)
                cases.append(Case(f"{fam}-{ph:g}-{k}", fam, ph, pair.confocal, pair.sted,
                                  domain.MODEL_PX_NM / 1000, fwhm))
    return cases


def real_cases(folder: Path) -> list[Case]:
    import tifffile

    cases = []
    for name, (ci, si) in REAL_PAIRS:
        path = folder / name
        if not path.exists():
            continue
        data = tifffile.imread(path).astype(np.float32)
        cases.append(Case(f"{path.stem[6:]}-{ci}", "real", None, data[ci], data[si],
                          REAL_PX_UM, 250.0))
    return cases


Outputs = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (images, uncertainty maps)


def measure(case: Case, methods: dict[str, Any]) -> tuple[list[dict[str, Any]], Outputs]:
    from tcan_live.sr.uncertainty import frame_score
    from tcan_live.train.decorrelation import decorrelation_resolution_nm
    from tcan_live.train.metrics import (
        detail_band_error,
        error_auroc,
        fidelity,
        richardson_lucy,
        ridge_cv,
    )

    outs: dict[str, np.ndarray] = {
        "input": case.confocal,
        "richardson-lucy": richardson_lucy(case.confocal, case.conf_fwhm_nm, case.px)}
    maps: dict[str, np.ndarray] = {}
    spreads: dict[str, np.ndarray] = {}  # the plain spread, for models with an error head
    cost: dict[str, float] = {}
    restored: dict[str, int] = {}
    for name, enh in methods.items():
        t0 = time.perf_counter()
        res = enh.enhance(case.confocal, case.px)
        outs[name], restored[name] = res.image, res.restored
        t1 = time.perf_counter()
        maps[name] = enh.uncertainty(case.confocal, case.px, enhanced=outs[name])
        cost[name] = (time.perf_counter() - t1) / max(t1 - t0, 1e-9)
        if enh.error_head is not None:  # same seed: the spread the head was given
            spreads[name] = enh.spread(case.confocal, case.px)
    rows = []
    for method, img in outs.items():
        f = fidelity(img, case.sted)
        row = {"case": case.name, "family": case.family, "photons": case.photons,
               "method": method, "ssim": f["ssim"], "nrmse": f["nrmse"],
               "detail_band_error": detail_band_error(img, case.sted, case.confocal, case.px),
               "resolution_nm": decorrelation_resolution_nm(img, case.px),
               "ridge_cv": ridge_cv(img, case.sted) if case.family in RIDGED else float("nan")}
        if method in maps:
            row["uncertainty_auroc"] = error_auroc(maps[method], img, case.sted)
            row["uncertainty_score"] = frame_score(maps[method], img)
            row["uncertainty_cost"] = cost[method]  # map time / enhance time
            row["restored"] = restored[method]  # coefficients sr/restore.py put back
        if method in spreads:
            row["spread_auroc"] = error_auroc(spreads[method], img, case.sted)
            row["spread_score"] = frame_score(spreads[method], img)
        rows.append(row)
    rows.append({"case": case.name, "family": case.family, "photons": case.photons,
                 "method": "target", "ridge_cv": ridge_cv(case.sted, case.sted)
                 if case.family in RIDGED else float("nan"),
                 "resolution_nm": decorrelation_resolution_nm(case.sted, case.px)})
    return rows, (outs, maps)


def _med(rows: list[dict[str, Any]], key: str) -> float:
    v = np.array([float(r.get(key, np.nan)) for r in rows], np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


FIGURES = ("ssim", "nrmse", "detail_band_error", "resolution_nm", "ridge_cv",
           "uncertainty_auroc", "spread_auroc")
CARD_NOTE = ("median over images; python -m benchmarks.honesty (docs/evaluation/honesty.md): "
             "the Enhancer's output, i.e. the network followed by sr/restore.py; "
             "uncertainty_auroc is the map the Enhancer publishes (the error head where the card "
             "has one), spread_auroc the plain spread over noise redraws")


def card_metrics(rows: list[dict[str, Any]], model_id: str) -> dict[str, Any]:
    """The medians of :func:`table`, per family-photons cell (and over the real pairs), for
    the input, Richardson-Lucy, the target and ``model_id``: a model card's
    ``[metrics.honesty]`` (``--write-card``)."""
    out: dict[str, Any] = {"note": CARD_NOTE, "by_family_and_photons": {}}
    cells = sorted({(r["family"], r["photons"]) for r in rows},
                   key=lambda c: (c[0], -1.0 if c[1] is None else c[1]))
    for fam, ph in cells:
        for m in ("input", "richardson-lucy", "target", model_id):
            sel = [r for r in rows if (r["family"], r["photons"], r["method"]) == (fam, ph, m)]
            figs = {k: round(v, 4) for k in FIGURES if np.isfinite(v := _med(sel, k))}
            if not figs:
                continue
            if fam == "real":
                out.setdefault("real_pairs", {})[m] = figs
            else:
                out["by_family_and_photons"].setdefault(f"{fam}-{ph:g}", {})[m] = figs
    return out


def table(rows: list[dict[str, Any]], methods: list[str], photons: list[float | None],
          families: list[str]) -> str:
    keys = FIGURES
    lines = ["| family | photons | method | SSIM | NRMSE | detail-band error | resolution nm | "
             "ridge CV | uncertainty AUROC | spread AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for fam in families:
        for ph in photons:
            sel = [r for r in rows if r["family"] == fam and r["photons"] == ph]
            if not sel:
                continue
            for m in ["input", "richardson-lucy", *methods, "target"]:
                ms = [r for r in sel if r["method"] == m]
                cells = []
                for k in keys:
                    v = _med(ms, k)
                    cells.append("-" if not np.isfinite(v) else f"{v:.0f}" if k ==
                                 "resolution_nm" else f"{v:.3f}")
                lines.append(f"| {fam} | {'-' if ph is None else f'{ph:g}'} | {m} | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ranking(rows: list[dict[str, Any]], method: str, key: str = "uncertainty_score") -> float:
    from scipy.stats import spearmanr

    sel = [r for r in rows if r["method"] == method and key in r and r["family"] != "real"]
    if len(sel) < 3:
        return float("nan")
    return float(spearmanr([r[key] for r in sel], [r["nrmse"] for r in sel]).statistic)


def figure(case: Case, outputs: Outputs, methods: list[str], path: Path) -> None:
    from benchmarks.report import Panel, save_panels

    outs, maps = outputs
    # each map relative to its output's dynamic range, all maps on one scale: comparable
    rel = {m: maps[m] / max(float(np.ptp(np.percentile(outs[m], [1.0, 99.9]))), 1e-12)
           for m in methods}
    top = max(float(np.percentile(r, 99.7)) for r in rel.values()) if rel else 1.0
    panels: list[Panel] = [("confocal (input)", outs["input"], "gray", None)]
    for m in methods:
        panels += [(m, outs[m], "gray", None),
                   (f"{m}: uncertainty (0-{top:.2f})", rel[m], "inferno", (0.0, top))]
    panels.append(("STED", case.sted, "gray", None))
    save_panels(panels, case.name, path)


def main(argv: list[str] | None = None) -> int:
    import torch

    from tcan_live.sim.domain import FAMILIES, HELDOUT_FAMILIES
    from tcan_live.sr.enhancer import Enhancer

    a = parse_script('honesty', argv, __doc__)
    if a.threads:
        torch.set_num_threads(a.threads)
    families = a.families.split(",")
    unknown = set(families) - set(FAMILIES) - set(HELDOUT_FAMILIES)
    if unknown:
        raise ConfigError(f"unknown families {sorted(unknown)}")
    photons = [float(x) for x in a.photons.split(",")]
    enhancers = {m: Enhancer(m, device="cpu") for m in a.model}
    names = {m: e.model_id for m, e in enhancers.items()}
    methods = {names[m]: e for m, e in enhancers.items()}
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    sims = simulated_cases(families, photons, a.n, a.size, a.seed)
    n_drawn = len(families) * len(photons) * a.n
    for i, case in enumerate(sims):
        rows += measure(case, methods)[0]
        print(f"\r{i + 1}/{len(sims)} simulated images", end="", file=sys.stderr, flush=True)
    reals = real_cases(Path(a.real))
    real_outputs = []
    for case in reals:
        case_rows, outputs = measure(case, methods)
        rows += case_rows
        real_outputs.append(outputs)
    print(file=sys.stderr)
    out = Path(a.out)
    (out / "evaluation").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    md = [f"# Honesty of the picture: {', '.join(methods)}", "",
          f"Written by `python -m benchmarks.honesty {' '.join(sys.argv[1:])}` "
          f"({time.strftime('%Y-%m-%d')}, {time.perf_counter() - t0:.0f} s on the CPU).",
          "Median over images. Detail-band error: NRMSE in the 60-200 nm band relative to the "
          "raw input's (1 = no added detail, below 1 more right than wrong, above 1 invented). "
          "Ridge CV: variation along the true structure (beads on a string raise it; compare "
          "with the target's). Uncertainty AUROC: how well the map ranks pixels by error (top "
          "10%); spread AUROC: the same for the plain spread over noise redraws, for a model "
          "whose map is its error head's (sr/error_head.py). Held-out families (never in "
          "training): "
          f"{', '.join(HELDOUT_FAMILIES)}. Richardson-Lucy gets the true confocal PSF width.",
          f"{n_drawn - len(sims)} of the {n_drawn} simulated fields held no structure at all "
          "(flat truth) and are left out.",
          "", "## Held-out simulations", "",
          table(rows, list(methods), [*photons], families)]
    for m in methods:
        sim_rows = [r for r in rows if r["method"] == m and r["family"] != "real"]
        md.append(f"- {m}: the uncertainty frame score ranks the {len(sims)} simulated images "
                  f"by the model's NRMSE with Spearman rho = {ranking(rows, m):.3f}; median "
                  f"AUROC {_med(sim_rows, 'uncertainty_auroc'):.3f}; the map took "
                  f"{_med(sim_rows, 'uncertainty_cost'):.1f}x the enhancement's time (median, "
                  f"this CPU).")
        acted = [r for r in rows if r["method"] == m and r.get("restored", 0) > 0]
        fams = sorted({r["family"] for r in acted})
        md.append(f"- {m}: sr/restore.py put back erased measured detail in {len(acted)} of "
                  f"{len(sims) + len(reals)} images ({', '.join(fams) or 'none'}); every other "
                  "output is the network's, unchanged.")
        if any("spread_auroc" in r for r in sim_rows):
            md.append(f"- {m} without its error head (the plain spread over noise redraws): "
                      f"Spearman rho = {ranking(rows, m, 'spread_score'):.3f}; median AUROC "
                      f"{_med(sim_rows, 'spread_auroc'):.3f}.")
    if reals:
        md += ["", "## Real confocal/STED pairs (TA-GAN, 15 nm assumed)", "",
               table(rows, list(methods), [None], ["real"])]
        for case, outputs in zip(reals, real_outputs, strict=True):
            png = out / "images" / f"honesty_{case.name}.png"
            figure(case, outputs, list(methods), png)
            md.append(f"![{case.name}](../images/{png.name})")
    else:
        md += ["", f"Real pairs: {a.real} not found, skipped."]
    text = "\n".join(md) + "\n"
    (out / "evaluation" / "honesty.md").write_text(text, encoding="utf-8")
    (out / "evaluation" / "honesty.json").write_text(json.dumps(rows, default=float, indent=0),
                                                     encoding="utf-8")
    if a.write_card:
        from tcan_live.train.evaluate import write_card_metrics

        for m, enh in enhancers.items():
            write_card_metrics(enh.folder, {"honesty": card_metrics(rows, names[m])})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
