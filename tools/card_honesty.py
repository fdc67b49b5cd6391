"""Copy the honesty benchmark's medians into a model card's ``[metrics.honesty]``.

    python tools/card_honesty.py models/tcan-broad-small [--json docs/evaluation/honesty.json]

Reads the rows ``python -m benchmarks.honesty`` wrote, takes the median of each figure per
structure family and photon level (and over the real pairs) for the input, Richardson-Lucy
and this model, and rewrites only the card's ``[metrics.honesty]`` table (the weights' sha256
and everything else stay as they are; the card is re-read afterwards to check it still loads).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

FIGURES = ("ssim", "nrmse", "detail_band_error", "resolution_nm", "ridge_cv",
           "uncertainty_auroc", "spread_auroc")
NOTE = ("median over images; python -m benchmarks.honesty (docs/evaluation/honesty.md): the "
        "Enhancer's output, i.e. the network followed by sr/restore.py; uncertainty_auroc is "
        "the map the Enhancer publishes (the error head where the card has one), "
        "spread_auroc the plain spread over noise redraws")


def medians(rows: list[dict[str, Any]], methods: set[str]) -> dict[str, Any]:
    groups: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    for r in rows:
        if r["method"] not in methods:
            continue
        key = "real_pairs" if r["family"] == "real" else f"{r['family']}-{r['photons']:g}"
        for k in FIGURES:
            v = r.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                groups[(key, r["method"])][k].append(float(v))
    out: dict[str, Any] = {"note": NOTE, "by_family_and_photons": {}}
    for (key, method), figs in sorted(groups.items()):
        table = {k: round(statistics.median(v), 4) for k, v in figs.items()}
        if key == "real_pairs":
            out.setdefault("real_pairs", {})[method] = table
        else:
            out["by_family_and_photons"].setdefault(key, {})[method] = table
    return out


def main(argv: list[str] | None = None) -> int:
    from tcan_live.sr.card import read_card

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", type=Path, help="model folder (its model.toml is rewritten)")
    p.add_argument("--json", type=Path, default=Path("docs/evaluation/honesty.json"))
    a = p.parse_args(argv)
    path = a.model / "model.toml"
    card = tomllib.loads(path.read_text(encoding="utf-8"))
    rows = json.loads(a.json.read_text(encoding="utf-8"))
    model_id = card["id"]
    if not any(r["method"] == model_id for r in rows):
        raise SystemExit(f"{a.json}: no rows for model {model_id!r}")
    card.setdefault("metrics", {})["honesty"] = medians(
        rows, {"input", "richardson-lucy", "target", model_id})
    path.write_text(tomli_w.dumps(card), encoding="utf-8")
    read_card(a.model)  # still a valid card
    print(f"{path}: [metrics.honesty] from {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
