"""Options of the benchmark scripts (``python -m benchmarks.<name>`` in a source checkout),
parsed here: the benchmarks' own command line, the only ``argparse`` outside ``tcan_live._cli``
(the scripts get plain typed values, a ``SimpleNamespace``). The benchmarks are not part of the
installed package."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def _daemon(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--sizes", default="512,2048")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--model", default=None)
    p.add_argument("--write-docs", action="store_true")
    return p


def _tuning(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="add a torch.compile row (slow)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU table")
    p.add_argument("--preset", default=None,
                   help="(cuda) time a random-weight model of this architecture (tcan: the "
                        "paper's widths); precision differences use --model")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--default-only", action="store_true",
                   help="print the default's seconds per frame as JSON (used for the "
                        "allocator rows, which need fresh processes)")
    return p


def _growth(size: int, what: str, where: str) -> Callable[[str | None], argparse.ArgumentParser]:
    """The options of a benchmark that grows one output over many frames (nd2scan, storage)."""
    def make(doc: str | None) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(description=doc)
        p.add_argument("--frames", type=int, default=1000)
        p.add_argument("--size", type=int, default=size, help=f"frame edge in px ({what})")
        p.add_argument("--folder", type=Path, default=None, help=where)
        p.add_argument("--write-docs", action="store_true")
        return p

    return make


_nd2scan = _growth(1024, "uint16", "where the file grows (a temp folder on the same disk by "
                   "default)")
_storage = _growth(512, "float32", "where to write (a temp folder on the default disk if not "
                   "given)")


def _honesty_families() -> str:
    """The honesty benchmark's families, in its order (a case's seed depends on the position)."""
    from tcan_live.sim.domain import HELDOUT_FAMILIES

    return ",".join([*HELDOUT_FAMILIES, "filaments", "vesicles", "lattice", "cytoplasm",
                     "nucleus"])


def _honesty(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", action="append", required=True, help="model id or folder")
    p.add_argument("--families", default=_honesty_families())
    p.add_argument("--photons", default="10,30,100")
    p.add_argument("--n", type=int, default=6, help="images per family and photon level")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=9000)
    p.add_argument("--real", default=str(REPO.parent / "shared" / "data" / "confocal_sted"))
    p.add_argument("--out", default=str(REPO / "docs"), help="docs folder to write into")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-card", action="store_true",
                   help="also store the medians in each model card's [metrics.honesty]")
    return p


def _model(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", default=None)
    p.add_argument("--preset", default=None,
                   help="time a random-weight model of this architecture instead (tcan: the "
                        "paper's widths)")
    p.add_argument("--sizes", default="512,1024,2048", help="frame sizes in px")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    return p


def _adapt(doc: str | None) -> argparse.ArgumentParser:
    from tcan_live.sim.domain import HELDOUT_FAMILIES

    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", default="tcan-broad-small")
    p.add_argument("--families", default=",".join(HELDOUT_FAMILIES))
    p.add_argument("--photons", default="10,30")
    p.add_argument("--frames", default="8", help="frames to adapt on (comma list)")
    p.add_argument("--budget-min", default="10", help="CPU minutes (comma list: one run to "
                   "the largest, the model scored as it was at each)")
    p.add_argument("--test", type=int, default=4, help="unseen fields per case")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--prior", type=float, default=None, help="prior weight (default: adapt's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: adapt's)")
    p.add_argument("--steps", type=int, default=None, help="step limit (default: adapt's)")
    p.add_argument("--views", default=None, choices=("recorrupt", "split"),
                   help="how a frame's two views are made (default: adapt's)")
    p.add_argument("--prior-band", default=None, choices=("high", "all"),
                   help="where the prior holds the initial model (train/adapt.py)")
    p.add_argument("--prior-input", default=None, choices=("view", "frame"),
                   help="what the initial model sees for the prior's target (train/adapt.py)")
    p.add_argument("--split-p", type=float, default=None, help="the input view's share of "
                   "the photons (default: adapt's)")
    p.add_argument("--prior-bank", type=int, default=None, help="fixed crops whose teacher "
                   "output is computed once (0: the teacher on each step's crops; default: "
                   "adapt's)")
    p.add_argument("--prior-tta", default=None, choices=("on", "off"), help="the teacher "
                   "averaged over turns and mirrors (default: adapt's)")
    p.add_argument("--floor", type=float, default=None, help="the floor loss's weight (0: "
                   "off, as before session 20; default: adapt's)")
    p.add_argument("--figures", default=None, help="folder for one figure per case")
    p.add_argument("--real", default=None, help="also adapt on the confocal images of the "
                   "shared real pairs in this folder (score against their STED images)")
    p.add_argument("--seed", type=int, default=4200)
    p.add_argument("--acquisitions", type=int, default=1, help="simulated acquisitions per "
                   "case (seeds SEED, SEED+1, ...): one acquisition's gain is not a result")
    p.add_argument("--ceiling", action="store_true", help="supervise by the STED truth "
                   "instead (what the frames could give; not a user's option)")
    p.add_argument("--relaxed-prior", type=float, default=None, help="prior weight of "
                   "adapt's second run (default: adapt's; the --prior value: one run)")
    p.add_argument("--at-steps", default=None, help="score the model after these step counts "
                   "(comma list; the largest is the step limit, --budget-min only a time "
                   "bound) instead of at each budget")
    p.add_argument("--device", default="cpu", help="where to adapt and enhance (cpu, cuda)")
    p.add_argument("--rows", default=None, help="also append each result row to this file "
                   "(JSON lines, the command line first)")
    p.add_argument("--from-rows", default=None, help="make the tables from such a file instead "
                   "of running (with --write-docs: into docs/benchmarks.md)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-docs", action="store_true")
    return p


def _restore(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=3, help="images per family and photon level")
    p.add_argument("--photons", default="10,30,100")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=9100)
    p.add_argument("--figure", default=None, help="PNG of the image it changed most")
    p.add_argument("--periods", default="200,250,300,400,600", help="probe lattice periods, nm")
    p.add_argument("--probe-photons", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-docs", action="store_true")
    return p


def _edge(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--model", default=None)
    p.add_argument("--families", default=_honesty_families())
    p.add_argument("--photons", default="10,30,100")
    p.add_argument("--n", type=int, default=2, help="images per family and photon level")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=9000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-docs", action="store_true")
    return p


_PARSERS: dict[str, Callable[[str | None], argparse.ArgumentParser]] = {
    'model': _model,
    'adapt': _adapt,
    'daemon': _daemon,
    'tuning': _tuning,
    'nd2scan': _nd2scan,
    'storage': _storage,
    'honesty': _honesty,
    'restore': _restore,
    'edge': _edge,
}


def parse_script(name: str, argv: Sequence[str] | None, doc: str | None) -> SimpleNamespace:
    """The options of benchmark script ``name`` (its module doc as the help text)."""
    description = doc.split("\n\n")[0] if doc else None
    return SimpleNamespace(**vars(_PARSERS[name](description).parse_args(argv)))
