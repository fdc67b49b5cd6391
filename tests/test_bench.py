"""The benchmark scripts run end to end on a tiny model and report sane numbers (no timing
assertions: test machines vary)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.report import table, write_section


def test_write_section_replaces_only_its_block(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\nintro\n", encoding="utf-8")
    write_section("x", "first", doc)
    write_section("y", "other", doc)
    write_section("x", "second", doc)
    text = doc.read_text(encoding="utf-8")
    assert "first" not in text and text.count("second") == 1 and "other" in text
    assert text.startswith("# B\n\nintro")


def test_table_formats_rows() -> None:
    assert table([{"a": 1.23456, "b": "x"}]) == "| a | b |\n|---|---|\n| 1.23 | x |"


@pytest.mark.slow
def test_model_bench_reports_flops_times_and_ratios(tiny_model: Path) -> None:
    from benchmarks.model import bench

    rows, stages, info = bench(str(tiny_model), [128, 200], "cpu", 1, None)
    assert [r["frame"] for r in rows] == ["128x128", "200x200"]
    for r in rows:
        for key in ("GFLOP/frame", "s/frame", "GFLOP/s (forward)", "ratio to best conv peak",
                    "ratio to dominant-conv peak", "ratio to conv roofline", "executed / useful",
                    "ceiling: convs + FFTs", "ceiling: convs + spectra"):
            v = float(r[key])  # type: ignore[arg-type]
            assert math.isfinite(v) and v > 0, (key, v)
        fft, spectra = (float(v) for v in str(r["FFT / spectra ms/tile"]).split(" / "))
        assert fft > 0 and spectra > 0
    assert float(rows[1]["GFLOP/frame"]) > float(rows[0]["GFLOP/frame"])  # type: ignore[arg-type]
    assert {"read", "forward", "stitch", "trust", "write", "encode+publish"} <= set(stages[0])
    assert all(g > 0 for g in info["roofline"]) and len(info["peaks"]) >= 4
    # the executed work is the planned tiles' pixels over the frame's (FLOPs ~ pixels)
    from tcan_live.sr.enhancer import Enhancer, tile_plan

    enh = Enhancer(str(tiny_model), device="cpu", warmup=False)
    for size, r in zip((128, 200), rows, strict=True):
        plan = tile_plan((size, size), enh.tile, enh.overlap)
        assert r["tiles"] == f"{len(plan)} x {plan[0].h}x{plan[0].w}"
        ratio = len(plan) * plan[0].h * plan[0].w / size**2
        assert float(r["executed / useful"]) == pytest.approx(ratio, rel=0.02)  # type: ignore[arg-type]
        assert str(r["dominant conv"]).endswith(f"@{plan[0].h}px")


def test_flops_are_counted_the_same_through_the_fused_path(tiny_model: Path) -> None:
    """The FLOP counter does not know oneDNN's fused op: the bench counts through the modules,
    so the fused Enhancer reports the unfused one's FLOPs and keeps its fused forward."""
    from benchmarks.model import frame_flops
    from tcan_live.sr.enhancer import Enhancer

    fused = Enhancer(str(tiny_model), device="cpu", warmup=False)
    plain = Enhancer(str(tiny_model), device="cpu", fused=False, warmup=False)
    module = fused.forward_module
    assert frame_flops(fused, 200) == frame_flops(plain, 200) > 0
    assert fused.forward_module is module


def test_roofline_counts_per_tile_at_any_batch(tiny_model: Path) -> None:
    """The roofline is timed at the Enhancer's tile batch (GPUs run 8) but counted per tile."""
    import torch

    from benchmarks.model import conv_roofline_s, conv_shapes
    from tcan_live.sr.model import load_generator

    cpu = torch.device("cpu")
    _, gen = load_generator(tiny_model)
    shapes = conv_shapes(gen, (64, 64), cpu)
    one, three = (conv_roofline_s(shapes, cpu, None, torch.contiguous_format, 0.01, batch=b)
                  for b in (1, 3))
    assert one[0] == three[0] > 0 and one[1] > 0 and three[1] > 0


