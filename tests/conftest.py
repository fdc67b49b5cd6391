"""Shared fixtures and resource guards (leaked threads fail the test that leaked them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(os.environ.get("TCAN_LIVE_SHARED", REPO.parent / "shared")) / "data"


def shared_path(*parts: str) -> Path:
    """A file in ../shared/data, or skip the test cleanly when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def wait_for(cond: Callable[[], object], timeout: float) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; its last value as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def rss_mb() -> float:
    """This process's resident memory (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-initialised model folder (seeded), for tests that need a real Enhancer."""
    import torch

    from tcan_live.sr.card import PRESETS, Tiling
    from tcan_live.sr.model import build_generator, save_model

    folder = tmp_path_factory.mktemp("models") / "tiny-random"
    torch.manual_seed(0)
    save_model(folder, build_generator(PRESETS["tiny"]), id="tiny-random",
               architecture=PRESETS["tiny"], tiling=Tiling(tile=128, overlap=32),
               description="random weights for tests")
    return folder


@pytest.fixture
def make_daemon(tiny_model: Path, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start real daemons (tiny model, loopback, output in tmp_path/out, quick settle and
    flush); settings given as keywords override these. All are stopped after the test."""
    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings

    made: list[Any] = []

    def make(**kw: Any) -> Any:
        base: dict[str, Any] = dict(output=tmp_path / "out", model=str(tiny_model),
                                    endpoint="tcp://127.0.0.1:*", settle_s=0.3, give_up_s=2.0,
                                    flush_idle_s=0.2)
        d = Daemon(Settings(**{**base, **kw}))
        d.start()
        made.append(d)
        assert wait_for(lambda: d.publisher is not None, 10)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [t for t in set(threading.enumerate()) - before
                  if t.is_alive() and not t.daemon and not t.name.startswith("pydevd")]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    """One X server for the whole session: Qt's application outlives a test module, and a
    QApplication whose X server went away aborts the process."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (see .ci/run)")
    pytest.importorskip("napari")
    display = f":{90 + os.getpid() % 50}"
    proc = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    old = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ["DISPLAY"], os.environ["QT_QPA_PLATFORM"] = display, "xcb"
    yield display
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(10)
