"""``tcan-live models export --onnx``: the generator as ONNX, for use outside Python.

The exported graph takes normalised tiles ``(N, 1, S, S)`` (S = the card's tile size, N
dynamic) and returns the enhanced tiles. Normalisation, resampling and tiling stay outside the
graph (see docs/architecture.md). The Fourier attention uses real DFT matrices in the export
(ONNX has no complex tensors); the result is checked against the PyTorch model with ONNX Runtime
before the file is kept. Needs the ``onnx`` extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tcan_live.errors import ModelError
from tcan_live.sr.model import load_generator
from tcan_live.sr.network import FourierChannelAttention

TOLERANCE = 1e-3  # max |onnx - torch| relative to the output's range


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    max_abs_diff: float
    output_range: float


def sample_tiles(size: int) -> np.ndarray:
    """Two normalised simulated confocal tiles (filaments + beads, actin + rings), seed 0."""
    from tcan_live.sim.simulate import Camera, Optics, Scene, simulate_pair
    from tcan_live.sr.normalize import normalize, percentile_affine

    rng = np.random.default_rng(0)
    tiles = []
    for structures in (("filaments", "beads"), ("actin", "rings")):
        img = simulate_pair(rng, (size, size), Optics(), Camera(photons=80),
                            Scene(structures=structures)).confocal
        tiles.append(normalize(img, percentile_affine(img)))
    return np.stack(tiles)[:, None].astype(np.float32)


def export_onnx(folder: Path, out: Path | None = None, *, size: int | None = None) -> OnnxExport:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError(folder, "ONNX export needs: pip install 'tcan-live[onnx]'") from err
    card, g = load_generator(folder)
    size = size or card.tiling.tile
    out = out or folder / f"{card.id}.onnx"
    tiles = sample_tiles(size)
    with torch.inference_mode():
        ref = g(torch.from_numpy(tiles)).numpy()
    for m in g.modules():
        if isinstance(m, FourierChannelAttention):
            m.real_dft = True
    tmp = out.with_name(f".{out.stem}.part.onnx")
    batch = torch.export.Dim("batch", min=1, max=256)
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(g, (torch.from_numpy(tiles[:1]),), dynamo=True,
                                    input_names=["tiles"], output_names=["enhanced"],
                                    dynamic_shapes={"x": {0: batch}})
    if program is None:
        raise ModelError(out, "torch.onnx.export returned no program")
    program.save(str(tmp))
    try:
        import onnx

        proto = onnx.load(str(tmp))
        meta = {"model_id": card.id, "tile": str(size),
                "card": json.dumps(card.model_dump(mode="json", exclude_none=True))}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: tiles})[0]
        diff = float(np.abs(got - ref).max())
        span = float(ref.max() - ref.min()) or 1.0
        if not diff <= TOLERANCE * span:
            raise ModelError(out, f"ONNX output differs from PyTorch by {diff:.3g} "
                                  f"(allowed {TOLERANCE * span:.3g})")
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return OnnxExport(out, diff, span)
