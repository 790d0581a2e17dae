"""com.aquant::BorderRound CPU kernel, and the CUDA kernels run on the host, vs the naive reference
(DESIGN §3–5), bit exact.

The session fixture builds the library CPU-only into build/custom_ops-cpu (incremental, a few
seconds) unless $AQUANT_ONNX_OPS_LIBRARY names one to test instead (e.g. an installed wheel's),
and the CUDA kernels' host emulation into build/custom_ops-cuda-emulation.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from border_reference import border_round_elementwise, border_round_im2col
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.errors import RuntimeLibraryError
from aquant_onnx.runtime import library
from aquant_onnx.runtime.session import session

OUT_TYPES = {"uint8": (np.uint8, TensorProto.UINT8, 0, 255), "int8": (np.int8, TensorProto.INT8, -128, 127)}


def make_border_model(attrs: dict, out_type: str = "uint8", x_type: int = TensorProto.FLOAT) -> bytes:
    """One BorderRound node with inputs X, scale, zero_point, coeffs fed at run time."""
    elem = OUT_TYPES[out_type][1]
    node = helper.make_node("BorderRound", ["X", "scale", "zero_point", "coeffs"], ["codes"], domain="com.aquant", **attrs)
    graph = helper.make_graph(
        [node],
        "border_round",
        [
            helper.make_tensor_value_info("X", x_type, None),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("zero_point", elem, None),
            helper.make_tensor_value_info("coeffs", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("codes", elem, None)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.aquant", 1)]
    return helper.make_model(graph, ir_version=10, opset_imports=opsets).SerializeToString()


def run_border(lib, model: bytes, x, scale, zero_point, coeffs, out_type="uint8", providers=("CPUExecutionProvider",),
               threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(str(lib))
    sess = ort.InferenceSession(model, options, providers=list(providers))
    feeds = {
        "X": x,
        "scale": np.asarray(scale, np.float32),
        "zero_point": np.asarray(zero_point, OUT_TYPES[out_type][0]),
        "coeffs": np.asarray(coeffs, np.float32),
    }
    return sess.run(None, feeds)[0]


def random_coeffs(rng, degree: int, features: int) -> np.ndarray:
    """Borders near RTN (b0 ~ 0.5) with visible linear/quadratic terms."""
    rows = [0.5 + 0.2 * rng.standard_normal(features), 0.05 * rng.standard_normal(features), 0.002 * rng.standard_normal(features)]
    return np.stack(rows[:degree]).astype(np.float32)


# "cuda-emulation": the CUDA kernels (src/cuda/border_round_kernels.cuh) compiled for the host and
# run one (block, thread) at a time as the CPU EP's BorderRound, so every kernel test below also
# checks the CUDA kernels' indexing, padding, fusion and arithmetic without a GPU.
EMULATION_BUILD_DIR = library.REPO_ROOT / "build" / "custom_ops-cuda-emulation"


@pytest.fixture(scope="session")
def emulation_library():
    return library.build_library(EMULATION_BUILD_DIR, cuda="off", install=False, jobs=2,
                                 cmake_options=("-DAQUANT_CUDA_EMULATION=ON",))


# "cuda-bridge", only where $AQUANT_ONNX_CUDA_BRIDGE names a -DAQUANT_CUDA_HOST_BRIDGE=ON build (on a
# machine with a CUDA GPU; scripts/gpu_checks.sh kernel): the real CUDA kernels on the GPU, behind
# host copies, registered for the CPU EP, so every kernel test below runs them against the reference.
CUDA_BRIDGE_ENV = "AQUANT_ONNX_CUDA_BRIDGE"
LIBRARY_KINDS = ["cpu", "cuda-emulation"] + (["cuda-bridge"] if os.environ.get(CUDA_BRIDGE_ENV) else [])


@pytest.fixture(scope="session", params=LIBRARY_KINDS)
def ops_library(request):
    if request.param == "cuda-emulation":
        return request.getfixturevalue("emulation_library")
    if request.param == "cuda-bridge":
        return Path(os.environ[CUDA_BRIDGE_ENV])
    override = os.environ.get(library.ENV_LIBRARY)
    if override:
        return library.library_path()
    return library.build_library(library.BUILD_DIRS[1], cuda="off", install=False, jobs=2)


@pytest.fixture()
def registered(ops_library, monkeypatch):
    """session() finds exactly the library under test."""
    monkeypatch.setenv(library.ENV_LIBRARY, str(ops_library))
    return ops_library


IM2COL_CASES = [
    # (N, C, H, W), kernel, strides, pads, dilations, fuse, degree, out_type, (qmin, qmax) or None
    ((2, 3, 7, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, 3, "uint8", None),
    ((1, 2, 9, 8), (3, 3), (2, 2), (1, 0, 2, 1), (1, 1), True, 2, "int8", None),
    ((2, 2, 8, 8), (3, 3), (1, 2), (0, 0, 0, 0), (2, 1), False, 3, "uint8", None),
    ((1, 4, 5, 5), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), True, 1, "int8", None),
    ((1, 3, 6, 7), (2, 3), (2, 1), (1, 2, 0, 1), (1, 2), True, 3, "uint8", (0, 15)),
    ((1, 2, 10, 9), (5, 5), (3, 2), (2, 2, 2, 2), (1, 1), True, 2, "int8", (-8, 7)),
    ((3, 1, 4, 4), (3, 3), (1, 1), (2, 2, 2, 2), (1, 1), False, 1, "uint8", (0, 3)),
    ((1, 2, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False, 3, "int8", (-2, 1)),
    # stride 1 runs a tap's windows as one contiguous run of the padded plane: dilations and asymmetric pads
    ((2, 3, 9, 7), (3, 2), (1, 1), (2, 1, 0, 2), (2, 3), True, 2, "uint8", None),
    ((1, 2, 5, 6), (3, 3), (1, 1), (0, 1, 1, 0), (1, 1), True, 3, "int8", (-8, 7)),
    # rows of windows that fill whole vector iterations (32), and rows that do not
    ((1, 2, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, 3, "uint8", None),
    ((2, 1, 6, 34), (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), False, 2, "int8", (-8, 7)),
    # stride 1 stacks one channel's planes of 64K / (kh·kw·windows) = 7 images: groups of 7 and 2
    ((9, 2, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, 2, "uint8", None),
    ((9, 3, 32, 32), (3, 3), (1, 1), (0, 2, 1, 0), (1, 2), False, 3, "int8", (-8, 7)),
    # fused 3x3 and 5x5 with stride 1 take the one-pass loop (all taps' borders and codes per window)
    ((4, 2, 7, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 2), True, 1, "uint8", (0, 15)),
    ((2, 2, 9, 9), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), True, 3, "uint8", None),
    ((1, 3, 12, 10), (5, 5), (1, 1), (1, 2, 2, 1), (2, 1), True, 1, "int8", (-8, 7)),
    ((3, 2, 11, 8), (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), True, 2, "int8", None),
    # strides > 1 read phase planes (even/odd rows and columns for stride 2): with dilation, and
    # stacked in groups of 7 and 2 images of 32 x 32 windows
    ((2, 2, 13, 12), (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), True, 3, "uint8", None),
    ((9, 1, 64, 63), (3, 3), (2, 2), (1, 0, 1, 1), (1, 1), True, 2, "int8", (-8, 7)),
    ((2, 3, 11, 10), (3, 3), (3, 2), (1, 1, 0, 2), (1, 1), False, 3, "uint8", (0, 15)),
]


@pytest.mark.parametrize("case", range(len(IM2COL_CASES)))
def test_im2col_codes_equal_reference(ops_library, case):
    shape, kernel, strides, pads, dilations, fuse, degree, out_type, clip = IM2COL_CASES[case]
    rng = np.random.default_rng(100 + case)
    lo, hi = OUT_TYPES[out_type][2:]
    qmin, qmax = clip or (lo, hi)
    zero_point = (qmin + qmax + 1) // 2
    scale = np.float32(rng.uniform(0.02, 0.1))
    # Values spanning past both clip bounds, so clipping is exercised too.
    x = (rng.uniform(qmin - zero_point - 3, qmax - zero_point + 3, size=shape) * scale).astype(np.float32)
    features = shape[1] * kernel[0] * kernel[1]
    coeffs = random_coeffs(rng, degree, features)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads), dilations=list(dilations), fuse=int(fuse))
    if clip:
        attrs.update(qmin=qmin, qmax=qmax)
    codes = run_border(ops_library, make_border_model(attrs, out_type), x, scale, zero_point, coeffs, out_type)
    expected = border_round_im2col(x, scale, zero_point, coeffs, qmin, qmax, kernel, strides, pads, dilations, fuse)
    assert codes.dtype == OUT_TYPES[out_type][0]
    assert codes.shape == expected.shape
    np.testing.assert_array_equal(codes.astype(np.int32), expected)
    assert codes.min() >= qmin and codes.max() <= qmax


def _fused_mean_in_order(borders: np.ndarray) -> np.float32:
    total = np.float32(0.0)
    for border in borders:
        total = np.float32(total + border)
    return np.float32(total / np.float32(borders.size))


@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (3, 2)])
def test_fused_mean_adds_taps_in_row_major_order(ops_library, kernel):
    """Random inputs almost never sit within an ulp of a rounding step, so they cannot tell one
    summation order of the fused mean from another: here every tap's v is the mean itself (code 0)
    or the next float above it (code 1), where a mean one ulp lower or higher changes the code."""
    taps = kernel[0] * kernel[1]
    rng = np.random.default_rng(7)
    while True:  # constant borders whose mean in another order (reversed) is a different float
        b0 = rng.uniform(0.3, 0.7, size=taps).astype(np.float32)
        if _fused_mean_in_order(b0) != _fused_mean_in_order(b0[::-1].copy()):
            break
    mean = _fused_mean_in_order(b0)
    above_mean = np.nextafter(mean, np.float32(1.0))
    attrs = dict(kernel_shape=list(kernel), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], fuse=1,
                 qmin=-8, qmax=7)
    model = make_border_model(attrs, "int8")
    for value, expected in ((mean, 0), (above_mean, 1)):
        x = np.full((2, 1, *kernel), value, np.float32)
        codes = run_border(ops_library, model, x, 1.0, 0, b0[None, :], "int8")
        reference = border_round_im2col(x, 1.0, 0, b0[None, :], -8, 7, kernel, (1, 1), (0, 0, 0, 0), (1, 1), True)
        np.testing.assert_array_equal(reference, expected)
        np.testing.assert_array_equal(codes.astype(np.int32), reference)


@pytest.mark.parametrize("columns", ["channel", "shared"])
def test_im2col_per_channel_and_shared_coeffs(ops_library, columns):
    """F = C uses column c for all kh*kw rows of channel c; F = 1 one column for all rows."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 2, size=(2, 3, 6, 5)).astype(np.float32)
    features = 3 if columns == "channel" else 1
    coeffs = random_coeffs(rng, 3, features)
    expanded = np.repeat(coeffs, 9, axis=1) if columns == "channel" else np.tile(coeffs, (1, 27))
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    codes = run_border(ops_library, make_border_model(attrs), x, 0.05, 128, coeffs)
    expected = border_round_im2col(x, 0.05, 128, expanded, 0, 255, (3, 3), pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(codes.astype(np.int32), expected)


def test_ties_round_half_down(ops_library):
    """Power-of-two scale and half-integer v: B = 0.5 gives ceil(v - 0.5) = v - 0.5 exactly."""
    scale, zero_point = np.float32(0.0625), 128
    half_steps = np.arange(-40, 40, dtype=np.float32) + 0.5
    x = (half_steps * scale).reshape(1, 80, 1, 1)
    coeffs = np.full((1, 80), 0.5, np.float32)
    codes = run_border(ops_library, make_border_model({}), x, scale, zero_point, coeffs)
    np.testing.assert_array_equal(codes.ravel().astype(np.int32), (half_steps - 0.5 + zero_point).astype(np.int32))


ELEMENTWISE_CASES = [
    # shape, axis, F (0 = size along axis), degree, out_type, clip
    ((2, 5, 3, 4), 1, 0, 3, "uint8", None),
    ((2, 5, 3, 4), -1, 0, 2, "int8", None),
    ((6, 7), 0, 0, 3, "int8", (-4, 3)),
    ((3, 16), 1, 1, 1, "uint8", (0, 7)),
    ((4, 3, 2), 2, 0, 3, "uint8", (0, 1)),
]


@pytest.mark.parametrize("case", range(len(ELEMENTWISE_CASES)))
def test_elementwise_codes_equal_reference(ops_library, case):
    shape, axis, features, degree, out_type, clip = ELEMENTWISE_CASES[case]
    rng = np.random.default_rng(200 + case)
    lo, hi = OUT_TYPES[out_type][2:]
    qmin, qmax = clip or (lo, hi)
    zero_point = (qmin + qmax + 1) // 2
    scale = np.float32(rng.uniform(0.02, 0.1))
    x = (rng.uniform(qmin - zero_point - 3, qmax - zero_point + 3, size=shape) * scale).astype(np.float32)
    coeffs = random_coeffs(rng, degree, features or shape[axis])
    attrs = {"axis": axis}
    if clip:
        attrs.update(qmin=qmin, qmax=qmax)
    codes = run_border(ops_library, make_border_model(attrs, out_type), x, scale, zero_point, coeffs, out_type)
    expected = border_round_elementwise(x, scale, zero_point, coeffs, qmin, qmax, axis=axis)
    assert codes.shape == x.shape and codes.dtype == OUT_TYPES[out_type][0]
    np.testing.assert_array_equal(codes.astype(np.int32), expected)


# Batch-1 sized ops: the CPU kernel still splits them (2 and 3 tasks here, the element-wise split
# inside a channel), and an empty batch. Codes and shapes must not depend on the thread count.
THREAD_CASES = {
    "elementwise": ((1, 37, 21, 21), {"axis": 1}),
    "im2col": ((1, 37, 9, 9), dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], fuse=1)),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("form", sorted(THREAD_CASES))
