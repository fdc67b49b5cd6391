"""Import rules of docs/architecture.md, read from the source (every import statement, also
those inside functions): torch only where the network is, zmq only in the transport, and the
layers that must stay light (frames, sources, export, transport, the viewer) never reach
torch, however indirectly."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "tcan_live"
TORCH_ALLOWED = ("sr", "train")  # packages that may import torch themselves
LIGHT = ("frame", "errors", "settings", "resample", "sim", "sources", "export", "transport",
         "viewer.app",
         "viewer.plugin", "viewer.reader", "record", "panel", "pipeline")
# commands and composition roots that build the Enhancer themselves are not light; the Dask
# path (`distributed`, imported inside the export's cluster function) runs the model on workers
NOT_LIGHT = ("export.run",)
BOUNDARY = ("distributed",)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = _modules()
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _own(name: str) -> set[str]:
    """The tcan_live modules ``name`` imports (without the package prefix)."""
    return {m.removeprefix("tcan_live.") for m in IMPORTS[name]
            if m.startswith("tcan_live.") and m.removeprefix("tcan_live.") in MODULES}


def _reach(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [n for n in _own(m) if n not in BOUNDARY]
    return seen


def _uses(name: str, lib: str) -> bool:
    return any(m == lib or m.startswith(lib + ".") for m in IMPORTS[name])


def test_torch_only_where_the_network_is() -> None:
    bad = [m for m in MODULES if _uses(m, "torch") and m.split(".")[0] not in TORCH_ALLOWED]
    assert not bad, f"torch imported outside {TORCH_ALLOWED}: {bad}"


def test_argparse_only_in_the_command_line_package() -> None:
    bad = [m for m in MODULES if _uses(m, "argparse") and not m.startswith("_cli")]
    assert not bad, f"argparse imported outside tcan_live/_cli/: {bad}"


def test_zmq_only_in_the_transport() -> None:
    bad = [m for m in MODULES if _uses(m, "zmq") and not m.startswith("transport")]
    assert not bad, f"zmq imported outside transport/: {bad}"


def test_light_layers_never_reach_torch() -> None:
    for top in LIGHT:
        for name in [m for m in MODULES if (m == top or m.startswith(top + "."))
                     and m not in NOT_LIGHT]:
            heavy = sorted(m for m in _reach(name) if _uses(m, "torch"))
            assert not heavy, f"{name} reaches torch through {heavy}"


def test_the_simulator_is_below_sr_and_train_and_sr_below_train() -> None:
    up = {m for m in MODULES if m.startswith("sim")}
    for name in up:
        bad = sorted(m for m in _reach(name) if m.split(".")[0] in ("sr", "train"))
        assert not bad, f"{name} reaches {bad}"
    for name in [m for m in MODULES if m.startswith("sr.")]:
        bad = sorted(m for m in _own(name) if m.startswith("train"))
        assert not bad, f"{name} imports {bad}"


# docs/architecture.md's rows: a module imports only rows below its own, or to its left in its
# row; the first row (entry points) is exempt
ROWS = [["_cli"],
        ["", "daemon", "demo", "enhance_files", "record", "export.run", "viewer", "micromanager"],
        ["sinks", "panel"],
        ["sources", "transport", "sr", "train", "distributed", "export"],
        ["pipeline", "commands", "settings"],
        ["errors", "frame", "resample", "sim"]]


def _place(name: str) -> tuple[int, int, str]:
    found = [(r, c, g) for r, row in enumerate(ROWS) for c, g in enumerate(row)
             if name == g or (g and name.startswith(g + "."))]
    assert found, f"{name} is in no row of docs/architecture.md's diagram"
    return max(found, key=lambda f: len(f[2]))


def test_imports_follow_the_layer_diagram() -> None:
    bad = []
    for name in MODULES:
        here = _place(name)
        for other in _own(name):
            there = _place(other)
            if here[0] == 0 or there[2] == here[2]:
                continue
            if not (there[0] > here[0] or (there[0] == here[0] and there[1] < here[1])):
                bad.append(f"{name} -> {other}")
    assert not bad, f"imports against the diagram: {bad}"


def test_the_benchmarks_are_outside_the_installed_package() -> None:
    """The wheel ships ``tcan_live`` only: no benchmark lives in it, none of it imports the
    benchmarks, and the benchmarks' ``argparse`` stays in their own command line."""
    assert not (PKG / "bench").exists()
    bad = [m for m in MODULES if any(i == "benchmarks" or i.startswith("benchmarks.")
                                     for i in IMPORTS[m])]
    assert not bad, f"the installed package imports the benchmarks: {bad}"
    bench = PKG.parent / "benchmarks"
    parsers = sorted(p.name for p in bench.glob("*.py") if "argparse" in _imports(p))
    assert parsers == ["cli.py"], parsers


def test_the_rules_see_the_package() -> None:
    """The checks above can fail: they find torch in sr and zmq in transport."""
    assert _uses("sr.network", "torch") and _uses("transport.publisher", "zmq")
    assert "transport.wire" in _reach("viewer.app")


def test_the_rules_fail_on_a_deliberate_violation(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same checks, on the package with one violation added, fail."""
    import pytest

    for module, lib, check in (("viewer.app", "torch", test_torch_only_where_the_network_is),
                               ("daemon", "argparse",
                                test_argparse_only_in_the_command_line_package),
                               ("sources.folder", "zmq", test_zmq_only_in_the_transport),
                               ("frame", "tcan_live.sr.enhancer",
                                test_light_layers_never_reach_torch),
                               ("sim.domain", "tcan_live.train.trainer",
                                test_the_simulator_is_below_sr_and_train_and_sr_below_train),
                               ("frame", "tcan_live.pipeline",
                                test_imports_follow_the_layer_diagram)):
        monkeypatch.setitem(IMPORTS, module, IMPORTS[module] | {lib})
        with pytest.raises(AssertionError):
            check()
        monkeypatch.setitem(IMPORTS, module, IMPORTS[module] - {lib})
        check()  # and passes again without it
