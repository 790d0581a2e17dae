"""The benchmark suite definitions (benchmarks/suite.py) and the runner (python -m benchmarks run)."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ is a folder of the repo, not an installed package

import benchmarks.__main__ as runner
from benchmarks.suite import Job, suite_jobs


def test_accuracy_suite_is_the_published_table() -> None:
    jobs = suite_jobs("accuracy", iters=300, gpu_iters=5000)
    cpu = [job for job in jobs if not job.gpu]
    # 6 methods x 4 bit settings, two seeds for brecq / qdrop / aquant
    assert len(cpu) == 6 * 4 + 3 * 4
    assert {job.argv[job.argv.index("--model") + 1] for job in cpu} == {"resnet20"}
    qdrop_w2a2 = [job for job in cpu if "qdrop W2A2" in job.name]
    assert [job.argv[job.argv.index("--seeds") + 1] for job in qdrop_w2a2] == ["1005", "1006"]
    assert [row["eval_set"] for row in qdrop_w2a2[0].expected] == ["cifar10_test_9k", "cifar10_test"]
    assert qdrop_w2a2[0].expected[0]["iters"] == "300"
    rtn = next(job for job in cpu if job.name.startswith("resnet20 rtn W4A4"))
    assert rtn.expected[0]["iters"] == "0"  # accuracy.py records RTN rows with 0 iterations
    gpu_models = {job.argv[job.argv.index("--model") + 1] for job in jobs if job.gpu}
    assert gpu_models == {"mobilenet_v2", "efficientnet_lite0"}
    assert all(job.expected[0]["iters"] == "5000" for job in jobs if job.gpu and "rtn" not in job.name)


def test_ablation_suite_changes_one_option_per_row_beside_its_defaults() -> None:
    jobs = suite_jobs("ablation")
    defaults = [job for job in jobs if "--option" not in job.argv]
    assert {(job.argv[job.argv.index("--methods") + 1], job.results) for job in defaults} == {
        ("qdrop", "accuracy.csv"), ("aquant", "accuracy.csv")}
    variants = [job for job in jobs if "--option" in job.argv]
    short = [job for job in variants if job.expected[0]["iters"] == defaults[0].expected[0]["iters"]]
    assert len(short) == 8 * 2 and all(job.results == "ablation.csv" for job in variants)
    long = [job for job in variants if job not in short]  # the schedule experiments at 2000 iterations
    assert long and all(job.expected[0]["iters"] == "2000" and job.name.endswith("iters 2000") for job in long)
    assert len({job.name for job in jobs}) == len(jobs)
    linear_w2a2 = next(job for job in variants if job.name == "resnet20 aquant W2A2 border=linear")
    assert linear_w2a2.expected[0] == {"model": "resnet20", "method": "aquant", "options": "border=linear",
                                       "w_bits": "2", "a_bits": "2", "seed": "1005", "iters": "500", "batch": "32",
                                       "num_calib": "1000", "eval_set": "cifar10_test_9k"}
    assert all(job.expected[0]["iters"] == defaults[0].expected[0]["iters"] for job in defaults + short)


def test_unknown_suite_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        suite_jobs("nope")


def _job(name: str, gpu: bool = False) -> Job:
    return Job(suite="accuracy", name=name, module="benchmarks.accuracy", argv=("--x", name), results="r.csv",
               expected=({"name": name, "eval_set": "a"}, {"name": name, "eval_set": "b"}), gpu=gpu, resumable=True)


def _results(folder: Path, rows: list[dict]) -> None:
    with (folder / "r.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["name", "eval_set"])
        writer.writeheader()
        writer.writerows(rows)


def test_job_is_done_only_when_every_expected_row_exists(tmp_path: Path) -> None:
    _results(tmp_path, [{"name": "one", "eval_set": "a"}, {"name": "two", "eval_set": "a"},
                        {"name": "two", "eval_set": "b"}])
    assert not _job("one").done(tmp_path)
    assert _job("two").done(tmp_path)
    assert _job("one").command(resume=True) == ["--x", "one", "--resume"]


def test_runner_skips_done_and_gpu_jobs_and_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _results(tmp_path, [{"name": "done", "eval_set": "a"}, {"name": "done", "eval_set": "b"}])
    jobs = [_job("done"), _job("fails"), _job("gpu", gpu=True), _job("works")]
    ran: list[str] = []

    def fake_run(job: Job, resume: bool, seconds: float) -> None:
        ran.append(job.name)
        if job.name == "fails":
            raise SystemExit("bad input")

    monkeypatch.setattr(runner, "suite_jobs", lambda suite, iters, gpu_iters: jobs)
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    monkeypatch.setattr(runner, "run_job", fake_run)
    monkeypatch.setattr(runner, "_cuda_available", lambda: False)
    args = argparse.Namespace(suite="accuracy", iters=10, gpu_iters=10, match="", include_gpu_jobs=False,
                              resume=True, dry_run=False, max_minutes=10.0)
    assert runner.run_suite(args) == 1
    assert ran == ["fails", "works"]
    out = capsys.readouterr().out
    assert "4 jobs, 1 done, 2 to run, 1 GPU jobs skipped" in out
    assert "job failed: fails: bad input" in out

    ran.clear()
    assert runner.run_suite(argparse.Namespace(**{**vars(args), "max_minutes": 0.0})) == 0
    assert ran == []
    assert "2 jobs left:\n  fails\n  works\n" in capsys.readouterr().out


SLOW_JOB = """
import pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
(folder / "started").touch()
try:
    time.sleep(60)
