"""Issue 16: the uncertainty map (sr/uncertainty.py) and the detail-band error: their maths,
and the map written by ``enhance --uncertainty``, published and saved by the daemon (protocol
version 2, old clients unaffected). Quality figures (AUROC on held-out simulations) come from
the real model in docs/training.md, not from the tiny random model used here."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import wait_for

from tcan_live._cli import main
from tcan_live.sim import domain
from tcan_live.sr import uncertainty as unc
from tcan_live.train.metrics import auroc, detail_band, detail_band_error, error_auroc
from tcan_live.transport import wire


@pytest.mark.parametrize(("gain", "excess", "offset", "read"), [(4.0, 1.0, 10.0, 0.0),
                                                                (10.0, 1.6, 100.0, 3.0),
                                                                (1.0, 1.0, 0.0, 0.0)])
def test_photon_transfer_fit_recovers_the_detector(gain: float, excess: float, offset: float,
                                                   read: float) -> None:
    """On a simulated confocal image of a real-looking sample, the one-frame photon-transfer
    fit finds variance = gain * excess * (mean - offset) + read^2 within 25% (the sample's
    own fine texture leaks into the high-pass residual and biases it up a little)."""
    rng = np.random.default_rng(1)
    det = domain.Detector("pmt", 200.0, background=2.0, gain=gain, offset=offset,
                          excess=excess, read_noise=read, bits=16)
    nf = domain.noise_free(rng, 256, domain.Acquisition(50.0, detector=det),
                           domain.Sample(("nucleus", "cytoplasm"), regions=False))
    img = domain.detect(rng, nf.confocal, det)
    model = unc.estimate_noise(img)
    slope = gain * excess
    assert model.slope == pytest.approx(slope, rel=0.25)
    # predicted variance at the image's median level
    level = float(np.median(img))
    want = slope * (level - offset) + read ** 2 + 1 / 12
    assert float(model.variance(np.array(level))) == pytest.approx(want, rel=0.25)


def test_redraw_has_the_measured_noise(rng: np.random.Generator) -> None:
    img = rng.poisson(50.0, (128, 128)).astype(np.float32)
    model = unc.NoiseModel(1.0, 0.0)
    draw = unc.redraw(rng, img, model, smooth_px=2.0)
    assert float(draw.mean()) == pytest.approx(50.0, rel=0.02)
    assert float(np.var(draw - unc.ndimage.gaussian_filter(img.astype(float), 2.0))) == \
        pytest.approx(50.0, rel=0.1)


def test_map_is_zero_for_a_deterministic_identity_and_grows_with_noise() -> None:
    """An 'enhancer' that smooths: its output varies with the redrawn noise, so the map is larger
    where the noise is larger (brighter), and zero for a constant frame with no noise."""
    smooth = lambda a: unc.ndimage.gaussian_filter(a, 1.0)  # noqa: E731
    flat = np.full((64, 64), 10.0, np.float32)
    assert unc.uncertainty_map(smooth, flat, 0.05).max() < 1e-3
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.linspace(5, 500, 96)[None], 96, 0)
    img = rng.poisson(ramp).astype(np.float32)
    u = unc.uncertainty_map(smooth, img, 0.05, passes=6)
    assert u.shape == img.shape and u.dtype == np.float32
    assert u[:, -20:].mean() > 2 * u[:, :20].mean()


def test_nan_pixels_do_not_spread_into_the_map() -> None:
    smooth = lambda a: unc.ndimage.gaussian_filter(a, 1.0)  # noqa: E731
    img = np.random.default_rng(1).poisson(40, (48, 48)).astype(np.float32)
    img[10:12, 5:9] = np.nan
    u = unc.uncertainty_map(smooth, img, 0.05)
    assert np.isfinite(u).all()


def test_dihedral_round_trips(rng: np.random.Generator) -> None:
    a = rng.random((5, 7))
    for k in range(8):
        np.testing.assert_array_equal(unc._dihedral(unc._dihedral(a, k), k, inverse=True), a)


def test_auroc_and_error_auroc() -> None:
    score = np.arange(100.0)
    assert auroc(score, score >= 90) == 1.0 and auroc(-score, score >= 90) == 0.0
    assert auroc(np.zeros(100), score >= 90) == 0.5
    target = np.zeros((40, 40))
    target[10:20, 10:20] = 1.0
    pred = target.copy()
    pred[30:34, 30:34] = 1.0  # invented structure
    u = np.zeros_like(pred)
    u[29:35, 29:35] = 1.0
    assert error_auroc(u, pred, target, top=0.01) > 0.95  # the 16 invented pixels


def test_detail_band_error_is_one_for_the_raw_input_and_below_for_the_truth() -> None:
    rng = np.random.default_rng(4)
    pair = domain.image_pair(rng, 96, domain.Acquisition(50.0, detector=domain.Detector(
        photons=200.0)), domain.Sample(("filaments",)))
    assert detail_band_error(pair.confocal, pair.sted, pair.confocal, 0.05) == pytest.approx(1.0)
    assert detail_band_error(pair.sted, pair.sted, pair.confocal, 0.05) < 1e-6
    # invented detail (noise in the band) scores above 1
    fake = pair.confocal + 3 * detail_band(rng.normal(size=pair.confocal.shape), 0.05) * \
        float(pair.confocal.std())
    assert detail_band_error(fake, pair.sted, pair.confocal, 0.05) > 1.0


def test_enhance_writes_the_uncertainty_beside_the_output(tiny_model: Path,
                                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.poisson(40, (2, 48, 56)).astype(np.uint16)
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "TYX"})
    assert main(["enhance", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                 "--pixel-size-um", "0.05", "--uncertainty"]) == 0
    out = tifffile.imread(tmp_path / "out" / "cells_tcan.ome.tif")
    u = tifffile.imread(tmp_path / "out" / "cells_uncertainty.ome.tif")
    assert u.shape == out.shape and u.dtype == np.float32
    assert np.isfinite(u).all() and (u >= 0).all() and u.max() > 0


def test_wire_version_two_adds_uncertainty_and_v1_kinds_stay_v1() -> None:
    arr = np.ones((4, 4), np.float32)
    for kind in ("raw", "enhanced", "status"):
        msg = wire.decode([bytes(f) for f in wire.encode(kind, "s", {}, arr)])
        assert msg.header["version"] == 1  # what a version-1 client accepts
    msg = wire.decode([bytes(f) for f in wire.encode("uncertainty", "s", {}, arr)])
    assert msg.header["version"] == 2 and msg.kind == "uncertainty"
    import json

    for version, kind in ((1, "uncertainty"), (3, "enhanced"), (True, "enhanced")):
        frames = wire.encode(kind if kind != "uncertainty" else "enhanced", "s", {}, arr)
        head = json.loads(bytes(frames[1]))
        head.update(version=version, kind=kind)
        frames[1] = json.dumps(head).encode()
        with pytest.raises(wire.ProtocolError):
            wire.decode([bytes(f) for f in frames])


def _subscribe_all(endpoint: str) -> Any:
    import zmq

    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")  # everything, as a third-party client may
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _kinds(sock: Any, quiet_s: float) -> set[str]:
    kinds = set()
    while sock.poll(int(quiet_s * 1000)):
        kinds.add(bytes(sock.recv_multipart()[0]).decode().split("/")[0])
    return kinds


@pytest.fixture
def daemon(make_daemon: Callable[..., Any]) -> Callable[..., Any]:
    """Daemons with a 0.05 um pixel size unless the test says otherwise."""
    return lambda **kw: make_daemon(**{"pixel_size_um": 0.05, **kw})


def test_daemon_publishes_and_saves_the_map_and_old_clients_are_unaffected(
        daemon: Any, tmp_path: Path) -> None:
    from tcan_live.transport.subscriber import FrameSubscriber

    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq, uncertainty=True)
    new = FrameSubscriber(d.publisher.endpoint,
                          kinds=("raw", "enhanced", "uncertainty", "status"))
    old = FrameSubscriber(d.publisher.endpoint)  # a version-1 client's subscription
    everything = _subscribe_all(d.publisher.endpoint)
    time.sleep(0.3)
    rng = np.random.default_rng(3)
    tifffile.imwrite(acq / "stack.tif", rng.poisson(30, (3, 40, 48)).astype(np.uint16),
                     imagej=True, metadata={"axes": "TYX"})
    got: dict[str, list[Any]] = {}
    deadline = time.monotonic() + 60
    while len(got.get("uncertainty", [])) < 3 and time.monotonic() < deadline:
        msg = new.receive(0.5)
        if msg is not None:
            got.setdefault(msg.kind, []).append(msg)
    assert len(got["uncertainty"]) == 3 and len(got["enhanced"]) == 3
    for u, e in zip(got["uncertainty"], got["enhanced"], strict=True):
        assert u.header["index"] == e.header["index"] and u.header["version"] == 2
        assert u.array.shape == e.array.shape and u.array.dtype == np.float32
        assert u.header["uncertainty"]["score"] >= 0
    old_kinds = {m.kind for m in old.messages(1.0)}
    assert "uncertainty" not in old_kinds and "enhanced" in old_kinds
    every = _kinds(everything, 1.0)
    assert "uncertainty" in every
    assert d.status()["uncertainty_score"] is not None
    saved_at = tmp_path / "out" / "uncertainty" / "stack_uncertainty.ome.tif"
    assert wait_for(saved_at.exists, 20)
    time.sleep(0.5)
    d.store.flush()
    d.unc_store.flush()
    saved = tifffile.imread(tmp_path / "out" / "uncertainty" / "stack_uncertainty.ome.tif")
    enhanced = tifffile.imread(tmp_path / "out" / "stack_tcan.ome.tif")
    assert saved.shape == enhanced.shape == (3, 40, 48)
    for c in (new, old, everything):
        c.close()


def test_daemon_without_uncertainty_publishes_none(daemon: Any, tmp_path: Path) -> None:

    acq = tmp_path / "acq"
    acq.mkdir()
    d = daemon(folder=acq)
    sub = _subscribe_all(d.publisher.endpoint)
    time.sleep(0.3)
    tifffile.imwrite(acq / "one.tif", np.full((32, 32), 7, np.uint16))
    assert wait_for(lambda: d.stats.frames_done == 1, 30)
    kinds = _kinds(sub, 1.0)
    sub.close()
    assert "enhanced" in kinds and "uncertainty" not in kinds
    assert not (tmp_path / "out" / "uncertainty").exists()
