"""Fuzzing the command line with broken ONNX and image files (hypothesis).

Every case must end with exit code 0 or 1 and, on 1, a single ``error:`` line: never a
traceback, a hang or a crash. Runs in-process through click's CliRunner on a tiny model so
many cases fit in seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from aquant_onnx_cli.main import main
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

TIME_LIMIT_S = 30.0
OUTCOMES: Counter = Counter()


def _tiny_model() -> bytes:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


TINY = _tiny_model()


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data[: max(1, cut)])
    for position, bit in flips:
        buffer[position % len(buffer)] ^= 1 << bit
    return bytes(buffer)


def _check(result, command: str) -> None:
    OUTCOMES[(command, result.exit_code)] += 1
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), result.stderr


def _invoke(args: list[str]):
    start = time.perf_counter()
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    assert time.perf_counter() - start < TIME_LIMIT_S
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}") from result.exception
    return result


mutations = st.tuples(
    st.integers(min_value=1, max_value=len(TINY)),
    st.lists(st.tuples(st.integers(0, len(TINY) - 1), st.integers(0, 7)), max_size=4),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(mutation=mutations)
def test_mutated_onnx_inspect_and_quantize(tmp_path_factory, calib_dir, mutation):
    folder = tmp_path_factory.mktemp("case")
    model = folder / "m.onnx"
    model.write_bytes(_mutate(TINY, *mutation))
    _check(_invoke(["inspect", str(model)]), "inspect")
    out = folder / "q.onnx"
    result = _invoke(["quantize", str(model), "--calib", str(calib_dir), "-o", str(out), "--num-calib", "4",
                      "--preset", "cifar10", "--size", "8", "--no-progress"])
    _check(result, "quantize")
    assert out.exists() == (result.exit_code == 0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(cut=st.integers(min_value=0, max_value=400), flips=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 7)), max_size=6))
def test_mutated_images_quantize_and_eval(tmp_path_factory, cut, flips):
    folder = tmp_path_factory.mktemp("images")
    calib = folder / "calib" / "cat"
    calib.mkdir(parents=True)
    rng = np.random.default_rng(cut)
    good = folder / "good.png"
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(good)
    (calib / "broken.png").write_bytes(_mutate(good.read_bytes(), cut, flips) if cut else b"")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(calib / "ok.png")
    model = folder / "m.onnx"
    model.write_bytes(TINY)
    out = folder / "q.onnx"
    _check(_invoke(["quantize", str(model), "--calib", str(folder / "calib"), "-o", str(out),
                    "--preset", "cifar10", "--size", "8", "--no-progress"]), "quantize-images")
    (folder / "classes.tsv").write_text("0\tcat\tcat\n1\tdog\tdog\n2\tcow\tcow\n")
    evaluated = out if out.exists() else model  # the quantized model carries its preprocessing
    _check(_invoke(["eval", str(evaluated), "--data", str(folder / "calib"), "--classes", str(folder / "classes.tsv")]),
           "eval-images")


def test_report_outcomes():
    """Prints the outcome counts of the fuzz runs above (run in the same session)."""
    print("fuzz outcomes (command, exit code): count:", dict(OUTCOMES))
    assert sum(OUTCOMES.values()) >= 60 + 60 + 30 + 30 or not OUTCOMES