@pytest.mark.parametrize("batch", [1, 0])
def test_codes_do_not_depend_on_threads(ops_library, form, threads, batch):
    shape, attrs = THREAD_CASES[form]
    shape = (batch, *shape[1:])
    rng = np.random.default_rng(7)
    scale, zero_point = np.float32(0.05), 8
    x = (rng.uniform(-12, 12, size=shape) * scale).astype(np.float32)
    coeffs = random_coeffs(rng, 3, shape[1] * (9 if "kernel_shape" in attrs else 1))
    attrs = dict(attrs, qmin=0, qmax=15)
    codes = run_border(ops_library, make_border_model(attrs), x, scale, zero_point, coeffs, threads=threads)
    if "kernel_shape" in attrs:
        expected = border_round_im2col(x, scale, zero_point, coeffs, 0, 15, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True)
    else:
        expected = border_round_elementwise(x, scale, zero_point, coeffs, 0, 15, axis=1)
    assert codes.shape == expected.shape
    np.testing.assert_array_equal(codes.astype(np.int32), expected)


def test_float16_input(ops_library):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, size=(1, 4, 6, 6)).astype(np.float16)
    coeffs = random_coeffs(rng, 3, 36)
    model = make_border_model(dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), "int8", TensorProto.FLOAT16)
    codes = run_border(ops_library, model, x, 0.04, -5, coeffs, "int8")
    expected = border_round_im2col(x.astype(np.float32), 0.04, -5, coeffs, -128, 127, (3, 3), pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(codes.astype(np.int32), expected)


GOOD_X = np.zeros((1, 2, 5, 5), np.float32)
GOOD_COEFFS = np.full((1, 18), 0.5, np.float32)
MALFORMED = [
    # attrs, feeds overrides, name that the error message must contain
    (dict(kernel_shape=[3]), {}, "kernel_shape"),
    (dict(kernel_shape=[3, 0]), {}, "kernel_shape"),
    (dict(kernel_shape=[3, 3], strides=[0, 1]), {}, "strides"),
    (dict(kernel_shape=[3, 3], pads=[1, 1]), {}, "pads"),
    (dict(kernel_shape=[3, 3], pads=[-1, 0, 0, 0]), {}, "pads"),
    (dict(kernel_shape=[3, 3], dilations=[1]), {}, "dilations"),
    (dict(kernel_shape=[3, 3], fuse=2), {}, "fuse"),
    (dict(kernel_shape=[3, 3], fuse=1.0), {}, "fuse"),
    (dict(kernel_shape=[3, 3], axis=2), {}, "axis"),
    (dict(pads=[1, 1, 1, 1]), {}, "pads"),
    (dict(kernel_shape=[3, 3], qmin=5, qmax=3), {}, "qmin"),
    (dict(kernel_shape=[3, 3], qmax=300), {}, "qmax"),
    (dict(kernel_shape=[3, 3], qmin=10, qmax=20), {}, "zero_point"),
    (dict(kernel_shape=[7, 3]), {}, "kernel_shape"),
    (dict(kernel_shape=[3, 3], dilations=[3, 1]), {}, "kernel_shape"),
    (dict(kernel_shape=[3, 3]), {"coeffs": np.full((4, 18), 0.5, np.float32)}, "coeffs"),
    (dict(kernel_shape=[3, 3]), {"coeffs": np.full((1, 5), 0.5, np.float32)}, "coeffs"),
    (dict(kernel_shape=[3, 3]), {"coeffs": np.full((18,), 0.5, np.float32)}, "coeffs"),
    (dict(kernel_shape=[3, 3]), {"X": np.zeros((2, 5, 5), np.float32)}, "'X'"),
    (dict(kernel_shape=[3, 3]), {"scale": np.float32(0.0)}, "scale"),
    (dict(kernel_shape=[3, 3]), {"scale": np.float32(np.nan)}, "scale"),
    (dict(kernel_shape=[3, 3]), {"scale": np.array([0.1, 0.2], np.float32)}, "scale"),
    (dict(kernel_shape=[3, 3]), {"zero_point": np.array([1, 2], np.uint8)}, "zero_point"),
    (dict(axis=4), {"coeffs": np.full((1, 1), 0.5, np.float32)}, "axis"),
    (dict(axis=2), {"coeffs": np.full((1, 2), 0.5, np.float32)}, "coeffs"),
]


@pytest.mark.parametrize("case", range(len(MALFORMED)))
def test_malformed_node_raises_naming_the_attribute(ops_library, case):
    attrs, overrides, name = MALFORMED[case]
    feeds = {"X": GOOD_X, "scale": np.float32(0.1), "zero_point": np.uint8(128), "coeffs": GOOD_COEFFS, **overrides}
    with pytest.raises(Exception, match="BorderRound") as raised:
        run_border(ops_library, make_border_model(attrs), feeds["X"], feeds["scale"], feeds["zero_point"], feeds["coeffs"])
    assert name in str(raised.value)


def test_valid_run_after_errors(ops_library):
    """The process survives malformed nodes and still computes: RTN (B = 0.5) of 0 is the zero point."""
    codes = run_border(ops_library, make_border_model(dict(kernel_shape=[3, 3])), GOOD_X, 0.1, 128, GOOD_COEFFS)
    assert codes.shape == (1, 18, 9)
    assert (codes == 128).all()


def test_session_registers_library(registered):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 2, 5, 5)).astype(np.float32)
    coeffs = random_coeffs(rng, 2, 18)
    sess = session(make_border_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])), providers="cpu")
    codes = sess.run(None, {"X": x, "scale": np.array(0.03, np.float32), "zero_point": np.array(100, np.uint8), "coeffs": coeffs})[0]
    expected = border_round_im2col(x, 0.03, 100, coeffs, 0, 255, (3, 3), pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(codes.astype(np.int32), expected)


def _no_library(monkeypatch, tmp_path):
    monkeypatch.delenv(library.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(library, "_candidates", lambda: [tmp_path / library.LIBRARY_NAME])


def test_session_without_library_raises(monkeypatch, tmp_path):
    _no_library(monkeypatch, tmp_path)
    with pytest.raises(RuntimeLibraryError, match="python -m aquant_onnx.runtime.library --build"):
        session(make_border_model(dict(kernel_shape=[3, 3])))
    with pytest.raises(RuntimeLibraryError, match="pip install ."):
        library.library_path()


def test_session_without_library_runs_standard_models(monkeypatch, tmp_path):
    _no_library(monkeypatch, tmp_path)
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    out = session(model.SerializeToString()).run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0]
    np.testing.assert_array_equal(out, [0.0, 2.0])


def test_env_variable_naming_missing_file_raises(monkeypatch, tmp_path):
    monkeypatch.setenv(library.ENV_LIBRARY, str(tmp_path / "missing.so"))
    with pytest.raises(RuntimeLibraryError, match=library.ENV_LIBRARY):
        library.library_path()


def _exported_symbols(path: Path) -> list[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs nm (binutils)")
    symbols = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in symbols.stdout.splitlines() if line.strip()]


def test_library_exports_only_register_custom_ops(ops_library):
    assert _exported_symbols(ops_library) == ["RegisterCustomOps"]


def has_gpu() -> bool:
    """Whether nvidia-smi lists a CUDA device."""
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def test_host_bridge_build_runs_or_names_the_cuda_error():
    """The GPU-check build (scripts/gpu_checks.sh kernel) compiles wherever nvcc is, CI included; on a GPU
    its codes equal the reference, without one a run fails with the CUDA error, not a crash."""
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        pytest.skip("needs nvcc (the host bridge is built from the CUDA sources)")
    bridge = library.build_library(library.REPO_ROOT / "build" / "custom_ops-cuda-bridge", cuda="on", install=False,
                                   jobs=2, cmake_options=("-DAQUANT_CUDA_HOST_BRIDGE=ON",))
    info = library.build_info(bridge)
    assert info["cuda_host_bridge"] is True and info["cuda"] is False
    assert _exported_symbols(bridge) == ["RegisterCustomOps"]
    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.3, size=(2, 3, 6, 5)).astype(np.float32)
    coeffs = random_coeffs(rng, 3, 27)
    model = make_border_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], qmin=0, qmax=15))
    if has_gpu():
        codes = run_border(bridge, model, x, 0.05, 8, coeffs)
        np.testing.assert_array_equal(codes.astype(np.int32), border_round_im2col(x, 0.05, 8, coeffs, 0, 15, (3, 3), pads=(1, 1, 1, 1)))
    else:
        with pytest.raises(Exception, match="BorderRound: CUDA kernel launch failed: cuda"):
            run_border(bridge, model, x, 0.05, 8, coeffs)


