"""Does ``tcan-live adapt`` help? Before/after adaptation against Richardson-Lucy, on structure
families that the model never saw, with known truth.

For each held-out family and photon level: ``--acquisitions`` simulated acquisitions (each
with its own optics and detector, 50 nm pixels), ``--frames`` fields of view to adapt on
(confocal only) and ``--test`` further fields each; the model is adapted once per acquisition
up to the largest ``--budget-min`` on this CPU (or adapt's step limit), and the model as it was
at each budget is scored. The initial model, the adapted model and Richardson-Lucy are scored
against the STED truth on the adaptation frames themselves (the real use: enhance what you
adapted on) and on the unseen fields: SSIM and the detail-band error (docs/training.md), and
the frame score of the spread over noise redraws (sr/uncertainty.py; the adapted model has no
error head, so the spread is what compares like with like).

``--ceiling``: the same recipe (frames, held-out frames, steps, learning rate, prior) with the
STED truth as the target instead of the consistency with a second photon view: what fine-tuning
on these frames could reach if the data told the truth. Not something a user can run (they
have no STED); it measures how much of the gap the self-supervised loss leaves.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.cli import parse_script


def _median(values: list[float]) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _quality(out: np.ndarray, p: Any, px: float, fwhm: float | None = None,
             norm: Any = None) -> dict[str, float]:
    """One output against the truth: SSIM, the detail-band error and the structure it shows
    where the truth has none (background grain; metrics.background_grain); with ``fwhm`` and
    ``norm`` (a model's output, in the frame's units; the model card's normalization, whose
    affine the Enhancer used) also the truth-free undershoot: how far it goes
    below the frame's background floor (the floor loss's, train/adapt.py), mean over the
    frame in units of the frame's normalised range."""
    from tcan_live.train.metrics import background_grain, detail_band_error, fidelity

    got = {"ssim": fidelity(out, p.sted)["ssim"],
           "dbe": detail_band_error(out, p.sted, p.confocal, px),
           "bg": background_grain(out, p.sted, px)}
    if fwhm is not None and norm is not None:
        from tcan_live.sr.normalize import normalize, percentile_affine
        from tcan_live.train.adapt import background_floor

        a = percentile_affine(p.confocal, norm.low, norm.high)
        floor = background_floor(p.confocal, a, fwhm, px)
        got["under"] = float(np.mean(np.clip(floor - normalize(out, a), 0.0, None)))
    return got


def _scores(enh: Any, pairs: list[Any], px: float, fwhm: float) -> dict[str, float]:
    from tcan_live.sr.uncertainty import frame_score

    per: dict[str, list[float]] = {}
    for p in pairs:
        out = enh.enhance(p.confocal, px).image
        for k, v in _quality(out, p, px, fwhm, enh.card.normalization).items():
            per.setdefault(k, []).append(v)
        # the spread, which both models have (an adapted model has no error head): like
        # is compared with like
        per.setdefault("uncertainty", []).append(frame_score(enh.spread(p.confocal, px), out))
    return {k: _median(v) for k, v in per.items()}


def _rl(pairs: list[Any], px: float, fwhm: float) -> dict[str, float]:
    from tcan_live.train.metrics import richardson_lucy

    per: dict[str, list[float]] = {}
    for p in pairs:
        for k, v in _quality(richardson_lucy(p.confocal, fwhm, px), p, px).items():
            per.setdefault(k, []).append(v)
    return {k: _median(v) for k, v in per.items()}


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


class _TruthBatches:
    """``--ceiling``: random patches of the training frames (the adapter's held-out frames left
    out) as (whole confocal frame, STED truth), both normalised with the confocal frame's
    percentile affine (as the trainer pairs them), the same flips and rotations."""

    def __init__(self, pairs: list[Any], adapter: Any) -> None:
        from tcan_live.sr.normalize import normalize, percentile_affine
        from tcan_live.train.adapt import held_out_indices

        held = set(held_out_indices(len(pairs), adapter.cfg.holdout))
        n = adapter.card.normalization
        self.xs, self.ts = [], []
        for k, p in enumerate(pairs):
            if k not in held:
                a = percentile_affine(p.confocal, n.low, n.high)
                self.xs.append(normalize(p.confocal, a).astype(np.float32))
                self.ts.append(normalize(p.sted, a).astype(np.float32))
        self.patch = adapter.cfg.patch

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """The batch by the names the ceiling's losses take: ``x1`` input, ``x2`` truth."""
        from tcan_live.train.adapt import flip_rotate

        xs, ts = [], []
        for _ in range(batch):
            k = int(rng.integers(len(self.xs)))
            x, t = self.xs[k], self.ts[k]
            side = min(self.patch, *x.shape)
            i = int(rng.integers(x.shape[0] - side + 1))
            j = int(rng.integers(x.shape[1] - side + 1))
            cx, ct = flip_rotate(rng, x[i:i + side, j:j + side], t[i:i + side, j:j + side])
            xs.append(np.ascontiguousarray(cx))
            ts.append(np.ascontiguousarray(ct))
        return {"x1": np.stack(xs)[:, None], "x2": np.stack(ts)[:, None]}