def test_dominant_conv_is_the_one_with_most_flops() -> None:
    from benchmarks.model import dominant_conv

    shapes = {(16, 16, 3, 256, 256): 10, (64, 64, 3, 64, 64): 8, (1, 16, 3, 256, 256): 50,
              (16, 16, 1, 256, 256): 100}
    assert dominant_conv(shapes) == (16, 256)  # 1->16 and 1x1 convs are not C->C 3x3
    shapes[(64, 64, 3, 64, 64)] = 200
    assert dominant_conv(shapes) == (64, 64)


@pytest.mark.slow
def test_tuning_compares_settings_against_the_default(tiny_model: Path) -> None:
    from benchmarks.tuning import (
        allocator_rows,
        enhancer_rows,
        onnx_rows,
        precision_difference,
    )

    alloc = allocator_rows(str(tiny_model), 128, 1)  # fresh processes, tuning on / off
    assert [str(r["setting"]).split(" ")[0] for r in alloc] == ["default,", "glibc"]
    assert all(float(r["s/frame"]) > 0 for r in alloc)  # type: ignore[arg-type]

    d = precision_difference(str(tiny_model), 128)
    assert 0 < d["rms %"] <= d["p99.9 %"] <= d["max %"] < 100
    rows = enhancer_rows(str(tiny_model), 256, 1)
    assert str(rows[0]["setting"]).startswith("default") and rows[0]["relative to default"] == 1
    names = [str(r["setting"]) for r in rows]
    assert {"oneDNN off (unfused)", "NCHW instead of channels_last (unfused)",
            "tile batch 4"} <= set(names)
    assert any(n.startswith("unfused forward") for n in names)
    assert any(n.startswith("bf16 autocast") for n in names)
    assert all(float(r["s/frame"]) > 0 for r in rows)  # type: ignore[arg-type]
    pytest.importorskip("onnxruntime")
    ort = onnx_rows(str(tiny_model), 1)
    assert [str(r["setting"]).split(",")[0] for r in ort] == [
        "PyTorch eager (channels_last)", "ONNX Runtime CPU"]


def test_honesty_bench_writes_tables_for_each_family_and_photon_level(tiny_model: Path,
                                                                      tmp_path: Path) -> None:
    from benchmarks import honesty

    assert honesty.main(["--model", str(tiny_model), "--families", "asters,vesicles",
                         "--photons", "10,100", "--n", "2", "--size", "64", "--out",
                         str(tmp_path), "--real", str(tmp_path / "none")]) == 0
    text = (tmp_path / "evaluation" / "honesty.md").read_text(encoding="utf-8")
    for fam in ("asters", "vesicles"):
        for ph in ("10", "100"):
            assert f"| {fam} | {ph} | input | " in text
            assert f"| {fam} | {ph} | richardson-lucy | " in text
    import json

    rows = json.loads((tmp_path / "evaluation" / "honesty.json").read_text(encoding="utf-8"))
    dbe = [r["detail_band_error"] for r in rows if r["method"] == "input"]
    assert len(dbe) == 8 and all(abs(v - 1.0) < 1e-9 for v in dbe)  # the input is the reference
    au = [r["uncertainty_auroc"] for r in rows if "uncertainty_auroc" in r]
    assert len(au) == 8 and all(0.0 <= v <= 1.0 for v in au)


def test_honesty_bench_leaves_out_fields_with_no_structure() -> None:
    """A flat truth (a single-family field that rendered nothing) gives every method a
    meaningless perfect SSIM; such a field is not a case. Any real structure is."""
    from benchmarks.honesty import flat

    assert flat(np.full((32, 32), 503.2, np.float32))
    assert flat(np.zeros((32, 32)))
    spot = np.full((32, 32), 503.2)
    spot[16, 16] += 0.5
    assert not flat(spot)