def test_build_info_sidecar(ops_library):
    info = library.build_info(ops_library)
    assert info["ort_api_version"] == 21
    assert library.has_cuda_kernel(ops_library) is info["cuda"]
    assert info.get("cuda_emulation", False) is (ops_library.parent.parent == EMULATION_BUILD_DIR)
    assert info.get("cuda_host_bridge", False) is (str(ops_library) == os.environ.get(CUDA_BRIDGE_ENV))


@pytest.mark.parametrize("index", ["narrow", "wide"])
def test_emulated_cuda_grid_stride_loops_cover_every_output(emulation_library, monkeypatch, index):
    """With the grid capped at 2 blocks of 256 threads, each thread loops over many windows/elements;
    "wide": the 64-bit-index kernels that launches pick for tensors of 2^31 elements or more."""
    monkeypatch.setenv("AQUANT_CUDA_EMULATION_MAX_BLOCKS", "2")
    if index == "wide":
        monkeypatch.setenv("AQUANT_CUDA_EMULATION_WIDE_INDEX", "1")
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, size=(2, 3, 23, 21)).astype(np.float32)  # 2·3·21·19 = 2394 windows > 512 threads
    coeffs = random_coeffs(rng, 3, 27)
    attrs = dict(kernel_shape=[3, 3], pads=[0, 1, 0, 1], strides=[1, 1])
    codes = run_border(emulation_library, make_border_model(attrs), x, 0.05, 128, coeffs)
    expected = border_round_im2col(x, 0.05, 128, coeffs, 0, 255, (3, 3), pads=(0, 1, 0, 1))
    np.testing.assert_array_equal(codes.astype(np.int32), expected)
    flat_coeffs = random_coeffs(rng, 2, 3)
    codes = run_border(emulation_library, make_border_model({}), x, 0.05, 128, flat_coeffs)
    np.testing.assert_array_equal(codes.astype(np.int32), border_round_elementwise(x, 0.05, 128, flat_coeffs, 0, 255))


