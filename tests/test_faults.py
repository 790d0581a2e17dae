"""Faults (issue 7): Ctrl-C and kill during calibration and export, full disk, unwritable
output, GPU out of memory while caching. Every run ends in a usable state or one ``error:`` line.

(``test_recon.py`` covers resuming after a KeyboardInterrupt raised inside ``calibrate``; here
real signals hit the ``aquant-onnx`` process.)
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from aquant_onnx_cli.main import main
from click.testing import CliRunner
from conftest import REPO_ROOT
from test_cli import assert_clean_error, run_cli
from test_recon import tiny_resnet

from aquant_onnx.export import model as export_model
from aquant_onnx.pipeline import calibrate, export
from aquant_onnx.recon import cache
from aquant_onnx.recon.checkpoint import FILE_NAME

BLOCKS = 3  # tiny_resnet: conv, residual block, head


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    onnx.save(tiny_resnet(), folder / "model.onnx")
    np.savez(folder / "calib.npz", x=np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32))
    return folder


def quantize_args(workspace: Path, output: Path, method: str = "qdrop") -> list[str]:
    """A qdrop run long enough (150 iterations per block: the blocks after the first checkpoint take
    ~1 s, time for the signal to land even on a loaded machine) to be interrupted between checkpoints."""
    return ["quantize", str(workspace / "model.onnx"), "--calib", str(workspace / "calib.npz"), "-o", str(output),
            "--method", method, "--iters", "150", "--batch-size", "8", "--num-calib", "16", "--device", "cpu",
            "--w-bits", "4", "--a-bits", "4", "--checkpoint-dir", str(workspace / "ckpt")]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "cli")])}


@pytest.fixture(scope="module")
def reference(workspace) -> bytes:
    """The model of an uninterrupted run (same checkpoint folder: its path is in the config metadata)."""
    output = workspace / "reference.onnx"
    result = run_cli(*quantize_args(workspace, output))
    assert result.returncode == 0, result.stderr
    (workspace / "ckpt" / FILE_NAME).unlink()
    return output.read_bytes()


@pytest.mark.slow  # three CLI runs (reference shared): ~15 s each on 2 busy cores
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_signal_during_calibration_leaves_a_checkpoint_the_rerun_finishes(workspace, reference, sig) -> None:
    checkpoint = workspace / "ckpt" / FILE_NAME
    checkpoint.unlink(missing_ok=True)
    output = workspace / f"interrupted_{sig.name}.onnx"
    # A shell starts background jobs (`pytest &`, CI runners) with SIGINT ignored and children inherit
    # that; a user's Ctrl-C reaches a foreground process whose SIGINT is at its default, so reset it.
    child = subprocess.Popen([sys.executable, "-m", "aquant_onnx_cli.main", *quantize_args(workspace, output)],
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not checkpoint.exists():  # appears (atomically) when the first block is done
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    child.send_signal(sig)
    _, stderr = child.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert child.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted", stderr
        assert "Traceback" not in stderr
    else:
        assert child.returncode == -signal.SIGKILL
    assert not output.exists()
    state = torch.load(checkpoint, weights_only=True)
    assert 1 <= state["finished"] < BLOCKS
    rerun = run_cli("-v", *quantize_args(workspace, output))
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {checkpoint}: {state['finished']} of {BLOCKS} units done" in rerun.stderr
    assert output.read_bytes() == reference


KILLED_BEFORE_RENAME = """
import os, signal, sys
from aquant_onnx.export import model
model.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # output written to the temp file, not renamed
from aquant_onnx_cli.main import main
main(sys.argv[1:])
"""


def test_kill_during_export_leaves_the_previous_output_untouched(workspace, tmp_path) -> None:
    output = tmp_path / "q.onnx"
    output.write_bytes(b"the previous model")
    args = quantize_args(workspace, output, method="rtn")
    result = subprocess.run([sys.executable, "-c", KILLED_BEFORE_RENAME, *args], env=cli_env(), capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert output.read_bytes() == b"the previous model"
    assert [p.name for p in tmp_path.iterdir()] != ["q.onnx"]  # the orphaned temp file is all a kill can leave


def test_full_disk_is_a_one_line_error(workspace, tmp_path, monkeypatch) -> None:
    real = tempfile.NamedTemporaryFile

    def on_full_disk(*args, **kwargs):
        handle = real(*args, **kwargs)

        def write(data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = write
        return handle

    monkeypatch.setattr(export_model.tempfile, "NamedTemporaryFile", on_full_disk)
    output = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, quantize_args(workspace, output, method="rtn"))
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0] == f"error: Could not write {output}: No space left on device."
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temp file


def test_file_size_limit_is_a_one_line_error(workspace, tmp_path) -> None:
    """A real failing write from the kernel: RLIMIT_FSIZE makes writes past 2 kB fail with EFBIG."""
    output = tmp_path / "q.onnx"

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    result = subprocess.run([sys.executable, "-m", "aquant_onnx_cli.main", *quantize_args(workspace, output, "rtn")],
                            env=cli_env(), capture_output=True, text=True, timeout=300, check=False,
                            preexec_fn=limit_file_size)
    assert_clean_error(result, "File too large", output)


@pytest.fixture
def unwritable_folder(tmp_path) -> Path:
    """A folder the test process cannot create files in: read-only permissions, or for root
    (who ignores them) sysfs, which refuses new files to everyone."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir(mode=0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys")
    try:
        tempfile.NamedTemporaryFile(dir=folder).close()
    except OSError:
        yield folder
        return
    pytest.skip("running as root and /sys accepts new files: no unwritable folder to test with")


