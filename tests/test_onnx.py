"""`tcan-live models export --onnx`: the exported graph gives the PyTorch model's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcan_live._cli import main


def test_real_dft_attention_equals_the_fft(rng: np.random.Generator) -> None:
    from tcan_live.sr.network import FourierChannelAttention

    m = FourierChannelAttention(8, gamma=0.8, reduction=2)
    x = torch.from_numpy(rng.normal(size=(2, 8, 37, 48)).astype(np.float32))
    with torch.no_grad():
        a = m(x)
        m.real_dft = True
        b = m(x)
    assert torch.allclose(a, b, atol=1e-6)


def test_onnx_export_matches_pytorch(tiny_model: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    assert main(["models", "export", "--onnx", "--model", str(tiny_model), "--out", str(out),
                 "--size", "64"]) == 0
    from tcan_live.sr.model import load_generator

    _, g = load_generator(tiny_model)
    x = np.random.default_rng(3).random((3, 1, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        ref = g(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1, 64, 64)  # the batch size is dynamic
    np.testing.assert_allclose(got, ref, atol=1e-4 * float(np.ptp(ref)))
    meta = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert meta["model_id"] == "tiny-random" and meta["tile"] == "64"