def test_uses_aquant_ops_detects_domain():
    from aquant_onnx.runtime import uses_aquant_ops

    assert uses_aquant_ops(make_border_model({}))
    assert not uses_aquant_ops(onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []), ir_version=10))


@pytest.mark.parametrize("op", ["ConvInteger", "MatMulInteger"])
def test_cuda_session_warns_that_integer_layers_run_on_the_cpu(caplog, op):
    from aquant_onnx.runtime.session import uses_integer_layers

    weight = np.ones((4, 2, 1, 1) if op == "ConvInteger" else (4, 2), np.uint8)
    node = helper.make_node(op, ["x", "w"] if op == "ConvInteger" else ["w", "x"], ["y"])
    x_shape = [1, 2, 3, 3] if op == "ConvInteger" else [1, 2, 3]
    graph = helper.make_graph([node], "integer_layer", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    assert uses_integer_layers(model) and not uses_integer_layers(make_border_model({}))
    with caplog.at_level(logging.WARNING, logger="aquant_onnx.runtime.session"):
        session(model.SerializeToString(), providers="cpu")
        assert not caplog.records
        session(model.SerializeToString(), providers="cuda")  # CPU-only ORT falls back; the warning comes first
    assert any("--no-conv-integer" in record.getMessage() for record in caplog.records)
