"""The paper's cGAN training loop, resumable and deterministic for a given seed.

Generator loss = w_pixel * (MSE or L1) + w_adv * BCE(D(x, G(x)), 1) + w_ssim * (1 - SSIM);
discriminator loss = BCE(D(x, y), 1) + BCE(D(x, G(x)), 0). Adam (1e-4 for G, 5e-5 for D),
alternating G and D updates, random crops with 90-degree rotations and flips. The exported
generator is an exponential moving average of the weights, chosen at the best validation loss.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcan_live.errors import ModelError
from tcan_live.sr.card import Normalization
from tcan_live.sr.model import build_generator, load_generator, save_model
from tcan_live.sr.network import Discriminator, Generator
from tcan_live.sr.normalize import normalize, percentile_affine
from tcan_live.train.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from tcan_live.train.config import TrainConfig
from tcan_live.train.losses import adversarial_loss, pixel_loss, ssim
from tcan_live.train.pairs import Pair

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Normalised (input, target) float32 arrays."""

    x: list[np.ndarray]
    y: list[np.ndarray]


def prepare(pairs: Sequence[Pair], norm: Normalization) -> Prepared:
    """Input and target share the input's percentile affine (the target keeps its flux)."""
    xs, ys = [], []
    for p in pairs:
        aff = percentile_affine(p.confocal, norm.low, norm.high)
        xs.append(normalize(p.confocal, aff))
        ys.append(normalize(p.sted, aff))
    return Prepared(xs, ys)


