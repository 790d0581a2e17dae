"""The README results report (benchmarks/report.py) on small synthetic result CSVs."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ is a folder of the repo, not an installed package

from benchmarks.report import END, START, write_report

COMMON = {"batch": 32, "num_calib": 1000, "device": "cpu", "torch": "2.13.0", "onnxruntime": "1.32.0"}


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _accuracy(method: str, bits: tuple[int, int], seed: int, iters: int, top1: float, seconds: int) -> dict:
    return {"model": "resnet20", "method": method, "w_bits": bits[0], "a_bits": bits[1], "seed": seed,
            "iters": iters, "eval_set": "cifar10_test_9k", "top1": top1, "calib_seconds": seconds, **COMMON}


def _latency(variant: str, batch: int, ms: float, commit: str, threads: int = 2) -> dict:
    return {"model": "resnet20", "variant": variant, "batch": batch, "provider": "cpu", "median_ms": ms,
            "gb_per_s": "", "ratio_vs_fp32": "", "threads": threads, "ort": "1.32.0", "device": "x86_64 2 cores",
            "commit": commit}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    _write(folder / "accuracy.csv", [
        _accuracy("fp32", (32, 32), 0, 0, 81.20, 0),
        _accuracy("rtn", (4, 4), 1005, 0, 70.00, 90),
        _accuracy("rtn", (4, 4), 1005, 0, 78.40, 80),  # a rerun of the same key supersedes the row above
        _accuracy("qdrop", (2, 2), 1005, 2000, 54.00, 300),
        _accuracy("qdrop", (2, 2), 1006, 2000, 56.00, 500),
        _accuracy("aquant", (2, 2), 1005, 2000, 62.00, 700),
        _accuracy("aquant", (2, 2), 1006, 2000, 63.00, 900),
    ])
    _write(folder / "paper_reference.csv", [
        {"source": "paper Table 1", "dataset": "imagenet", "model": "resnet18", "method": method, "w_bits": 2,
         "a_bits": 2, "top1": top1} for method, top1 in (("qdrop", 54.19), ("aquant", 60.31))])
    ort = {"model": "resnet20", "num_calib": 1000, "calib_set": "cifar10_calib", "seed": 1005,
           "eval_set": "cifar10_test_9k", "top5": "", "onnxruntime": "1.32.0", "device": "cpu"}
    _write(folder / "ort_quantize.csv", [
        {**ort, "calibrate": "fp32", "w_bits": 32, "a_bits": 32, "top1": "81.20", "status": "ok"},
        {**ort, "calibrate": "minmax", "w_bits": 8, "a_bits": 8, "top1": "81.00", "status": "ok"},
        {**ort, "calibrate": "minmax", "w_bits": 4, "a_bits": 4, "top1": "", "status": "unsupported: NotImpl"},
    ])
    _write(folder / "ort_latency.csv", [
        _latency("fp32", 1, 2.0, "aaa"), _latency("qdq_w4a4", 1, 1.0, "aaa"), _latency("aquant_channel", 1, 3.0, "aaa"),
        _latency("qdq_w4a4", 1, 1.5, "bbb"),  # latest qdq_w4a4 run, without an FP32 row of its own
        # a 1-thread run at the same commit: its own table, and no reference for the 2-thread rows
        _latency("fp32", 1, 4.0, "aaa", threads=1), _latency("aquant_channel", 1, 5.0, "aaa", threads=1),
    ])
    _write(folder / "model_size.csv", [{"model": "resnet20", "variant": "qdq_w4a4", "bytes": 250000}])
    _write(folder / "ablation.csv", [
        {**_accuracy("aquant", (2, 2), 1005, 2000, 60.50, 600), "options": "border=linear"},
        {**_accuracy("aquant", (2, 2), 1006, 2000, 61.00, 600), "options": "border=linear"},  # a second run table
        {**_accuracy("qdrop", (2, 2), 1005, 2000, 56.00, 600), "options": "act_ranges_from_float=true"},
    ])
    _write(folder / "paper_ablation.csv", [
        {"source": "paper Table 3", "model": "resnet18", "variant": variant, "w_bits": 2, "a_bits": 2, "top1": top1}
        for variant, top1 in (("default", 60.31), ("border=linear", 59.14))])
    return folder


@pytest.fixture
def readme(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\n## Results\n\n{START}\nold text\n{END}\n\n## Install\nkept\n")
    return path


def test_report_tables_come_from_the_csvs(results: Path, readme: Path, tmp_path: Path) -> None:
    body = write_report(results, readme, tmp_path / "docs", plots=False)
    text = readme.read_text()
    assert text.startswith("# title\n\n## Results\n\n" + START) and text.endswith(f"{END}\n\n## Install\nkept\n")
    assert "old text" not in text and body in text
    lines = body.splitlines()
    # accuracy: latest row per key, mean ± half range over seeds (number of seeds)
    assert "| method | W4A4 | W2A2 |" in lines
    assert "| rtn | 78.40 | – |" in lines
    assert "| qdrop · 2000 it | – | 55.00 ± 1.00 (2) |" in lines
    assert "| aquant · 2000 it | – | 62.50 ± 0.50 (2) |" in lines
    assert any(line.startswith("**resnet20 on cifar10_test_9k** (FP32 81.20;") for line in lines)
    # AQuant − QDrop margins: ours (62.5 − 55.0, 7.5 / (81.2 − 55.0) of the FP32 gap) beside the
    # paper's (60.31 − 54.19; these paper rows have no FP32, so no share)
    assert "| ours: resnet20, cifar10_test_9k, 2000 it | +7.50 (29%) |" in lines
    assert "| paper: resnet18, ImageNet | +6.12 |" in lines
    # ORT quantize_static, unsupported settings said so, our best method beside it
    assert "| ORT minmax | 81.00 | not supported (unsupported: NotImpl) |" in lines
    assert "| aquant-onnx (best) | – | 78.40 (rtn) |" in lines
    # calibration time: median over seeds
    assert "| qdrop · 2000 it | – | 400 |" in lines
    assert "| rtn | 80 | – |" in lines
    # latency: latest row per variant; ratio only against the FP32 row of the same run
    two, one = lines.index("**cpu, 2 threads** (device x86_64 2 cores; onnxruntime 1.32.0)"), lines.index(
        "**cpu, 1 thread** (device x86_64 2 cores; onnxruntime 1.32.0)")
    assert two < lines.index("| resnet20 | qdq_w4a4 | 1.5 | – | 1.00 | 0.25 | bbb |") < one
    assert two < lines.index("| resnet20 | aquant_channel | 3.0 | 1.50 | 3.00 | – | aaa |") < one
    assert lines.index("| resnet20 | aquant_channel | 5.0 | 1.25 | – | – | aaa |") > one
    # ablations: each variant against the default AQuant (and QDrop) of its own seed, the paper's below
    seed_1005 = lines.index("**resnet20 on cifar10_test_9k**, seed 1005, 2000 it")
    assert lines[seed_1005 + 2:seed_1005 + 8] == [
        "| variant | W2A2 |", "|---|---|", "| aquant (default) | 62.00 |", "| border=linear | 60.50 (-1.50) |",
        "| qdrop (no border) | 54.00 (-8.00) |",
        "| qdrop, act_ranges_from_float=true (Δ vs qdrop) | 56.00 (+2.00) |"]  # a QDrop variant: Δ vs QDrop
    assert "| border=linear | 61.00 (-2.00) |" in lines  # seed 1006: default 63.00
    assert "| paper: resnet18, border=linear | 59.14 (-1.17) |" in lines


def test_report_writes_plots_linked_from_the_readme(results: Path, readme: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    docs = tmp_path / "docs"
    body = write_report(results, readme, docs, plots=True)
    for name in ("accuracy_vs_bits_resnet20.png", "latency_cpu.png"):
        assert (docs / name).read_bytes().startswith(b"\x89PNG")
        assert f"(docs/{name})" in body


def test_report_refuses_a_readme_without_markers(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="results:start"):
        write_report(results, readme, tmp_path / "docs", plots=False)
    assert readme.read_text() == "# no markers\n"


def test_latency_ratios_pair_rows_of_one_run_and_thread_count() -> None:
    from benchmarks.ort_latency import add_ratios

    rows = [_latency("qdq_w4a4", 1, 1.0, "aaa"), _latency("aquant_channel", 1, 1.3, "aaa"),
            _latency("qdq_w4a4", 1, 2.0, "aaa", threads=1), _latency("aquant_channel", 1, 3.0, "aaa", threads=1),
            _latency("aquant_channel", 1, 9.0, "ccc")]  # a run without its own W4A4 row
    for row in rows:
        row["ratio_vs_qdq_w4a4"] = ""
    add_ratios(rows)
    assert [row["ratio_vs_qdq_w4a4"] for row in rows] == [1.0, 1.3, 1.0, 1.5, ""]
