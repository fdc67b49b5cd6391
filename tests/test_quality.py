"""Static checks as part of the test suite: ruff (style, bugs) and mypy (types, strict)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_static_checks(tool: str) -> None:
    if shutil.which(tool) is None and not (REPO / ".venv" / "bin" / tool).exists():
        pytest.skip(f"{tool} not installed (pip install 'tcan-live[dev]')")
    cmd = ([sys.executable, "-m", "ruff", "check", "tcan_live", "tests"] if tool == "ruff"
           else [sys.executable, "-m", "mypy"])
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
