"""Models as data: cards, checksums, safe loading, lookup, `tcan-live models`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tcan_live._cli import main
from tcan_live.errors import ModelError, NoModelError
from tcan_live.sr.card import read_card, resolve_model, sha256_file
from tcan_live.sr.model import load_generator


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_round_trip_reproduces_outputs(tiny_model: Path) -> None:
    card, g = load_generator(tiny_model)
    assert card.id == "tiny-random" and card.weights.sha256 == sha256_file(
        tiny_model / "weights.safetensors")
    _, g2 = load_generator(tiny_model)
    x = torch.randn(1, 1, 40, 40)
    with torch.inference_mode():
        assert torch.equal(g(x), g2(x))


def test_checksum_mismatch_names_the_file(tiny_model: Path, tmp_path: Path) -> None:
    m = _copy(tiny_model, tmp_path / "m")
    w = m / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"weights\.safetensors: sha256 mismatch"):
        load_generator(m)


def test_missing_weights_and_card(tiny_model: Path, tmp_path: Path) -> None:
    m = _copy(tiny_model, tmp_path / "m")
    (m / "weights.safetensors").unlink()
    with pytest.raises(ModelError, match="weights file missing"):
        load_generator(m)
    (m / "model.toml").unlink()
    with pytest.raises(ModelError, match="missing model card"):
        read_card(m)


def test_pickle_disguised_as_weights_is_never_unpickled(tiny_model: Path, tmp_path: Path) -> None:
    """A torch.save (pickle) file with a matching checksum is rejected, not executed."""
    m = _copy(tiny_model, tmp_path / "m")
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    torch.save({"x": Evil()}, m / "weights.safetensors")
    card = (m / "model.toml").read_text()
    old = read_card(m).weights.sha256
    (m / "model.toml").write_text(card.replace(old, sha256_file(m / "weights.safetensors")))
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_generator(m)
    assert not marker.exists()


def test_card_validation_quotes_the_field(tiny_model: Path, tmp_path: Path) -> None:
    m = _copy(tiny_model, tmp_path / "m")
    text = (m / "model.toml").read_text().replace("pixel_size_um = 0.05", "pixel_size_um = -1")
    (m / "model.toml").write_text(text)
    with pytest.raises(ModelError, match="pixel_size_um"):
        read_card(m)
    (m / "model.toml").write_text("unknown_field = 1\n" + text.replace("pixel_size_um = -1",
                                                                       "pixel_size_um = 0.05"))
    with pytest.raises(ModelError, match="unknown_field"):
        read_card(m)


def test_architecture_mismatch_is_reported(tiny_model: Path, tmp_path: Path) -> None:
    m = _copy(tiny_model, tmp_path / "m")
    text = (m / "model.toml").read_text().replace("dfcan_width = 4", "dfcan_width = 8")
    (m / "model.toml").write_text(text)
    with pytest.raises(ModelError, match="do not match the card's architecture"):
        load_generator(m)


def test_lookup_by_id_path_and_default(tiny_model: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    _copy(tiny_model, store / "tiny-random")
    monkeypatch.setenv("TCAN_LIVE_MODELS", str(store))
    assert resolve_model("tiny-random") == store / "tiny-random"
    assert resolve_model(str(tiny_model)) == tiny_model
    with pytest.raises(NoModelError, match="no installed model with this id"):
        resolve_model("no-such-model")
    with pytest.raises(NoModelError, match="not a model folder"):
        resolve_model(str(tmp_path))
    (store / "DEFAULT").write_text("tiny-random\n")
    assert resolve_model(None) == store / "tiny-random"


def test_models_command_lists_installed(tiny_model: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    _copy(tiny_model, store / "tiny-random")
    broken = _copy(tiny_model, store / "broken")
    (broken / "model.toml").write_text("not toml [")
    (store / "DEFAULT").write_text("tiny-random\n")
    monkeypatch.setenv("TCAN_LIVE_MODELS", str(store))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "* tiny-random" in out
    assert "broken" in out and "BROKEN" in out
