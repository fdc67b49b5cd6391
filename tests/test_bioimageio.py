"""Issue 19 (part): the model as a bioimage.io package. The package must pass bioimage.io's own
test (bioimageio.core.test_model, both weight formats) and compute, through bioimageio.core's
pipeline (its percentile pre-processing, its TorchScript run), what tcan-live's enhance computes
on the model's grid, up to the documented output affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def model() -> Path:
    """The shipped default model (what users export; a random tiny model's output can be all
    negative, which the bioimage.io spec's tolerance rule rejects)."""
    from tcan_live.sr.card import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="module")
def package(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tcan_live.sr.bioimageio_export import export_bioimageio

    out = tmp_path_factory.mktemp("bio") / "model.zip"
    res = export_bioimageio(model, out)
    assert res.test_passed and out.exists()
    assert "weights.torchscript" in res.summary and "weights.pytorch_state_dict" in res.summary
    return out


def test_package_passes_bioimageio_test(package: Path) -> None:
    import zipfile

    from bioimageio.spec import load_model_description

    names = set(zipfile.ZipFile(package).namelist())
    assert {"rdf.yaml", "weights_torchscript.pt", "weights_state_dict.pt", "network.py",
            "test_input.npy", "test_output.npy", "README.md"} <= names
    descr = load_model_description(package)
    assert [str(c.doi) for c in descr.cite if c.doi] == ["10.1186/s43074-022-00077-x"]
    space = [a for a in descr.inputs[0].axes if str(a.id) in ("y", "x")]
    assert all(a.scale == pytest.approx(0.05) for a in space)


def test_package_computes_what_enhance_computes(package: Path, model: Path) -> None:
    from bioimageio.core import create_prediction_pipeline, load_description
    from bioimageio.core.sample import Sample
    from bioimageio.core.tensor import Tensor

    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.sr.normalize import normalize

    rng = np.random.default_rng(0)
    image = (rng.poisson(40, (256, 192)) + 100).astype(np.float32)  # one tile of the model
    # the network alone: the package has neither sr/restore.py nor the mirrored margin
    enh = Enhancer(model, device="cpu", restore=False, margin=0)  # (bioimageio.md says so)
    res = enh.enhance(image, 0.05)
    want = normalize(res.image, res.affine)  # enhance's output, before the affine back

    descr = load_description(package)
    pipe = create_prediction_pipeline(descr, weights_format="torchscript")
    sample = Sample(members={"confocal": Tensor(image[None, None], dims=("batch", "channel",
                                                                            "y", "x"))},
                    stat={}, id="x")
    out = pipe.predict_sample_without_blocking(sample)
    got = np.asarray(out.members["sted_like"].data)[0, 0]
    assert got.shape == image.shape
    span = float(np.ptp(want))
    np.testing.assert_allclose(got, want, atol=2e-3 * span)


def test_cli_refuses_a_package_name_without_zip(tiny_model: Path, tmp_path: Path) -> None:
    from tcan_live._cli import main

    assert main(["models", "export", "--model", str(tiny_model), "--bioimageio",
                 str(tmp_path / "pkg.tar")]) == 2
