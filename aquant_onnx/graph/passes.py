"""In-place passes on an ONNX ModelProto. Each returns the model so calls chain."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique, non-empty name; existing unique names are kept as they are.

    Unnamed or duplicated nodes get ``<op_type>_<index>`` (index in graph order), so learned
    parameters can always be keyed by node name.
    """
    counts = Counter(node.name for node in model.graph.node if node.name)
    taken = set(counts)
    for index, node in enumerate(model.graph.node):
        if node.name and counts[node.name] == 1:
            continue
        base = f"{node.op_type}_{index}"
        candidate, suffix = base, 1
        while candidate in taken:
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        if node.name:
            logger.warning("renaming duplicated node name '%s' to '%s'", node.name, candidate)
        node.name = candidate
        taken.add(candidate)
    return model


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace tensor-valued Constant nodes by initializers of the same name, so weights given
    as Constants are found as layer weights like any other."""
    graph = model.graph
    constants = [n for n in graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"]
    for node in constants:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
    return model


def _consumers(model: onnx.ModelProto) -> Counter:
    uses = Counter(name for node in model.graph.node for name in node.input)
    uses.update(output.name for output in model.graph.output)
    return uses


def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold inference BatchNormalization into the Conv/Gemm that feeds it (DESIGN §2).

    ``W' = W · γ/√(σ² + ε)`` per output channel, ``b' = (b − μ)·γ/√(σ² + ε) + β``. Applies
    when the Conv/Gemm output feeds only the BatchNormalization and all weights are
    initializers; the BN output name is kept so downstream names do not change.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    uses = _consumers(model)
    folded = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) > 1 and any(bn.output[1:]):
            continue
        layer = producers.get(bn.input[0])
        if layer is None or layer.op_type not in ("Conv", "Gemm") or uses[bn.input[0]] != 1:
            continue
        if not all(name in inits for name in bn.input[1:5]) or layer.input[1] not in inits:
            continue
        if layer.op_type == "Gemm" and any(a.name == "transB" and a.i == 0 for a in layer.attribute):
            continue  # weight is [K, N]; fold only the common transB=1 layout
        if uses[layer.input[1]] != 1:
            continue  # shared weight: folding would change the other user
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        factor = gamma / np.sqrt(var + eps)
        weight_init = inits[layer.input[1]]
        weight = numpy_helper.to_array(weight_init).astype(np.float64)
        weight = weight * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
        has_bias = len(layer.input) > 2 and layer.input[2]
        bias = numpy_helper.to_array(inits[layer.input[2]]).astype(np.float64) if has_bias else np.zeros_like(mean)
        bias = (bias - mean) * factor + beta
        weight_init.CopyFrom(numpy_helper.from_array(weight.astype(np.float32), weight_init.name))
        bias_name = layer.input[2] if has_bias else f"{layer.name}.bias"
        bias_tensor = numpy_helper.from_array(bias.astype(np.float32), bias_name)
        if has_bias:
            inits[bias_name].CopyFrom(bias_tensor)
        else:
            graph.initializer.append(bias_tensor)
            while len(layer.input) < 3:
                layer.input.append("")
            layer.input[2] = bias_name
        layer.output[0] = bn.output[0]
        folded.append(bn)
    for bn in folded:
        graph.node.remove(bn)
    if folded:
        logger.info("folded %d BatchNormalization nodes", len(folded))
        _drop_unused_initializers(model)
    return model


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used.update(i.name for i in model.graph.input)
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