def _use_truth(adapter: Any, pairs: list[Any], px: float) -> None:
    """Turn the adapter into the ``--ceiling`` run: supervised by the truth, same recipe."""
    if abs(px - adapter.card.pixel_size_um) > 1e-9:
        raise SystemExit("--ceiling needs frames on the model's grid")
    adapter.batches = _TruthBatches(pairs, adapter)
    adapter.crops = []  # the truth's patches, not the prior's fixed crops

    def losses(x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        x, t = x1, x2
        out = adapter.gen(x)
        with torch.no_grad():
            ref = adapter.ref(x)
        # the adapter's rim rule, the truth in place of the blurred output's second view
        sup = adapter._squared_error(out, t).mean()
        prior = F.mse_loss(out, ref)
        # "consistency" keeps the adapter's key: here it is the error against the truth
        return {"consistency": sup, "prior": prior,
                "total": sup + adapter.cfg.prior_weight * prior}

    adapter.losses = losses


def run_case(family: str, photons: float, frames: int, test: int, size: int,
             budgets: list[float], seed: int, model: str, settings: dict[str, Any],
             figures: Path | None = None, ceiling: bool = False,
             at_steps: list[int] | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """``settings``: AdaptConfig fields (prior_weight, lr, prior_band, steps, views)."""
    from tcan_live.sim import domain

    rng = np.random.default_rng([seed, int(photons)])
    acq = domain.random_acquisition(rng, photons=photons, pixel_nm=50.0)
    d = acq.detector  # the user sets the gain so that the brightest pixels fill half the ADC
    acq = replace(acq, detector=replace(d, gain=0.5 * (d.max_count - d.offset) / photons))
    sample = domain.Sample((family,), regions=False)  # type: ignore[arg-type]
    pairs = [domain.image_pair(rng, size, acq, sample) for _ in range(frames + test)]
    fwhm = domain.fwhm_nm(domain.confocal_psf(acq.confocal), domain.FINE_NM)
    rows = adapt_and_score(family, pairs[:frames], pairs[frames:], domain.MODEL_PX_NM / 1000,
                           fwhm, budgets, seed, model, settings, figures,
                           f"{family}, {photons:g} photons", f"{family}_{photons:g}ph_{frames}f",
                           ceiling, at_steps, device)
    true_gain = acq.detector.gain * acq.detector.excess
    return [{"family": family, "photons": photons, "acq": seed, **r,
             "gain est/true": r.pop("gain") / true_gain} for r in rows]


def adapt_and_score(name: str, adapt_on: list[Any], unseen: list[Any], px: float, fwhm: float,
                    budgets: list[float], seed: int, model: str, settings: dict[str, Any],
                    figures: Path | None, title: str, stem: str, ceiling: bool = False,
                    at_steps: list[int] | None = None, device: str = "cpu"
                    ) -> list[dict[str, Any]]:
    """Score the initial model, adapt on ``adapt_on`` (confocal only; with ``ceiling``
    supervised by their truth instead) for the largest budget, score the adapted model as it
    was at each budget (one row each; with ``at_steps``, as it was after each of those step
    counts instead, the largest the step limit, the largest budget only a time bound); items
    have ``confocal`` and ``sted`` (truth) on the model grid."""
    from tcan_live.sr.card import resolve_model
    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.train.adapt import AdaptConfig, Adapter, Inputs, adapt_model

    init = resolve_model(model)
    # off the CPU: fp32 as on the CPU (not the GPU's bf16 default), and no CUDA graphs (the
    # adapted model's weights are swapped in for each mark)
    opts: dict[str, Any] = {} if device == "cpu" else {"precision": "fp32", "cuda_graphs": False}
    before = Enhancer(model=str(init), device=device, **opts)
    sets = [("own", adapt_on), *([("unseen", unseen)] if unseen else [])]
    row: dict[str, Any] = {"frames": len(adapt_on)}
    for key, sel in sets:
        b = _scores(before, sel, px, fwhm)
        rl = _rl(sel, px, fwhm)
        row.update({f"{key} ssim before": b["ssim"], f"{key} ssim RL": rl["ssim"],
                    f"{key} dbe before": b["dbe"], f"{key} dbe RL": rl["dbe"],
                    f"{key} bg before": b["bg"], f"{key} bg RL": rl["bg"],
                    f"{key} under before": b["under"],
                    f"{key} unc before": b["uncertainty"]})
    inputs = Inputs([p.confocal for p in adapt_on], px,
                    [f"{name}-{k}" for k in range(len(adapt_on))])
    # the user knows their confocal PSF (objective, wavelength, pinhole): here the true one
    budgets = sorted(budgets)
    if at_steps:
        at_steps = sorted(at_steps)
        settings = {**settings, "steps": at_steps[-1]}
    cfg = AdaptConfig(budget_min=budgets[-1], seed=seed, confocal_fwhm_nm=fwhm, **settings)
    if cfg.relaxed_prior_weight not in (None, cfg.prior_weight):
        # the two runs of tcan-live adapt (adapt_model), the kept model scored once
        if ceiling or at_steps or len(budgets) > 1:
            raise SystemExit("a second run with a relaxed prior (--relaxed-prior) is scored at "
                             "one budget, without --at-steps or --ceiling")
        runs: dict[str, dict[str, torch.Tensor]] = {}

        def keep(name: str, ad: Any) -> None:
            runs[name] = {k: v.detach().clone() for k, v in ad.gen.state_dict().items()}

        adapter, result = adapt_model(init, inputs, cfg, device=device, finished=keep)
        rows = _score_adapted(adapter, result, row, sets, budgets, [], {}, px, fwhm, before,
                              init.name, device, opts, figures, title, stem, adapt_on, unseen)
        other = {"first": "relaxed", "relaxed": "first"}[result.relaxation["kept"]] \
            if result.relaxation else None
        if other in runs:  # the run not kept, scored too: was the rule's choice the better?
            rows[-1]["other"] = other
            rows[-1].update(_ssim_of(init, runs[other], sets, px, device, opts))
        return rows
    adapter = Adapter(init, inputs, cfg, device=device)
    if ceiling:
        _use_truth(adapter, adapt_on, px)
        stem, title = f"ceiling_{stem}", f"{title}, supervised by the truth (ceiling)"
    # the model as it was when each smaller budget ran out, or after each smaller step count
    # (one run serves every mark)
    marks: list[float] = [float(n) for n in at_steps] if at_steps else budgets
    snapshots: dict[float, tuple[int, float, dict[str, torch.Tensor]]] = {}

    def snapshot(step: int, elapsed: float, _budget: float) -> None:
        for mark in marks[:-1]:
            if mark not in snapshots and (step >= mark if at_steps else elapsed >= mark * 60):
                snapshots[mark] = (step, elapsed, {k: v.detach().clone()
                                   for k, v in adapter.gen.state_dict().items()})

    result = adapter.run(progress=snapshot)
    return _score_adapted(adapter, result, row, sets, budgets, [float(n) for n in at_steps]
                          if at_steps else [], snapshots, px, fwhm, before, init.name, device,
                          opts, figures, title, stem, adapt_on, unseen)


def _ssim_of(init: Path, state: dict[str, torch.Tensor], sets: list[Any], px: float,
             device: str, opts: dict[str, Any]) -> dict[str, float]:
    """SSIM (median) of the initial model's architecture with these weights, per set."""
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(model=str(init), device=device, **opts)
    enh.generator.load_state_dict(state)
    return {f"{key} ssim other": _median([_quality(enh.enhance(p.confocal, px).image, p,
                                                   px)["ssim"] for p in sel])
            for key, sel in sets}


def _kept(record: dict[str, Any]) -> str:
    """Which run of adapt_model was kept, the ratio of the two runs' held-out gains and each
    run's check verdict (and the relaxed run over the first, in standard errors)."""
    from tcan_live.train.adapt import kept_prior_weight, relaxation_gains

    if "relaxed" not in record:
        return f"first ({record['why']})"
    gain = relaxation_gains(record)
    verdict = {k: "pass" if record[k]["check"]["accepted"] else "fail"
               for k in ("first", "relaxed")}
    over = record["relaxed_over_first"]
    return (f"{record['kept']} (prior {kept_prior_weight(record):g}; gain ratio "
            f"{gain['relaxed'] / gain['first'] if gain['first'] > 0 else float('inf'):.2f}; "
            f"checks {verdict['first']}/{verdict['relaxed']}; relaxed over first "
            f"{over['gain'] / max(over['se'], 1e-12):.1f} se)")


# what _kept and the 'check' column write, read back by margins()
_KEPT_RE = re.compile(r"gain ratio (\S+); checks (pass|fail)/(pass|fail); relaxed over first "
                      r"(\S+) se\)")
_TILES_RE = re.compile(r"(\d+) tiles\)")
MARGINS = (1.0, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0)


def margins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two-run rule (train/adapt.py prefer_relaxed) replayed at other margins on rows that
    scored both runs ('kept' and 'other'): per margin, the mean SSIM gain (own, unseen) of
    the run it would keep, how often that is the weaker prior's, and how often it is the
    better run (the larger mean of own and unseen gain; within 0.002 counts as a tie, not a
    miss). The rule's numbers come from the row's ``relaxation`` record (adapt_model's, kept
    in the rows since session 21); older rows have only the 'kept' column, read as it prints
    them (the ratio to two decimals, the margin over the first run to one), so there a value
    that prints equal to its threshold counts as reaching it and the margin over the first
    run can fall on the wrong side of the t bound by rounding. 'as run' is the rule's real
    choice. Rows without both runs (one run, or no time for the second) are left out."""
    from tcan_live.train.adapt import critical_t, relaxation_gains, relaxed_wins

    both: list[dict[str, Any]] = []
    for r in rows:
        rule: dict[str, Any]
        if "own ssim other" not in r or "unseen ssim other" not in r:
            continue
        rec = r.get("relaxation") or {}
        if "relaxed" in rec:
            gain = relaxation_gains(rec)
            over = rec["relaxed_over_first"]
            # the rule's own arguments: the two gains, the verdict, the paired margin
            rule = {"gains": (gain["first"], gain["relaxed"]),
                    "relaxed ok": bool(rec["relaxed"]["check"]["accepted"]),
                    "over": (over["gain"], over["se"]),
                    "tiles": int(rec["relaxed"]["check"]["tiles"])}
        else:  # as printed: the ratio stands for the gains, the margin in se for the pair
            m = _KEPT_RE.search(str(r.get("kept", "")))
            tiles = _TILES_RE.search(str(r.get("check", "")))
            if m is None or tiles is None:
                continue
            rule = {"gains": (1.0, float(m[1])), "relaxed ok": m[3] == "pass",
                    "over": (float(m[4]), 1.0), "tiles": int(tiles[1])}
        kept = str(r["kept"]).split()[0]
        gains = {k: np.array([r[f"{s} ssim {k}"] - r[f"{s} ssim before"]
                              for s in ("own", "unseen")]) for k in ("after", "other")}
        both.append({**rule, "critical": critical_t(rule["tiles"]), "kept": kept,
                     kept: gains["after"],
                     {"first": "relaxed", "relaxed": "first"}[kept]: gains["other"]})
    if not both:
        return []
    out = []
    for margin in (*MARGINS, "as run", "never"):
        chosen = []
        for b in both:
            if margin == "as run":
                relaxed = b["kept"] == "relaxed"
            else:
                (g_first, g_relaxed), (mean, se) = b["gains"], b["over"]
                relaxed = margin != "never" and relaxed_wins(
                    g_first, g_relaxed, b["relaxed ok"], (mean, se, b["critical"]),
                    float(margin))
            pick, other = (b["relaxed"], b["first"]) if relaxed else (b["first"], b["relaxed"])
            chosen.append((pick, relaxed, pick.mean() - other.mean()))
        picks = np.array([c[0] for c in chosen])
        out.append({"margin": margin if isinstance(margin, str) else f"{margin:g}",
                    "acquisitions": len(chosen),
                    "own gain mean": float(picks[:, 0].mean()),
                    "unseen gain mean": float(picks[:, 1].mean()),
                    "gain min": float(picks.mean(axis=1).min()),
                    "kept the weaker prior": f"{sum(c[1] for c in chosen)}/{len(chosen)}",
                    "the better run (or within 0.002)":
                        f"{sum(c[2] >= -0.002 for c in chosen)}/{len(chosen)}"})
    return out


def _score_adapted(adapter: Any, result: Any, row: dict[str, Any], sets: list[Any],
                   budgets: list[float], at_steps: list[float],
                   snapshots: dict[float, tuple[int, float, dict[str, torch.Tensor]]],
                   px: float, fwhm: float, before: Any, init_name: str, device: str,
                   opts: dict[str, Any], figures: Path | None, title: str, stem: str,
                   adapt_on: list[Any], unseen: list[Any]) -> list[dict[str, Any]]:
    """One row per budget (or step mark): the adapted model as it was then, scored."""
    from tcan_live.sr.enhancer import Enhancer

    marks: list[float] = at_steps or budgets
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        adapter.save(Path(tmp) / "m", "adapted", init_name, result)
        after = Enhancer(model=str(Path(tmp) / "m"), device=device, **opts)
        final = {k: v.detach().clone() for k, v in adapter.gen.state_dict().items()}
        for mark in marks:
            if at_steps and mark != marks[-1] and mark not in snapshots:
                continue  # the time budget ran out first; the last row has what was reached
            steps, used, state = snapshots.get(mark, (result.steps, result.seconds, final))
            after.generator.load_state_dict(state)
            adapter.gen.load_state_dict(state)
            chk = adapter.check()  # the truth-free held-out check (what watch --adapt obeys)
            r = {**row, "budget_min": budgets[-1] if at_steps else mark,
                 **({"at_steps": int(mark)} if at_steps else {}),
                 "steps": steps, "min used": used / 60,
                 **({"kept": _kept(result.relaxation), "min used":
                     result.relaxation.get("seconds", result.seconds) / 60,
                     # the rule's own numbers (margins() replays it at other margins)
                     "relaxation": result.relaxation}
                    if result.relaxation else {}),
                 "gain": result.photon_transfer.gain,
                 "check": f"{'pass' if chk.accepted else 'fail'} "
                          f"{100 * (chk.after / chk.before - 1):+.2f}% "
                          f"({(chk.before - chk.after) / max(chk.se, 1e-12):.1f} se, "
                          f"{chk.tiles} tiles)"}
            for key, sel in sets:
                a = _scores(after, sel, px, fwhm)
                r.update({f"{key} ssim after": a["ssim"], f"{key} dbe after": a["dbe"],
                          f"{key} bg after": a["bg"], f"{key} unc after": a["uncertainty"],
                          f"{key} under after": a["under"]})
            rows.append(r)
        if figures is not None:  # the largest budget's model is the one loaded last
            figures.mkdir(parents=True, exist_ok=True)
            shown = (unseen or adapt_on)[0]
            figure(shown, px, fwhm, before, after,
                   f"{title}: {len(adapt_on)} frames ({len(adapter.held_out)} held out for "
                   f"the check), {result.steps} steps in "
                   f"{result.seconds / 60:.1f} min; "
                   f"{'an unseen field' if unseen else 'one of them'}",
                   figures / f"adapt_{stem}.png")
    return rows


def run_real(folder: Path, budgets: list[float], seed: int, model: str,
             settings: dict[str, Any], figures: Path | None,
             at_steps: list[int] | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """The shared real confocal/STED pairs: adapt on all their confocal images together (the
    STED images unused), score each against its STED image."""
    from benchmarks.honesty import real_cases

    cases = real_cases(folder)
    if not cases:
        raise SystemExit(f"no real pairs in {folder}")
    rows = adapt_and_score("real", cases, [], cases[0].px, cases[0].conf_fwhm_nm, budgets,
                           seed, model, settings, figures, "real pairs", "real",
                           at_steps=at_steps, device=device)
    return [{"family": "real (5 pairs)", "photons": "-",
             **{k: v for k, v in r.items() if k != "gain"}} for r in rows]


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, photons, frames, budget or step mark): the SSIM gains over the
    acquisitions."""
    cases: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if "acq" in r:
            cases.setdefault((r["family"], r["photons"], r["frames"], r["budget_min"],
                              r.get("at_steps")), []).append(r)
    out = []
    for (fam, ph, frames, budget, at), rs in cases.items():
        # the steps run (a mark the time bound cut short shows the steps reached)
        done = sorted({int(r["steps"]) for r in rs})
        line: dict[str, Any] = {"family": fam, "photons": ph, "frames": frames,
                                "budget_min": budget,
                                **({"steps": f"{done[0]}" + (f"-{done[-1]}" if len(done) > 1
                                                             else "")} if at else {}),
                                "acquisitions": len(rs)}
        for key in ("own", "unseen"):
            if f"{key} ssim after" not in rs[0]:
                continue
            gain = [r[f"{key} ssim after"] - r[f"{key} ssim before"] for r in rs]
            line[f"{key} gain median"] = float(np.median(gain))
            line[f"{key} gain min"] = float(np.min(gain))
            line[f"{key} >= 0.03"] = f"{sum(g >= 0.03 for g in gain)}/{len(gain)}"
            line[f"{key} beats RL"] = (
                f"{sum(r[f'{key} ssim after'] > r[f'{key} ssim RL'] for r in rs)}/{len(rs)}")
            line[f"{key} dbe not worse"] = (
                f"{sum(r[f'{key} dbe after'] <= r[f'{key} dbe before'] for r in rs)}/{len(rs)}")
            if f"{key} bg after" in rs[0]:  # tables from before session 18 have no grain
                line[f"{key} bg after/before median"] = _median(
                    [r[f"{key} bg after"] / r[f"{key} bg before"] for r in rs])
            # what watch --adapt delivers: the adapted model only where the check passed
            kept = [g if str(r.get("check", "pass")).startswith("pass") else 0.0
                    for g, r in zip(gain, rs, strict=True)]
            line[f"{key} gain with check median"] = float(np.median(kept))
            line[f"{key} gain with check min"] = float(np.min(kept))
        line["check passed"] = (f"{sum(str(r.get('check', '')).startswith('pass') for r in rs)}"
                                f"/{len(rs)}")
        out.append(line)
    return out


def _record(path: Path | None, row: dict[str, Any]) -> None:
    """Print one result row and append it (JSON, one line) to ``--rows``: a long run's rows
    survive it being stopped, and ``--from-rows`` makes the tables from them."""
    print(row, flush=True)
    if path is not None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def run(args: Any, rows_file: Path | None) -> list[dict[str, Any]]:
    """Every case of the command line, one row per case, acquisition and budget (or step
    mark)."""
    rows: list[dict[str, Any]] = []
    # unset: the AdaptConfig defaults (what `tcan-live adapt` uses)
    settings = {k: v for k, v in (("prior_weight", args.prior), ("lr", args.lr),
                                  ("prior_band", args.prior_band), ("steps", args.steps),
                                  ("views", args.views), ("prior_input", args.prior_input),
                                  ("relaxed_prior_weight", args.relaxed_prior),
                                  ("prior_bank", args.prior_bank),
                                  ("split_p", args.split_p),
                                  ("floor_weight", args.floor),
                                  ("prior_tta", None if args.prior_tta is None
                                   else args.prior_tta == "on"))
                if v is not None}
    budgets = [float(b) for b in args.budget_min.split(",")]
    at_steps = [int(n) for n in args.at_steps.split(",")] if args.at_steps else None
    if args.relaxed_prior is None and (at_steps or len(budgets) > 1):
        # a model scored along the way is one run's: adapt's second run only on request
        settings["relaxed_prior_weight"] = None
    if args.real:
        for row in run_real(Path(args.real), budgets, args.seed, args.model, settings,
                            Path(args.figures) if args.figures else None, at_steps,
                            args.device):
            _record(rows_file, row)
            rows.append(row)
    for fam in (args.families.split(",") if args.families else []):
        for ph in (float(p) for p in args.photons.split(",")):
            for frames in (int(f) for f in args.frames.split(",")):
                for k in range(args.acquisitions):
                    # figures of the first acquisition only
                    figs = Path(args.figures) if args.figures and k == 0 else None
                    for row in run_case(fam, ph, frames, args.test, args.size, budgets,
                                        args.seed + k, args.model, settings, figs,
                                        args.ceiling, at_steps, args.device):
                        _record(rows_file, row)
                        rows.append(row)
    return rows


_OPTIONS = (("prior", "prior"), ("lr", "lr"), ("prior-band", "prior_band"), ("steps", "steps"),
            ("views", "views"), ("prior-input", "prior_input"),
            ("relaxed-prior", "relaxed_prior"), ("prior-bank", "prior_bank"),
            ("prior-tta", "prior_tta"), ("split-p", "split_p"), ("at-steps", "at_steps"),
            ("floor", "floor"), ("device", "device"))


def report(args: Any, rows: list[dict[str, Any]], where: str) -> tuple[str, str]:
    """The docs section's name and body: the command, where it ran, the rows, the summary."""
    from benchmarks.report import table
    from tcan_live.train.adapt import AdaptConfig

    keys = ["family", "photons", "acq", "frames", "budget_min", "min used", "steps",
            "own ssim before",
            "own ssim after", "own ssim RL", "own dbe before", "own dbe after", "own dbe RL",
            "unseen ssim before", "unseen ssim after", "unseen ssim RL", "unseen dbe before",
            "unseen dbe after", "own unc before", "own unc after", "unseen bg before",
            "unseen bg after", "unseen bg RL", "unseen under before", "unseen under after",
            "gain est/true", "kept", "other",
            "own ssim other", "unseen ssim other", "check"]
    if not any("unseen bg before" in r for r in rows):
        keys = [k for k in keys if " bg " not in k]
    if not any("unseen under before" in r for r in rows):
        keys = [k for k in keys if " under " not in k]
    if not any("kept" in r for r in rows):
        keys.remove("kept")
    if not any("other" in r for r in rows):
        keys = [k for k in keys if "other" not in k]
    default = {"device": "cpu"}
    replayed = margins(rows)
    # acquisitions of seeds that do not follow each other (merge_rows): one command per seed
    seeds: list[int] | None = getattr(args, "seeds", None)
    body = "\n".join([
        f"`python -m benchmarks.adapt --families {args.families or chr(34) * 2} "
        f"--photons {args.photons} "
        f"--frames {args.frames} --budget-min {args.budget_min} --test {args.test} "
        f"--size {args.size} --seed {'S' if seeds else args.seed}"
        + "".join(f" --{k} {getattr(args, a)}" for k, a in _OPTIONS
                  if getattr(args, a) is not None and getattr(args, a) != default.get(a))
        + (f" --acquisitions {args.acquisitions}" if args.acquisitions > 1 and not seeds
           else "")
        + (f" --real {args.real}" if args.real else "")
        + (" --ceiling" if args.ceiling else "") + "`"
        + (f" for S in {', '.join(map(str, seeds))}" if seeds else "") + f" on {where}, model "
        f"{args.model}. "
        + ("**'after' is the ceiling: the same recipe supervised by the STED truth, not "
           "self-supervised.** " if args.ceiling else "") +
        "'own': the frames given to adapt (a quarter of them held out of training for the "
        "check); 'unseen': other fields of the same acquisition; "
        "medians; SSIM after the affine fit; dbe = detail-band error (below 1: added detail "
        "more right than wrong); unc = the frame score of the spread over noise redraws (both "
        "models have it; an adapted model has no error head)"
        + ("; bg = background grain, the output's standard deviation where the truth has no "
           "structure, in units of the truth's range (metrics.background_grain; structure "
           "painted into empty space raises it)" if "unseen bg before" in keys else "")
        + ("; under = undershoot, truth-free: how far the output goes below the frame's "
           "background floor (train/adapt.py background_floor), mean over the frame in units "
           "of its normalised range (dark halos beside the structure raise it)"
           if "unseen under before" in keys else "")
        + ("; 'other': the run of the two that adapt did not keep, and its SSIM (was the "
           "kept one the better?)" if "other" in keys else "")
        + ".", "",
        table([{k: r.get(k, "-") for k in keys} for r in rows]),
        *(["", "Per case over its acquisitions: the SSIM gain (after - before; median, "
           "smallest, and how many acquisitions gained at least 0.03), how many beat "
           "Richardson-Lucy, how many kept the detail-band error from getting worse, "
           + ("the median ratio of the background grain after to before, " if any(
               "unseen bg before" in r for r in rows) else "") +
           "how many passed the held-out check ('check': pass/fail, the change of the held-out "
           "consistency loss, that change in standard errors and the number of tiles; it "
           "passes beyond Student's t at 97.5%), and the gain with the check (0 where it "
           "failed: watch --adapt keeps the initial model there).",
           "", table(summary(rows))]
          if args.acquisitions > 1 else []),
        *(["", "The two-run rule at other margins (prefer_relaxed; "
           f"{AdaptConfig.model_fields['relax_margin'].default:g} ships), on these rows, "
           "which score both runs: the mean SSIM gain of the run each margin keeps, own and "
           "unseen; the smallest (mean of own and unseen); how often it keeps the weaker "
           "prior; how often it keeps the better run. 'as run' is the rule's real choice, "
           "'never' the first run always. Rows from before session 21 give the rule's numbers "
           "only as 'kept' prints them (the ratio to two decimals, the relaxed run's margin "
           "over the first to one), so a replay can differ from 'as run' by rounding.", "",
           table(replayed)]
          if args.acquisitions > 1 and replayed else [])])
    section = ("adapt-" + ("ceiling-" if args.ceiling else "")
               + ("real-" if args.real else "")
               + (f"{args.acquisitions}acq-" if args.acquisitions > 1 else "")
               + {None: "", "all": "fullprior-", "high": "bandprior-"}[args.prior_band]
               + (f"{args.views}-" if args.views else "")
               + (f"{args.prior_input}prior-" if args.prior_input else "")
               + (f"relaxed{args.relaxed_prior:g}-" if args.relaxed_prior is not None else "")
               + (f"bank{args.prior_bank}-" if args.prior_bank is not None else "")
               + (f"tta{args.prior_tta}-" if args.prior_tta is not None else "")
               + (f"p{args.split_p:g}-" if args.split_p is not None else "")
               + (f"floor{args.floor:g}-" if args.floor is not None else "")
               # a step limit is named in the tables with --floor (the older ones keep their
               # names)
               + (f"steps{args.steps}-" if args.steps is not None and args.floor is not None
                  and not args.at_steps else "")
               + (f"lr{args.lr:g}-" if args.lr is not None and args.at_steps else "")
               + (f"prior{args.prior:g}-" if args.prior is not None and args.at_steps else "")
               + (f"{args.at_steps.replace(',', '-')}steps" if args.at_steps
                  else args.budget_min.replace(",", "-") + "min")
               + ("" if args.frames == "8" else "-" + args.frames.replace(",", "-") + "f")
               # photon levels without 10 (the default's first) are named, so that a 30-photon
               # table does not overwrite the 10-photon one of the same shape
               + ("" if args.real or "10" in args.photons.split(",")
                  else "-" + args.photons.replace(",", "-") + "ph")
               # a family other than the default's first is named (step-mark tables and those
               # with --floor only; the older tables keep their names)
               + (f"-{args.families.replace(',', '-')}" if (args.at_steps or args.floor
                                                              is not None) and args.families
                  and not args.families.startswith("asters") else "")
               # the series' tables start at seed 4203; a run on other acquisitions is named
               # so that it does not overwrite them
               + ("" if args.real or (args.seed == 4203 and not seeds)
                  else f"-seeds{'-'.join(map(str, seeds))}" if seeds else f"-seed{args.seed}"))
    return section, body


def merge_rows(files: list[Path]) -> tuple[Any, list[dict[str, Any]], str]:
    """The command line, rows and machine of ``--rows`` files. Several files must be one run's
    acquisitions split over processes (the same command but ``--seed`` and
    ``--acquisitions``): an acquisition's rows depend on its seed alone, so they are the rows
    of that one command where the seeds follow each other, and of that command once per seed
    where they do not (the command line's ``seeds`` then lists them; report names them)."""
    heads, rows = [], []
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        heads.append(json.loads(lines[0]))
        rows += [json.loads(x) for x in lines[1:] if x.strip()]
    runs = [parse_script("adapt", h["argv"], __doc__) for h in heads]
    ran = runs[0]
    if len(runs) > 1:
        same = {k: v for k, v in vars(ran).items() if k not in ("seed", "acquisitions", "rows")}
        seeds: list[int] = []
        for r in runs:
            if {k: v for k, v in vars(r).items() if k in same} != same:
                raise SystemExit("--from-rows: the files are not one command's acquisitions")
            seeds += range(r.seed, r.seed + r.acquisitions)
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"--from-rows: the seeds {sorted(seeds)} repeat")
        if sorted(seeds) != list(range(min(seeds), min(seeds) + len(seeds))):
            ran.seeds = sorted(seeds)
        ran.seed, ran.acquisitions = min(seeds), len(seeds)
    where = heads[0]["machine"] + (f" (its acquisitions in {len(files)} processes side by "
                                   "side)" if len(files) > 1 else "")
    return ran, rows, where


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import emit, machine

    args = parse_script("adapt", argv, __doc__)
    if args.from_rows:  # the tables of an earlier run (its command line and machine kept)
        ran, rows, where = merge_rows([Path(f) for f in args.from_rows.split(",")])
        section, body = report(ran, rows, where)
        emit(section, body, args.write_docs)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()
    rows_file = Path(args.rows) if args.rows else None
    if rows_file is not None:
        rows_file.write_text(json.dumps({"argv": list(argv if argv is not None
                                                      else sys.argv[1:]),
                                         "machine": where}) + "\n", encoding="utf-8")
    section, body = report(args, run(args, rows_file), where)
    emit(section, body, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
