"""Block reconstruction engine: AdaRound / BRECQ / QDrop / FlexRound (DESIGN §2)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.config import QuantConfig
from aquant_onnx.errors import ConfigError
from aquant_onnx.pipeline import calibrate, export
from aquant_onnx.recon.checkpoint import FILE_NAME
from aquant_onnx.recon.loop import reconstruction_loss
from conftest import REPO_ROOT

RESNET20 = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
CIFAR_CALIB = REPO_ROOT / "tests" / "data" / "cifar10_calib"
SHORT = {"iters": 30, "batch_size": 8, "num_calib": 24, "device": "cpu", "w_bits": 3, "a_bits": 3}


def _conv(name: str, x: str, out: str, c_in: int, c_out: int, rng: np.random.Generator) -> tuple:
    weight = rng.normal(0, (2.0 / (9 * c_in)) ** 0.5, (c_out, c_in, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, c_out).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name, pads=[1, 1, 1, 1])
    return node, [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]


def tiny_resnet() -> onnx.ModelProto:
    """conv → relu → [conv → relu → conv] + skip → relu → GAP → Gemm: a chain, a residual block, a head."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for name, x, out, c_in, c_out in [("c0", "x", "a0", 3, 8), ("c1", "r0", "a1", 8, 8), ("c2", "r1", "a2", 8, 8)]:
        node, weights = _conv(name, x, out, c_in, c_out, rng)
        nodes.append(node)
        inits += weights
    nodes[1:1] = [helper.make_node("Relu", ["a0"], ["r0"], name="relu0")]
    nodes[3:3] = [helper.make_node("Relu", ["a1"], ["r1"], name="relu1")]
    nodes += [
        helper.make_node("Add", ["a2", "r0"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    inits += [
        numpy_helper.from_array(rng.normal(0, 0.5, (5, 8)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(np.zeros(5, np.float32), "fc.b"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_resnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits,
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def tiny() -> tuple[onnx.ModelProto, np.ndarray]:
    data = np.random.default_rng(1).normal(0, 1, (24, 3, 8, 8)).astype(np.float32)
    return tiny_resnet(), data


@pytest.fixture
def summaries(monkeypatch) -> list[list[dict]]:
    """The per-block summary rows of every calibration the test runs (``CalibrationContext.summary``)."""
    from aquant_onnx import pipeline

    collected: list[list[dict]] = []
    original = pipeline.CalibrationContext

    def capture(*args, **kwargs):
        ctx = original(*args, **kwargs)
        collected.append(ctx.summary)
        return ctx

    monkeypatch.setattr(pipeline, "CalibrationContext", capture)
    return collected


def _quantize_bytes(model: onnx.ModelProto, data: np.ndarray, **options):
    calibrated = calibrate(model, data, **{**SHORT, **options})
    return export(calibrated).SerializeToString(), calibrated


def _ort_logits(model_bytes: bytes, data: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": data})[0]


@pytest.mark.parametrize("method", ["adaround", "brecq", "qdrop", "flexround"])
def test_each_method_exports_a_model_that_tracks_fp32(tiny, method) -> None:
    model, data = tiny
    fp = _ort_logits(model.SerializeToString(), data)
    quantized, _ = _quantize_bytes(model, data, method=method, w_bits=4, a_bits=4)
    logits = _ort_logits(quantized, data)
    relative_error = np.linalg.norm(logits - fp) / np.linalg.norm(fp)
    assert relative_error < 0.35, relative_error


def test_adaround_is_layerwise_and_refits_activation_ranges(tiny) -> None:
    model, data = tiny
    calibrated = calibrate(model, data, method="adaround", **SHORT)
    for layer in calibrated.graph.layers.values():
        assert layer.weight_quantizer.hard
        if layer.input_quantizer is not None:
            assert layer.input_quantizer.enabled and not layer.input_quantizer.observing


def _act_steps(calibrated) -> dict[str, float]:
    return {n: float(l.input_quantizer.scale) for n, l in calibrated.graph.layers.items() if l.input_quantizer is not None}


def test_act_ranges_from_float_ignore_the_weight_bits(tiny) -> None:
    """Default: activation grids are fitted with RTN weights attached, so 2-bit weights move them;
    ``act_ranges_from_float`` fits them on the float model (the official QDrop code's order)."""
    model, data = tiny
    steps = {(w_bits, from_float): _act_steps(calibrate(model, data, **{**SHORT, "method": "rtn", "w_bits": w_bits,
                                                                      "act_ranges_from_float": from_float}))
             for w_bits in (2, 8) for from_float in (False, True)}
    assert steps[2, True] == steps[8, True]
    assert steps[2, False] != steps[8, False]
    assert steps[2, False] != steps[2, True]


def test_same_seed_same_bytes_other_seed_other_bytes(tiny) -> None:
    model, data = tiny
    first, _ = _quantize_bytes(model, data, method="qdrop", seed=3)
    second, _ = _quantize_bytes(model, data, method="qdrop", seed=3)
    other, _ = _quantize_bytes(model, data, method="qdrop", seed=4)
    assert first == second
    assert first != other


class _Interrupt:
    """Progress factory whose "blocks" bar raises KeyboardInterrupt once ``after`` blocks are done."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, total: int = 0, desc: str = "", leave: bool = True):
        outer = self

        class Bar:
            done = 0

            def update(self, n: int = 1) -> None:
                self.done += n
                if desc == "blocks" and self.done >= outer.after:
                    raise KeyboardInterrupt

            def set_postfix_str(self, text: str) -> None:
                pass

            def close(self) -> None:
                pass

        return Bar()


def test_resume_after_interrupt_gives_identical_model(tiny, tmp_path, summaries) -> None:
    model, data = tiny
    checkpoint_dir = tmp_path / "ckpt"  # the same path in every run: it is in the model's config metadata
    reference, _ = _quantize_bytes(model, data, method="qdrop", checkpoint_dir=str(checkpoint_dir))
    (checkpoint_dir / FILE_NAME).unlink()
    with pytest.raises(KeyboardInterrupt):
        calibrate(model, data, method="qdrop", checkpoint_dir=str(checkpoint_dir), progress=_Interrupt(1), **SHORT)
    state = torch.load(checkpoint_dir / FILE_NAME, weights_only=True)
    assert state["finished"] == 1
    resumed, _ = _quantize_bytes(model, data, method="qdrop", checkpoint_dir=str(checkpoint_dir))
    assert resumed == reference
    assert [len(rows) for rows in summaries] == [3, 1, 2]  # 3 blocks; interrupted after 1; resumed: 2


def test_checkpoint_of_another_config_is_refused(tiny, tmp_path) -> None:
    model, data = tiny
    options = {**SHORT, "iters": 5}
    calibrate(model, data, method="qdrop", checkpoint_dir=str(tmp_path), **options)
    with pytest.raises(ConfigError, match="another model/config"):
        calibrate(model, data, method="qdrop", checkpoint_dir=str(tmp_path), **{**options, "w_bits": 2})
    (tmp_path / FILE_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        calibrate(model, data, method="qdrop", checkpoint_dir=str(tmp_path), **options)


def test_reconstruction_loss_is_qdrop_lp_loss() -> None:
    out, target = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    assert float(reconstruction_loss(out, target)) == pytest.approx(3.0)  # Σ over channels, mean over rest


def test_resnet20_qdrop_w4a4_every_block_beats_rtn(summaries) -> None:
    config = QuantConfig(method="qdrop", w_bits=4, a_bits=4, num_calib=64)
    config.recon.iters, config.recon.batch_size, config.recon.device = 40, 16, "cpu"
    config.recon.lr_rounding = 1e-2  # a short schedule needs a larger rounding step to move V
    calibrate(RESNET20, CIFAR_CALIB, config)
    (rows,) = summaries
    assert len(rows) == 11
    for row in rows:
        assert row["loss_end"] < row["loss_start"], row
