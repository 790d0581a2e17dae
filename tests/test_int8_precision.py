"""Exact int8 sums in ONNX Runtime's CPU EP (aquant_onnx.runtime.session, tools/README §3).

On x86 without VNNI, ORT adds u8·s8 products in saturating 16-bit pairs; ``session()`` then sets
``session.x64quantprecision``, elsewhere it leaves ORT's fast int8 kernels alone. The model below
saturates such pairs (255·127 twice = 64770 > 32767), so it fails on any host where the choice
is wrong.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.runtime.session import int8_sums_can_saturate, session

CHANNELS, FILTERS = 64, 8


def _saturating_qdq_conv() -> tuple[bytes, np.ndarray, np.ndarray, np.float32]:
    """A QDQ 1×1 Conv that ORT fuses into QLinearConv, its input, its exact output and its output step."""
    x = np.full((1, CHANNELS, 2, 2), 255, np.float32)
    w = np.full((FILTERS, CHANNELS, 1, 1), 127, np.int8)
    w[1::2] = -128
    exact = x[0, :, 0, 0].astype(np.int64) @ w[:, :, 0, 0].astype(np.int64).T  # ±2.07e6
    y_scale = np.float32(2 * np.abs(exact).max() / 255)  # the whole range in 8 bits: saturation halves a sum
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zero"], ["out"]),
    ]
    constants = {"x_scale": np.float32(1), "x_zero": np.uint8(0), "w_q": w, "w_scale": np.ones(FILTERS, np.float32),
                 "w_zero": np.zeros(FILTERS, np.int8), "y_scale": y_scale, "y_zero": np.uint8(128)}
    graph = helper.make_graph(nodes, "saturating", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString(), x, exact.astype(np.float32), y_scale


def test_default_session_sums_int8_products_exactly() -> None:
    model, x, exact, step = _saturating_qdq_conv()
    out = session(model).run(None, {"x": x})[0][0, :, 0, 0]
    # one output step of rounding; a saturated sum would be off by about half its value
    np.testing.assert_allclose(out, exact, atol=step)


def test_flag_follows_the_host_and_can_be_forced() -> None:
    model, *_ = _saturating_qdq_conv()

    def flag(**kwargs: object) -> bool:
        options = session(model, **kwargs).get_session_options()
        try:
            return options.get_session_config_entry("session.x64quantprecision") == "1"
        except RuntimeError:  # ORT raises for a key that was never set
            return False

    assert flag() is int8_sums_can_saturate()
    assert flag(exact_int8=True) is True
    assert flag(exact_int8=False) is False


@pytest.mark.parametrize(("machine", "flags", "saturates"), [
    ("x86_64", "fpu sse2 avx2 avx512f avx512bw", True),
    ("x86_64", "fpu sse2 avx2 avx512f avx512_vnni", False),
    ("x86_64", "fpu sse2 avx2 avx_vnni", False),
    ("aarch64", "fp asimd asimddp", False),
])
def test_saturation_is_read_from_the_cpu_flags(machine: str, flags: str, saturates: bool, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert int8_sums_can_saturate.__wrapped__(str(cpuinfo)) is saturates


def test_unreadable_cpu_flags_count_as_saturating_on_x86(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert int8_sums_can_saturate.__wrapped__(str(tmp_path / "missing")) is True
