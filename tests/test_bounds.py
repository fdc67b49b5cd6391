"""Issue 22: the daemon never feeds on its own output, stays bounded with many streams, and every
documented option and environment variable is accepted by the command it belongs to."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO, rss_mb, wait_for

from tcan_live.frame import Frame, FrameIndex

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]






# ---------------------------------------------------------------------------------------------
# 1. the daemon never reads its own output




def test_output_inside_the_watched_folder_is_never_read(tiny_model: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """`watch D:/acq --output D:/acq/enhanced`: the daemon's outputs are not enhanced again, nor
    are tcan-live outputs copied elsewhere in the folder (recognised by their metadata), nor
    folders holding another daemon's state."""
    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings
    from tcan_live.transport.subscriber import FrameSubscriber

    acq = tmp_path / "acq"
    acq.mkdir()
    rng = np.random.default_rng(0)
    for t in range(3):
        tifffile.imwrite(acq / f"cells_t{t:03d}.tif", rng.integers(0, 4000, (48, 48), np.uint16))
    caplog.set_level(logging.INFO, logger="tcan_live")
    d = Daemon(Settings(folder=acq, output=acq / "enhanced", model=str(tiny_model),
                        endpoint="tcp://127.0.0.1:*", settle_s=0.3, give_up_s=3.0,
                        flush_idle_s=0.2))
    d.start()
    try:
        assert wait_for(lambda: d.publisher is not None, 10)
        sub = FrameSubscriber(d.publisher.endpoint, kinds=("enhanced",))
        assert wait_for(lambda: d.stats.frames_done >= 3, 60)
        saved = acq / "enhanced" / "cells_tcan.ome.tif"
        assert wait_for(saved.exists, 20)
        # a copy of an output under another name, elsewhere in the watched folder
        (acq / "elsewhere").mkdir()
        shutil.copy(saved, acq / "elsewhere" / "renamed.ome.tif")
        # another daemon's output folder (state folder inside), holding a plain TIFF
        other = acq / "other_out"
        (other / ".tcan-live").mkdir(parents=True)
        tifffile.imwrite(other / "plain.tif", rng.integers(0, 4000, (48, 48), np.uint16))
        # a new valid frame after all that is still enhanced
        tifffile.imwrite(acq / "late.tif", rng.integers(0, 4000, (48, 48), np.uint16))
        assert wait_for(lambda: d.stats.frames_done >= 4, 60)
        time.sleep(2.0)  # time for any wrong pick-up (settle 0.3 s, flush 0.2 s)
        msgs = []
        while (m := sub.receive(0.2)) is not None:
            msgs.append(m)
        sub.close()
        sources = {Path(m.header["source"]).name for m in msgs}
        assert sources <= {"cells_t000.tif", "cells_t001.tif", "cells_t002.tif", "late.tif"}
        assert d.stats.frames_in == 4 and d.stats.frames_done == 4 and d.stats.errors == 0
        assert not list(acq.rglob("*_tcan_tcan*"))
    finally:
        d.stop()
    log = caplog.text
    assert log.count("is inside the watched folder") == 1
    assert "written by tcan-live" in log and "renamed.ome.tif" in log
    assert "holds tcan-live output" in log


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    from tcan_live.sources.folder import FolderSource

    acq = tmp_path / "acq"
    (acq / "sub").mkdir(parents=True)
    tifffile.imwrite(acq / "sub" / "a.tif", np.zeros((8, 8), np.uint16))
    (acq / "loop").symlink_to(acq, target_is_directory=True)
    (acq / "sub" / "up").symlink_to(acq / "sub", target_is_directory=True)
    src = FolderSource(acq, emit=lambda f: None, on_error=lambda p, r: None)
    assert src._existing() == [acq / "sub" / "a.tif"]
    assert src.excluded(acq / "loop" / "sub" / "a.tif") is not None
    assert src.excluded(acq / "sub" / "up" / "a.tif") is not None
    assert src.excluded(acq / "sub" / "a.tif") is None


# ---------------------------------------------------------------------------------------------
# 2. bounded memory


def test_replay_cache_is_bounded_by_topics_and_bytes() -> None:
    from tcan_live.transport.publisher import ZmqPublisher

    pub = ZmqPublisher("tcp://127.0.0.1:*", replay_topics=10, replay_bytes=10 * 2**20)
    try:
        img = np.zeros((256, 256), np.float64)  # 512 KiB
        for i in range(300):
            pub.publish("raw", f"stream{i}", {"i": i}, img)
        topics, nbytes = pub.cache_size()
        assert topics == 10 and nbytes <= 10 * 2**20
        pub2 = ZmqPublisher("tcp://127.0.0.1:*", replay_topics=1000, replay_bytes=2 * 2**20)
        for i in range(300):
            pub2.publish("raw", f"stream{i}", {"i": i}, img)
        assert pub2.cache_size()[0] == 3 and pub2.cache_size()[1] <= 2 * 2**20
        pub2.close()
    finally:
        pub.close()


