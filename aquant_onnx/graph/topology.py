"""Read-only helpers over an ONNX graph: who produces and consumes each tensor, a stable
topological order, which tensors are constant, and the default quantizable-layer predicate.

Nodes are referred to by their index in ``graph.node``; empty input names (omitted optional
inputs) are skipped everywhere.
"""

from __future__ import annotations

import heapq

import onnx

from aquant_onnx.errors import UnsupportedModelError


def producers(graph: onnx.GraphProto) -> dict[str, int]:
    """Tensor name -> index of the node that writes it."""
    return {name: index for index, node in enumerate(graph.node) for name in node.output if name}


def consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> indices of the nodes that read it (each node once, in graph order)."""
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in dict.fromkeys(node.input):
            if name:
                readers.setdefault(name, []).append(index)
    return readers


def topological_order(graph: onnx.GraphProto) -> list[int]:
    """Node indices in an order where every node comes after the producers of its inputs.

    Kahn's algorithm that always picks the lowest file index among the ready nodes, so a
    graph that is already sorted keeps its file order exactly.
    """
    written_by = producers(graph)
    read_by = consumers(graph)
    missing = [0] * len(graph.node)
    for index, node in enumerate(graph.node):
        missing[index] = len({name for name in node.input if name in written_by})
    ready = [index for index, count in enumerate(missing) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for name in graph.node[index].output:
            for reader in read_by.get(name, ()):
                missing[reader] -= 1
                if missing[reader] == 0:
                    heapq.heappush(ready, reader)
    if len(order) != len(graph.node):
        stuck = next(node for index, node in enumerate(graph.node) if missing[index] > 0)
        raise UnsupportedModelError(
            f"node {stuck.name or stuck.op_type!r} is part of a cycle or reads a tensor nobody "
            "produces; fix the graph so it is a DAG (onnx.checker.check_model shows where)"
        )
    return order


def initializer_names(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's initializers (weights, biases, shape constants)."""
    return {tensor.name for tensor in graph.initializer}


def constant_tensor_names(graph: onnx.GraphProto, order: list[int]) -> set[str]:
    """Tensors known before run time: initializers, and every output of a node whose inputs
    are all constant (Constant nodes included, as they have no inputs)."""
    constants = initializer_names(graph)
    for index in order:
        node = graph.node[index]
        if all(name in constants for name in node.input if name):
            constants.update(name for name in node.output if name)
    return constants


def dynamic_graph_inputs(graph: onnx.GraphProto) -> list[str]:
    """Graph inputs fed at run time (older IRs also list initializers as inputs)."""
    constants = initializer_names(graph)
    return [value.name for value in graph.input if value.name not in constants]


def dynamic_inputs(node: onnx.NodeProto, constants: set[str]) -> list[str]:
    """The node's distinct run-time input tensors, in input order."""
    return [name for name in dict.fromkeys(node.input) if name and name not in constants]
