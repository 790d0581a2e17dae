"""Benchmark suite runner and README report.

    python -m benchmarks run --suite accuracy|ablation|speed|latency|parity|ort-quantize [--resume]
        [--max-minutes 10] [--dry-run] [--include-gpu-jobs] [--iters 2000] [--gpu-iters 20000] [--match TEXT]
    python -m benchmarks report [--results DIR] [--readme README.md] [--docs docs] [--no-plots]

``run`` calls the suite's jobs (``benchmarks/suite.py``) one after another, each as
``python -m <module>`` in a child process, and keeps the whole call within ``--max-minutes``: no
job starts after it, and a job still running then gets Ctrl-C (SIGINT; killed if it has not
exited ``GRACE_SECONDS`` later), printing what is left. With ``--resume`` jobs whose result rows
all exist are skipped and resumable modules redo only missing rows (accuracy runs continue from
the reconstruction checkpoint written after every block), so a long suite is filled by
repeating the same command in slices. GPU jobs (ImageNet models) are skipped without CUDA
unless ``--include-gpu-jobs``. Exit status 1 when a job failed.

``report`` regenerates the README results section and the plots in ``docs/`` from the result
CSVs (see ``benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .results_io import RESULTS
from .suite import SUITES, Job, suite_jobs

REPO_ROOT = Path(__file__).resolve().parents[1]


GRACE_SECONDS = 60  # after Ctrl-C at the slice limit: time to write what is done before a kill


class SliceEnded(Exception):
    """The job was still running at the end of the slice and was interrupted."""


def run_job(job: Job, resume: bool, seconds: float) -> None:
    """``python -m <module> <argv>`` in a child process (the modules own their parsers and
    defaults), interrupted with SIGINT after ``seconds``.

    Raises:
        SystemExit: the job failed (its exit status).
        SliceEnded: the job ran past ``seconds``.
    """
    command = [sys.executable, "-m", job.module, *job.command(resume)]
    # SIGINT back at its default in the child: a runner started in the background inherits it
    # ignored, and the slice's Ctrl-C must reach the job.
    child = subprocess.Popen(command, cwd=REPO_ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        code = child.wait(timeout=max(seconds, 0.0))
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise SliceEnded from None
    except BaseException:  # Ctrl-C of the runner itself: do not leave the job behind
        child.kill()
        child.wait()
        raise
    if code != 0:
        raise SystemExit(f"exit status {code}")


def _run(job: Job, resume: bool, seconds: float) -> str:
    """Run ``job``: "ok", "sliced" or "failed" (printed, not raised, so one bad job does not stop the suite)."""
    try:
        run_job(job, resume, seconds)
    except SliceEnded:
        return "sliced"
    except SystemExit as error:  # run_job raises it for a non-zero exit status only
        print(f"job failed: {job.name}: {error}", flush=True)
        return "failed"
    except Exception as error:
        traceback.print_exc()
        print(f"job failed: {job.name}: {type(error).__name__}: {error}", flush=True)
        return "failed"
    return "ok"


def _print_left(suite: str, elapsed_minutes: float, limit: float, left: list[Job]) -> None:
    print(f"stopped after {elapsed_minutes:.1f} min (--max-minutes {limit}); {len(left)} jobs left:")
    for job in left:
        print(f"  {job.name}")
    print(f"continue with: python -m benchmarks run --suite {suite} --resume", flush=True)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_suite(args: argparse.Namespace) -> int:
    jobs = [job for job in suite_jobs(args.suite, args.iters, args.gpu_iters) if args.match in job.name]
    gpu_ok = args.include_gpu_jobs or _cuda_available()
    skipped_gpu = [job for job in jobs if job.gpu and not gpu_ok]
    runnable = [job for job in jobs if not (job.gpu and not gpu_ok)]
    done = [job for job in runnable if args.resume and job.done(RESULTS)]
    pending = [job for job in runnable if job not in done]
    print(f"suite {args.suite}: {len(jobs)} jobs, {len(done)} done, {len(pending)} to run, "
          f"{len(skipped_gpu)} GPU jobs skipped (no CUDA; --include-gpu-jobs runs them here)", flush=True)
    if args.dry_run:
        for job in jobs:
            state = "gpu-skip" if job in skipped_gpu else "done" if job in done else "pending"
            print(f"  [{state:8}] {job.name}{f' ({job.note})' if job.note else ''}: "
                  f"python -m {job.module} {' '.join(job.command(args.resume))}")
        return 0
    start = time.monotonic()
    failed: list[Job] = []
    for number, job in enumerate(pending):
        elapsed = (time.monotonic() - start) / 60
        if elapsed >= args.max_minutes:
            _print_left(args.suite, elapsed, args.max_minutes, pending[number:])
            break
        print(f"[{args.suite} {number + 1}/{len(pending)}] {job.name}{f' ({job.note})' if job.note else ''}",
              flush=True)
        job_start = time.monotonic()
        outcome = _run(job, args.resume, (args.max_minutes - elapsed) * 60)
        if outcome == "ok":
            print(f"  finished in {time.monotonic() - job_start:.0f} s", flush=True)
        elif outcome == "failed":
            failed.append(job)
        else:
            print("  interrupted at the slice limit; its finished blocks/rows are kept", flush=True)
            _print_left(args.suite, (time.monotonic() - start) / 60, args.max_minutes, pending[number:])
            break
    if failed:
        print(f"{len(failed)} jobs failed: {', '.join(job.name for job in failed)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a benchmark suite in slices")
    run.add_argument("--suite", required=True, choices=SUITES, help="which job list to run")
    run.add_argument("--resume", action="store_true", help="skip jobs whose rows exist; modules resume their rows")
    run.add_argument("--max-minutes", type=float, default=10.0, help="start no new job after this many minutes")
    run.add_argument("--dry-run", action="store_true", help="list the jobs and their state, run nothing")
    run.add_argument("--include-gpu-jobs", action="store_true", help="run GPU jobs even without CUDA")
    run.add_argument("--iters", type=int, default=2000, help="accuracy: reconstruction iterations (ResNet-20)")
    run.add_argument("--gpu-iters", type=int, default=20000, help="accuracy: iterations of the GPU (ImageNet) jobs")
    run.add_argument("--match", default="", help="only jobs whose name contains this text")
    report = commands.add_parser("report", help="regenerate the README results section and docs/ plots")
    report.add_argument("--results", type=Path, default=RESULTS, help="folder of the result CSVs")
    report.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md",
                        help="README whose results section is rewritten")
    report.add_argument("--docs", type=Path, default=REPO_ROOT / "docs", help="where the PNG plots go")
    report.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "run":
        sys.exit(run_suite(args))
    from .report import write_report

    write_report(args.results, args.readme, args.docs, plots=not args.no_plots)


if __name__ == "__main__":
    main()
