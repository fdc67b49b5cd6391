"""Build networks from cards; save and load model folders (safetensors only, never pickle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tcan_live.errors import ModelError
from tcan_live.sr.card import (
    Architecture,
    Card,
    Weights,
    read_card,
    sha256_file,
    verified_weights_path,
    write_card,
)
from tcan_live.sr.network import Generator


def build_generator(arch: Architecture) -> Generator:
    return Generator(
        stem_width=arch.stem_width,
        unet_widths=arch.unet_widths,
        unet_bottom=arch.unet_bottom,
        dfcan_width=arch.dfcan_width,
        dfcan_groups=arch.dfcan_groups,
        fcab_per_group=arch.fcab_per_group,
        gamma=arch.gamma,
        attention_reduction=arch.attention_reduction,
        branch_out=arch.branch_out,
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_state(module: torch.nn.Module, path: Path, fmt: str) -> None:
    """A module's tensors to a safetensors file, atomically (metadata ``format``)."""
    tmp = path.with_suffix(".safetensors.tmp")
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": fmt})
    os.replace(tmp, path)


def load_state(module: torch.nn.Module, path: Path, what: str) -> None:
    """A safetensors file into ``module`` (strict); a ModelError naming the file otherwise.
    ``what``: the card table the module's shape comes from (for the message)."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(path, f"not a readable safetensors file: {err}") from err
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise ModelError(path, f"weights do not match the card's {what}: {first}") from err


def save_model(folder: Path, generator: Generator, **card_fields: Any) -> Card:
    """Write weights then the card (with the weights' sha256); both atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights.safetensors"
    save_state(generator, weights, "tcan-live-generator")
    card = Card(weights=Weights(file=weights.name, sha256=sha256_file(weights)), **card_fields)
    write_card(folder, card)
    return card


def load_generator(folder: Path) -> tuple[Card, Generator]:
    """Card + generator in eval mode on the CPU; checksum verified, no pickle involved."""
    card = read_card(folder)
    path = verified_weights_path(folder, card)
    generator = build_generator(card.architecture)
    load_state(generator, path, "architecture")
    return card, generator.eval()