def test_latest_queue_is_bounded_by_streams() -> None:
    from tcan_live.pipeline import LatestQueue

    q = LatestQueue(max_streams=50)
    img = np.zeros((4, 4))
    for i in range(1000):
        q.put(Frame(img, stream=f"s{i}"))
    assert q.depth() == 50 and q.skipped == 950
    got = q.get(0.1)
    assert got is not None and got.stream == "s950"  # the oldest of the newest 50


def test_finished_files_are_released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-file state: only files still followed are tracked; finished ones leave a small record
    with a count bound."""
    import tcan_live.sources.folder as folder

    monkeypatch.setattr(folder, "FINISHED_MAX", 100)
    acq = tmp_path / "acq"
    acq.mkdir()
    for i in range(300):
        tifffile.imwrite(acq / f"f{i:04d}.tif", np.full((8, 8), i, np.uint16))
    got: list[Frame] = []
    src = folder.FolderSource(acq, emit=got.append, on_error=lambda p, r: None, settle_s=0.1)
    src.start()
    try:
        assert wait_for(lambda: len(got) == 300 and src.tracked_count()[0] == 0, 60)
        assert src.tracked_count() == (0, 100)
        # an event on a finished, unchanged file re-reads nothing
        src.touch(acq / "f0299.tif")
        time.sleep(0.5)
        assert len(got) == 300
    finally:
        src.stop()


@pytest.mark.slow
def test_thousand_streams_keep_memory_bounded(tiny_model: Path, tmp_path: Path) -> None:
    """1,000 streams (a multipoint run: positions x channels) through a running daemon: RSS
    grows by the replay bound, not by the number of streams (768 kB of frames per stream)."""
    from tcan_live.daemon import Daemon
    from tcan_live.settings import Settings

    acq = tmp_path / "acq"
    acq.mkdir()
    replay_mb = 16
    d = Daemon(Settings(folder=acq, output=tmp_path / "out", model=str(tiny_model),
                        endpoint="tcp://127.0.0.1:*", replay_mb=replay_mb,
                        flush_idle_s=3600))
    d.start()
    try:
        assert wait_for(lambda: d.publisher is not None, 10)
        frame = np.random.default_rng(0).random((256, 256))  # float64: 512 kB raw

        def push(start: int, stop: int) -> None:
            for s in range(start, stop):
                d.submit(Frame(frame, FrameIndex(), pixel_size_um=0.05, stream=f"pos{s}",
                               source=f"pos{s}"))
            assert wait_for(lambda: d.stats.frames_done >= stop, 600)

        push(0, 200)  # warm: allocator pools, caches, the replay cache filled to its bound
        before = rss_mb()
        push(200, 1000)
        grown = rss_mb() - before
        topics, nbytes = d.publisher.cache_size()
        print(f"1000 streams: RSS {before:.0f} -> {before + grown:.0f} MB (+{grown:.1f} MB over "
              f"800 streams); replay cache {topics} topics, {nbytes / 2**20:.1f} MiB")
        assert nbytes <= replay_mb * 2**20 and topics <= 128
        # unbounded: 800 streams x 768 kB = 600 MB of cached frames; bounded: the index only
        assert grown < 40, f"RSS grew by {grown:.0f} MB over 800 streams"
    finally:
        d.stop()


# ---------------------------------------------------------------------------------------------
# 3. one namespace for environment variables; docs and code agree


def test_documented_process_variable_does_not_stop_watch(caplog: pytest.LogCaptureFixture) -> None:
    from tcan_live.settings import PROCESS_ENV, load_settings

    assert "TCAN_LIVE_MALLOC_TUNING" in PROCESS_ENV
    env = {"TCAN_LIVE_MALLOC_TUNING": "0", "TCAN_LIVE_MODELS": "/x", "TCAN_LIVE_SETTLE_S": "3"}
    with caplog.at_level(logging.WARNING):
        assert load_settings(None, env=env).settle_s == 3.0
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        s = load_settings(None, env={"TCAN_LIVE_SETLE_S": "3"})
    assert s.settle_s == 2.0 and "TCAN_LIVE_SETLE_S is not a tcan-live setting" in caplog.text


def test_watch_starts_with_documented_env(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure as a user met it: the CLI parses, loads settings with the variable set."""
    from tcan_live._cli import build_parser, settings_from_args

    monkeypatch.setenv("TCAN_LIVE_MALLOC_TUNING", "0")
    s = settings_from_args(build_parser().parse_args(["watch", str(tmp_path)]))
    assert s.folder == tmp_path


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from tcan_live._cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _module_flags(module: str) -> set[str]:
    import importlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    return set(re.findall(r"--[a-z][a-z0-9-]*", out.getvalue()))


