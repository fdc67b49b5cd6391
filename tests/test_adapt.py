"""``tcan-live adapt``: the photon-transfer fit against known gain and offset, the independence
of the two split views, the refusals, and the adaptation loop (checkpoint, resume, card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from tcan_live.errors import ConfigError, UnsupportedInputError
from tcan_live.sim import domain
from tcan_live.train.adapt import (
    AdaptConfig,
    Adapter,
    Inputs,
    check_inputs,
    photon_transfer,
    read_inputs,
    split_counts,
    split_views,
)


def _scene(rng: np.random.Generator, peak: float, size: int = 256) -> np.ndarray:
    """Expected photons per pixel: smooth structure from 1 to ``peak``."""
    lam = ndimage.gaussian_filter(rng.random((size, size)), 8)
    return (lam - lam.min()) / (lam.max() - lam.min()) * (peak - 1) + 1


DETECTORS = [  # gain (counts per photon), offset, excess noise F^2, read noise (counts)
    (4.0, 100.0, 1.0, 0.5), (20.0, 200.0, 1.3, 2.0), (1.0, 0.0, 1.0, 0.0),
    (50.0, 400.0, 2.0, 5.0)]


@pytest.mark.parametrize("gain,offset,excess,read", DETECTORS)
def test_photon_transfer_recovers_gain_and_offset(gain: float, offset: float, excess: float,
                                                  read: float) -> None:
    rng = np.random.default_rng(int(gain))
    lam = _scene(rng, 60.0)
    d = domain.Detector("gaasp", 60.0, 0.0, gain, offset, excess, read, 16)
    pt = photon_transfer([domain.detect(rng, lam, d) for _ in range(4)])
    # the effective gain (counts per photon times the excess noise factor) within 8%, the
    # offset within 1.5 photons (read noise and the low-count end bias it; measured 0.5-1.3)
    assert pt.gain == pytest.approx(gain * excess, rel=0.08)
    assert abs(pt.offset - offset) < 1.5 * gain * excess


def test_the_lower_quartile_factor_matches_white_noise() -> None:
    from tcan_live.sr.uncertainty import LOWER_QUARTILE_TO_MEAN, _neighbour_residual

    x = np.random.default_rng(0).standard_normal((512, 512))
    var = ndimage.uniform_filter(_neighbour_residual(x) ** 2 / 1.25, 5, mode="mirror")
    assert np.mean(var) / np.quantile(var, 0.25) == pytest.approx(LOWER_QUARTILE_TO_MEAN,
                                                                 rel=0.03)


@pytest.mark.parametrize("gain,offset,excess,read", DETECTORS[:2])
def test_split_views_are_unbiased_and_independent(gain: float, offset: float, excess: float,
                                                  read: float) -> None:
    rng = np.random.default_rng(5)
    lam = _scene(rng, 40.0)
    d = domain.Detector("gaasp", 40.0, 0.0, gain, offset, excess, read, 16)
    expected = domain.expected_counts(lam, d).astype(np.float64)
    frame = domain.detect(rng, lam, d)
    pt = photon_transfer([frame])
    alpha = 0.5
    y1, y2 = split_views(rng, frame, pt, alpha)
    n1, n2 = y1 - expected, y2 - expected
    noise = np.std(frame - expected)
    # the views' noises are uncorrelated; the frame's noise is in both (its views are not
    # copies), and the frame's noise with itself would be 1
    assert abs(np.corrcoef(n1.ravel(), n2.ravel())[0, 1]) < 0.02
    assert np.corrcoef((frame - expected).ravel(), n1.ravel())[0, 1] > 0.8
    # unbiased: the mean error is a small fraction of the noise
    assert abs(n1.mean()) < 0.02 * noise and abs(n2.mean()) < 0.05 * noise
    # variances as designed: (1 + a^2) and (1 + 1/a^2) times the frame's
    assert np.var(n1) / noise**2 == pytest.approx(1 + alpha**2, rel=0.1)
    assert np.var(n2) / noise**2 == pytest.approx(1 + 1 / alpha**2, rel=0.1)
    # independent, not just uncorrelated overall: also within the brightest tenth
    bright = lam > np.quantile(lam, 0.9)
    assert abs(np.corrcoef(n1[bright], n2[bright])[0, 1]) < 0.05


def _conditional_dependence(v1: np.ndarray, v2: np.ndarray, expected: float,
                            gain: float) -> float:
    """The largest |E[second view's error | first view's value]| over the first view's
    quintiles, in photons: 0 for independent views, whatever their correlation."""
    n1, n2 = (v1 - expected) / gain, (v2 - expected) / gain
    edges = np.unique(np.quantile(n1, [0.2, 0.4, 0.6, 0.8]))
    bins = np.digitize(n1, edges)
    return max(abs(float(n2[bins == b].mean())) for b in np.unique(bins))


@pytest.mark.parametrize("kind,excess,read,offset", [("hyd", 1.0, 0.0, 0.0),
                                                     ("pmt", 1.7, 1.0, 200.0)])
def test_photon_split_views_are_independent_at_one_photon(kind: str, excess: float, read: float,
                                                          offset: float) -> None:
    """At one photon per pixel, recorruption's views are uncorrelated but not independent (the
    second view's error depends on the first view's value by most of a photon: a network can
    learn to keep the noise); splitting the photons gives independent views (exactly for
    photon counting; for a PMT's excess noise, within 0.2 photon)."""
    from tcan_live.train.adapt import PhotonTransfer

    rng = np.random.default_rng(11)
    gain = 190.0
    d = domain.Detector(kind, 10.0, 0.0, gain, offset, excess, read, 12)  # type: ignore[arg-type]
    frame = domain.detect(rng, np.full((600, 600), 1.0), d).astype(np.float64)
    g = gain * excess
    pt = PhotonTransfer(gain=g, offset=offset, slope=g, intercept=-g * offset)
    expected = offset + gain * 1.0
    s1, s2 = split_counts(rng, frame, pt, 0.5)
    r1, r2 = split_views(rng, frame, pt, 0.5)
    for v in (s1, s2):  # both views keep the frame's expectation
        assert abs(float(v.mean()) - expected) < 0.02 * g
    # photon counting: uncorrelated; a PMT: the stochastic rounding of its effective photons
    # is shared by both views (measured 0.08)
    assert abs(np.corrcoef(s1.ravel(), s2.ravel())[0, 1]) < (0.02 if kind == "hyd" else 0.12)
    split_dep = _conditional_dependence(s1, s2, expected, g)
    assert split_dep < (0.02 if kind == "hyd" else 0.2)
    assert _conditional_dependence(r1, r2, expected, g) > 0.3  # why the photon split exists
    # an uneven split keeps each view's expectation too
    u1, u2 = split_counts(rng, frame, pt, 0.7)
    assert abs(float(u1.mean()) - expected) < 0.02 * g
    assert abs(float(u2.mean()) - expected) < 0.03 * g


def _frames(rng: np.random.Generator, peak: float, n: int = 3, gain: float = 8.0,
            bits: int = 12) -> list[np.ndarray]:
    d = domain.Detector("gaasp", peak, 0.2, gain, 50.0, 1.2, 1.0, bits)
    lam = _scene(rng, peak, 128)
    return [domain.detect(rng, lam, d).astype(np.uint16) for _ in range(n)]


def test_refuses_saturated_frames_and_too_few_photons() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(UnsupportedInputError, match="saturated"):
        check_inputs(Inputs(_frames(rng, 200.0, gain=40.0), 0.05, ["a", "b", "c"]))
    with pytest.raises(UnsupportedInputError, match="too few photons"):
        check_inputs(Inputs(_frames(rng, 1.5), 0.05, ["a", "b", "c"]))
    # a saturated frame among good ones is refused by name, the others kept
    good = _frames(rng, 30.0)
    inputs = Inputs([*good, _frames(rng, 200.0, 1, gain=40.0)[0]], 0.05, ["g1", "g2", "g3",
                                                                          "sat"])
    check_inputs(inputs)
    assert inputs.names == ["g1", "g2", "g3"] and inputs.refused[0].startswith("sat:")


def test_read_inputs_needs_a_pixel_size(tmp_path: Path) -> None:
    frames = _frames(np.random.default_rng(2), 30.0)
    tifffile.imwrite(tmp_path / "plain.tif", np.stack(frames), photometric="minisblack")
    with pytest.raises(ConfigError, match=r"plain\.tif.*no pixel size"):
        read_inputs([tmp_path], None, 8)
    got = read_inputs([tmp_path], 0.05, 2)
    assert len(got.frames) == 2 and got.pixel_size_um == 0.05
    assert got.names[0].startswith("plain.tif[")


def test_adapt_command_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           tiny_model: Path) -> None:
    from tcan_live._cli import main

    tifffile.imwrite(tmp_path / "dim.tif", np.stack(_frames(np.random.default_rng(3), 1.5)),
                     photometric="minisblack")
    rc = main(["adapt", str(tmp_path / "dim.tif"), "--out", str(tmp_path / "m"),
               "--pixel-size-um", "0.05", "--init", str(tiny_model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "too few photons" in err[0] and "dim.tif" in err[0]
    assert not (tmp_path / "m").exists()


def test_adaptation_resumes_exactly_and_writes_a_card(tmp_path: Path, tiny_model: Path) -> None:
    import torch

    from tcan_live.sr.card import read_card

    rng = np.random.default_rng(4)
    inputs = Inputs(_frames(rng, 30.0), 0.05, ["f0", "f1", "f2"])
    cfg = AdaptConfig(steps=4, patch=48, batch=2, checkpoint_every=2, seed=3)
    whole = Adapter(tiny_model, Inputs(list(inputs.frames), 0.05, list(inputs.names)), cfg)
    res = whole.run(tmp_path / "ckpt-a")
    assert res.steps == 4 and set(res.loss_before) == {"consistency", "prior", "total"}
    assert res.loss_before["prior"] == 0.0  # it starts as the initial model
    first = Adapter(tiny_model, Inputs(list(inputs.frames), 0.05, list(inputs.names)),
                    cfg.model_copy(update={"steps": 2}))
    first.run(tmp_path / "ckpt-b")
    again = Adapter(tiny_model, Inputs(list(inputs.frames), 0.05, list(inputs.names)), cfg)
    assert again.run(tmp_path / "ckpt-b").steps == 4
    for a, b in zip(whole.gen.state_dict().values(), again.gen.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    whole.save(tmp_path / "adapted", "my-sample", tiny_model.name, res)
    card = read_card(tmp_path / "adapted")
    info = card.training["adapt"]
    assert card.id == "my-sample" and card.provenance["inputs"] == ["f0", "f1", "f2"]
    assert info["steps"] == 4 and "MSE(blur(G(y1)), y2)" in info["loss"]
    assert "prior_weight * MSE(G(y1), G0(y))" in info["loss"]  # the prior, recorded
    # one of the three frames was held out of training for the check, which is recorded
    assert info["held_out_check"]["held_out"] == ["f1"] == whole.held_out
    assert info["held_out_check"]["accepted"] == res.check.accepted  # type: ignore[union-attr]
    assert info["config"]["budget_min"] == cfg.budget_min
    assert set(info["validation_before"]) == set(info["validation_after"])
    # it is a normal model folder: the Enhancer loads it
    from tcan_live.sr.enhancer import Enhancer

    out = Enhancer(model=str(tmp_path / "adapted"), device="cpu").enhance(
        inputs.frames[0].astype(np.float32), 0.05).image
    assert out.shape == inputs.frames[0].shape and np.isfinite(out).all()


def test_frames_are_held_out_evenly_and_never_all() -> None:
    from tcan_live.train.adapt import held_out_indices

    assert held_out_indices(1, 0.25) == [] and held_out_indices(8, 0.0) == []
    assert held_out_indices(2, 0.25) == [1]
    assert held_out_indices(8, 0.25) == [2, 6]
    assert held_out_indices(4, 0.9) == [0, 2, 3]  # at least one frame is adapted on
    got = held_out_indices(40, 0.25)
    assert len(got) == 10 and np.all(np.diff(got) == 4)


class _Scaled:
    """A stand-in generator: ``a x + b`` (the check only calls it)."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b

    def __call__(self, x: object) -> object:
        return self.a * x + self.b  # type: ignore[operator]

    def eval(self) -> _Scaled:
        return self

    def train(self) -> _Scaled:
        return self


def test_the_held_out_check_prefers_the_model_closer_to_the_sample(tiny_model: Path) -> None:
    """On held-out frames, the check accepts a model whose blurred output is closer to the
    noise-free frame and rejects the reverse and a tie; training never sees those frames."""
    rng = np.random.default_rng(8)
    names = [f"f{k}" for k in range(8)]
    inputs = Inputs(_frames(rng, 40.0, n=8), 0.05, list(names))
    ad = Adapter(tiny_model, inputs, AdaptConfig(views="split", seed=2))
    assert ad.held_out == ["f2", "f6"]
    assert ad.batches.inputs.names == ["f0", "f1", "f3", "f4", "f5", "f7"]
    good, biased = _Scaled(1.0, 0.0), _Scaled(0.6, 0.3)  # the identity keeps the sample
    ad.gen, ad.ref = good, biased  # type: ignore[assignment]
    better = ad.check()
    assert better.accepted and better.after < better.before
    # 128-px frames, 48-px tiles (the model's 50 nm pixels, as the frames'): 2 x 2 a frame
    assert better.held_out == ["f2", "f6"] and better.tiles == 8
    assert better.critical == pytest.approx(2.365, abs=1e-3)  # Student's t, 7 degrees
    assert "better" in better.line() and better.record()["accepted"] is True
    ad.gen, ad.ref = biased, good  # type: ignore[assignment]
    assert not ad.check().accepted
    ad.gen, ad.ref = good, good  # type: ignore[assignment]
    tie = ad.check()
    assert tie.after == tie.before and not tie.accepted and "not better" in tie.line()


def test_a_model_that_failed_its_check_says_so_when_loaded(tiny_model: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    from dataclasses import replace

    from tcan_live.sr.enhancer import Enhancer
    from tcan_live.train.adapt import HeldOutCheck

    inputs = Inputs(_frames(np.random.default_rng(12), 30.0), 0.05, ["f0", "f1", "f2"])
    ad = Adapter(tiny_model, inputs, AdaptConfig(steps=1, patch=48, batch=2))
    res = ad.run()
    for check, warned in ((HeldOutCheck(1.0, 0.9, 0.01, 24, ["f1"]), False),
                          (HeldOutCheck(1.0, 1.1, 0.01, 24, ["f1"]), True)):
        ad.save(tmp_path / str(warned), "m", tiny_model.name, replace(res, check=check))
        caplog.clear()
        with caplog.at_level("WARNING", logger="tcan_live.sr.enhancer"):
            Enhancer(str(tmp_path / str(warned)), device="cpu")
        assert ("failed its held-out check" in caplog.text) == warned


def test_watch_adapt_keeps_its_model_when_the_check_fails(tiny_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A failed held-out check (forced here: a tiny random model cannot be trusted to fail it)
    is announced, the adapted model is kept for inspection, and nothing switches."""
    from tcan_live.frame import Frame, FrameIndex
    from tcan_live.pipeline import Processed
    from tcan_live.sinks import AdaptSink
    from tcan_live.train import adapt

    worse = adapt.HeldOutCheck(1.0, 1.2, 0.01, 24, ["x"])
    monkeypatch.setattr(adapt.Adapter, "check", lambda self: worse)
    switched: list[Path] = []
    events: list[dict[str, object]] = []
    sink = AdaptSink(init=tiny_model, n_frames=2, out=tmp_path / "m", model_id="m",
                     budget_min=1.0, steps=2, pixel_size_um=None, device="cpu",
                     switch=lambda f, c: switched.append(f), report=events.append, check=True)
    for t, data in enumerate(_frames(np.random.default_rng(9), 40.0, n=2)):
        f = Frame(data, FrameIndex(t=t), 0.05, stream="s.tif", source="s.tif")
        sink.put(Processed(f, None, {}, 0.05))
    assert sink.thread is not None
    sink.thread.join(120)
    sink.idle()
    assert switched == [] and sink.done
    assert [e["event"] for e in events] == ["adapt-started", "adapt-rejected"]
    assert "not better" in str(events[1]["reason"]) and (tmp_path / "m" / "model.toml").is_file()


def test_the_prior_holds_only_what_the_blur_removes(tiny_model: Path) -> None:
    """The band-limited prior leaves to the data what the data see (a change as wide as the confocal
    PSF costs almost nothing) and holds what they cannot see (a change finer than the PSF costs
    nearly as much as under the whole-image prior)."""
    import torch

    from tcan_live.train.adapt import prior_loss

    adapter = Adapter(tiny_model, Inputs(_frames(np.random.default_rng(6), 30.0), 0.05,
                                         ["a", "b", "c"]),
                      AdaptConfig(patch=48, batch=2, prior_band="high"))
    rng = np.random.default_rng(7)
    ref = torch.from_numpy(rng.random((1, 1, 96, 96)).astype(np.float32))
    yy, xx = np.mgrid[:96, :96]
    wide = np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 12.0**2))  # sigma 600 nm
    fine = np.where((yy + xx) % 2 == 0, 1.0, -1.0) * wide  # a 100 nm period, beyond confocal
    for change, low in ((wide, True), (fine, False)):
        out = ref + 0.3 * torch.from_numpy(change.astype(np.float32))[None, None]
        whole = float(prior_loss(out, ref, adapter.blur(out), None))
        band = float(prior_loss(out, ref, adapter.blur(out), adapter.blur(ref)))
        if low:
            assert band < 0.02 * whole
        else:
            assert band > 0.8 * whole


# ---------------------------------------------------------------------------------------------
# the daemon's switch (watch --adapt) and the saved record of which model made each plane


def test_store_records_the_model_of_every_plane_across_a_restart(tmp_path: Path) -> None:
    import json

    from tcan_live.export.store import OutputStore
    from tcan_live.frame import Frame, FrameIndex

    def frame(t: int) -> Frame:
        return Frame(np.zeros((16, 16), np.float32), FrameIndex(t=t), 0.05, stream="s.tif",
                     source="s.tif")

    store = OutputStore(tmp_path / "out", model_id="base")
    for t in range(5):
        store.add(frame(t), np.full((16, 16), t, np.float32), 0.05,
                  model="base" if t < 3 else "base-adapted")
    store.close()
    again = OutputStore(tmp_path / "out", model_id="base")  # recovery from the journal
    st = again.streams["s.tif"]
    assert {i.t: m for i, m in st.models.items()} == {0: "base", 1: "base", 2: "base",
                                                     3: "base-adapted", 4: "base-adapted"}
    path = again.flush()[0]
    again.close()
    desc = tifffile.TiffFile(path).pages[0].description
    assert "switched to base-adapted" in desc
    mapping = json.loads(desc.split("by model: ", 1)[1].split("<", 1)[0].replace("&quot;", '"'))
    assert mapping == {"base": [[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]],
                       "base-adapted": [[3, 0, 0, 0], [4, 0, 0, 0]]}
    lines = (tmp_path / "out" / ".tcan-live" / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x)["model"] for x in lines] == ["base"] * 3 + ["base-adapted"] * 2


def test_watch_adapt_switches_between_frames_without_losing_any(tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings
    from tcan_live.transport.subscriber import FrameSubscriber

    acq = tmp_path / "acq"
    acq.mkdir()
    d = Daemon(Settings(folder=acq, output=tmp_path / "out", model=str(tiny_model),
                        endpoint="tcp://127.0.0.1:*", settle_s=0.3, give_up_s=3.0,
                        pixel_size_um=0.05, adapt=True, adapt_frames=3, adapt_steps=2,
                        adapt_check=False))  # a tiny random model: the switch, not the check
    d.start()
    try:
        while d.publisher is None:
            time.sleep(0.01)
        sub = FrameSubscriber(d.publisher.endpoint, kinds=("enhanced", "status"))
        time.sleep(0.3)
        n = 14
        w = subprocess.Popen([sys.executable, "-m", "tcan_live._cli", "simulate", str(acq),
                              "--timelapse", "--size", "48", "--frames", str(n),
                              "--interval", "0.6"])
        enhanced, status = [], []
        deadline = time.monotonic() + 120
        while len(enhanced) < n and time.monotonic() < deadline:
            msg = sub.receive(0.5)
            if msg is not None:
                (enhanced if msg.kind == "enhanced" else status).append(msg)
        assert w.wait(30) == 0
        sub.close()
    finally:
        d.stop()
    # every frame once: no frame lost, none published twice
    assert sorted(m.header["index"]["t"] for m in enhanced) == list(range(n))
    assert len({m.header["seq"] for m in enhanced}) == n
    events = [m.header.get("event") for m in status if m.header.get("event")]
    assert "adapt-started" in events and "model-switched" in events
    switch = next(m.header for m in status if m.header.get("event") == "model-switched")
    models = [m.header["model"] for m in sorted(enhanced, key=lambda m: m.header["seq"])]
    base, adapted = tiny_model.name, switch["model"]
    assert adapted.startswith(f"{base}-adapted-") and switch["previous"] == base
    k = models.index(adapted)  # the switch happens once, between frames, after 3 were seen
    assert k >= 3 and models[:k] == [base] * k and models[k:] == [adapted] * (n - k)
    assert switch["from_seq"] == k
    # the saved output records which model made each frame
    import json

    lines = (tmp_path / "out" / ".tcan-live" / "journal.jsonl").read_text().splitlines()
    saved = {json.loads(x)["index"]["t"]: json.loads(x)["model"] for x in lines}
    published = {m.header["index"]["t"]: m.header["model"] for m in enhanced}
    assert saved == published
    card = tmp_path / "out" / ".tcan-live" / "adapted" / adapted / "model.toml"
    assert card.is_file()


def test_adapt_command_writes_a_model_and_resumes(tmp_path: Path, tiny_model: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tcan_live._cli import main
    from tcan_live.sr.card import read_card

    frames = _frames(np.random.default_rng(6), 40.0, n=4)
    tifffile.imwrite(tmp_path / "cells.ome.tif", np.stack(frames), photometric="minisblack",
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05})
    out = tmp_path / "models" / "my-cells"
    argv = ["adapt", str(tmp_path / "cells.ome.tif"), "--out", str(out), "--init",
            str(tiny_model), "--steps", "2", "--confocal-fwhm-nm", "200"]
    assert main(argv) == 0
    text = capsys.readouterr()
    assert "wrote" in text.out and "brightest pixels" in text.err and "step 1" in text.err
    # the held-out check's verdict is said, and the advice follows it
    assert "held-out check on 1 held-out frame(s)" in text.err
    passed = read_card(out).training["adapt"]["held_out_check"]["accepted"]
    assert ("use it with --model" in text.out) == passed
    assert ("not recommended over" in text.out) == (not passed)
    card = read_card(out)
    assert card.id == "my-cells" and card.training["adapt"]["steps"] == 2
    assert card.training["adapt"]["config"]["confocal_fwhm_nm"] == 200
    assert card.provenance["input_pixel_size_um"] == pytest.approx(0.05)
    assert main([*argv[:-4], "--steps", "3"]) == 0  # the same folder again: resumes
    assert "resuming at step 2" in capsys.readouterr().err
    assert read_card(out).training["adapt"]["steps"] == 3


def test_adapted_record_is_data_never_a_path(tmp_path: Path) -> None:
    """The record of the adaptation in force names a plain folder inside adapted/ and the
    initial weights it was made from; anything else is ignored (the daemon adapts anew)."""
    import json

    from tcan_live.sinks import ADAPTED_RECORD, read_adapted_record, write_adapted_record

    sha, other = "a" * 64, "b" * 64
    folder = tmp_path / "adapted"
    (folder / "base-adapted-1").mkdir(parents=True)
    (folder / "base-adapted-1" / "model.toml").write_text("x")
    write_adapted_record(folder, "base-adapted-1", 0, sha)
    assert read_adapted_record(folder, sha) == (folder / "base-adapted-1", 0)
    assert read_adapted_record(folder, other) is None  # adapted from other weights
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model.toml").write_text("x")
    for bad in ({"model": "../evil", "channel": 0, "init_sha256": sha},
                {"model": str(tmp_path / "evil"), "channel": 0, "init_sha256": sha},
                {"model": "base-adapted-1", "channel": -1, "init_sha256": sha},
                {"model": "base-adapted-1", "channel": True, "init_sha256": sha},
                {"model": "missing", "channel": 0, "init_sha256": sha},
                {"channel": 0, "init_sha256": sha}):
        (folder / ADAPTED_RECORD).write_text(json.dumps(bad))
        assert read_adapted_record(folder, sha) is None, bad
    (folder / ADAPTED_RECORD).write_text("not json")
    assert read_adapted_record(folder, sha) is None


def test_a_restarted_watch_adapt_takes_the_adapted_model_back(tiny_model: Path,
                                                               tmp_path: Path) -> None:
    """Daemon 1 adapts on the first frames and switches; daemon 2 (a restart: same output
    folder, same initial model) enhances every new frame with that adapted model from the
    first one on, announces it (resumed), and starts no new adaptation."""
    import time

    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings
    from tcan_live.transport.subscriber import FrameSubscriber

    acq = tmp_path / "acq"
    acq.mkdir()
    rng = np.random.default_rng(11)
    meta = {"axes": "YX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05}

    def run(names: list[str], until: str | None) -> tuple[list, list]:  # type: ignore[type-arg]
        d = Daemon(Settings(folder=acq, output=tmp_path / "out", model=str(tiny_model),
                            endpoint="tcp://127.0.0.1:*", settle_s=0.2, give_up_s=3.0,
                            pixel_size_um=0.05, adapt=True, adapt_frames=2, adapt_steps=2,
                            adapt_check=False))
        d.start()
        enhanced: list = []  # type: ignore[type-arg]
        status: list = []  # type: ignore[type-arg]
        try:
            while d.publisher is None:
                time.sleep(0.01)
            sub = FrameSubscriber(d.publisher.endpoint, kinds=("enhanced", "status"))
            time.sleep(0.3)
            for name, frame in zip(names, _frames(rng, 40.0, n=len(names)), strict=True):
                tifffile.imwrite(acq / name, frame, photometric="minisblack", metadata=meta)
                time.sleep(0.4)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                msg = sub.receive(0.5)
                if msg is not None:
                    (enhanced if msg.kind == "enhanced" else status).append(msg)
                events = [m.header.get("event") for m in status]
                if len(enhanced) >= len(names) and (until is None or until in events):
                    break
            sub.close()
        finally:
            d.stop()
        return enhanced, status

    # image-per-file time-lapses: one stream each (sources/naming.py)
    first, status1 = run([f"a_t{t:04d}.ome.tif" for t in range(3)], "model-switched")
    switch = next(m.header for m in status1 if m.header.get("event") == "model-switched")
    assert switch["resumed"] is False and len(first) == 3
    adapted = switch["model"]
    names = [f"b_t{t:04d}.ome.tif" for t in range(3)]
    second, status2 = run(names, None)
    assert sorted(Path(m.header["source"]).name for m in second) == names
    assert [m.header["model"] for m in second] == [adapted] * 3
    events = [m.header for m in status2 if m.header.get("event")]
    assert [e["event"] for e in events] == ["model-switched"]
    assert events[0]["resumed"] is True and events[0]["model"] == adapted
    assert events[0]["from_seq"] == 0


def test_the_check_tiles_do_not_overlap_and_its_bound_follows_the_tile_count(
        tiny_model: Path) -> None:
    """The check's standard error counts tiles as independent, so tiles must not overlap;
    few tiles need a larger margin (Student's t) and a single tile gives no verdict."""
    from tcan_live.train.adapt import Batchmaker, HeldOutCheck, PhotonTransfer

    rng = np.random.default_rng(3)
    frame = np.arange(200 * 150, dtype=np.float64).reshape(200, 150)
    ad = Adapter(tiny_model, Inputs(_frames(rng, 40.0, n=2), 0.05, ["a", "b"]),
                 AdaptConfig(views="split"))
    bm = Batchmaker(Inputs([frame], 0.05, ["f"]), PhotonTransfer(1.0, 0.0, 1.0, 0.0), ad.card,
                    0.5, 96, "split")
    x1, x2, n = bm.tiles(np.random.default_rng(0), tile=48, limit=64, draws=3)
    assert n == 4 * 3 and x1.shape == x2.shape == (n * 3, 1, 48, 48)
    # the tiles are the frame's grid: the draws of one tile sum to its photons (split views
    # scaled back by 1/p and 1/(1-p) average to the frame), and no tile repeats
    means = (x1 + x2).reshape(n, 3, -1).mean(axis=(1, 2))
    assert len(np.unique(means.round(6))) == n
    x1, _, n = bm.tiles(np.random.default_rng(0), tile=48, limit=5, draws=1)
    assert n == 5 and len(x1) == 5
    x1, _, n = bm.tiles(np.random.default_rng(0), tile=96, limit=64, draws=1)
    assert n == 2 and x1.shape[-1] == 96  # 200 x 150 holds two 96-px tiles
    assert HeldOutCheck(1.0, 0.5, 0.01, 1, []).accepted is False  # one tile: no verdict
    # the same improvement and standard error: enough with 30 tiles, not with 3
    assert HeldOutCheck(1.0, 0.95, 0.02, 30, []).accepted
    assert not HeldOutCheck(1.0, 0.95, 0.02, 3, []).accepted


def test_the_teacher_sees_the_whole_crop_under_the_same_flip(tiny_model: Path) -> None:
    """``prior_input="frame"``: the initial model's input for the prior is the whole crop whose
    photons the two views split, turned and mirrored with them (for whole photons the views,
    weighted p and 1 - p, add up to it exactly); the prior then compares the adapted model on
    half the photons with the initial model on all of them, so it is not zero before any step,
    as the plain prior is."""
    import torch

    from tcan_live.train.adapt import Batchmaker, PhotonTransfer

    rng = np.random.default_rng(11)
    frame = rng.poisson(_scene(rng, 20.0, 128)).astype(np.float64)  # whole photons, gain 1
    ad = Adapter(tiny_model, Inputs([frame, frame[::-1]], 0.05, ["a", "b"]),
                 AdaptConfig(patch=48, batch=2))  # "frame" is the default
    bm = Batchmaker(Inputs([frame], 0.05, ["f"]), PhotonTransfer(1.0, 0.0, 1.0, 0.0), ad.card,
                    0.5, 64, "split", 0.3, whole=True)
    got = bm.sample(np.random.default_rng(0), 16)
    assert set(got) == {"x1", "x2", "whole"}  # no floor asked for
    x1, x2, x0 = got["x1"], got["x2"], got["whole"]
    assert x1.shape == x2.shape == x0.shape == (16, 1, 64, 64)
    np.testing.assert_allclose(0.3 * x1 + 0.7 * x2, x0, atol=1e-5)
    assert not np.allclose(x1, x0, atol=1e-3)
    assert len(Batchmaker(Inputs([frame], 0.05, ["f"]), PhotonTransfer(1.0, 0.0, 1.0, 0.0),
                          ad.card, 0.5, 64, "split").sample(np.random.default_rng(0), 2)) == 2
    assert ad.batches.whole
    b = ad.batches.sample(np.random.default_rng(1), 2)
    t1, t2, t0 = (torch.from_numpy(b[k]) for k in ("x1", "x2", "whole"))
    with torch.no_grad():
        assert float(ad.losses(t1, t2)["prior"]) == 0.0  # the same input: the same output
        assert float(ad.losses(t1, t2, t0)["prior"]) > 0.0


def test_the_fixed_crops_teacher_is_the_teacher_of_the_drawn_crop(tiny_model: Path) -> None:
    """``prior_bank``: the teacher's output, computed once per fixed crop, is what the teacher
    averaged over turns and mirrors gives for the whole crop the step's two views split,
    turned and mirrored as they are (the fast path matches the plain one); without
    ``prior_tta`` it is the plain teacher's output for the crop, turned with the views."""
    import torch

    from tcan_live.train.adapt import PhotonTransfer, dihedral_mean

    rng = np.random.default_rng(5)
    frame = rng.poisson(_scene(rng, 20.0, 96)).astype(np.float64)  # whole photons, gain 1
    pt = PhotonTransfer(1.0, 0.0, 1.0, 0.0)
    inputs = Inputs([frame, frame[::-1], frame[:, ::-1]], 0.05, ["a", "b", "c"])
    ad = Adapter(tiny_model, inputs, AdaptConfig(patch=48, batch=6, prior_bank=4), pt=pt)
    assert len(ad.crops) == 4 and not ad.targets
    got = ad.batch()
    assert "whole" not in got and len(ad.targets) == 4
    x1, x2, t = got["x1"], got["x2"], got["target"]
    assert x1.shape == x2.shape == t.shape == (6, 1, 48, 48)
    whole = 0.5 * x1 + 0.5 * x2  # the crop itself, turned and mirrored as the views
    with torch.no_grad():
        np.testing.assert_allclose(t.numpy(), dihedral_mean(ad.ref, whole).numpy(), atol=1e-5)
        # the loss takes the given target as the prior's
        got = ad.losses(x1, x2, target=t)["prior"]
        np.testing.assert_allclose(float(got), float(torch.mean((ad.gen(x1) - t) ** 2)),
                                   rtol=1e-6)
    # the same crops again for a resumed run (their own generator)
    again = Adapter(tiny_model, inputs, AdaptConfig(patch=48, batch=6, prior_bank=4), pt=pt)
    for (k1, c1), (k2, c2) in zip(ad.crops, again.crops, strict=True):
        assert k1 == k2 and np.array_equal(c1, c2)
    plain = Adapter(tiny_model, inputs, AdaptConfig(patch=48, batch=1, prior_bank=4,
                                                    prior_tta=False), pt=pt)
    got = plain.batch()
    x1, x2, t = got["x1"], got["x2"], got["target"]
    whole = 0.5 * x1 + 0.5 * x2
    with torch.no_grad():
        turned = [plain.ref(torch.flip(torch.rot90(whole, r, (2, 3)), d))
                  for r in range(4) for d in ((), (3,))]
    # the plain teacher's output of the unturned crop, turned as the views were
    assert min(float(torch.max(torch.abs(
        torch.flip(torch.rot90(t, r, (2, 3)), d) - y)))
        for y, (r, d) in zip(turned, [(r, d) for r in range(4) for d in ((), (3,))],
                             strict=True)) < 1e-5
    assert not Adapter(tiny_model, inputs, AdaptConfig(), pt=pt).crops  # off by default
    assert not Adapter(tiny_model, inputs, AdaptConfig(prior_input="view"), pt=pt).crops


def test_the_turn_and_mirror_average_does_not_depend_on_the_turn(tiny_model: Path) -> None:
    import torch

    from tcan_live.sr.model import load_generator
    from tcan_live.train.adapt import dihedral_mean

    _, gen = load_generator(tiny_model)
    gen.eval()
    x = torch.from_numpy(np.random.default_rng(2).random((2, 1, 32, 32), np.float32))
    with torch.no_grad():
        y = dihedral_mean(gen, x)
        for r in range(4):
            turned = torch.flip(torch.rot90(x, r, (2, 3)), (2,))
            np.testing.assert_allclose(
                dihedral_mean(gen, turned).numpy(),
                torch.flip(torch.rot90(y, r, (2, 3)), (2,)).numpy(), atol=1e-5)
        assert not np.allclose(gen(x).numpy(), y.numpy(), atol=1e-4)  # it is an average


def _check(before: float, after: float, se: float = 0.001, tiles: int = 18) -> Any:
    from tcan_live.train.adapt import HeldOutCheck

    return HeldOutCheck(before, after, se, tiles, ["f2"])


def test_the_weaker_prior_is_kept_only_on_strong_evidence() -> None:
    """prefer_relaxed: the relaxed run must pass its check, gain at least margin times the
    first run's held-out improvement and beat the first run's model beyond noise."""
    from tcan_live.train.adapt import prefer_relaxed

    first = _check(1.0, 0.95)  # -5%: passes
    clear = (0.04, 0.005, 2.1)  # relaxed better than the first by 8 standard errors
    assert prefer_relaxed(first, _check(1.0, 0.88), clear, 2.0)  # 2.4 x the gain
    assert not prefer_relaxed(first, _check(1.0, 0.93), clear, 2.0)  # 1.4 x: the prior stays
    assert prefer_relaxed(first, _check(1.0, 0.93), clear, 1.2)  # a laxer margin keeps it
    assert not prefer_relaxed(first, _check(1.0, 0.88), (0.04, 0.03, 2.1), 2.0)  # noise
    assert not prefer_relaxed(first, _check(1.0, 0.88, se=0.1), clear, 2.0)  # fails its check
    # where the first run got worse, any passing, clearly better relaxed run is kept
    assert prefer_relaxed(_check(1.0, 1.01), _check(1.0, 0.99), clear, 2.0)


def test_adapt_model_runs_twice_and_records_both(tiny_model: Path, tmp_path: Path) -> None:
    """Two runs from the initial model (the second with the relaxed prior, in what is left of
    the budget), the kept one decided by prefer_relaxed on the same held-out views, both
    recorded on the card; one run only without a relaxed weight."""
    from tcan_live.sr.card import read_card
    from tcan_live.train.adapt import adapt_model, paired_gain, prefer_relaxed

    frames = _frames(np.random.default_rng(11), 40.0, n=4)
    cfg = AdaptConfig(steps=3, patch=48, batch=2, seed=5, relaxed_prior_weight=0.0,
                      budget_min=5.0)
    stages: list[str] = []
    adapter, res = adapt_model(tiny_model, Inputs(list(frames), 0.05, ["a", "b", "c", "d"]),
                               cfg, ckpt=tmp_path / "ckpt", stage=stages.append)
    rec = res.relaxation
    assert rec is not None and stages == ["second run from tiny-random, prior weight 0"]
    assert rec["first"]["prior_weight"] == 1.0 and rec["prior_weight"] == 0.0
    assert rec["first"]["steps"] == rec["relaxed"]["steps"] == 3
    assert adapter.cfg.prior_weight == (0.0 if rec["kept"] == "relaxed" else 1.0)
    assert res.check is not None and res.check.record() == rec[rec["kept"]]["check"]
    # the decision is prefer_relaxed's on the recorded figures
    first, relaxed = (_check(rec[k]["check"]["before"], rec[k]["check"]["after"],
                             rec[k]["check"]["se"], rec[k]["check"]["tiles"])
                      for k in ("first", "relaxed"))
    between = (rec["relaxed_over_first"]["gain"], rec["relaxed_over_first"]["se"],
               first.critical)
    assert (rec["kept"] == "relaxed") == prefer_relaxed(first, relaxed, between, 2.0)
    # each run checkpoints on its own: the first in ckpt, the second in ckpt/relaxed
    assert (tmp_path / "ckpt" / "checkpoint.json").is_file()
    assert (tmp_path / "ckpt" / "relaxed" / "checkpoint.json").is_file()
    adapter.save(tmp_path / "m", "m", tiny_model.name, res)
    assert read_card(tmp_path / "m").training["adapt"]["relaxation"]["kept"] == rec["kept"]
    # paired_gain: the mean per-tile difference and its standard error
    mean, se, crit = paired_gain(np.array([1.0, 1.0, 2.0, 2.0]), np.array([2.0, 2.0, 2.0, 4.0]),
                                 2)
    assert (mean, crit) == (pytest.approx(1.0), pytest.approx(12.706, abs=1e-3))
    assert se == pytest.approx(0.0)  # both tiles differ by 1
    # no relaxed weight (or the same as the prior's): one run, nothing recorded
    _, single = adapt_model(tiny_model, Inputs(list(frames), 0.05, ["a", "b", "c", "d"]),
                            cfg.model_copy(update={"relaxed_prior_weight": None}))
    assert single.relaxation is None and single.steps == 3


def test_the_first_run_has_half_the_budget(tiny_model: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With a second run planned, the first stops at half the budget; the second gets what is
    left. A budget too small for both leaves the first run alone, and says why."""
    from tcan_live.train import adapt
    from tcan_live.train.adapt import adapt_model

    budgets: list[tuple[float, float]] = []  # (budget_min, prior_weight) of each run
    run = adapt.Adapter.run

    def spy(self: Any, *args: Any, **kw: Any) -> Any:
        budgets.append((self.cfg.budget_min, self.cfg.prior_weight))
        return run(self, *args, **kw)

    monkeypatch.setattr(adapt.Adapter, "run", spy)
    frames = _frames(np.random.default_rng(12), 40.0, n=4)
    cfg = AdaptConfig(steps=100000, patch=48, batch=2, seed=5, relaxed_prior_weight=0.1,
                      budget_min=0.02)  # 1.2 s
    _, res = adapt_model(tiny_model, Inputs(list(frames), 0.05, ["a", "b", "c", "d"]), cfg)
    rec = res.relaxation
    assert rec is not None
    assert budgets[0] == (pytest.approx(0.01), 1.0)  # the first run: half, the default prior
    if "relaxed" in rec:  # the usual case: both ran, each about half the budget
        assert 0.45 < rec["seconds"] / 60 / cfg.budget_min < 1.6
        # the second: the weaker prior, in what the first left (at most the other half)
        assert len(budgets) == 2 and budgets[1][1] == 0.1
        assert 0.1 * cfg.budget_min <= budgets[1][0] <= 0.01 + 1e-9
    else:  # this machine was too slow for one step within half the budget
        assert rec["why"] == "no time left for the second run" and rec["kept"] == "first"
        assert len(budgets) == 1


def test_the_background_floor_is_the_frames_background_level() -> None:
    """The floor is the frame's background (dark light and detector offset, normalised) where
    part of the field is empty: within the noise left after smoothing to confocal resolution,
    and not above it; more background, a higher floor."""
    from tcan_live.sr.normalize import normalize, percentile_affine
    from tcan_live.train.adapt import background_floor

    rng = np.random.default_rng(8)
    lines = np.zeros((192, 192))
    lines[::12, :96] = 1.0  # structure in the left half, the right half empty
    got = []
    for dark in (1.0, 4.0):
        lam = ndimage.gaussian_filter(lines, 2.0)
        lam = lam / lam.max() * 30.0 + dark
        d = domain.Detector("gaasp", 30.0, 0.0, 4.0, 100.0, 1.2, 1.0, 16)
        frame = domain.detect(rng, lam, d)
        a = percentile_affine(frame, 1.0, 99.9)
        truth = float(normalize(np.array([100.0 + 4.0 * dark]), a)[0])
        floor = background_floor(frame, a, 230.0, 0.05)
        assert truth - 0.03 < floor <= truth + 0.002
        got.append(floor)
    assert got[1] > got[0]


def test_the_floor_loss_charges_only_new_darkness_below_the_background() -> None:
    """Zero where the output is at or above the floor, and where it is no darker than the
    initial model's output; positive, pushing the output up, where it goes below both."""
    import torch

    from tcan_live.train.adapt import floor_loss

    floor = torch.full((2, 1, 1, 1), 0.1)
    ref = torch.full((2, 1, 4, 4), 0.1)
    ref[0, 0, 0, 0] = 0.02  # the initial model's own dark pixel
    out = ref.clone()
    assert float(floor_loss(out, ref, floor)) == 0.0  # the initial model itself
    out[0, 0, 0, 0] = 0.05  # lifting the initial model's dark pixel towards the floor: free
    out[1] += 0.3
    assert float(floor_loss(out, ref, floor)) == 0.0
    halo = out.clone().requires_grad_(True)
    with torch.no_grad():
        halo[1, 0, 2, 2] = 0.0  # a new dark pixel, 0.1 below the floor
    loss = floor_loss(halo, ref, floor)
    assert float(loss.detach()) == pytest.approx(0.1**2 / 32, rel=1e-5)
    loss.backward()
    assert halo.grad is not None and float(halo.grad[1, 0, 2, 2]) < 0
    assert int((halo.grad != 0).sum()) == 1


def test_each_batch_item_carries_its_frames_floor(tiny_model: Path) -> None:
    """The floor travels with each crop from its own frame (frames of different background),
    the loss takes it, and with ``floor_weight`` 0 there is none."""
    import torch

    from tcan_live.train.adapt import background_floor

    rng = np.random.default_rng(12)
    frames = [domain.detect(rng, _scene(rng, 40.0, 128) + dark,
                            domain.Detector("gaasp", 40.0, 0.0, 8.0, 50.0, 1.0, 0.5, 16))
              for dark in (0.5, 5.0, 20.0)]
    ad = Adapter(tiny_model, Inputs(frames, 0.05, ["a", "b", "c"]),
                 AdaptConfig(patch=48, batch=16, holdout=0.0, confocal_fwhm_nm=230.0))
    floors = [background_floor(f, a, 230.0, 0.05)
              for f, a in zip(ad.batches.inputs.frames, ad.batches.affines, strict=True)]
    assert len(set(np.round(floors, 4))) == 3
    ks: list[int] = []
    place = ad.batches._place
    ad.batches._place = lambda r: (ks.append((got := place(r))[0]), got)[1]  # type: ignore
    b = ad.batch()
    np.testing.assert_allclose(b["floor"].numpy().ravel(), [floors[k] for k in ks])
    with torch.no_grad():
        parts = ad.losses(**b)
    assert "floor" in parts
    assert float(parts["total"]) == pytest.approx(
        float(parts["consistency"] + parts["prior"] + 100.0 * parts["floor"]), rel=1e-5)
    off = Adapter(tiny_model, Inputs(frames, 0.05, ["a", "b", "c"]),
                  AdaptConfig(patch=48, batch=2, floor_weight=0.0))
    assert "floor" not in off.batch() and "floor" not in off.losses(**off.batch())