def test_honesty_bench_writes_the_medians_into_the_card(tiny_model: Path, tmp_path: Path
                                                        ) -> None:
    import shutil

    from benchmarks import honesty
    from tcan_live.sr.card import read_card

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert honesty.main(["--model", str(model), "--families", "asters", "--photons", "30",
                         "--n", "2", "--size", "64", "--out", str(tmp_path), "--real",
                         str(tmp_path / "none"), "--write-card"]) == 0
    cell = read_card(model).metrics["honesty"]["by_family_and_photons"]["asters-30"]
    assert cell["input"]["detail_band_error"] == 1.0
    assert set(cell) == {"input", "richardson-lucy", "target", "tiny-random"}
    assert 0.0 <= cell["tiny-random"]["uncertainty_auroc"] <= 1.0


def test_adapt_bench_scores_before_and_after_against_the_truth(tiny_model: Path,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    from benchmarks import adapt

    assert adapt.main(["--model", str(tiny_model), "--families", "asters", "--photons", "20",
                       "--frames", "2", "--test", "1", "--size", "64", "--budget-min",
                       "0.02,0.05", "--acquisitions", "2", "--figures", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for acq in (4200, 4201):  # one run per acquisition, scored at both budgets
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
                if line.startswith(f"| asters | 20 | {acq} | 2 |")]
        assert [r[4] for r in rows] == ["0.02", "0.05"]
        steps = [int(r[6]) for r in rows]
        assert 1 <= steps[0] <= steps[1]  # the earlier budget's model is an earlier snapshot
        for r in rows:
            ssim = [float(c) for c in r[7:10]]  # before, after, Richardson-Lucy
            assert all(-1.0 <= v <= 1.0 for v in ssim)
        assert rows[0][7] == rows[1][7]  # the same initial model and frames
        for r in rows:  # the held-out check of the model at that budget: verdict, change,
            # margin in standard errors, tiles (one 48-px tile of the one held-out 64-px frame)
            m = re.fullmatch(r"(pass|fail) ([+-][0-9.]+)% \((\S+) se, (\d+) tiles\)", r[-1])
            assert m is not None, r[-1]
            float(m[2]), float(m[3])
            assert m[4] == "1" and m[1] == "fail"  # a single tile gives no verdict
    # the summary over the acquisitions, one line per budget
    assert sum(line.startswith("| asters | 20 | 2 | 0.05 | 2 |") for line in out.splitlines()) == 1
    assert (tmp_path / "adapt_asters_20ph_2f.png").is_file()


def test_adapt_bench_step_marks_and_rows_split_over_processes(tiny_model: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """--at-steps scores one run after each step count; --rows keeps every row; acquisitions
    run in separate processes (tools/gpu_adapt.sh) merge into the table of one run."""
    from benchmarks import adapt

    common = ["--model", str(tiny_model), "--families", "asters", "--photons", "20",
              "--frames", "2", "--test", "1", "--size", "64", "--budget-min", "5",
              "--at-steps", "3,6"]
    assert adapt.main([*common, "--acquisitions", "2", "--rows", str(tmp_path / "one.jsonl")]) == 0
    whole = capsys.readouterr().out
    for k in range(2):
        assert adapt.main([*common, "--seed", str(4200 + k),
                           "--rows", str(tmp_path / f"part{k}.jsonl")]) == 0
    capsys.readouterr()
    ran, rows, where = adapt.merge_rows([tmp_path / "part0.jsonl", tmp_path / "part1.jsonl"])
    _, one, _ = adapt.merge_rows([tmp_path / "one.jsonl"])
    assert (ran.seed, ran.acquisitions) == (4200, 2) and "2 processes" in where
    assert [r["steps"] for r in one] == [3, 6, 3, 6]  # each acquisition scored at both marks
    assert [r["acq"] for r in one] == [4200, 4200, 4201, 4201]
    drop = lambda rs: [{k: v for k, v in r.items() if k != "min used"} for r in rs]  # noqa: E731
    assert drop(rows) == drop(one)  # an acquisition's rows depend on its seed alone
    for r in one:
        assert r["unseen bg before"] >= 0.0 and r["unseen bg RL"] >= 0.0
        assert r["unseen under before"] >= 0.0 and r["unseen under after"] >= 0.0
    # the tables made from the rows are the run's own (its command line, its summary)
    assert adapt.main(["--from-rows", f"{tmp_path / 'part0.jsonl'},{tmp_path / 'part1.jsonl'}"]
                      ) == 0
    merged = capsys.readouterr().out
    summary = [line for line in merged.splitlines() if line.startswith("| asters | 20 | 2 | 5 |")]
    assert [line.split("|")[5].strip() for line in summary] == ["3", "6"]
    assert summary == [line for line in whole.splitlines()
                       if line.startswith("| asters | 20 | 2 | 5 |")]
    assert "--seed 4200 --at-steps 3,6 --acquisitions 2`" in merged
    # acquisitions whose seeds do not follow each other: the command once per seed, named
    assert adapt.main([*common, "--seed", "4203", "--rows", str(tmp_path / "part3.jsonl")]) == 0
    capsys.readouterr()
    ran, rows, _ = adapt.merge_rows([tmp_path / "part3.jsonl", tmp_path / "part0.jsonl"])
    assert (ran.seed, ran.acquisitions, ran.seeds) == (4200, 2, [4200, 4203])
    assert sorted({r["acq"] for r in rows}) == [4200, 4203]
    section, body = adapt.report(ran, rows, "here")
    assert section.endswith("-seeds4200-4203")
    assert "--seed S --at-steps 3,6` for S in 4200, 4203 on here" in body
    assert "--acquisitions" not in body
    with pytest.raises(SystemExit, match="repeat"):
        adapt.merge_rows([tmp_path / "part0.jsonl", tmp_path / "part0.jsonl"])
    # rows of two different commands are refused
    assert adapt.main([*common, "--seed", "4202", "--lr", "0.001",
                       "--rows", str(tmp_path / "other.jsonl")]) == 0
    with pytest.raises(SystemExit, match="not one command"):
        adapt.merge_rows([tmp_path / "part0.jsonl", tmp_path / "other.jsonl"])


def test_adapt_bench_two_runs_scores_the_run_not_kept(tiny_model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    """With --relaxed-prior the row is the kept run's, and the run adapt did not keep is
    scored as well (the rule's choice checked against the truth)."""
    import json

    from benchmarks import adapt

    rows = tmp_path / "rows.jsonl"
    assert adapt.main(["--model", str(tiny_model), "--families", "asters", "--photons", "20",
                       "--frames", "2", "--test", "1", "--size", "64", "--budget-min", "5",
                       "--steps", "3", "--relaxed-prior", "0.1", "--rows", str(rows)]) == 0
    out = capsys.readouterr().out
    (row,) = [json.loads(x) for x in rows.read_text().splitlines()[1:]]
    # one held-out tile gives no verdict, so the relaxed run cannot be kept
    assert row["kept"].startswith("first") and row["other"] == "relaxed"
    assert "checks fail/fail" in row["kept"]  # both runs' verdicts, from their records
    for key in ("own", "unseen"):
        assert -1.0 <= row[f"{key} ssim other"] <= 1.0
    assert "'other': the run of the two" in out and "| relaxed |" in out
    # the rule's own numbers travel with the row (margins() replays it from them)
    assert row["relaxation"]["kept"] == "first" and "relaxed" in row["relaxation"]


def test_adapt_bench_replays_the_two_run_rule_at_other_margins() -> None:
    """margins(): which run the rule would keep at each margin, from the row's relaxation
    record or, in older rows, from the 'kept' and 'check' columns as printed; the gains are
    the kept and the other run's SSIM against the truth."""
    from benchmarks import adapt

    check = {"se": 0.001, "tiles": 18, "accepted": True}
    rec = {"prior_weight": 0.1, "margin": 1.35, "kept": "first",
           "first": {"prior_weight": 1.0, "steps": 1, "check": {**check, "before": 1.0,
                                                                "after": 0.99}},
           "relaxed": {"steps": 1, "check": {**check, "before": 1.0, "after": 0.98}},
           "relaxed_over_first": {"gain": 0.01, "se": 0.002}}
    kept = adapt._kept(rec)  # ratio 2, 5 standard errors beyond the first run
    assert adapt._KEPT_RE.search(kept) is not None  # what margins() reads in older rows
    ssim = lambda own, unseen: {"own ssim before": 0.8, "unseen ssim before": 0.8,  # noqa: E731
                                "own ssim after": own, "unseen ssim after": unseen}
    a = {**ssim(0.82, 0.82), "own ssim other": 0.85, "unseen ssim other": 0.85,
         "kept": kept, "relaxation": rec, "check": "pass -1.00% (10.0 se, 18 tiles)"}
    # an older row: the relaxed run kept at ratio 1.25 and lost; the first run gained
    b = {**ssim(0.79, 0.79), "own ssim other": 0.81, "unseen ssim other": 0.81,
         "kept": "relaxed (prior 0.1; gain ratio 1.25; checks pass/pass; relaxed over first "
                 "3.0 se)", "check": "pass -1.00% (3.0 se, 18 tiles)"}
    one_run = {**ssim(0.9, 0.9), "kept": "first (no time left for the second run)"}
    table = {r["margin"]: r for r in adapt.margins([a, b, one_run])}
    assert all(r["acquisitions"] == 2 for r in table.values())
    mean = lambda m: table[m]["own gain mean"]  # noqa: E731
    assert mean("1.2") == pytest.approx((0.05 - 0.01) / 2)  # both relaxed
    assert mean("1.3") == pytest.approx((0.05 + 0.01) / 2)  # a relaxed, b first
    assert mean("2") == pytest.approx(mean("1.3"))  # a's ratio 2 reaches the margin 2
    assert mean("never") == pytest.approx((0.02 + 0.01) / 2)
    assert mean("as run") == pytest.approx((0.02 - 0.01) / 2)
    assert table["1.3"]["the better run (or within 0.002)"] == "2/2"
    assert table["as run"]["the better run (or within 0.002)"] == "0/2"
    assert table["1.2"]["kept the weaker prior"] == "2/2"
    assert table["never"]["kept the weaker prior"] == "0/2"
    # the relaxed run within noise of the first is not kept at any margin
    near = {**a, "relaxation": {**rec, "relaxed_over_first": {"gain": 0.01, "se": 0.01}}}
    assert {r["kept the weaker prior"] for r in adapt.margins([near])} == {"0/1"}
    assert adapt.margins([one_run]) == []


def test_restore_bench_compares_with_and_without_on_every_family(tiny_model: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import restore

    assert restore.main(["--model", str(tiny_model), "--n", "1", "--photons", "100",
                         "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "13 simulated images (13 families x 1 photon levels x 1)" in out
    assert "sr/restore.py acted on" in out


def test_edge_bench_compares_the_margin_with_the_frame_alone(tiny_model: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import edge

    err = np.full((32, 32), 0.01)
    err[0, :] = err[-1, :] = err[:, 0] = err[:, -1] = 0.05  # a bright line along the edge
    rings = edge.ring_errors(err)
    assert rings[0] == pytest.approx(0.05)
    assert rings[1] == pytest.approx(0.01) and rings[-1] == pytest.approx(0.01)
    assert edge.main(["--model", str(tiny_model), "--families", "asters", "--photons", "30",
                      "--n", "2", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "| margin 8 px |" in out and "| no margin |" in out
    assert "of 2 (by more than 0.001)" in out
