"""``tcan-live train``: options -> TrainConfig -> Trainer, with progress and clean interruption."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tcan_live.errors import ConfigError
from tcan_live.sr.card import PRESETS
from tcan_live.train.pairs import load_pairs
from tcan_live.train.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.preset not in PRESETS:
        raise ConfigError(f"--preset {args.preset!r} unknown; choose one of {sorted(PRESETS)}")
    return TrainConfig(
        model_id=args.id or Path(args.out).name, architecture=PRESETS[args.preset],
        steps=args.steps, batch=args.batch, patch=args.patch, lr_g=args.lr_g, lr_d=args.lr_d,
        w_pixel=args.w_pixel, w_adv=args.w_adv, w_ssim=args.w_ssim, pixel_loss=args.pixel_loss,
        val_fraction=args.val_fraction, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, seed=args.seed, max_hours=args.max_hours,
        pixel_size_um=args.pixel_size_um,
    )


def train_from_cli(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    planes = tuple(int(p) for p in args.planes.split(","))
    pairs = load_pairs(Path(args.pairs), planes)
    out = Path(args.out)
    if args.restart and (out / "train").exists():
        shutil.rmtree(out / "train")
    trainer = Trainer(cfg, pairs, out, device=args.device,
                      init=Path(args.init) if args.init else None, source=str(args.pairs))
    resumed = trainer.resume()
    print(f"{'resuming' if resumed else 'starting'} at step {trainer.step}/{cfg.steps}: "
          f"{len(trainer.train_idx)} training / {len(trainer.val_idx)} validation images, "
          f"device {trainer.device}", file=sys.stderr)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        val = _run_with_progress(trainer, stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    state = "stopped (resume with the same command)" if stop.is_set() else "finished"
    print(f"training {state} at step {trainer.step}; model in {out}: {val}", file=sys.stderr)
    return 0


def _run_with_progress(trainer: Trainer, stop: threading.Event) -> dict[str, float]:
    if not sys.stderr.isatty():
        return trainer.run(should_stop=stop.is_set)
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: Any = (TextColumn("[bold]train"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=False) as prog:
        task = prog.add_task("train", total=trainer.cfg.steps, completed=trainer.step, info="")

        def update(step: int, total: int, losses: dict[str, float]) -> None:
            info = " ".join(f"{k}={v:.3g}" for k, v in list(losses.items())[:3])
            prog.update(task, completed=step, info=info)

        return trainer.run(progress=update, should_stop=stop.is_set)