except KeyboardInterrupt:
    (folder / "interrupted").touch()
    sys.exit(130)
"""


def test_job_running_past_the_slice_gets_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job is a child process; at the end of the slice it is interrupted (its checkpoints stay)."""
    (tmp_path / "slow_job.py").write_text(SLOW_JOB)
    (tmp_path / "failing_job.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    slow = Job(suite="accuracy", name="slow", module="slow_job", argv=(str(tmp_path),), results="r.csv", expected=())
    start = time.monotonic()
    with pytest.raises(runner.SliceEnded):
        runner.run_job(slow, resume=False, seconds=3.0)
    assert (tmp_path / "started").exists() and (tmp_path / "interrupted").exists()
    assert time.monotonic() - start < 30
    failing = Job(suite="accuracy", name="failing", module="failing_job", argv=(), results="r.csv", expected=())
    with pytest.raises(SystemExit, match="exit status 3"):
        runner.run_job(failing, resume=False, seconds=30.0)


def test_result_files_take_new_columns_without_losing_rows(tmp_path: Path) -> None:
    """A result file from before a metadata column was added is rewritten under the new header;
    a row from a still-running older script (a prefix of the new columns) stays readable."""
    from benchmarks.results_io import append_csv, read_csv

    path = tmp_path / "rows.csv"
    append_csv(path, ["model", "top1"], [{"model": "a", "top1": "1.0"}])
    rows = append_csv(path, ["model", "top1", "calib_set"], [{"model": "b", "top1": "2.0", "calib_set": "c"}])
    assert rows == [{"model": "a", "top1": "1.0", "calib_set": ""}, {"model": "b", "top1": "2.0", "calib_set": "c"}]
    with path.open("a", newline="") as handle:  # what the older script appends
        csv.writer(handle).writerow(["c", "3.0"])
    assert read_csv(path)[-1] == {"model": "c", "top1": "3.0", "calib_set": ""}
    assert path.read_text().splitlines()[0] == "model,top1,calib_set"


BENCHMARK_SCRIPTS = ["__main__", "accuracy", "calib_speed", "memory", "model_size", "model_sources", "ort_latency",
                     "ort_quantize", "parity"]


@pytest.mark.parametrize("script", BENCHMARK_SCRIPTS)
def test_every_benchmark_flag_explains_itself(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--help`` of each benchmark script has a line for every flag, subcommands included."""
    import importlib

    parsers: list[argparse.ArgumentParser] = []

    def capture(parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parsers.append(parser)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(sys, "argv", [script])
    with pytest.raises(SystemExit):
        importlib.import_module(f"benchmarks.{script}").main()
    pending, undocumented = list(parsers), []
    while pending:
        parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.option_strings and not action.help:
                undocumented.append(f"{parser.prog} {action.option_strings[0]}")
    assert parsers and not undocumented
