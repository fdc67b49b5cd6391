"""``tcan-live enhance``: whole files in, ``<name>_tcan.ome.tif`` (or ``.ome.zarr``) out (same
layout, float32)."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.commands import EnhanceOptions
from tcan_live.errors import ConfigError, TcanError
from tcan_live.export.formats import write_image
from tcan_live.export.ometiff import OmeMeta
from tcan_live.frame import StackInfo, resolve_pixel_size
from tcan_live.sources.readers import StackReader, open_stack

log = logging.getLogger(__name__)
IN_MEMORY_LIMIT = 2 * 2**30


def output_name(path: Path, tag: str = "tcan", fmt: str = "ome-tiff") -> str:
    from tcan_live.export.formats import output_suffix
    from tcan_live.sources.naming import strip_image_suffix

    return f"{strip_image_suffix(path.name)}_{tag}{output_suffix(fmt)}"


def _allocate(shape: tuple[int, ...], folder: Path, stack: contextlib.ExitStack) -> np.ndarray:
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes < IN_MEMORY_LIMIT:
        return np.zeros(shape, np.float32)
    tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=folder, prefix=".tcan-"))
    return np.lib.format.open_memmap(Path(tmp) / "buf.npy", "w+", np.float32, shape)


def _local(enhancer: Any, reader: StackReader, px: float | None, keep_model_grid: bool,
           path: Path) -> Iterator[tuple[tuple[int, ...], np.ndarray | None, np.ndarray,
                                         float | None]]:
    for idx, frame in reader.planes():
        res = enhancer.enhance(frame.data, px, keep_model_grid=keep_model_grid, source=str(path))
        yield idx, frame.data, res.image, res.pixel_size_um


def _cluster(client: Any, reader: StackReader, px: float | None, keep_model_grid: bool,
             path: Path, with_raw: bool, progress: Callable[[int, int], None] | None
             ) -> Iterator[tuple[tuple[int, ...], np.ndarray | None, np.ndarray, float | None]]:
    from tcan_live.distributed import enhance_planes

    results = enhance_planes(client, path, reader.info.n_planes, pixel_size_um=px,
                             keep_model_grid=keep_model_grid, progress=progress)
    if with_raw:  # the residual needs the raw planes here as well
        for k, (idx, frame) in enumerate(reader.planes()):
            yield idx, frame.data, results[k][1], results[k][2]
    else:
        for k in sorted(results):
            idx, img, out_px = results[k]
            yield idx, None, img, out_px


def enhance_file(
    enhancer: Any, path: Path, out_dir: Path, *, pixel_size_um: float | None = None,
    keep_model_grid: bool = False, residual: bool = False, uncertainty: bool = False,
    progress: Callable[[int, int], None] | None = None, client: Any = None,
    fmt: str = "ome-tiff",
) -> list[Path]:
    """Enhance every plane of one input; returns the files written (nothing on failure).
    ``uncertainty``: also ``<stem>_uncertainty.ome.tif`` (float32, the enhanced output's
    shape; larger = less certain; sr/uncertainty.py, sr/error_head.py), computed here (not on
    a cluster).

    With a Dask ``client`` the planes are enhanced on the cluster's workers (each holding the
    model) and written here in order, exactly as in the single-process path."""
    from tcan_live.resample import resample_to_shape
    from tcan_live.sr.trust import trust_check

    reader = open_stack(path)
    with reader, contextlib.ExitStack() as stack:
        info = reader.info
        px = resolve_pixel_size(pixel_size_um, info.pixel_size_um, source=str(path))
        results = (_cluster(client, reader, px, keep_model_grid, path, residual, progress)
                   if client is not None else _local(enhancer, reader, px, keep_model_grid, path))
        out: np.ndarray | None = None
        res: np.ndarray | None = None
        unc: np.ndarray | None = None
        out_px = px
        for k, (idx, raw, image, image_px) in enumerate(results):
            if out is None:
                out = _allocate(info.shape + image.shape, out_dir, stack)
                out_px = image_px
                if residual:
                    res = _allocate(info.shape + info.plane_shape, out_dir, stack)
                if uncertainty:
                    unc = _allocate(info.shape + image.shape, out_dir, stack)
            out[idx] = image
            if unc is not None and raw is not None:
                unc[idx] = enhancer.uncertainty(raw, px, keep_model_grid=keep_model_grid,
                                                seed=k, source=str(path), enhanced=image)
            if res is not None and raw is not None:
                grid_out = (resample_to_shape(image, info.plane_shape) if keep_model_grid
                            else image)
                card = enhancer.card
                check = trust_check(raw.astype(np.float32), grid_out, px or card.pixel_size_um,
                                    confocal_fwhm_nm=card.confocal_fwhm_nm,
                                    target_fwhm_nm=card.target_fwhm_nm)
                assert check.residual is not None
                res[idx] = check.residual
            if progress and client is None:
                progress(k + 1, info.n_planes)
        if out is None:
            raise TcanError(f"{path}: no planes to enhance")
        written = [write_image(out_dir / output_name(path, fmt=fmt), out,
                               _meta(info, out_px, enhancer))]
        if res is not None:
            written.append(write_image(out_dir / output_name(path, "residual", fmt), res,
                                       _meta(info, px, enhancer)))
        if unc is not None:
            written.append(write_image(out_dir / output_name(path, "uncertainty", fmt), unc,
                                       _meta(info, out_px, enhancer)))
        return written


def _meta(info: StackInfo, px: float | None, enhancer: object) -> OmeMeta:
    model = getattr(enhancer, "model_id", "?")
    return OmeMeta(axes=info.axes, pixel_size_um=px, channel_names=info.channel_names,
                   time_increment_s=info.time_increment_s, z_step_um=info.z_step_um,
                   description=f"Enhanced by tcan-live with model {model} from {info.path.name}")


class ModelInfo:
    """What the writer needs of a model when the model itself runs on cluster workers."""

    def __init__(self, model: str | None) -> None:
        from tcan_live.sr.card import read_card, resolve_model

        self.card = read_card(resolve_model(model))
        self.model_id = self.card.id


def enhance_all(opts: EnhanceOptions) -> int:
    """``tcan-live enhance``: every input, one after the other; a bad input is reported by name
    and the others are still processed. 0 when all were written, 1 otherwise."""
    opts.output.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        client = None
        if opts.scheduler or opts.workers:
            from tcan_live.distributed import connect

            if opts.uncertainty:
                raise ConfigError("the uncertainty map is computed in this process: it cannot "
                                  "be combined with a Dask cluster (scheduler/workers)")
            enhancer: Any = ModelInfo(opts.model)
            client = stack.enter_context(connect(opts.scheduler, opts.workers, model=opts.model,
                                                 device=opts.device, tile=opts.tile,
                                                 precision=opts.precision,
                                                 restore=opts.restore))
        else:
            from tcan_live.sr.enhancer import Enhancer

            enhancer = Enhancer(opts.model, device=opts.device, tile=opts.tile,
                                precision=opts.precision, restore=opts.restore)
        return _enhance_all(opts, enhancer, client)


def _enhance_all(opts: EnhanceOptions, enhancer: Any, client: Any) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    failures = 0
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                  console=_stderr_console(), transient=True) as prog:
        for path in opts.inputs:
            task = prog.add_task(path.name, total=None)

            def update(done: int, total: int, task: Any = task) -> None:
                prog.update(task, completed=done, total=total)

            try:
                written = enhance_file(enhancer, path, opts.output,
                                       pixel_size_um=opts.pixel_size_um,
                                       keep_model_grid=opts.keep_model_grid,
                                       residual=opts.residual, uncertainty=opts.uncertainty,
                                       progress=update, client=client,
                                       fmt=opts.format or "ome-tiff")
                for w in written:
                    prog.console.print(f"wrote {w}")
            except TcanError as err:
                failures += 1
                print(f"tcan-live: error: {err}", file=sys.stderr)
            except Exception as err:  # a reader library failing in an unforeseen way
                failures += 1
                print(f"tcan-live: error: {path}: {type(err).__name__}: {err}", file=sys.stderr)
            prog.remove_task(task)
    return 1 if failures else 0


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, highlight=False)
