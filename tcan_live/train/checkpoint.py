"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tcan_live.errors import ModelError


def flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    """Split an optimizer state_dict into tensors (by key) and JSON-able param groups."""
    tensors: dict[str, torch.Tensor] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def unflatten_optimizer(
    prefix: str, tensors: dict[str, torch.Tensor], groups: Any
) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        idx, key = name[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``checkpoint.safetensors`` then ``checkpoint.json`` (the JSON names the step, and the
    tensors file carries the same step in its metadata so a torn pair is detected)."""
    folder.mkdir(parents=True, exist_ok=True)
    st, js = folder / "checkpoint.safetensors", folder / "checkpoint.json"
    step = str(meta["step"])
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(st) + ".tmp",
              metadata={"step": step})
    os.replace(str(st) + ".tmp", st)
    js.with_suffix(".json.tmp").write_text(json.dumps(meta), encoding="utf-8")
    os.replace(js.with_suffix(".json.tmp"), js)


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    st, js = folder / "checkpoint.safetensors", folder / "checkpoint.json"
    if not js.is_file() or not st.is_file():
        return None
    meta = json.loads(js.read_text(encoding="utf-8"))
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as fh:
        saved_step = (fh.metadata() or {}).get("step")
    if saved_step != str(meta["step"]):
        raise ModelError(st, f"checkpoint torn: tensors at step {saved_step}, "
                             f"JSON at {meta['step']}")
    return load_file(str(st)), meta
