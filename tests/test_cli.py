"""The ``aquant-onnx`` command on bad input: one ``error:`` line, exit 1, no traceback, no output file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from conftest import REPO_ROOT

MODEL = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
CALIB = REPO_ROOT / "tests" / "data" / "cifar10_calib"
TEST = REPO_ROOT / "tests" / "data" / "cifar10_test"


def run_cli(*args: str | Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "cli")])}
    return subprocess.run(
        [sys.executable, "-m", "aquant_onnx_cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )


def assert_clean_error(result: subprocess.CompletedProcess, pattern: str, output: Path | None = None) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern.lower() in lines[0].lower(), lines[0]
    if output is not None:
        assert not output.exists()
        assert not list(output.parent.glob(f".{output.name}.*"))  # no temp file left behind


def _unsupported_op_model(path: Path) -> Path:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Det", ["c"], ["y"], name="determinant"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=[numpy_helper.from_array(np.ones((1, 3, 3, 3), np.float32), "w")],
    )
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _images(folder: Path, count: int, junk: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    for i in range(junk):
        (folder / f"junk{i}.jpg").write_bytes(b"not an image")
    return folder


def test_missing_model(tmp_path):
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", tmp_path / "none.onnx", "--calib", CALIB, "-o", out), "not found", out)


def test_corrupt_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(MODEL.read_bytes()[:5000])
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", bad, "--calib", CALIB, "-o", out), "bad.onnx", out)


def test_unsupported_op(tmp_path):
    out = tmp_path / "q.onnx"
    result = run_cli("quantize", _unsupported_op_model(tmp_path / "det.onnx"), "--calib", CALIB, "-o", out)
    assert_clean_error(result, "'Det' at node 'determinant'", out)


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", tmp_path / "empty", "-o", out), "empty", out)


def test_no_readable_images(tmp_path):
    folder = _images(tmp_path / "junk", 0, junk=3)
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", folder, "-o", out), "readable", out)


@pytest.mark.parametrize(("flag", "value"), [("--w-bits", "9"), ("--a-bits", "1"), ("--last-layer-a-bits", "12")])
def test_bits_out_of_range(tmp_path, flag, value):
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", CALIB, "-o", out, flag, value), flag, out)


def test_output_folder_missing(tmp_path):
    out = tmp_path / "missing" / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", CALIB, "-o", out), "does not exist", out)


def test_wrong_input_size(tmp_path):
    out = tmp_path / "q.onnx"
    result = run_cli("quantize", MODEL, "--calib", CALIB, "-o", out, "--size", "64")
    assert_clean_error(result, "3x32x32", out)


def test_eval_missing_data(tmp_path):
    assert_clean_error(run_cli("eval", MODEL, "--data", tmp_path / "nothing"), "does not exist")


def test_debug_shows_traceback(tmp_path):
    result = run_cli("--debug", "quantize", tmp_path / "none.onnx", "--calib", CALIB, "-o", tmp_path / "q.onnx")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unreadable_files_skipped_with_count_and_quantize_eval_inspect(tmp_path):
    """Mixed folder: junk files are skipped with one warning; the run succeeds end to end."""
    folder = _images(tmp_path / "mixed", 12, junk=2)
    out = tmp_path / "q.onnx"
    result = run_cli("quantize", MODEL, "--calib", folder, "-o", out, "--w-bits", "8", "--a-bits", "8")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 of 14" in result.stderr
    assert out.is_file() and onnx.load(str(out)).graph.node
    evaluated = run_cli("eval", out, "--data", TEST, "--limit", "100", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert '"count": 100' in evaluated.stdout
    inspected = run_cli("inspect", out)
    assert inspected.returncode == 0 and "20 layers" in inspected.stdout


def test_help_lists_every_quantize_flag():
    result = run_cli("quantize", "--help")
    assert result.returncode == 0
    for flag in ("--calib", "--method", "--w-bits", "--a-bits", "--num-calib", "--seed", "--iters", "--border",
                 "--checkpoint-dir", "--preset", "--border-op"):
        assert flag in result.stdout