def test_unwritable_output_folder_is_a_one_line_error(workspace, unwritable_folder) -> None:
    output = unwritable_folder / "q.onnx"
    result = run_cli(*quantize_args(workspace, output, method="rtn"))
    assert_clean_error(result, f"Cannot write to {unwritable_folder}", output)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_device_file_as_output_is_refused_not_replaced(workspace) -> None:
    result = run_cli(*quantize_args(workspace, Path("/dev/full"), method="rtn"))
    assert_clean_error(result, "exists and is not a regular file")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def _qdrop_bytes(data: np.ndarray) -> bytes:
    options = {"iters": 2, "batch_size": 8, "num_calib": 16, "device": "cpu", "w_bits": 4, "a_bits": 4}
    return export(calibrate(tiny_resnet(), data, method="qdrop", **options)).SerializeToString()


def test_gpu_out_of_memory_keeps_the_cache_on_the_host(monkeypatch) -> None:
    """Every cache is "placed on a GPU" whose allocation raises OutOfMemoryError: calibration
    finishes with one warning and the same model as a plain CPU run."""
    data = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    reference = _qdrop_bytes(data)
    attempts = []

    def out_of_memory(device: torch.device, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        attempts.append(shape)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate (simulated)")

    monkeypatch.setattr(cache, "storage_device", lambda device, num_bytes: torch.device("cuda"))
    monkeypatch.setattr(cache, "_empty_on", out_of_memory)
    monkeypatch.setattr(cache, "_oom_reported", False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    cache.logger.addHandler(handler)
    level = cache.logger.level
    cache.logger.setLevel(logging.INFO)
    try:
        result = _qdrop_bytes(data)
    finally:
        cache.logger.removeHandler(handler)
        cache.logger.setLevel(level)
    assert result == reference
    assert len(attempts) >= BLOCKS  # model inputs and every block's cache tried the "GPU"
    messages = [(r.levelno, r.getMessage()) for r in records if "ran out of memory" in r.getMessage()]
    assert len(messages) == len(attempts)
    assert [level for level, _ in messages].count(logging.WARNING) == 1
    assert "keeping it in host memory" in messages[0][1]
