"""Block partition (DESIGN §2 "Block reconstruction") on the shared CNNs and on hand-made graphs."""

from __future__ import annotations

import logging
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import shared_path
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.errors import UnsupportedModelError
from aquant_onnx.graph.partition import Block, format_blocks, partition_blocks

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _load_shared(file_name: str) -> onnx.ModelProto:
    model = onnx.load(str(shared_path("models", file_name)))
    for index, node in enumerate(model.graph.node):
        if not node.name:  # the graph front end names nodes; do it here until then
            node.name = f"{node.op_type}_{index}"
    return model


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Initializers and outputs of nodes computed from constants only (file order is topological)."""
    constants = {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        if all(name in constants for name in node.input if name):
            constants.update(node.output)
    return constants


def _check_partition(model: onnx.ModelProto, blocks: list[Block]) -> None:
    """Every node in exactly one block, topological order, single entry and single exit."""
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    block_of = {name: block.index for block in blocks for name in block.node_names}
    assert sorted(name for block in blocks for name in block.node_names) == sorted(nodes)
    assert [block.index for block in blocks] == list(range(len(blocks)))
    constants = _constants(graph)
    producer = {out: node.name for node in graph.node for out in node.output}
    position = {name: k for block in blocks for k, name in enumerate(block.node_names)}
    assert blocks[0].input_name == graph.input[0].name
    assert blocks[-1].output_name == graph.output[0].name
    for block in blocks:
        inside = set(block.node_names)
        produced = {out for name in block.node_names for out in nodes[name].output}
        for name in block.node_names:
            for tensor in nodes[name].input:
                if not tensor or tensor in constants or tensor == block.input_name:
                    continue
                # closure: any other run-time input is produced earlier inside this block
                assert tensor in produced, f"{name} in block {block.index} reads {tensor} from outside"
                assert position[producer[tensor]] < position[name]
        read_later = {
            tensor
            for node in graph.node
            if node.name not in inside and block_of[node.name] > block.index
            for tensor in node.input
            if tensor in produced and tensor not in constants
        } | ({graph.output[0].name} & produced)
        assert read_later == {block.output_name}, f"block {block.index} exits {read_later}"
        if block.index + 1 < len(blocks):
            assert blocks[block.index + 1].input_name == block.output_name
        assert block.layer_names == [name for name in block.node_names if nodes[name].op_type in LAYER_OPS]


def _layers_once(model: onnx.ModelProto, blocks: list[Block]) -> None:
    layers = [name for block in blocks for name in block.layer_names]
    convs = [node.name for node in model.graph.node if node.op_type in LAYER_OPS]
    assert sorted(layers) == sorted(convs)
    assert len(set(layers)) == len(layers)


def _run_block_by_block(model: onnx.ModelProto, blocks: list[Block], x: np.ndarray) -> None:
    """Cut each block out as its own model and chain them: must equal the whole model."""
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {model.graph.input[0].name: x})[0]
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model))
    value = x
    for block in blocks:
        sub = extractor.extract_model([block.input_name], [block.output_name])
        assert sorted(node.name for node in sub.graph.node) == sorted(block.node_names)
        value = ort.InferenceSession(sub.SerializeToString()).run(None, {block.input_name: value})[0]
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)


def test_resnet20_basic_blocks():
    model = _load_shared("resnet20_cifar10.onnx")
    blocks = partition_blocks(model)
    print(f"resnet20: {len(blocks)} blocks {[b.kind for b in blocks]}")
    _check_partition(model, blocks)
    _layers_once(model, blocks)
    assert [b.kind for b in blocks] == ["chain"] + ["residual"] * 9 + ["chain"]
    ops = {node.name: node.op_type for node in model.graph.node}
    assert [ops[name] for name in blocks[0].node_names] == ["Conv", "Relu"]
    assert [ops[name] for name in blocks[-1].node_names] == ["GlobalAveragePool", "Flatten", "Gemm"]
    for block in blocks[1:-1]:
        assert len(block.layer_names) == 2
        assert [ops[name] for name in block.node_names].count("Add") == 1
        assert ops[block.node_names[-1]] == "Relu"  # the ReLU after the Add closes the block
    # option-A shortcuts (Slice, Slice, Pad) sit inside the two downsampling blocks
    shortcut_blocks = sorted({b.index for b in blocks for name in b.node_names if ops[name] in ("Slice", "Pad")})
    assert shortcut_blocks == [4, 7]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    _run_block_by_block(model, blocks, x)


def test_mobilenet_v2_inverted_residuals():
    model = _load_shared("mobilenet_v2_1.0_224.onnx")
    blocks = partition_blocks(model)
    kinds = [b.kind for b in blocks]
    print(f"mobilenet_v2: {len(blocks)} blocks, {kinds.count('residual')} residual, {kinds.count('chain')} chain")
    _check_partition(model, blocks)
    _layers_once(model, blocks)
    residual = [b for b in blocks if b.kind == "residual"]
    assert len(residual) == 10
    assert all(len(b.layer_names) == 3 for b in residual)
    assert all(1 <= len(b.layer_names) <= 3 for b in blocks if b.kind == "chain")
    assert len(blocks) == 18


def test_efficientnet_lite0_mbconv():
    model = _load_shared("efficientnet_lite0.onnx")
    blocks = partition_blocks(model)
    kinds = [b.kind for b in blocks]
    print(f"efficientnet_lite0: {len(blocks)} blocks, {kinds.count('residual')} residual, {kinds.count('chain')} chain")
    _check_partition(model, blocks)
    _layers_once(model, blocks)
    assert kinds.count("residual") == 9
    assert all(len(b.layer_names) == 3 for b in blocks if b.kind == "residual")
    assert len(blocks) == 17


def _conv(name: str, x: str, c_in: int, c_out: int, k: int, rng: np.random.Generator) -> tuple:
    weight = numpy_helper.from_array(rng.standard_normal((c_out, c_in, k, k)).astype(np.float32) * 0.3, f"{name}.w")
    node = helper.make_node("Conv", [x, weight.name], [name], name=name, pads=[k // 2] * 4)
    return node, weight


def _model(nodes: list, weights: list, c_in: int, output: str, c_out: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 8, 8])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, c_out, 8, 8])],
        initializer=weights,
    )
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def _inception_model() -> onnx.ModelProto:
    """stem conv -> relu -> {1x1 conv, 3x3 conv} -> Concat -> conv."""
    rng = np.random.default_rng(1)
    stem, w0 = _conv("stem", "x", 3, 4, 3, rng)
    relu = helper.make_node("Relu", ["stem"], ["r"], name="relu")
    a, wa = _conv("a", "r", 4, 2, 1, rng)
    b, wb = _conv("b", "r", 4, 3, 3, rng)
    cat = helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1)
    c, wc = _conv("c", "cat", 5, 2, 3, rng)
    return _model([stem, relu, a, b, cat, c], [w0, wa, wb, wc], 3, "c", 2)


def test_concat_branches_form_one_block():
    model = _inception_model()
    blocks = partition_blocks(model)
    _check_partition(model, blocks)
    assert [(b.kind, b.node_names, b.input_name, b.output_name) for b in blocks] == [
        ("chain", ["stem", "relu"], "x", "r"),
        ("branch", ["a", "b", "cat"], "r", "cat"),
        ("chain", ["c"], "cat", "c"),
    ]
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8), dtype=np.float32)
    _run_block_by_block(model, blocks, x)


def test_node_order_in_file_does_not_matter():
    model = _inception_model()
    expected = [(b.kind, b.node_names) for b in partition_blocks(model)]
    nodes = list(model.graph.node)
    random.Random(3).shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    assert [(b.kind, b.node_names) for b in partition_blocks(model)] == expected


def test_tensor_reused_across_joins_merges_into_one_block(caplog):
    """DenseNet-style: x1 feeds both Concats, so the first Concat cannot close a block."""
    rng = np.random.default_rng(4)
    stem, w0 = _conv("stem", "x", 3, 2, 3, rng)
    c1, w1 = _conv("c1", "stem", 2, 2, 3, rng)
    cat1 = helper.make_node("Concat", ["stem", "c1"], ["cat1"], name="cat1", axis=1)
    c2, w2 = _conv("c2", "cat1", 4, 2, 3, rng)
    cat2 = helper.make_node("Concat", ["stem", "c1", "c2"], ["cat2"], name="cat2", axis=1)
    c3, w3 = _conv("c3", "cat2", 6, 2, 1, rng)
    model = _model([stem, c1, cat1, c2, cat2, c3], [w0, w1, w2, w3], 3, "c3", 2)
    with caplog.at_level(logging.WARNING, logger="aquant_onnx.graph.partition"):
        blocks = partition_blocks(model)
    _check_partition(model, blocks)
    assert [(b.kind, b.layer_names) for b in blocks] == [
        ("chain", ["stem"]),
        ("branch", ["c1", "c2"]),
        ("chain", ["c3"]),
    ]
    assert len(caplog.records) == 1 and "'c1'" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("max_chain", "sizes"), [(3, [3, 3, 1]), (2, [2, 2, 2, 1]), (1, [1] * 7)])
def test_plain_chain_is_cut_every_max_chain_layers(max_chain, sizes):
    rng = np.random.default_rng(5)
    nodes, weights, x = [], [], "x"
    for k in range(7):
        conv, weight = _conv(f"conv{k}", x, 2, 2, 3, rng)
        relu = helper.make_node("Relu", [conv.output[0]], [f"relu{k}"], name=f"relu{k}")
        nodes += [conv, relu]
        weights.append(weight)
        x = f"relu{k}"
    model = _model(nodes, weights, 2, x, 2)
    blocks = partition_blocks(model, max_chain=max_chain)
    _check_partition(model, blocks)
    assert [len(b.layer_names) for b in blocks] == sizes
    assert all(b.node_names[-1].startswith("relu") for b in blocks)  # activations stay with their conv


def test_explicit_quantizable_set_is_respected():
    model = _inception_model()
    blocks = partition_blocks(model, quantizable={"a", "b", "c"})
    assert [b.layer_names for b in blocks] == [["a", "b"], ["c"]]  # stem/relu become the first block's prefix
    assert blocks[0].node_names == ["stem", "relu", "a", "b", "cat"]


def test_format_blocks_lists_every_block():
    text = format_blocks(partition_blocks(_inception_model()))
    lines = text.splitlines()
    assert lines[0].split() == ["block", "kind", "nodes", "layers", "input", "->", "output"]
    assert len(lines) == 4
    assert lines[2].split() == ["1", "branch", "3", "a,", "b", "r", "->", "cat"]


def test_unnamed_nodes_are_refused():
    model = _inception_model()
    model.graph.node[2].name = ""
    with pytest.raises(UnsupportedModelError, match="#2"):
        partition_blocks(model)
