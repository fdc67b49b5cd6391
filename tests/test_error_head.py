"""Issue 16: the error head (sr/error_head.py) and ``tcan-live calibrate`` (train/calibrate.py).

What is tested here: the head learns a relation that is there (and only from its inputs), the
map is in the output's units on any grid, the card and the file are checked like the weights,
the map computed with the output handed in equals the map computed from scratch, and the
command writes a head that ``enhance --uncertainty`` then uses. Its quality on the real model
is measured by ``python -m benchmarks.honesty`` (docs/training.md), not here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from tcan_live._cli import main
from tcan_live.errors import ModelError
from tcan_live.sr.card import ErrorHeadCard, read_card, write_card
from tcan_live.sr.enhancer import Enhancer
from tcan_live.sr.error_head import ErrorHead, LoadedHead, head_inputs, load_head, save_head
from tcan_live.train.calibrate import Example, predict, train_head, validate
from tcan_live.train.metrics import auroc


def _blobs(rng: np.random.Generator, n: int = 160) -> np.ndarray:
    return ndimage.gaussian_filter((rng.random((n, n)) > 0.995).astype(np.float64), 2.0)


def _example(rng: np.random.Generator) -> Example:
    """An output with two kinds of blobs: those of the first image are wrong (large error,
    flagged by a large spread), the others right. The error is a function of the inputs."""
    wrong, right = _blobs(rng), _blobs(rng)
    out = (wrong + right) * 100 + 5
    spread = wrong * 30 + 0.1
    error = (wrong / max(wrong.max(), 1e-9) * 0.3 + 0.002).astype(np.float32)
    raw = ndimage.gaussian_filter(out, 3)
    return Example(head_inputs(raw, out, spread), error, spread.astype(np.float32),
                   out.astype(np.float32))


def test_the_head_learns_where_the_error_is_from_its_inputs() -> None:
    rng = np.random.default_rng(0)
    train = [_example(rng) for _ in range(12)]
    val = [_example(rng) for _ in range(4)]
    untrained = ErrorHead(8)
    before = np.median([auroc(predict(untrained, ex), ex.error > 0.05) for ex in val])
    head = train_head(train, steps=300, width=8, seed=0)
    after = [auroc(predict(head, ex), ex.error > 0.05) for ex in val]
    assert min(after) > 0.95, (before, after)
    m = validate(head, val)
    assert m["images"] == 4 and m["auroc_head"] > 0.95
    # calibrated: the map predicts the size of the error where it is large
    ex = val[0]
    big = ex.error > 0.2
    ratio = predict(head, ex)[big].mean() / np.ptp(np.percentile(ex.output, [0.1, 99.9]))
    assert 0.1 < ratio / ex.error[big].mean() < 3.0


def test_map_is_in_the_outputs_units_on_any_grid() -> None:
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    entry = ErrorHeadCard(sha256="0" * 64, width=8)
    head = LoadedHead(ErrorHead(8), entry, model_px_um=0.05)
    raw = rng.poisson(30, (64, 72)).astype(np.float32)
    out = ndimage.gaussian_filter(raw, 1.0)
    spread = np.full_like(out, 0.5)
    m = head.predict(raw, out, spread, 0.05)
    assert m.shape == out.shape and m.dtype == np.float32 and (m > 0).all()
    # intensity units scale the map, nothing else changes
    np.testing.assert_allclose(head.predict(raw * 7, out * 7, spread * 7, 0.05), 7 * m,
                               rtol=1e-4)
    # another pixel size: resampled to the head's grid and back, the output's shape kept
    m2 = head.predict(raw, out, spread, 0.02)
    assert m2.shape == out.shape and np.isfinite(m2).all() and (m2 >= 0).all()
    # the raw frame on another grid than the output (keep_model_grid) is resampled
    assert head.predict(raw[::2, ::2], out, spread, 0.05).shape == out.shape


def test_card_and_file_are_checked(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    card = read_card(folder)
    assert card.error_head is None  # older cards: no head, the plain spread
    sha = save_head(folder, ErrorHead(8))
    write_card(folder, card.model_copy(update={"error_head": ErrorHeadCard(sha256=sha,
                                                                            width=8)}))
    entry = read_card(folder).error_head
    assert entry is not None and entry.sha256 == sha
    assert load_head(folder, entry, 0.05).card == entry
    with pytest.raises(ModelError, match=r"do not match the card's \[error_head\]: size mismatch"):
        load_head(folder, entry.model_copy(update={"width": 4}), 0.05)
    (folder / entry.file).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="checksum") as err:
        load_head(folder, entry, 0.05)
    assert str(folder / entry.file) in str(err.value)
    with pytest.raises(ValueError, match="file"):
        ErrorHeadCard(file="../../etc/passwd", sha256=sha)


@pytest.fixture(scope="module")
def headed_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model with a head trained by the real command (few fields, few steps)."""
    folder = tmp_path_factory.mktemp("headed") / "tiny-headed"
    shutil.copytree(tiny_model, folder)
    assert main(["calibrate", str(folder), "--images", "1", "--steps", "5", "--size", "64",
                 "--width", "4", "--device", "cpu"]) == 0
    return folder


def test_calibrate_writes_a_head_the_enhancer_uses(headed_model: Path) -> None:
    card = read_card(headed_model)
    assert card.error_head is not None and (headed_model / card.error_head.file).is_file()
    assert card.error_head.width == 4 and card.error_head.metrics["images"] >= 1
    assert card.error_head.trained_on["options"]["steps"] == 5
    enh = Enhancer(headed_model, device="cpu")
    assert enh.error_head is not None and enh.uncertainty_method.startswith("error-head")
    rng = np.random.default_rng(3)
    img = rng.poisson(40, (48, 56)).astype(np.float32)
    out = enh.enhance(img, 0.05).image
    spread = enh.spread(img, 0.05)
    u = enh.uncertainty(img, 0.05)
    assert u.shape == out.shape and (u > 0).all()
    assert not np.allclose(u, spread)  # the head, not the spread
    # fast path (output handed in) = plain path
    np.testing.assert_array_equal(enh.uncertainty(img, 0.05, enhanced=out), u)


def test_model_without_a_head_keeps_the_spread(tiny_model: Path) -> None:
    enh = Enhancer(tiny_model, device="cpu")
    img = np.random.default_rng(4).poisson(40, (48, 56)).astype(np.float32)
    assert enh.error_head is None and enh.uncertainty_method == "noise-redraw+dihedral"
    np.testing.assert_array_equal(enh.uncertainty(img, 0.05), enh.spread(img, 0.05))


def test_enhance_uncertainty_uses_the_head(headed_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.poisson(40, (2, 48, 56)).astype(np.uint16)
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "TYX"})
    assert main(["enhance", str(src), "-o", str(tmp_path / "out"), "--model", str(headed_model),
                 "--pixel-size-um", "0.05", "--uncertainty"]) == 0
    u = tifffile.imread(tmp_path / "out" / "cells_uncertainty.ome.tif")
    enh = Enhancer(headed_model, device="cpu")
    for k in range(2):
        np.testing.assert_allclose(u[k], enh.uncertainty(data[k], 0.05, seed=k), rtol=1e-5,
                                   atol=1e-6)


def test_calibrate_refuses_a_model_on_another_grid(tiny_model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m20"
    shutil.copytree(tiny_model, folder)
    write_card(folder, read_card(folder).model_copy(update={"pixel_size_um": 0.02}))
    assert main(["calibrate", str(folder), "--images", "1", "--steps", "1"]) == 2
    assert "50 nm grid" in capsys.readouterr().err
