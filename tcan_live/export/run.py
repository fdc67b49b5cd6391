"""``tcan-live export`` command: typed options -> ExportOptions -> export(), with progress."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from tcan_live.commands import ExportCommand
from tcan_live.export.timelapse import ExportOptions, export, is_tcan_output


def run_export(cmd: ExportCommand) -> int:
    """``tcan-live export``: options -> ExportOptions -> export(), with progress."""
    from tcan_live.export.formats import check_output_path

    out, _ = check_output_path(cmd.output, cmd.format)
    opts = ExportOptions(drift_correct=cmd.drift_correct, reference=cmd.reference,
                         drift_channel=cmd.drift_channel, drift_on=cmd.drift_on,
                         smooth_window=cmd.smooth, pad=cmd.pad, movie=cmd.movie,
                         pixel_size_um=cmd.pixel_size_um, save_raw=cmd.save_raw)
    enhancer = None
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        client = None
        if is_tcan_output(cmd.input):
            pass
        elif cmd.scheduler or cmd.workers:
            from tcan_live.distributed import connect

            client = stack.enter_context(connect(cmd.scheduler, cmd.workers, model=cmd.model,
                                                 device=cmd.device, tile=cmd.tile,
                                                 precision=cmd.precision,
                                                 restore=cmd.restore))
        else:
            from tcan_live.sr.enhancer import Enhancer

            enhancer = Enhancer(cmd.model, device=cmd.device, tile=cmd.tile,
                                precision=cmd.precision, restore=cmd.restore)
        return _run(cmd.input, out, opts, enhancer, client)


def _run(src: Path, out: Path, opts: ExportOptions, enhancer: object, client: object) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                  transient=True) as prog:
        task = prog.add_task(f"export {src.name}", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            prog.update(task, description=f"{stage} {src.name}", completed=done, total=total)

        written = export(src, out, opts, enhancer, progress, client)
    for w in written:
        print(f"wrote {w}", file=sys.stderr)
    return 0
