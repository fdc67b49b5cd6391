"""``tcan-live evaluate``: the paper's metrics for input, Richardson-Lucy, model and target.

Per image and method: MSE, NRMSE, PSNR, SSIM (against the target, after percentile
normalisation and an affine fit), SNR (fitted peak over background), bead FWHM (isolated round
spots of the target, 2-D Gaussian fits), decorrelation resolution; for the model also the trust
check (re-blurred output vs input). Outputs: ``metrics.csv``, ``summary.md``, ``boxplots.png``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tcan_live.train.decorrelation import decorrelation_resolution_nm
from tcan_live.train.metrics import (
    background_mask,
    bead_fwhm_nm,
    detail_band_error,
    error_auroc,
    fidelity,
    isolated_spots,
    richardson_lucy,
    snr,
)
from tcan_live.train.pairs import Pair, load_pairs

log = logging.getLogger(__name__)
METHODS = ("input", "richardson-lucy", "model", "target")
METRICS = ("mse", "nrmse", "psnr", "ssim", "detail_band_error", "snr", "fwhm_nm",
           "resolution_nm")
EXTRA = ("trust_score", "uncertainty_auroc", "uncertainty_score")
Enhance = Callable[[np.ndarray, float], np.ndarray]


def evaluate_pair(pair: Pair, enhance: Enhance, px: float, confocal_fwhm_nm: float,
                  target_fwhm_nm: float = 80.0, uncertainty: Enhance | None = None
                  ) -> list[dict[str, object]]:
    """``uncertainty(image, px)``: the per-pixel map; scored by ``uncertainty_auroc`` (ranks
    pixels by error) and its frame score."""
    from tcan_live.sr.trust import trust_check
    from tcan_live.sr.uncertainty import frame_score

    images = {"input": pair.confocal, "richardson-lucy": richardson_lucy(
        pair.confocal, confocal_fwhm_nm, px), "model": enhance(pair.confocal, px),
        "target": pair.sted}
    window = max(int(round(0.75 / px)) | 1, 7)
    spots = isolated_spots(pair.sted, min_separation_px=0.6 / px, window=window)
    background = background_mask(pair.sted, px)
    rows: list[dict[str, object]] = []
    for method, img in images.items():
        row: dict[str, object] = {"image": pair.name, "method": method, "pixel_size_um": px,
                                  "spots": len(spots)}
        row.update(fidelity(img, pair.sted))
        row["detail_band_error"] = detail_band_error(img, pair.sted, pair.confocal, px)
        row["snr"] = snr(img, spots, background, window)
        row["fwhm_nm"] = bead_fwhm_nm(img, spots, px, window)
        row["resolution_nm"] = decorrelation_resolution_nm(img, px)
        if method == "model":
            t = trust_check(pair.confocal, img, px, confocal_fwhm_nm=confocal_fwhm_nm,
                            target_fwhm_nm=target_fwhm_nm, residual=False)
            row.update(trust_score=t.score, trust_nrmse=t.nrmse)
            if uncertainty is not None:
                u = uncertainty(pair.confocal, px)
                row.update(uncertainty_auroc=error_auroc(u, img, pair.sted),
                           uncertainty_score=frame_score(u, img))
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, object]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """method -> metric -> (median, IQR, n finite)."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for method in METHODS:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        out[method] = {}
        for m in (*METRICS, *EXTRA):
            vals = np.array([float(r.get(m, np.nan)) for r in sel])  # type: ignore[arg-type]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                q1, med, q3 = np.percentile(vals, [25, 50, 75])
                out[method][m] = (float(med), float(q3 - q1), int(vals.size))
    return out


