"""Write simulated training/evaluation pair sets to disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tcan_live.sim.simulate import (
    Camera,
    Optics,
    PairImage,
    Scene,
    Structure,
    random_conditions,
    simulate_pair,
)
from tcan_live.train.pairs import write_manifest, write_pair_stack

if TYPE_CHECKING:
    from tcan_live.sim.domain import BroadPair


def simulate_dataset(
    out: Path, *, n: int, size: int = 256, seed: int = 0, optics: Optics = Optics(),
    camera: Camera | None = None, structures: Sequence[Structure] | None = None,
    progress: Callable[[int], None] | None = None, simulator: str = "broad",
    families: Sequence[str] | None = None, photons: float | None = None,
    pixel_nm: float | None = None,
) -> list[Path]:
    """``n`` pair stacks ``sim_<seed>_<i>.ome.tif`` plus ``manifest.csv`` (parameters per image).

    With ``camera=None`` every image draws its optics, camera and scene at random over wide ranges
    (:func:`random_conditions`); a given camera fixes brightness and noise. ``structures`` restricts
    the scene content.

    ``simulator="broad"`` (the default, :mod:`tcan_live.sim.domain`) draws structure families
    (``families``, default all training families), point-scanning optics, a point detector and
    the acquisition pixel size (``pixel_nm``, default 30-100 nm) at random per image; ``photons``
    fixes the brightest confocal pixel's expected photons. ``"classic"`` is the earlier
    four-shape simulator (``optics``, ``camera``, ``structures``).
    """
    if simulator == "broad":
        if structures or camera is not None:
            raise ValueError("structures and camera belong to the classic simulator; the broad "
                             "one takes families, photons and pixel_nm")
        return _broad_dataset(out, n=n, size=size, seed=seed, families=families,
                              photons=photons, pixel_nm=pixel_nm, progress=progress)
    if simulator != "classic":
        raise ValueError(f"unknown simulator {simulator!r}; expected 'broad' or 'classic'")

    def classic(rng: np.random.Generator) -> PairImage:
        opt_i, cam_i, scene_i = random_conditions(rng, optics)
        if camera is not None:
            opt_i, cam_i = optics, camera
        if structures:
            scene_i = replace(scene_i, structures=tuple(structures))
        return simulate_pair(rng, (size, size), opt_i, cam_i, scene_i)

    return _write_pairs(out, n, seed, classic, progress)


def _broad_dataset(out: Path, *, n: int, size: int, seed: int, families: Sequence[str] | None,
                   photons: float | None, pixel_nm: float | None,
                   progress: Callable[[int], None] | None) -> list[Path]:
    from tcan_live.sim import domain

    fams = tuple(families) if families else domain.FAMILIES
    unknown = set(fams) - set(domain.FAMILY_FNS)
    if unknown:
        raise ValueError(f"unknown structure families {sorted(unknown)}; expected some of "
                         f"{sorted(domain.FAMILY_FNS)}")

    def broad(rng: np.random.Generator) -> domain.BroadPair:
        acq = domain.random_acquisition(rng, photons, pixel_nm)
        sample = domain.random_sample(rng, fams)  # type: ignore[arg-type]
        return domain.image_pair(rng, size, acq, sample)

    return _write_pairs(out, n, seed, broad, progress)


def _write_pairs(out: Path, n: int, seed: int,
                 make: Callable[[np.random.Generator], PairImage | BroadPair],
                 progress: Callable[[int], None] | None) -> list[Path]:
    """``n`` pairs from one seeded generator, written as ``sim_<seed>_<i>.ome.tif`` plus the
    manifest (one writing loop for both simulators)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, rows = [], []
    for i in range(n):
        pair = make(rng)
        path = out / f"sim_{seed}_{i:05d}.ome.tif"
        write_pair_stack(path, pair)
        paths.append(path)
        rows.append({"file": path.name, **pair.params()})
        if progress:
            progress(i + 1)
    write_manifest(out, rows)
    return paths


__all__ = ["Scene", "simulate_dataset"]
