"""``tcan-live train``: TrainConfig -> Trainer, with progress and clean interruption."""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tcan_live.train.config import TrainConfig
from tcan_live.train.pairs import load_pairs
from tcan_live.train.trainer import Trainer

log = logging.getLogger(__name__)


def run_training(pairs_dir: Path, out: Path, cfg: TrainConfig, *, planes: tuple[int, ...],
                 device: str, init: Path | None, restart: bool) -> int:
    """``tcan-live train``: train (or resume) into the model folder ``out``."""
    pairs = load_pairs(pairs_dir, planes)
    if restart and (out / "train").exists():
        shutil.rmtree(out / "train")
    trainer = Trainer(cfg, pairs, out, device=device, init=init, source=str(pairs_dir))
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