def markdown(summary: dict[str, dict[str, tuple[float, float, int]]], n_images: int) -> str:
    cols = [m for m in (*METRICS, *EXTRA)
            if any(m in s for s in summary.values())]
    head = "| method | " + " | ".join(cols) + " |"
    lines = [f"Median (IQR) over {n_images} images; fwhm/snr over isolated spots, NaN-free "
             "images only.", "", head, "|" + "---|" * (len(cols) + 1)]
    for method, stats in summary.items():
        cells = []
        for m in cols:
            if m in stats:
                med, iqr, _ = stats[m]
                cells.append(f"{med:.4g} ({iqr:.2g})")
            else:
                cells.append("-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def uncertainty_ranking(rows: Sequence[dict[str, object]]) -> float | None:
    """Spearman correlation between the model's uncertainty frame score and its NRMSE."""
    from scipy.stats import spearmanr

    sel = [r for r in rows if r["method"] == "model" and "uncertainty_score" in r]
    if len(sel) < 3:
        return None
    rho = spearmanr([float(r["uncertainty_score"]) for r in sel],  # type: ignore[arg-type]
                    [float(r["nrmse"]) for r in sel]).statistic  # type: ignore[arg-type]
    return float(rho)


def write_csv(rows: Sequence[dict[str, object]], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def boxplots(rows: Sequence[dict[str, object]], path: Path) -> None:
    """Tukey box plots (whiskers 1.5 IQR, outliers as diamonds) like the paper's Fig. 4e-g."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("mse", "ssim", "snr", "fwhm_nm", "resolution_nm")
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
    for ax, m in zip(axes, shown, strict=True):
        data = []
        for method in METHODS:
            v = np.array([float(r.get(m, np.nan)) for r in rows  # type: ignore[arg-type]
                          if r["method"] == method])
            data.append(v[np.isfinite(v)])
        ax.boxplot(data, whis=1.5, flierprops={"marker": "D", "markersize": 4})
        ax.set_xticks(range(1, len(METHODS) + 1), ["conf.", "RL", "TCAN", "STED"])
        ax.set_title(m)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(pairs: Sequence[Pair], enhance: Enhance, *, pixel_size_um: float | None,
             default_px: float, confocal_fwhm_nm: float, target_fwhm_nm: float = 80.0,
             out: Path | None = None, uncertainty: Enhance | None = None,
             ) -> tuple[list[dict[str, object]], str]:
    rows: list[dict[str, object]] = []
    for pair in pairs:
        px = pixel_size_um or pair.pixel_size_um or default_px
        rows += evaluate_pair(pair, enhance, px, confocal_fwhm_nm, target_fwhm_nm, uncertainty)
    table = markdown(summarize(rows), len(pairs))
    ranking = uncertainty_ranking(rows)
    if ranking is not None:
        table += (f"\nThe uncertainty's frame score ranks the images by the model's NRMSE with "
                  f"Spearman rho = {ranking:.3f} ({len(pairs)} images).\n")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / "metrics.csv")
        (out / "summary.md").write_text(table, encoding="utf-8")
        boxplots(rows, out / "boxplots.png")
    return rows, table


def card_metrics(summary: dict[str, dict[str, tuple[float, float, int]]], n: int,
                 label: str, note: str) -> dict[str, object]:
    """A card-friendly table: medians per method and metric, plus what was measured on."""
    table: dict[str, object] = {"images": n, "statistic": "median over images", "note": note}
    for method, stats in summary.items():
        table[method] = {m: round(v[0], 5) for m, v in stats.items()}
    return {label: table}


def write_card_metrics(folder: Path, metrics: dict[str, object]) -> None:
    from tcan_live.sr.card import read_card, write_card

    card = read_card(folder)
    write_card(folder, card.model_copy(update={"metrics": {**card.metrics, **metrics}}))


def run_evaluate(pairs_dir: Path, *, model: str | None, device: str, planes: tuple[int, ...],
                 limit: int | None, out: Path | None, pixel_size_um: float | None,
                 confocal_fwhm_nm: float, uncertainty: bool, write_card: str | None) -> int:
    """``tcan-live evaluate``: the paper's metrics and the honesty metrics of a model on pairs."""
    from tcan_live.sr.enhancer import Enhancer

    pairs = load_pairs(pairs_dir, planes)[:limit]
    enhancer = Enhancer(model, device=device)

    def enhance(img: np.ndarray, px: float) -> np.ndarray:
        return enhancer.enhance(img, px).image

    def uncertain(img: np.ndarray, px: float) -> np.ndarray:
        return enhancer.uncertainty(img, px)

    rows, table = evaluate(pairs, enhance, pixel_size_um=pixel_size_um,
                           default_px=enhancer.pixel_size_um, confocal_fwhm_nm=confocal_fwhm_nm,
                           target_fwhm_nm=enhancer.card.target_fwhm_nm, out=out,
                           uncertainty=uncertain if uncertainty else None)
    print(f"model {enhancer.model_id} on {len(pairs)} pairs from {pairs_dir}\n")
    print(table)
    if write_card:
        label, _, note = write_card.partition(":")
        write_card_metrics(enhancer.folder, card_metrics(summarize(rows), len(pairs), label,
                                                         note or str(pairs_dir)))
        print(f"metrics '{label}' written into {enhancer.folder / 'model.toml'}")
    if out is not None:
        print(f"wrote {out / 'metrics.csv'}, {out / 'summary.md'}, {out / 'boxplots.png'}")
    return 0

