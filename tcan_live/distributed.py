"""Enhance planes on a Dask cluster (optional extra ``dask``).

Each worker loads the model once, through a worker plugin, and keeps it in memory. A task
names a file and a plane number; the worker reads that plane itself, so with files on shared
storage the pixels do not travel through the client. Results are gathered by plane number and
written by the same code as the single-process path, so the files and metadata are the same.
Dask re-runs tasks of a worker that dies; a task that keeps failing (``retries``) is reported
with its file and plane, and that file is not written: nothing is silently lost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tcan_live.errors import TcanError
from tcan_live.frame import resolve_pixel_size

log = logging.getLogger(__name__)
PLUGIN_NAME = "tcan-live-enhancer"


try:
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # the extra is not installed: the class is defined but unusable
    _WorkerPlugin = object  # type: ignore[assignment,misc]


class EnhancerPlugin(_WorkerPlugin):
    """Dask worker plugin: one resident Enhancer per worker process."""

    name = PLUGIN_NAME

    def __init__(self, model: str | None, device: str = "auto", tile: int | None = None,
                 precision: str = "auto", restore: bool = True) -> None:
        self.model, self.device, self.tile, self.precision = model, device, tile, precision
        self.restore = restore
        self.enhancer: Any = None
        self.loads = 0

    def setup(self, worker: Any) -> None:
        from tcan_live.sr.enhancer import Enhancer

        device = self.device
        if device == "auto" and os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
            device = "cpu"
        self.enhancer = Enhancer(self.model, device=device, tile=self.tile,
                                 precision=self.precision, restore=self.restore)
        self.loads += 1
        log.info("worker %s loaded model %s on %s", getattr(worker, "address", "?"),
                 self.enhancer.model_id, self.enhancer.device)

    def teardown(self, worker: Any) -> None:
        self.enhancer = None


def _plugin() -> EnhancerPlugin:
    from distributed import get_worker

    plugin = get_worker().plugins[PLUGIN_NAME]
    assert isinstance(plugin, EnhancerPlugin)
    return plugin


def enhance_plane_task(path: str, plane: int, pixel_size_um: float | None,
                       keep_model_grid: bool
                       ) -> tuple[int, tuple[int, ...], np.ndarray, float | None, int]:
    """Runs on a worker: read plane ``plane`` of ``path`` and enhance it with the resident
    model. Returns (plane, array index, image, pixel size of the image, process id)."""
    from tcan_live.sources.readers import open_stack

    with open_stack(path) as reader:
        px = resolve_pixel_size(pixel_size_um, reader.info.pixel_size_um, source=path)
        idx, frame = next(iter(reader.planes(plane)))
    res = _plugin().enhancer.enhance(frame.data, px, keep_model_grid=keep_model_grid,
                                     source=path)
    return plane, idx, res.image, res.pixel_size_um, os.getpid()


def worker_loads(dask_worker: Any) -> tuple[int, int]:
    """For ``client.run``: (process id, number of model loads) of a worker."""
    return os.getpid(), dask_worker.plugins[PLUGIN_NAME].loads


@contextmanager
def connect(scheduler: str | None, workers: int | None, *, model: str | None, device: str,
            tile: int | None, precision: str = "auto", restore: bool = True) -> Iterator[Any]:
    """A distributed Client (to ``scheduler``, or to a LocalCluster of ``workers`` processes)
    with the enhancer plugin registered on every worker."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise TcanError("distributed processing needs: pip install 'tcan-live[dask]'") from err
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        client.register_plugin(EnhancerPlugin(model, device, tile, precision, restore),
                               name=PLUGIN_NAME)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def enhance_planes(client: Any, path: Path, n_planes: int, *, pixel_size_um: float | None,
                   keep_model_grid: bool = False, retries: int = 2,
                   progress: Callable[[int, int], None] | None = None) -> dict[int, Any]:
    """Enhance every plane of ``path`` on the cluster; plane -> (array index, image, px)."""
    from distributed import as_completed

    futures = [client.submit(enhance_plane_task, str(path), k, pixel_size_um, keep_model_grid,
                             key=f"tcan-{path.name}-{k}-{os.getpid()}", retries=retries,
                             pure=False)
               for k in range(n_planes)]
    out: dict[int, Any] = {}
    failed: list[str] = []
    for fut in as_completed(futures):
        try:
            k, idx, img, px, _ = fut.result()
        except Exception as err:
            failed.append(f"{fut.key}: {type(err).__name__}: {err}")
            continue
        out[k] = (tuple(idx), img, px)
        if progress:
            progress(len(out), n_planes)
    if failed:
        raise TcanError(f"{path}: {len(failed)} plane(s) failed after {retries} retries: "
                        f"{failed[0]}")
    return out
