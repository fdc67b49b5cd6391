"""``tcan-live export`` command: options -> ExportOptions -> export(), with progress."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from tcan_live.export.timelapse import ExportOptions, export, is_tcan_output


def export_from_cli(args: argparse.Namespace) -> int:
    from tcan_live.export.formats import check_output_path

    src = Path(args.input)
    out, _ = check_output_path(Path(args.output), args.format)
    opts = ExportOptions(drift_correct=args.drift_correct, reference=args.reference,
                         drift_channel=args.drift_channel, drift_on=args.drift_on,
                         smooth_window=args.smooth, pad=args.pad,
                         movie=Path(args.movie) if args.movie else None,
                         pixel_size_um=args.pixel_size_um, save_raw=args.save_raw)
    enhancer = None
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        client = None
        if is_tcan_output(src):
            pass
        elif args.scheduler or args.workers:
            from tcan_live.distributed import connect

            client = stack.enter_context(connect(args.scheduler, args.workers, model=args.model,
                                                 device=args.device, tile=args.tile,
                                                 precision=args.precision))
        else:
            from tcan_live.sr.enhancer import Enhancer

            enhancer = Enhancer(args.model, device=args.device, tile=args.tile,
                                precision=args.precision)
        return _run(src, out, opts, enhancer, client)


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
