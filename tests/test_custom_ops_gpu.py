"""com.aquant::BorderRound CUDA kernel vs CPU kernel (DESIGN §4): at most 1e-4 of codes off by one.

Skipped without onnxruntime's CUDA provider and a CUDA device, or when the library found by
library_path() (or $AQUANT_ONNX_OPS_LIBRARY) was built without the CUDA kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from border_reference import border_round_im2col
from onnx import TensorProto
from test_custom_ops import has_gpu, make_border_model, random_coeffs

from aquant_onnx.errors import RuntimeLibraryError
from aquant_onnx.runtime import library
from aquant_onnx.runtime.session import session


def _cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers() and has_gpu()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda_available(), reason="needs onnxruntime-gpu's CUDAExecutionProvider and a CUDA device"),
]

CUDA = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def cuda_library():
    try:
        path = library.library_path()
    except RuntimeLibraryError as error:
        pytest.skip(str(error))
    if not library.has_cuda_kernel(path):
        pytest.skip(f"{path} has no CUDA kernel; python -m aquant_onnx.runtime.library --build --cuda on")
    return path


def _feeds(x, scale, zero_point, coeffs, out_dtype):
    return {
        "X": x,
        "scale": np.array(scale, np.float32),
        "zero_point": np.array(zero_point, out_dtype),
        "coeffs": coeffs,
    }


def _codes_cpu_and_cuda(model, feeds):
    cpu = session(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    cuda_session = session(model, providers=CUDA)
    assert cuda_session.get_providers()[0] == "CUDAExecutionProvider"
    return cpu, cuda_session.run(None, feeds)[0]


def _assert_close_codes(cpu, cuda):
    diff = np.abs(cpu.astype(np.int32) - cuda.astype(np.int32))
    assert cpu.shape == cuda.shape and cpu.dtype == cuda.dtype
    assert diff.max(initial=0) <= 1
    assert np.count_nonzero(diff) <= 1e-4 * diff.size


CASES = [
    # x shape, attrs, degree, out dtype, onnx X type
    ((8, 32, 28, 28), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 3, np.uint8, TensorProto.FLOAT),
    ((4, 16, 31, 29), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2], fuse=0), 2, np.int8, TensorProto.FLOAT),
    ((2, 8, 20, 20), dict(kernel_shape=[5, 5], dilations=[2, 1], pads=[2, 2, 2, 2]), 3, np.uint8, TensorProto.FLOAT16),
    ((2, 4, 30, 30), dict(kernel_shape=[9, 9], pads=[4, 4, 4, 4]), 3, np.int8, TensorProto.FLOAT),  # > 49 taps: uncached path
    ((16, 64, 14, 14), dict(axis=1), 3, np.uint8, TensorProto.FLOAT),
    ((64, 1000), dict(axis=-1, qmin=-8, qmax=7), 2, np.int8, TensorProto.FLOAT16),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_cuda_codes_match_cpu(cuda_library, monkeypatch, case):
    monkeypatch.setenv(library.ENV_LIBRARY, str(cuda_library))
    shape, attrs, degree, out_dtype, x_type = CASES[case]
    rng = np.random.default_rng(300 + case)
    x = rng.normal(0, 2, size=shape).astype(np.float16 if x_type == TensorProto.FLOAT16 else np.float32)
    if "kernel_shape" in attrs:
        features = shape[1] * attrs["kernel_shape"][0] * attrs["kernel_shape"][1]
    else:
        features = shape[attrs["axis"]]
    zero_point = 128 if out_dtype == np.uint8 else 0
    out_type = "uint8" if out_dtype == np.uint8 else "int8"
    model = make_border_model(attrs, out_type, x_type)
    cpu, cuda = _codes_cpu_and_cuda(model, _feeds(x, 0.03, zero_point, random_coeffs(rng, degree, features), out_dtype))
    _assert_close_codes(cpu, cuda)


def test_cuda_equals_reference_small(cuda_library, monkeypatch):
    monkeypatch.setenv(library.ENV_LIBRARY, str(cuda_library))
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, size=(2, 3, 7, 6)).astype(np.float32)
    coeffs = random_coeffs(rng, 3, 27)
    model = make_border_model(dict(kernel_shape=[3, 3], strides=[2, 1], pads=[1, 1, 1, 1]))
    cuda_session = session(model, providers=CUDA)
    assert cuda_session.get_providers()[0] == "CUDAExecutionProvider"
    codes = cuda_session.run(None, _feeds(x, 0.05, 128, coeffs, np.uint8))[0]
    expected = border_round_im2col(x, 0.05, 128, coeffs, 0, 255, (3, 3), (2, 1), (1, 1, 1, 1))
    np.testing.assert_array_equal(codes.astype(np.int32), expected)


def test_cuda_malformed_scale_raises(cuda_library, monkeypatch):
    monkeypatch.setenv(library.ENV_LIBRARY, str(cuda_library))
    model = make_border_model(dict(kernel_shape=[3, 3]))
    feeds = _feeds(np.zeros((1, 2, 5, 5), np.float32), -1.0, 128, np.full((1, 18), 0.5, np.float32), np.uint8)
    with pytest.raises(Exception, match="scale"):
        session(model, providers=CUDA).run(None, feeds)
