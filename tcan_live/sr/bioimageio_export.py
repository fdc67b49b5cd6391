"""``tcan-live models export --bioimageio OUT.zip``: a model as a bioimage.io package.

The package (bioimage.io model spec 0.5, written and checked with ``bioimageio.spec`` /
``bioimageio.core``, no format code here) holds:

* TorchScript weights (traced on the CPU) and PyTorch state-dict weights with the network's
  source file (``sr/network.py``, which imports only torch) as the architecture;
* input ``confocal`` (batch, channel, y, x), any size that is a multiple of the U-net's pooling
  period (16 px) from 64 px, pixel size = the model's grid; pre-processing: the same percentile
  normalisation as tcan-live (``scale_range``, the card's low/high percentiles, per image);
* output ``sted_like``: the network's output, same size and scale. It is in normalised units
  (0 to 1 = the input's low to high percentile): tcan-live's ``enhance`` maps it back to the
  input's intensity scale with that affine, which the bioimage.io spec cannot express as
  post-processing; nothing else differs (tests/test_bioimageio.py);
* a test input (a simulated confocal image on the model's grid) and its output, the card's
  text, the paper and this project as citations.

``export_bioimageio`` runs ``bioimageio.core.test_model`` on the package before keeping it.
Needs the ``bioimageio`` extra (``pip install 'tcan-live[bioimageio]'``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tcan_live.errors import ModelError
from tcan_live.sr.model import load_generator

PAPER_DOI = "10.1186/s43074-022-00077-x"
PROJECT_URL = "https://github.com/tcan-live/tcan-live"
TEST_SIZE = 256
MIN_SIZE, STEP = 64, 16


@dataclass(frozen=True)
class BioimageioExport:
    path: Path
    test_passed: bool
    summary: str


def test_image(size: int = TEST_SIZE, seed: int = 0) -> np.ndarray:
    """A simulated confocal image on the 50 nm grid (broad simulator, filaments + puncta)."""
    from tcan_live.sim import domain

    rng = np.random.default_rng(seed)
    acq = domain.random_acquisition(rng, photons=50.0)
    pair = domain.image_pair(rng, size, acq, domain.Sample(("filaments", "cytoplasm"),
                                                           regions=False))
    return np.asarray(pair.confocal, np.float32)


def _normalised(image: np.ndarray, low: float, high: float) -> np.ndarray:
    from tcan_live.sr.normalize import normalize, percentile_affine

    return normalize(image, percentile_affine(image, low, high)).astype(np.float32)


def export_bioimageio(folder: Path, out: Path, *, run_test: bool = True) -> BioimageioExport:
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5 as bio
    except ImportError as err:
        raise ModelError(folder, "bioimage.io export needs: pip install "
                                 "'tcan-live[bioimageio]'") from err
    card, g = load_generator(folder)
    norm = card.normalization
    if norm.method != "percentile":
        raise ModelError(folder, f"normalisation {norm.method!r} has no bioimage.io "
                                 "equivalent here")
    image = test_image()
    x = _normalised(image, norm.low, norm.high)[None, None]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with torch.inference_mode():
            y = g(torch.from_numpy(x)).numpy().astype(np.float32)
        np.save(tmp / "test_input.npy", image[None, None])  # raw: pre-processing normalises
        np.save(tmp / "test_output.npy", y)
        with torch.no_grad(), warnings.catch_warnings():
            # the network's shape branches (padding) are constant for sizes that are
            # multiples of 16, the only sizes the package accepts; checked at another size
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            traced = torch.jit.trace(g, torch.from_numpy(x), check_trace=False)
            other = torch.from_numpy(_normalised(test_image(160, 1)[:, :96], norm.low,
                                                 norm.high)[None, None])
            diff = float((traced(other) - g(other)).abs().max())
        if not diff <= 1e-4:
            raise ModelError(out, f"the traced network differs at 160 x 96 px by {diff:.3g}")
        traced.save(str(tmp / "weights_torchscript.pt"))
        torch.save(g.state_dict(), tmp / "weights_state_dict.pt")
        net_src = Path(__file__).with_name("network.py")
        shutil.copy(net_src, tmp / "network.py")
        (tmp / "README.md").write_text(_readme(card), encoding="utf-8")
        arch = card.architecture.model_dump()
        arch.pop("name", None)
        px = card.pixel_size_um
        inputs = [bio.InputTensorDescr(
            id=bio.TensorId("confocal"),
            description="one confocal plane on the model's pixel grid "
                        f"({px * 1000:g} nm), any intensity scale",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("confocal")]),
                  *[bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(
                      min=MIN_SIZE, step=STEP), unit="micrometer", scale=px) for a in "yx"]],
            test_tensor=bio.FileDescr(source=tmp / "test_input.npy"),
            preprocessing=[bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
                axes=[bio.AxisId("y"), bio.AxisId("x")], min_percentile=norm.low,
                max_percentile=norm.high))],
        )]
        outputs = [bio.OutputTensorDescr(
            id=bio.TensorId("sted_like"),
            description="STED-like image, same grid; 0..1 = the input's "
                        f"{norm.low:g}th..{norm.high:g}th percentile",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("sted_like")]),
                  *[bio.SpaceOutputAxis(id=bio.AxisId(a), size=bio.SizeReference(
                      tensor_id=bio.TensorId("confocal"), axis_id=bio.AxisId(a)),
                      unit="micrometer", scale=px) for a in "yx"]],
            test_tensor=bio.FileDescr(source=tmp / "test_output.npy"),
        )]
        version = torch.__version__.split("+")[0]
        weights = bio.WeightsDescr(
            torchscript=bio.TorchscriptWeightsDescr(
                source=tmp / "weights_torchscript.pt", pytorch_version=bio.Version(version)),
            pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                source=tmp / "weights_state_dict.pt", pytorch_version=bio.Version(version),
                architecture=bio.ArchitectureFromFileDescr(
                    source=tmp / "network.py", callable=bio.Identifier("Generator"),
                    kwargs=arch)),
        )
        descr = bio.ModelDescr(
            name=f"tcan-live {card.id}",
            description=(card.description or "TCAN confocal -> STED-like")[:1000],
            authors=[bio.Author(name="tcan-live contributors")],
            cite=[bio.CiteEntry(text="Huang, B., Li, J., Yao, B. et al. Enhancing image "
                                     "resolution of confocal fluorescence microscopy with deep "
                                     "learning. PhotoniX 4, 2 (2023).", doi=bio.Doi(PAPER_DOI)),
                  bio.CiteEntry(text="tcan-live: live TCAN enhancement for confocal "
                                     "microscopy", url=bio.HttpUrl(PROJECT_URL))],
            license=bio.LicenseId("MIT"),
            documentation=bio.FileDescr(source=tmp / "README.md"),
            tags=["super-resolution", "confocal", "sted", "fluorescence", "2d", "pytorch",
                  "tcan-live"],
            inputs=inputs, outputs=outputs, weights=weights,
        )
        part = out.with_name(f".{out.name}.part")
        save_bioimageio_package(descr, output_path=part)
        summary = ""
        passed = True
        if run_test:
            from bioimageio.core import test_model

            result = test_model(part)
            passed = result.status == "passed"
            summary = result.format() if hasattr(result, "format") else str(result.status)
            if not passed:
                part.unlink(missing_ok=True)
                raise ModelError(out, f"bioimage.io test failed:\n{summary[-3000:]}")
        os.replace(part, out)
    return BioimageioExport(out, passed, summary)


def _readme(card: object) -> str:
    from tcan_live.sr.card import Card

    assert isinstance(card, Card)
    return f"""# tcan-live {card.id}

{card.description}

TCAN (two-channel attention network, Huang et al., PhotoniX 2023) turns a confocal image
(about {card.confocal_fwhm_nm:g} nm resolution) into a STED-like one (trained towards
{card.target_fwhm_nm:g} nm) on a {card.pixel_size_um * 1000:g} nm pixel grid. Resample your
image to that grid first (tcan-live does this itself).

**Output units.** The output is normalised: 0 and 1 stand for the input's
{card.normalization.low:g}th and {card.normalization.high:g}th percentiles. tcan-live maps it
back to the input's intensity scale with that affine.

**Honesty.** Trained on simulation only. Read the model card in tcan-live
(`models/{card.id}/model.toml`) and docs/evaluation/honesty.md for where it helps and where it
fails; tcan-live's uncertainty map (`--uncertainty`) shows where the output is a guess.
"""
