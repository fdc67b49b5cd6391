"""``tcan-live calibrate``: train a model's error head (sr/error_head.py) on simulated pairs.

The head learns, for one model, how the spread over noise redraws (sr/uncertainty.py) and the
input and output relate to the output's actual error. Training pairs come from the broad
simulator's *training* families only (``sim.domain.FAMILIES``; the held-out families stay
unseen, so the honesty benchmark can judge the head on structure it never saw): ``images``
single-family fields per family plus half as many mixed fields, photons and optics drawn at
random (2-500 photons at the peak). A fifth of the images is kept for validation: the card
records, on them, the median AUROC of the spread and of the head for "this pixel's error is in
the image's top 10%", and the Spearman correlation of each frame score with the image's NRMSE.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tcan_live.commands import CalibrateOptions
from tcan_live.errors import ConfigError
from tcan_live.sr.card import ErrorHeadCard, resolve_model, write_card
from tcan_live.sr.error_head import (
    HEAD_FILE,
    ErrorHead,
    error_fraction,
    head_inputs,
    laplace_nll,
    output_range,
    save_head,
)
from tcan_live.sr.uncertainty import frame_score
from tcan_live.train.metrics import auroc, error_map

CROP = 96
BATCH = 8
LR = 2e-3
GRAD_CLIP = 1.0  # |error| / b is large where b starts small: early steps can be violent


@dataclass
class Example:
    x: np.ndarray  # head inputs (3, H, W)
    error: np.ndarray  # |output - truth| after the affine fit, fraction of the truth's range
    spread: np.ndarray
    output: np.ndarray


def simulate_examples(enhancer: object, images: int, size: int, seed: int, passes: int,
                      progress: Callable[[str], None] | None = None) -> list[Example]:
    """``images`` fields per training family and ``images * families / 2`` mixed ones, each
    enhanced and redrawn ``passes`` times (the model's own spread)."""
    from tcan_live.sim import domain

    enh = enhancer  # an Enhancer (typed loosely to keep torch-free imports elsewhere)
    rng = np.random.default_rng(seed)
    samples: list[domain.Sample] = [domain.Sample((fam,), regions=False)
                                    for fam in domain.FAMILIES for _ in range(images)]
    samples += [domain.random_sample(rng) for _ in range(images * len(domain.FAMILIES) // 2)]
    px = domain.MODEL_PX_NM / 1000
    out: list[Example] = []
    t0 = time.perf_counter()
    for k, sample in enumerate(samples):
        pair = domain.image_pair(rng, size, domain.random_acquisition(rng), sample)
        y = np.asarray(enh.enhance(pair.confocal, px).image)  # type: ignore[attr-defined]
        s = enh.spread(pair.confocal, px, passes=passes, seed=k)  # type: ignore[attr-defined]
        out.append(Example(head_inputs(pair.confocal, y, s),
                           error_map(y, pair.sted).astype(np.float32), s, y))
        if progress and (k + 1) % 20 == 0:
            left = (time.perf_counter() - t0) / (k + 1) * (len(samples) - k - 1)
            progress(f"simulated {k + 1}/{len(samples)} fields, about {left / 60:.1f} min left")
    return out


def _batch(rng: np.random.Generator, train: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, es = [], []
    for i in rng.integers(0, len(train), BATCH):
        ex = train[int(i)]
        h, w = ex.error.shape
        c = min(CROP, h, w)  # every field has the same size (--size)
        y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        x, e = ex.x[:, y0:y0 + c, x0:x0 + c], ex.error[y0:y0 + c, x0:x0 + c]
        k = int(rng.integers(0, 8))
        x, e = np.rot90(x, k % 4, axes=(1, 2)), np.rot90(e, k % 4)
        if k >= 4:
            x, e = x[:, :, ::-1], e[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        es.append(np.ascontiguousarray(e)[None])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(es))


def train_head(train: list[Example], steps: int, width: int, seed: int, device: str = "cpu",
               progress: Callable[[str], None] | None = None) -> ErrorHead:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = ErrorHead(width).to(device)
    opt = torch.optim.Adam(head.parameters(), LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=LR / 20)
    t0, last = time.perf_counter(), 0.0
    for step in range(steps):
        x, e = _batch(rng, train)
        loss = laplace_nll(head(x.to(device)), e.to(device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
        now = time.perf_counter()
        if progress and (now - last > 15 or step + 1 == steps):
            last = now
            left = (now - t0) / (step + 1) * (steps - step - 1)
            progress(f"step {step + 1}/{steps}, loss {float(loss.detach()):.4f}, "
                     f"about {left / 60:.1f} min left")
    return head.to("cpu").eval()


def predict(head: ErrorHead, ex: Example) -> np.ndarray:
    """The head's map for an example, in the output's units (as LoadedHead.predict on the
    model's grid)."""
    return np.asarray(error_fraction(head, ex.x) * output_range(ex.output), np.float32)


def validate(head: ErrorHead, val: list[Example]) -> dict[str, float]:
    """Median AUROC (top-10% error pixels) and frame-score Spearman vs NRMSE, spread and head."""
    from scipy.stats import spearmanr

    rows = []
    for ex in val:
        q = np.quantile(ex.error, 0.9)
        pos = ex.error >= q
        if pos.all():
            pos = ex.error > q
        m = predict(head, ex)
        rows.append((auroc(ex.spread, pos), auroc(m, pos), frame_score(ex.spread, ex.output),
                     frame_score(m, ex.output), float(np.sqrt(np.mean(ex.error ** 2)))))
    a = np.array(rows, np.float64)
    return {"images": len(val),
            "auroc_spread": round(float(np.nanmedian(a[:, 0])), 4),
            "auroc_head": round(float(np.nanmedian(a[:, 1])), 4),
            "spearman_spread": round(float(spearmanr(a[:, 2], a[:, 4]).statistic), 4),
            "spearman_head": round(float(spearmanr(a[:, 3], a[:, 4]).statistic), 4)}


def run_calibrate(opts: CalibrateOptions) -> int:
    from tcan_live.sr.enhancer import Enhancer

    folder = resolve_model(opts.model)
    enhancer = Enhancer(folder, device=opts.device)
    if not math.isclose(enhancer.pixel_size_um * 1000, 50.0, rel_tol=0.01):
        raise ConfigError(f"{folder}: calibrate simulates on a 50 nm grid; this model works "
                          f"at {enhancer.pixel_size_um * 1000:g} nm")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    examples = simulate_examples(enhancer, opts.images, opts.size, opts.seed, opts.passes, say)
    order = np.random.default_rng(opts.seed).permutation(len(examples))
    n_val = max(len(examples) // 5, 1)
    val = [examples[i] for i in order[:n_val]]
    train = [examples[i] for i in order[n_val:]] or val
    device = "cpu" if enhancer.device.type != "cuda" else "cuda"
    head = train_head(train, opts.steps, opts.width, opts.seed, device, say)
    metrics = validate(head, val)
    sha = save_head(folder, head)
    entry = ErrorHeadCard(
        file=HEAD_FILE, sha256=sha, width=opts.width, passes=opts.passes,
        trained_on={"options": opts.model_dump(mode="json"),
                    "fields": len(examples), "validation_fields": n_val, "size": opts.size,
                    "seed": opts.seed, "steps": opts.steps, "crop": CROP, "batch": BATCH,
                    "lr": LR, "loss": "Laplace NLL of |output - truth| (after the affine fit)",
                    "simulator": "tcan_live.sim.domain, training families only",
                    "minutes": round((time.perf_counter() - t0) / 60, 1)},
        metrics=metrics)
    write_card(folder, enhancer.card.model_copy(update={"error_head": entry}))
    print(f"error head written to {folder / HEAD_FILE}; validation ({n_val} fields): AUROC "
          f"{metrics['auroc_spread']:.3f} (spread) -> {metrics['auroc_head']:.3f} (head), "
          f"frame score Spearman {metrics['spearman_spread']:.3f} -> "
          f"{metrics['spearman_head']:.3f}")
    return 0
