"""The only module that touches private internals of the ``nd2`` package.

Live reading of an ND2 file that NIS-Elements is still writing (:mod:`.nd2live`) needs two
things ``nd2`` has but does not export:

* the decoder of NIS-Elements' binary metadata format ("CLX lite variant"), to read the
  experiment, calibration and picture metadata chunks at the start of the file;
* the experiment parser that turns the experiment chunk into loops (``load_experiment``), so
  that a frame's sequence number maps to the same T/P/Z indices that ``nd2`` gives the finished
  file (the same code decides both).

``nd2`` is pinned to the range tested here (pyproject.toml); tests/test_nd2live.py has a
canary test that fails loudly if an upgrade moves or changes these internals. If they are
missing at run time, :func:`available` is False and ND2 files are read once complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: what this module uses from nd2 (checked by :func:`available` and the canary test)
PRIVATE_API = (
    "nd2._parse._clx_lite.json_from_clx_lite_variant",
    "nd2._parse._parse.load_experiment",
    "nd2._util.AXIS",
)


def available() -> bool:
    """True when every private name in :data:`PRIVATE_API` can be imported."""
    import importlib

    try:
        for name in PRIVATE_API:
            module, attr = name.rsplit(".", 1)
            getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return False
    return True


def decode(raw: bytes, *, strip_prefix: bool = True) -> dict[str, Any] | None:
    """A metadata chunk's content as a dict, or None when it does not decode."""
    try:
        from nd2._parse._clx_lite import json_from_clx_lite_variant

        out = json_from_clx_lite_variant(raw, strip_prefix=strip_prefix)
    except Exception:  # private API: any failure means "not decodable"
        return None
    return out if isinstance(out, dict) else None


@dataclass(frozen=True)
class Loop:
    axis: str  # "T", "P", "Z", or "U" (a loop nd2 has no axis for)
    count: int  # 0: a time loop whose end is not known yet
    z_step_um: float | None = None
    period_ms: float | None = None


def experiment_loops(raw_chunk: bytes) -> list[Loop] | None:
    """The experiment chunk (``ImageMetadataLV!``) as ``nd2`` parses it for the finished file:
    its loops outermost first (sequence frames run through them like nested for-loops). None
    when it does not parse."""
    exp = decode(raw_chunk, strip_prefix=False)
    if exp is None:
        return None
    exp = exp.get("SLxExperiment", exp)
    open_ended = False
    pars = exp.get("uLoopPars")
    if exp.get("eType") == 1 and isinstance(pars, dict) and not pars.get("uiCount"):
        # a time loop "until stopped": no count yet (nd2 would drop the loop and everything
        # nested in it); parse it as one time point, then leave it open-ended (count 0)
        exp = {**exp, "uLoopPars": {**pars, "uiCount": 1}}
        open_ended = True
    try:
        from nd2._parse._parse import load_experiment
        from nd2._util import AXIS

        loops = load_experiment(exp)  # type: ignore[arg-type]
        out: list[Loop] = []
        for loop in loops:
            params: Any = getattr(loop, "parameters", None)
            step = getattr(params, "stepUm", None) if loop.type == "ZStackLoop" else None
            period = getattr(params, "periodMs", None) if loop.type == "TimeLoop" else None
            count = 0 if open_ended and not out else int(loop.count)
            out.append(Loop(AXIS._MAP.get(loop.type, "U"), count,
                            float(step) if step is not None else None,
                            float(period) if period is not None else None))
        return out
    except Exception as err:  # private API, or a file nd2 itself does not understand
        log.debug("nd2 experiment parser failed: %s", err)
        return None