def split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed + 7919).permutation(n)
    n_val = min(max(int(round(n * fraction)), 1 if fraction > 0 else 0), n - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def random_patch(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        x = np.pad(x, ((0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "edge")
        y = np.pad(y, ((0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "edge")
        h, w = x.shape
    i, j = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    px, py = np.rot90(x[i : i + size, j : j + size], k), np.rot90(y[i : i + size, j : j + size], k)
    if flip:
        px, py = px[:, ::-1], py[:, ::-1]
    return np.ascontiguousarray(px), np.ascontiguousarray(py)


def centre_crop(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape
    s0, s1 = min(size, h), min(size, w)
    i, j = (h - s0) // 2, (w - s1) // 2
    return a[i : i + s0, j : j + s1]


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


ProgressFn = Callable[[int, int, dict[str, float]], None]


class Trainer:
    def __init__(
        self, cfg: TrainConfig, pairs: Sequence[Pair], out: Path, *, device: str = "auto",
        init: Path | None = None, source: str = "",
    ) -> None:
        self.cfg, self.out, self.source = cfg, Path(out), source
        self.device = pick_device(device)
        self.data = prepare(pairs, cfg.normalization)
        self.train_idx, self.val_idx = split(len(pairs), cfg.val_fraction, cfg.seed)
        self.val_names = [pairs[i].name for i in self.val_idx]
        torch.manual_seed(cfg.seed)
        self.g: Generator = build_generator(cfg.architecture).to(self.device)
        self.d = Discriminator(in_channels=2, width=cfg.disc_width).to(self.device)
        self.init = str(init) if init else None
        if init is not None:
            card, g0 = load_generator(Path(init))
            if card.architecture != cfg.architecture:
                raise ModelError(init, "the initial model has another architecture than the "
                                       "one requested (preset)")
            self.g.load_state_dict(g0.state_dict())
        self.ema = {k: v.detach().clone() for k, v in self.g.state_dict().items()}
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr_g)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr_d)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.elapsed_s = 0.0
        self.best_val = math.inf
        self.history: list[dict[str, float]] = []
        self.amp = self.device.type == "cuda"

    # -- one step --------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(self.cfg.batch):
            i = self.train_idx[int(self.rng.integers(len(self.train_idx)))]
            px, py = random_patch(self.rng, self.data.x[i], self.data.y[i], self.cfg.patch)
            xs.append(px)
            ys.append(py)
        to = lambda a: torch.from_numpy(np.stack(a)[:, None]).to(self.device)  # noqa: E731
        return to(xs), to(ys)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        x, y = self._batch()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            pred = self.g(x)
        pred = pred.float()
        # generator update (D fixed)
        l_pix = pixel_loss(pred, y, cfg.pixel_loss)
        l_ssim = 1.0 - ssim(pred, y)
        loss_g = cfg.w_pixel * l_pix + cfg.w_ssim * l_ssim
        l_adv = torch.zeros(())
        if cfg.w_adv > 0:
            for p in self.d.parameters():
                p.requires_grad_(False)
            l_adv = adversarial_loss(self.d(torch.cat([x, pred], 1)), real=True)
            loss_g = loss_g + cfg.w_adv * l_adv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self._update_ema()
        # discriminator update (G fixed)
        l_d = torch.zeros(())
        if cfg.w_adv > 0:
            for p in self.d.parameters():
                p.requires_grad_(True)
            fake = pred.detach()
            l_d = adversarial_loss(self.d(torch.cat([x, y], 1)), True) + adversarial_loss(
                self.d(torch.cat([x, fake], 1)), False
            )
            self.opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            self.opt_d.step()
        self.step += 1
        return {"loss_g": loss_g.item(), "pixel": l_pix.item(), "ssim_loss": l_ssim.item(),
                "adv": l_adv.item(), "loss_d": l_d.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        for k, v in self.g.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    # -- validation ------------------------------------------------------------------------
    def ema_generator(self) -> Generator:
        g = build_generator(self.cfg.architecture).to(self.device)
        g.load_state_dict(self.ema)
        return g.eval()

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        if not self.val_idx:
            return {}
        g = self.ema_generator()
        pix, ss = [], []
        for i in self.val_idx:
            x = centre_crop(self.data.x[i], 256)
            y = centre_crop(self.data.y[i], 256)
            tx = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(self.device)
            ty = torch.from_numpy(np.ascontiguousarray(y))[None, None].to(self.device)
            pred = g(tx).float()
            pix.append(float(pixel_loss(pred, ty, self.cfg.pixel_loss)))
            ss.append(float(ssim(pred, ty)))
        vp, vs = float(np.mean(pix)), float(np.mean(ss))
        return {"val_pixel": vp, "val_ssim": vs,
                "val_loss": self.cfg.w_pixel * vp + self.cfg.w_ssim * (1 - vs)}

    # -- persistence -----------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "train"

    def save(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, sd in (("g", self.g.state_dict()), ("d", self.d.state_dict()), ("ema", self.ema)):
            tensors.update({f"{name}.{k}": v.detach().cpu() for k, v in sd.items()})
        tg, groups_g = flatten_optimizer("opt_g", self.opt_g.state_dict())
        td, groups_d = flatten_optimizer("opt_d", self.opt_d.state_dict())
        tensors.update(tg)
        tensors.update(td)
        tensors["torch_rng"] = torch.get_rng_state()
        meta = {"step": self.step, "elapsed_s": self.elapsed_s, "best_val": self.best_val,
                "config": self.cfg.model_dump(mode="json"), "rng": self.rng.bit_generator.state,
                "opt_g_groups": groups_g, "opt_d_groups": groups_d, "history": self.history}
        save_checkpoint(self.ckpt_dir, tensors, meta)

    def resume(self) -> bool:
        loaded = load_checkpoint(self.ckpt_dir)
        if loaded is None:
            return False
        tensors, meta = loaded
        changed = {k for k, v in self.cfg.model_dump(mode="json").items()
                   if meta["config"].get(k) != v} - {"steps", "max_hours"}
        if changed:
            log.warning("resuming with changed settings %s (was: %s)", sorted(changed),
                        {k: meta["config"].get(k) for k in sorted(changed)})
        def part(prefix: str) -> dict[str, torch.Tensor]:
            n = len(prefix) + 1
            return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        self.g.load_state_dict(part("g"))
        self.d.load_state_dict(part("d"))
        self.ema = {k: v.to(self.device) for k, v in part("ema").items()}
        self.opt_g.load_state_dict(unflatten_optimizer("opt_g", tensors, meta["opt_g_groups"]))
        self.opt_d.load_state_dict(unflatten_optimizer("opt_d", tensors, meta["opt_d_groups"]))
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:  # a changed --lr-* takes effect (a decay phase)
                group["lr"] = lr
        torch.set_rng_state(tensors["torch_rng"])
        self.rng.bit_generator.state = meta["rng"]
        self.step, self.elapsed_s = int(meta["step"]), float(meta["elapsed_s"])
        self.best_val, self.history = float(meta["best_val"]), list(meta["history"])
        log.info("resumed from %s at step %d", self.ckpt_dir, self.step)
        return True

    def export(self, val: dict[str, float]) -> None:
        cfg = self.cfg
        save_model(
            self.out, self.ema_generator(), id=cfg.model_id,
            description=f"TCAN ({cfg.architecture.name}) trained with tcan-live on {self.source}",
            architecture=cfg.architecture, pixel_size_um=cfg.pixel_size_um,
            normalization=cfg.normalization, tiling=cfg.tiling,
            training=self.training_summary(val),
            provenance={"trained_with": "tcan-live train", "pairs": self.source,
                        "init": self.init or "random"},
        )

    def training_summary(self, val: dict[str, float]) -> dict[str, Any]:
        return {"step": self.step, "samples_seen": self.step * self.cfg.batch,
                "wall_time_h": round(self.elapsed_s / 3600, 3), "device": self.device.type,
                "validation_images": self.val_names[:50], **{k: round(v, 5) for k, v in
                                                            val.items()},
                "config": self.cfg.model_dump(mode="json", exclude_none=True)}

    def write_history(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not self.history:
            return
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        with (self.ckpt_dir / "losses.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
        plot_history(self.history, self.ckpt_dir / "losses.png")

    # -- loop ------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
        cfg = self.cfg
        budget_s = cfg.max_hours * 3600 if cfg.max_hours else math.inf
        window: list[dict[str, float]] = []
        val: dict[str, float] = {}
        while self.step < cfg.steps and self.elapsed_s < budget_s and not should_stop():
            t0 = time.perf_counter()
            window.append(self.train_step())
            self.elapsed_s += time.perf_counter() - t0
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                val = self._log_validation(window)
                window = []
            if self.step % cfg.checkpoint_every == 0:
                self.save()
            if progress is not None:
                progress(self.step, cfg.steps, window[-1] if window else val)
        if window or not val:
            val = self._log_validation(window)
        self.save()
        return val

    def _log_validation(self, window: list[dict[str, float]]) -> dict[str, float]:
        val = self.validate()
        row = {"step": float(self.step), "elapsed_s": round(self.elapsed_s, 1)}
        if window:
            row.update({k: float(np.mean([w[k] for w in window])) for k in window[0]})
        row.update(val)
        self.history.append(row)
        self.write_history()
        score = val.get("val_loss", row.get("loss_g", math.inf))
        if score < self.best_val or not (self.out / "weights.safetensors").exists():
            self.best_val = min(score, self.best_val)
            self.export(val)
        log.info("step %d: %s", self.step,
                 " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))
        return val


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("loss_g", "pixel", "ssim_loss", "loss_d"):
        if any(key in h for h in history):
            ax[0].plot(steps, [h.get(key, np.nan) for h in history], label=key)
    for key in ("val_loss", "val_pixel"):
        if any(key in h for h in history):
            ax[1].plot(steps, [h.get(key, np.nan) for h in history], label=key)
    for a, title in zip(ax, ("training (window means)", "validation (EMA generator)"),
                        strict=True):
        a.set_xlabel("step")
        a.set_yscale("log")
        a.set_title(title)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
