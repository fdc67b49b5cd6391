"""`tcan-live enhance` end to end: real files in, OME-TIFFs out, bad inputs named and skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import TEST_DATA

from tcan_live._cli import main
from tcan_live.enhance_files import output_name


def _ome(path: Path) -> tuple[np.ndarray, dict[str, object]]:
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        return tif.asarray(), ome if isinstance(ome, dict) else ome[0]


def test_output_names() -> None:
    assert output_name(Path("a/cells.ome.tif")) == "cells_tcan.ome.tif"
    assert output_name(Path("run 1.nd2")) == "run 1_tcan.ome.tif"
    assert output_name(Path("x.TIFF"), "residual") == "x_residual.ome.tif"


def test_enhance_imagej_hyperstack(tiny_model: Path, tmp_path: Path,
                                   rng: np.random.Generator) -> None:
    data = rng.integers(100, 3000, (3, 2, 2, 40, 36), dtype=np.uint16)  # TZCYX
    src = tmp_path / "in" / "hyper.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, data, imagej=True, resolution=(1 / 0.06, 1 / 0.06),
                     metadata={"axes": "TZCYX", "unit": "um", "finterval": 2.0, "spacing": 0.4,
                               "Labels": ["a"] * 12})
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "--model", str(tiny_model)]) == 0
    arr, image = _ome(out / "hyper_tcan.ome.tif")
    assert arr.shape == data.shape and arr.dtype == np.float32
    pixels = image["Pixels"]
    assert pixels["PhysicalSizeX"] == pytest.approx(0.06)
    assert pixels["TimeIncrement"] == pytest.approx(2.0)
    assert pixels["PhysicalSizeZ"] == pytest.approx(0.4)
    from tcan_live.sr.enhancer import Enhancer

    ref = Enhancer(tiny_model, warmup=False).enhance(data[2, 1, 0], 0.06).image
    np.testing.assert_allclose(arr[2, 1, 0], ref, rtol=1e-5, atol=1e-3)


def test_enhance_nd2_timelapse_with_residual(tiny_model: Path, tmp_path: Path) -> None:
    src = TEST_DATA / "nd2" / "example-timelapse.nd2"
    out = tmp_path / "out"
    rc = main(["enhance", str(src), "-o", str(out), "--model", str(tiny_model), "--residual"])
    assert rc == 0
    arr, image = _ome(out / "example-timelapse_tcan.ome.tif")
    assert arr.shape == (53, 64, 64)
    assert image["Pixels"]["PhysicalSizeX"] == pytest.approx(0.325)
    assert image["Pixels"]["Channel"]["Name"] == "GFP 488 nm"
    res, _ = _ome(out / "example-timelapse_residual.ome.tif")
    assert res.shape == (53, 64, 64) and np.isfinite(res).all()


def test_keep_model_grid(tiny_model: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    src = tmp_path / "one.ome.tif"
    tifffile.imwrite(src, rng.random((30, 40)).astype(np.float32), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.1, "PhysicalSizeXUnit": "µm"})
    assert main(["enhance", str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model),
                 "--keep-model-grid"]) == 0
    arr, image = _ome(tmp_path / "o" / "one_tcan.ome.tif")
    assert arr.shape == (60, 80)
    assert image["Pixels"]["PhysicalSizeX"] == pytest.approx(0.05)


def test_bad_inputs_are_named_and_others_still_processed(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    rng: np.random.Generator,
) -> None:
    ins = tmp_path / "in"
    ins.mkdir()
    (ins / "zero.tif").write_bytes(b"")
    (ins / "garbage.tif").write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    (ins / "truncated.nd2").write_bytes(
        (TEST_DATA / "nd2" / "example-timelapse.nd2").read_bytes()[:400_000])
    good = ins / "good.tif"
    tifffile.imwrite(good, rng.integers(0, 1000, (2, 32, 32), dtype=np.uint16),
                     photometric="minisblack")
    cut = ins / "cut.tif"
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, rng.integers(0, 1000, (4, 64, 64), dtype=np.uint16),
                     photometric="minisblack")
    cut.write_bytes(full.read_bytes()[:20_000])
    out = tmp_path / "out"
    names = ["zero.tif", "garbage.tif", "truncated.nd2", "good.tif", "cut.tif", "absent.tif"]
    rc = main(["enhance", *(str(ins / n) for n in names), "-o", str(out),
               "--model", str(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 1
    for bad in ("zero.tif", "garbage.tif", "truncated.nd2", "cut.tif", "absent.tif"):
        line = next(ln for ln in err.splitlines() if bad in ln)
        assert line.startswith("tcan-live: error:"), line
    assert "file is empty" in err and "incomplete ND2" in err and "no such file" in err
    assert sorted(p.name for p in out.iterdir()) == ["good_tcan.ome.tif"]


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint16))
    rc = main(["enhance", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o"),
               "--model", "no-such-model"])
    assert rc == 2
    assert "no-such-model: no installed model with this id" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [[], ["--no-restore"]])
def test_enhance_restores_an_erased_pattern_unless_told_not_to(
        tiny_model: Path, tmp_path: Path, flag: list[str]) -> None:
    """sr/restore.py runs in `enhance` by default; `--no-restore` gives the network's output."""
    from lattice import confocal, lattice

    from tcan_live.sr.enhancer import Enhancer

    rng = np.random.default_rng(7)
    frame = confocal(lattice(192, 300.0, 0.5, True, rng), 200.0, rng).astype(np.uint16)
    src = tmp_path / "lattice.tif"
    tifffile.imwrite(src, frame, imagej=True, resolution=(20.0, 20.0), metadata={"unit": "um"})
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "--model", str(tiny_model), *flag]) == 0
    arr, _ = _ome(out / "lattice_tcan.ome.tif")
    on, off = (Enhancer(tiny_model, warmup=False, restore=r).enhance(frame, 0.05)
               for r in (True, False))
    assert on.restored > 0  # the tiny random network does not keep the lattice
    want = off if flag else on
    np.testing.assert_allclose(arr, want.image, rtol=1e-5, atol=1e-3)
    assert not np.allclose(arr, (on if flag else off).image, rtol=1e-5, atol=1e-3)
