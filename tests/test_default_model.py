"""The shipped default model: it loads from models/ and it helps, on a fixed simulated sample."""

from __future__ import annotations

import numpy as np

from tcan_live.sr.card import read_card, resolve_model
from tcan_live.train.metrics import fidelity
from tcan_live.train.simulate import Camera, Optics, Scene, simulate_pair


def test_default_model_is_installed_and_valid() -> None:
    folder = resolve_model(None)
    card = read_card(folder)
    assert folder.name == card.id == "tcan-sim-small"
    assert card.pixel_size_um == 0.05 and card.training["samples_seen"] > 0


def test_default_model_improves_ssim_over_the_input() -> None:
    from tcan_live.sr.enhancer import Enhancer

    enh = Enhancer(None, warmup=False)
    rng = np.random.default_rng(4242)  # not a training seed
    gains = []
    for structures, photons in ((("filaments",), 60.0), (("beads", "rings"), 200.0),
                                (("actin",), 40.0), (("filaments", "beads"), 20.0)):
        pair = simulate_pair(rng, (128, 128), Optics(), Camera(photons=photons, background=3.0),
                             Scene(structures=structures))  # type: ignore[arg-type]
        out = enh.enhance(pair.confocal, 0.05).image
        gains.append(fidelity(out, pair.sted)["ssim"] - fidelity(pair.confocal, pair.sted)["ssim"])
    assert min(gains) > 0.0, gains  # better on every image
    assert float(np.mean(gains)) > 0.1, gains