def _commands_in_docs() -> list[tuple[Path, str]]:
    """Every command line the docs show: code blocks and inline code."""
    found: list[tuple[Path, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for chunk in [*blocks, *inline]:
            for line in chunk.splitlines():
                line = line.split(" #", 1)[0]
                for part in re.split(r"&&|\||;", line):
                    if "tcan-live " in part or "benchmarks." in part:
                        found.append((doc, part.strip()))
    return found


def test_every_documented_option_is_accepted() -> None:
    subs = _subparsers()
    flags_of = {name: set(p._option_string_actions) for name, p in subs.items()}
    modules: dict[str, set[str]] = {}
    checked = 0
    problems = []
    for doc, cmd in _commands_in_docs():
        m = re.search(r"tcan-live\s+([a-z]+)(.*)", cmd)
        mm = re.search(r"python -m (benchmarks\.[a-z0-9_]+)(.*)", cmd)
        if mm:
            known = modules.setdefault(mm.group(1), _module_flags(mm.group(1)))
            where, rest = mm.group(1), mm.group(2)
        elif m and m.group(1) in subs:
            known, where, rest = flags_of[m.group(1)], m.group(1), m.group(2)
        else:
            continue
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
            checked += 1
            if flag not in known and flag not in ("--help", "--version"):
                problems.append(f"{doc.name}: `{cmd}`: {where} has no {flag}")
    assert checked > 40, checked  # the docs do show options; the scan found them
    assert not problems, "\n".join(problems)


def test_every_documented_environment_variable_and_setting_exists() -> None:
    from tcan_live.settings import Settings, known_env_names

    known = known_env_names()
    named = set()
    for doc in [*DOCS, REPO / "service" / "tcan-live.example.toml"]:
        named |= set(re.findall(r"TCAN_LIVE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_<])", doc.read_text()))
    assert "TCAN_LIVE_MALLOC_TUNING" in named
    assert named <= known, f"documented but unknown: {sorted(named - known)}"
    # the settings table of docs/operations.md names real settings, and lists them all
    ops = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| (`[a-z_]+`(?: / `[a-z_]+`)*) \|", ops, re.M)
    keys = {k for row in table for k in re.findall(r"`([a-z_]+)`", row)}
    assert keys and keys <= set(Settings.model_fields), keys - set(Settings.model_fields)
    missing = set(Settings.model_fields) - keys
    assert not missing, f"settings not in docs/operations.md: {sorted(missing)}"


def test_the_command_line_declares_no_defaults_of_its_own() -> None:
    """Defaults live once, in the typed options: no option of any command carries a default
    in argparse (absent options are left out, or None for watch, whose defaults are Settings'),
    and the help shows the typed default."""
    own = []
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.default not in (None, argparse.SUPPRESS):
                own.append(f"{name} {action.dest}={action.default!r}")
    assert not own, own
    train_help = _subparsers()["train"].format_help()
    assert "--steps STEPS default: 20000" in " ".join(train_help.split())  # TrainConfig.steps


def test_absent_options_take_the_typed_defaults() -> None:
    from tcan_live._cli import build_parser
    from tcan_live.commands import (
        CalibrateOptions,
        EnhanceOptions,
        ExportCommand,
        RecordOptions,
        SimulateOptions,
        ViewOptions,
        parse_options,
    )
    from tcan_live.train.config import TrainConfig

    parse = build_parser().parse_args
    cases = [(EnhanceOptions, ["enhance", "a.nd2", "-o", "out"],
              {"inputs": [Path("a.nd2")], "output": Path("out")}),
             (ExportCommand, ["export", "a.nd2", "-o", "b.ome.tif"],
              {"input": Path("a.nd2"), "output": Path("b.ome.tif")}),
             (RecordOptions, ["record", "-o", "r.ome.tif"], {"output": Path("r.ome.tif")}),
             (SimulateOptions, ["simulate", "x"], {"out": Path("x")}),
             (ViewOptions, ["view"], {}),
             (CalibrateOptions, ["calibrate", "m"], {"model": "m"})]
    for cls, argv, required in cases:
        assert parse_options(cls, vars(parse(argv))) == cls(**required), argv
    ns = vars(parse(["train", "p", "--out", "m"]))
    assert parse_options(TrainConfig, ns) == TrainConfig()
    given = parse_options(TrainConfig, vars(parse(["train", "p", "--out", "m", "--steps", "7"])))
    assert given.steps == 7
