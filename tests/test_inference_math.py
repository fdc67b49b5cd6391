"""Reversible inference maths: normalisation, resampling, tiling, and the Enhancer around them."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tcan_live.errors import UnsupportedInputError
from tcan_live.resample import resample, resample_to_shape
from tcan_live.sim.simulate import Camera, Optics, Scene, simulate_pair
from tcan_live.sr.normalize import denormalize, normalize, percentile_affine
from tcan_live.sr.tiling import Stitcher, pad_to, plan_tiles

# Stated tolerance (docs/architecture.md): with overlap >= 32 px, tiled and whole-image outputs
# differ by at most 1% of the output's 0.1-99.9 percentile range, anywhere in the image.
SEAM_TOLERANCE = 0.01


def _image(rng: np.random.Generator, shape: tuple[int, int] = (200, 300)) -> np.ndarray:
    pair = simulate_pair(rng, shape, Optics(), Camera(photons=80.0),
                         Scene(structures=("filaments", "beads")))
    return pair.confocal


def test_normalisation_round_trip(rng: np.random.Generator) -> None:
    img = rng.gamma(2.0, 300.0, (64, 80)).astype(np.float32)
    aff = percentile_affine(img, 1, 99.9)
    norm = normalize(img, aff)
    assert np.percentile(norm, 1) == pytest.approx(0, abs=1e-5)
    assert np.percentile(norm, 99.9) == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(denormalize(norm, aff), img, rtol=1e-5, atol=1e-2)


def test_normalisation_of_flat_and_non_finite_images() -> None:
    flat = np.full((8, 8), 7.0, np.float32)
    assert np.all(normalize(flat, percentile_affine(flat)) == 0)
    bad = np.array([[np.nan, 1.0], [np.inf, 3.0]], np.float32)
    out = normalize(bad, percentile_affine(bad))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (3, 5), (97, 203)])
def test_camera_frames_get_numpys_percentiles_from_their_histogram(
        dtype: type, shape: tuple[int, int], rng: np.random.Generator) -> None:
    """8/16-bit frames take a counting path: the same affine as np.percentile, exactly."""
    top = np.iinfo(dtype).max
    for img in (rng.integers(0, top, shape, endpoint=True).astype(dtype),
                (rng.poisson(3.0, shape) + 100).astype(dtype),  # few levels, many ties
                np.full(shape, 7, dtype)):
        for low, high in ((1.0, 99.9), (0.0, 100.0), (37.5, 62.5)):
            lo, hi = np.percentile(img, [low, high])
            if not hi > lo:
                hi = float(img.max()) if img.max() > lo else lo + 1.0
            aff = percentile_affine(img, low, high)
            assert (aff.lo, aff.hi) == pytest.approx((lo, hi), abs=1e-9 * top)
            np.testing.assert_array_equal(
                normalize(img, aff),
                (img.astype(np.float32) - np.float32(aff.lo)) / np.float32(aff.scale))


@pytest.mark.parametrize(("src", "dst"), [(0.1, 0.05), (0.065, 0.05), (0.035, 0.05)])
def test_resampling_round_trip_keeps_band_limited_content(
    rng: np.random.Generator, src: float, dst: float
) -> None:
    """Coarse -> fine -> coarse returns the image; fine -> coarse -> fine keeps the content the
    coarse grid can carry (smooth images)."""
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.normal(size=(90, 70)), 4).astype(np.float32)
    there = resample(img, src, dst)
    assert there.shape == (round(90 * src / dst), round(70 * src / dst))
    back = resample_to_shape(there, img.shape)
    err = np.abs(back - img)[4:-4, 4:-4].max() / np.ptp(img)
    assert err < 0.03


def test_resampling_preserves_field_of_view(rng: np.random.Generator) -> None:
    """A spot at a physical position stays there after resampling (grid-mode, no half-pixel
    shift)."""
    img = np.zeros((60, 60), np.float32)
    img[30, 20] = 1.0
    from scipy import ndimage

    img = ndimage.gaussian_filter(img, 2.0)
    up = resample(img, 0.1, 0.05)
    cy, cx = ndimage.center_of_mass(up)
    assert (cy + 0.5) / 2 == pytest.approx(30.5, abs=0.05)
    assert (cx + 0.5) / 2 == pytest.approx(20.5, abs=0.05)


@pytest.mark.parametrize("shape", [(300, 420), (64, 64), (65, 300), (1000, 70), (5, 40)])
def test_tiles_cover_and_identity_stitch_is_exact(
    rng: np.random.Generator, shape: tuple[int, int]
) -> None:
    raw = rng.normal(size=shape).astype(np.float32)
    img = pad_to(torch.from_numpy(raw), 16)
    mode = "reflect" if all(-n % 16 < n for n in shape) else "edge"
    np.testing.assert_array_equal(  # numpy's padding, which the network's own matches
        img.numpy(), np.pad(raw, [(0, -n % 16) for n in shape], mode=mode))
    tiles = plan_tiles((img.shape[0], img.shape[1]), 128, 32, align=16)
    assert all(t.y % 16 == 0 and t.x % 16 == 0 for t in tiles)
    assert len({(t.h, t.w) for t in tiles}) == 1  # one tile size: batchable
    st = Stitcher((img.shape[0], img.shape[1]), 32)
    for t in tiles:
        st.add(t, img[t.slices])
    np.testing.assert_allclose(st.result().numpy(), img.numpy(), rtol=1e-5, atol=1e-5)
    from tcan_live.sr.tiling import _window

    before = _window.cache_info()
    again = Stitcher((img.shape[0], img.shape[1]), 32)  # the next frame of that size
    for t in tiles:
        again.add(t, img[t.slices])
    assert _window.cache_info().misses == before.misses  # windows reused, not rebuilt
    assert torch.equal(again.result(), st.result())


@pytest.mark.parametrize("tile", [64, 128, 256, 320])
@pytest.mark.parametrize("overlap", [0, 16, 32, 48])
def test_tile_plan_keeps_overlap_with_fewest_tiles(tile: int, overlap: int) -> None:
    """Every axis length (multiples of 16 up to 2100 px): starts and side aligned, the axis
    covered, neighbours share >= overlap px, side <= tile, and no plan with fewer tiles of side
    <= tile could keep that overlap."""
    from tcan_live.sr.tiling import plan_axis

    for length in range(16, 2100, 16):
        side, starts = plan_axis(length, tile, overlap, 16)
        assert side <= min(tile, length)
        assert side % 16 == 0 and all(s % 16 == 0 for s in starts)
        assert starts[0] == 0 and starts[-1] + side == length
        ov = min(overlap, tile // 2)
        assert all(0 < b - a <= side - ov for a, b in itertools.pairwise(starts))
        n = len(starts)
        if n > 1:  # n - 1 tiles of the largest side could not cover with that overlap
            assert (n - 1) * tile - (n - 2) * ov < length


def test_tile_plan_for_a_512_frame_is_four_tiles() -> None:
    tiles = plan_tiles((512, 512), 320, 48, align=16)
    assert [(t.y, t.x, t.h, t.w) for t in tiles] == [
        (0, 0, 288, 288), (0, 224, 288, 288), (224, 0, 288, 288), (224, 224, 288, 288)]


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model: Path, rng: np.random.Generator) -> None:
    from tcan_live.sr.enhancer import Enhancer

    img = _image(rng, (160, 200))
    ref = Enhancer(tiny_model, precision="fp32", warmup=False).enhance(img, 0.05).image
    bf = Enhancer(tiny_model, precision="bf16", warmup=False).enhance(img, 0.05).image
    assert bf.dtype == np.float32 and bf.shape == ref.shape
    # bf16 keeps 8 significant bits: errors scale with the values' magnitude, not their span
    assert np.sqrt(np.mean((bf - ref) ** 2)) <= 0.01 * np.abs(ref).max()
    assert np.corrcoef(bf.ravel(), ref.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="precision"):
        Enhancer(tiny_model, precision="fp8", warmup=False)


def test_unsupported_frames_are_refused(tiny_model: Path) -> None:
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(tiny_model, warmup=False)
    with pytest.raises(UnsupportedInputError, match="2-D"):
        enh.enhance(np.zeros((3, 8, 8)), source="x.tif")
    with pytest.raises(UnsupportedInputError, match="placeholder"):
        enh.enhance(np.zeros((8, 8)), 5.23, source="mm.ome.tif")


@pytest.mark.parametrize(("tile", "overlap"), [(64, 32), (128, 32), (128, 48)])
def test_tiled_matches_whole_image_within_tolerance(
    tiny_model: Path, rng: np.random.Generator, tile: int, overlap: int
) -> None:
    from tcan_live.sr.enhancer import Enhancer

    img = _image(rng, (200, 300))
    whole = Enhancer(tiny_model, tile=4096, warmup=False).enhance(img, 0.05).image
    tiled = Enhancer(tiny_model, tile=tile, overlap=overlap, warmup=False).enhance(img, 0.05).image
    span = np.percentile(whole, 99.9) - np.percentile(whole, 0.1)
    assert np.abs(tiled - whole).max() <= SEAM_TOLERANCE * span


def test_without_overlap_seams_exceed_the_tolerance(
    tiny_model: Path, rng: np.random.Generator
) -> None:
    """The tolerance test above can fail: no overlap leaves visible seams."""
    from tcan_live.sr.enhancer import Enhancer

    img = _image(rng, (200, 300))
    whole = Enhancer(tiny_model, tile=4096, warmup=False).enhance(img, 0.05).image
    tiled = Enhancer(tiny_model, tile=64, overlap=0, warmup=False).enhance(img, 0.05).image
    span = np.percentile(whole, 99.9) - np.percentile(whole, 0.1)
    assert np.abs(tiled - whole).max() > SEAM_TOLERANCE * span


def test_out_of_memory_fallback_shrinks_tiles(tiny_model: Path, rng: np.random.Generator) -> None:
    """A pixel budget below one 128-px tile forces the OOM path: batch 4 -> 1, tile 128 -> 64;
    the result still agrees with the unconstrained run."""
    from tcan_live.sr.enhancer import Enhancer

    img = _image(rng, (160, 200))
    ref = Enhancer(tiny_model, tile=128, overlap=32, warmup=False).enhance(img, 0.05)
    small = Enhancer(tiny_model, tile=128, overlap=32, batch=4, memory_budget_px=100 * 100,
                     warmup=False).enhance(img, 0.05)
    assert ref.tile == 128 and small.tile == 64
    span = np.percentile(ref.image, 99.9) - np.percentile(ref.image, 0.1)
    assert np.abs(small.image - ref.image).max() <= SEAM_TOLERANCE * span


def test_budget_too_small_for_any_tile_raises(tiny_model: Path) -> None:
    from tcan_live.sr.enhancer import Enhancer, _OutOfMemory

    enh = Enhancer(tiny_model, tile=128, memory_budget_px=10, warmup=False)
    with pytest.raises(_OutOfMemory):
        enh.enhance(np.ones((130, 130), np.float32), 0.05)


@pytest.mark.parametrize("px", [0.1, 0.03])
def test_enhancer_returns_input_grid_or_model_grid(
    tiny_model: Path, rng: np.random.Generator, px: float
) -> None:
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(tiny_model, warmup=False)
    img = rng.poisson(20, (90, 75)).astype(np.uint16)
    same = enh.enhance(img, px)
    assert same.image.shape == img.shape and same.image.dtype == np.float32
    assert same.pixel_size_um == px
    model = enh.enhance(img, px, keep_model_grid=True)
    assert model.image.shape == (round(90 * px / 0.05), round(75 * px / 0.05))
    assert model.pixel_size_um == pytest.approx(0.05)
    assert set(same.timings_ms) >= {"normalise", "resample", "forward", "stitch"}
