"""sr/restore.py: measured periodic detail that the network erased is put back; nothing else
is touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lattice import CONF_NM, PX_UM, confocal, lattice, norm, sigma_px
from scipy import ndimage

from tcan_live.sr.restore import restore_measured


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _run(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    r = restore_measured(torch.from_numpy(x), torch.from_numpy(y), PX_UM, CONF_NM)
    return r.image.numpy(), r.bins


@pytest.mark.parametrize("period,hexa", [(260.0, True), (300.0, False), (340.0, True)])
def test_an_erased_lattice_comes_back_where_the_input_shows_it(period: float, hexa: bool) -> None:
    rng = np.random.default_rng(int(period))
    truth = lattice(160, period, 0.4, hexa, rng)
    x = norm(confocal(truth, 100.0, rng))
    erased = ndimage.gaussian_filter(x, 6.0).astype(np.float32)  # what the network gave
    out, bins = _run(x, erased)
    sted = ndimage.gaussian_filter(truth, sigma_px(80.0, PX_UM), mode="wrap")
    assert bins > 0
    shown = _corr(x, sted)  # how much of the pattern the input itself shows
    assert shown > 0.3 and _corr(erased, sted) < 0.2
    assert _corr(out, sted) > 0.8 * shown, (_corr(out, sted), shown)
    # never more than the confocal amplitude: the restored pattern is not sharper than input
    band = ndimage.gaussian_filter(out, 1.0) - ndimage.gaussian_filter(out, 4.0)
    band_in = ndimage.gaussian_filter(x, 1.0) - ndimage.gaussian_filter(x, 4.0)
    assert band.std() <= 1.05 * band_in.std()


def test_a_faithful_output_is_left_exactly_as_it_was() -> None:
    rng = np.random.default_rng(3)
    truth = lattice(160, 300.0, 0.2, True, rng)
    x = norm(confocal(truth, 100.0, rng))
    sted = ndimage.gaussian_filter(truth, sigma_px(80.0, PX_UM), mode="wrap")
    y = (sted / np.percentile(sted, 99.9)).astype(np.float32)  # keeps the pattern (sharper)
    out, bins = _run(x, y)
    assert bins == 0
    assert np.array_equal(out, y)


def test_noise_and_unpatterned_structure_are_never_taken_for_a_pattern() -> None:
    """White noise: P(power > 30 x ring median) measured 4e-6 per bin on 160 px frames (4,688
    in-band bins): 0.4 false bins expected in 20 frames. Smooth random structure: none."""
    false = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        x = rng.normal(0.5, 0.1, (160, 160)).astype(np.float32)
        false += _run(x, np.full_like(x, 0.5))[1]
    assert false <= 2
    for seed in range(5):
        rng = np.random.default_rng(200 + seed)
        blobs = ndimage.gaussian_filter(rng.random((160, 160)) ** 8, 3.0)
        x = norm(confocal(blobs, 50.0, rng))
        assert _run(x, np.full_like(x, float(x.mean())))[1] == 0


def test_tiny_frames_and_shapes() -> None:
    x = torch.rand(6, 6)
    assert restore_measured(x, x * 0, PX_UM, CONF_NM).bins == 0
    with pytest.raises(ValueError, match="equal 2-D"):
        restore_measured(torch.rand(8, 8), torch.rand(8, 9), PX_UM, CONF_NM)
    rng = np.random.default_rng(5)  # not square
    x = norm(confocal(lattice(200, 300.0, 0.3, False, rng)[:, :130], 100.0, rng))
    out, bins = _run(x, ndimage.gaussian_filter(x, 6.0).astype(np.float32))
    assert out.shape == x.shape and bins > 0


def test_the_enhancer_restores_and_reports_it_and_can_be_told_not_to(tiny_model: Path) -> None:
    from tcan_live.sr.enhancer import Enhancer

    rng = np.random.default_rng(7)
    frame = confocal(lattice(192, 300.0, 0.5, True, rng), 200.0, rng)
    on = Enhancer(tiny_model, device="cpu", warmup=False)
    off = Enhancer(tiny_model, device="cpu", warmup=False, restore=False)
    a, b = on.enhance(frame, PX_UM), off.enhance(frame, PX_UM)
    assert b.restored == 0 and "restore" not in b.timings_ms and "restore" in a.timings_ms
    # the random network does not keep the lattice (44 coefficients put back with seed 0)
    assert a.restored > 0 and not np.array_equal(a.image, b.image)
    sted = ndimage.gaussian_filter(lattice(192, 300.0, 0.5, True, np.random.default_rng(7)),
                                   sigma_px(80.0, PX_UM))
    assert _corr(a.image, sted) > _corr(b.image, sted) + 0.1
    # a frame without any pattern: the output is the network's, bit for bit
    flat = rng.poisson(20.0, (192, 192)).astype(np.float32)
    assert on.enhance(flat, PX_UM).restored == 0
    assert np.array_equal(on.enhance(flat, PX_UM).image, off.enhance(flat, PX_UM).image)


def test_a_frame_resampled_up_to_the_grid_is_judged_only_below_its_own_nyquist() -> None:
    """A widefield-like frame at 0.3 um pixels, resampled to 50 nm: above its own Nyquist
    frequency it holds only the interpolation's echoes, which are not measured patterns (before
    the limit, real ND2 frames at 0.32 um had 418 coefficients 'restored' in 3 planes)."""
    from tcan_live.resample import resample

    rng = np.random.default_rng(11)
    coarse = ndimage.gaussian_filter(rng.random((64, 64)) ** 4, 1.0) * 1000 + 100
    x = norm(resample(rng.poisson(coarse).astype(np.float32), 0.3, PX_UM))
    smooth = ndimage.gaussian_filter(x, 8.0).astype(np.float32)
    unlimited = restore_measured(torch.from_numpy(x), torch.from_numpy(smooth), PX_UM, CONF_NM)
    limited = restore_measured(torch.from_numpy(x), torch.from_numpy(smooth), PX_UM, CONF_NM,
                               source_pixel_size_um=0.3)
    assert unlimited.bins > 0  # the echoes look like peaks
    assert limited.bins == 0
