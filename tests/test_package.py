"""The installable package: light import, console script, public surface."""

from __future__ import annotations

import subprocess
import sys

import tcan_live


def test_import_and_help_do_not_load_torch_or_zmq() -> None:
    code = ("import sys, tcan_live, tcan_live._cli as c; c.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'zmq', 'napari') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_help_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "tcan_live._cli", "--help"], capture_output=True,
                         text=True, check=True)
    for cmd in ("watch", "enhance", "demo", "models", "simulate", "train", "evaluate"):
        assert cmd in out.stdout
    ver = subprocess.run([sys.executable, "-m", "tcan_live._cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert tcan_live.__version__ in ver.stdout


def test_lazy_public_names() -> None:
    assert sorted(tcan_live.__all__) == tcan_live.__all__
    assert tcan_live.FrameSubscriber.__name__ == "FrameSubscriber"
    assert tcan_live.Enhancer.__name__ == "Enhancer"
