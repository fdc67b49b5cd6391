"""Periodic test fields for sr/restore.py and the shipped model: the generator is the restore
benchmark's (one place); ``norm`` is the Enhancer's percentile normalisation."""

from __future__ import annotations

import numpy as np

from benchmarks.restore import PX_UM
from benchmarks.restore import confocal_field as confocal
from benchmarks.restore import lattice_field as lattice
from tcan_live.sim.simulate import sigma_px
from tcan_live.sr.normalize import normalize, percentile_affine

CONF_NM = 230.0

__all__ = ["CONF_NM", "PX_UM", "confocal", "lattice", "norm", "sigma_px"]


def norm(a: np.ndarray) -> np.ndarray:
    return normalize(a, percentile_affine(a, 1.0, 99.9))
