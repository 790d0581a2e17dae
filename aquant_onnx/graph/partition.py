"""Block partition for block reconstruction (DESIGN §2 "Block reconstruction").

Blocks are found on the graph, never declared per model:

- a residual Add closes a block holding everything back to the branch point where its
  two inputs diverged ("residual"); any other join of branches, e.g. an Inception-style
  Concat, does the same ("branch");
- elsewhere, runs of up to ``max_chain`` quantizable layers with the nodes between them
  form "chain" blocks.

Every block is single-entry/single-exit, so block k can be run from one cached tensor:

    block_k(input_k) = output_k,    input_{k+1} = output_k.

Method. Take the run-time (non-constant) nodes in topological order. A boundary between
two consecutive nodes is a *cut* when exactly one tensor is produced before it and read
after it; that tensor is then the only link between the two sides. The graph splits at
cuts into *atoms*: a single node on a plain path, or a whole fan-out/fan-in region from
its branch point (the cut before it) to its join (the cut after it). A tensor read far
away keeps every boundary it spans from being a cut, so such a region simply becomes one
larger atom (logged as a warning): the partition never fails. Atoms with layers become or
extend blocks; atoms without layers (activations, pooling, reshapes, the tail) attach to
a neighbouring block; constant subgraphs go with their first reader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx

from aquant_onnx.errors import ConfigError, UnsupportedModelError
from aquant_onnx.graph.layers import is_quantizable
from aquant_onnx.graph.topology import (
    constant_tensor_names,
    consumers,
    dynamic_graph_inputs,
    dynamic_inputs,
    initializer_names,
    producers,
    topological_order,
)

logger = logging.getLogger(__name__)

# Element-wise ops that stay with the block before them (the ReLU after a residual Add),
# where a layer-free pooling/reshape instead opens the next block (GAP/Flatten before a Gemm).
_POINTWISE_OPS = frozenset(
    {
        "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
        "Elu", "Selu", "Celu", "Gelu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Erf",
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Max", "Min", "Neg", "Abs", "Exp",
        "Identity", "Dropout", "BatchNormalization",
    }
)  # fmt: skip
_RESIDUAL_JOINS = frozenset({"Add", "Sum"})


@dataclass
class Block:
    """One reconstruction unit: run ``node_names`` on ``input_name`` to get ``output_name``."""

    index: int
    node_names: list[str]  # topological order
    layer_names: list[str]  # the quantizable nodes among them, same order
    input_name: str  # the only run-time tensor read from outside the block
    output_name: str  # the only tensor read after the block
    kind: str  # "residual" | "branch" | "chain"


@dataclass
class _Atom:
    """Nodes between two consecutive cuts."""

    nodes: list[int]  # graph.node indices, topological
    entry: str
    exit: str
    layer_count: int
    join_op: str | None  # op of the join closing a fan-out region, None on a plain path
    pointwise: bool


@dataclass
class _Draft:
    kind: str
    atoms: list[_Atom] = field(default_factory=list)

    @property
    def layer_count(self) -> int:
        return sum(atom.layer_count for atom in self.atoms)


class _View:
    """The graph plus the lookups every step needs."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.order = topological_order(graph)
        self.position = {index: pos for pos, index in enumerate(self.order)}
        self.constants = constant_tensor_names(graph, self.order)
        self.written_by = producers(graph)
        self.read_by = consumers(graph)
        self.dynamic_nodes = [
            index for index in self.order if any(name not in self.constants for name in graph.node[index].output)
        ]

    def inputs_of(self, index: int) -> list[str]:
        return dynamic_inputs(self.graph.node[index], self.constants)


def partition_blocks(
    model: onnx.ModelProto, quantizable: set[str] | None = None, max_chain: int = 3
) -> list[Block]:
    """Split the graph into single-entry/single-exit blocks, in topological order.

    Args:
        model: a model with one run-time input, one output and unique node names.
        quantizable: names of the layer nodes; default: ``layers.is_quantizable`` per node.
        max_chain: most layers in a chain block (residual/branch blocks take what they hold).

    Returns:
        Blocks covering every node exactly once; block k+1's input is block k's output.
    """
    if max_chain < 1:
        raise ConfigError(f"max_chain is {max_chain}; a chain block needs at least 1 layer, pass max_chain >= 1")
    graph = model.graph
    source, sink = _single_input_output(graph)
    _check_node_names(graph)
    if quantizable is None:
        weights = initializer_names(graph)
        quantizable = {node.name for node in graph.node if is_quantizable(node, weights)}
    view = _View(graph)
    atoms = _split_atoms(view, source, sink, quantizable)
    drafts = _group_atoms(atoms, max_chain) if atoms else []
    return _assemble(view, drafts, quantizable, source, sink)


def _single_input_output(graph: onnx.GraphProto) -> tuple[str, str]:
    inputs = dynamic_graph_inputs(graph)
    outputs = [value.name for value in graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(
            f"block partition needs a model with one input and one output, graph {graph.name!r} has "
            f"inputs {inputs} and outputs {outputs}; export a single-input single-output model"
        )
    return inputs[0], outputs[0]


def _check_node_names(graph: onnx.GraphProto) -> None:
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            raise UnsupportedModelError(
                f"node #{index} ({node.op_type}) has a missing or repeated name {node.name!r}; "
                "give every node a unique name before partitioning into blocks"
            )
        seen.add(node.name)


def _cuts(view: _View, nodes: list[int], source: str, sink: str) -> list[tuple[int, str]]:
    """Boundaries of ``nodes`` (k = after nodes[k], -1 = before the first) crossed by exactly
    one tensor, with that tensor. ``source`` is live from the start, ``sink`` to the end;
    readers outside ``nodes`` are ignored."""
    local = {index: k for k, index in enumerate(nodes)}
    count = [0] * (len(nodes) + 2)
    tensor_sum = [0] * (len(nodes) + 2)  # sum of ids of the crossing tensors, exact when count == 1
    names: list[str] = []
    live = [(source, -1)] + [
        (name, k) for k, index in enumerate(nodes) for name in view.graph.node[index].output
        if name and name not in view.constants
    ]  # fmt: skip
    for name, start in live:
        readers = [local[reader] for reader in view.read_by.get(name, ()) if reader in local]
        end = len(nodes) if name == sink else max(readers, default=start)
        if end <= start:
            continue
        names.append(name)
        # boundary b sits at slot b + 1; the tensor crosses boundaries start .. end - 1
        count[start + 1] += 1
        count[end + 1] -= 1
        tensor_sum[start + 1] += len(names) - 1
        tensor_sum[end + 1] -= len(names) - 1
    cuts = []
    crossing = tensor_id = 0
    for boundary in range(-1, len(nodes)):
        crossing += count[boundary + 1]
        tensor_id += tensor_sum[boundary + 1]
        if crossing == 1:
            cuts.append((boundary, names[tensor_id]))
    return cuts


def _split_atoms(view: _View, source: str, sink: str, quantizable: set[str]) -> list[_Atom]:
    nodes = view.dynamic_nodes
    if not nodes:
        return []
    cuts = _cuts(view, nodes, source, sink)
    if not cuts or cuts[0][0] != -1:
        cuts.insert(0, (-1, source))
    if cuts[-1][0] != len(nodes) - 1:
        cuts.append((len(nodes) - 1, sink))
    atoms = []
    for (start, entry), (end, exit_) in zip(cuts, cuts[1:]):
        members = nodes[start + 1 : end + 1]
        closing = view.written_by.get(exit_)
        joined = len(members) > 1 and closing in members and len(view.inputs_of(closing)) >= 2
        atom = _Atom(
            nodes=members,
            entry=entry,
            exit=exit_,
            layer_count=sum(view.graph.node[index].name in quantizable for index in members),
            join_op=view.graph.node[closing].op_type if joined else None,
            pointwise=all(view.graph.node[index].op_type in _POINTWISE_OPS for index in members),
        )
        if atom.join_op is not None:
            _warn_if_merged(view, atom, closing)
        atoms.append(atom)
    return atoms


def _warn_if_merged(view: _View, atom: _Atom, closing: int) -> None:
    """Warn when a join inside the atom could not close its own block because a tensor of
    its branch region is read after the join (DenseNet-style reuse)."""
    members = set(atom.nodes)
    for index in atom.nodes:
        node = view.graph.node[index]
        if index == closing or len(view.inputs_of(index)) < 2:
            continue
        ancestors = _ancestors(view, index, members)
        inner_cuts = [cut for cut in _cuts(view, ancestors, atom.entry, node.output[0]) if cut[0] < len(ancestors) - 1]
        region = ancestors[inner_cuts[-1][0] + 1 :] if inner_cuts else ancestors
        region_set = set(region)
        leaks = [
            name
            for inner in region
            if inner != index
            for name in view.graph.node[inner].output
            if any(reader not in region_set for reader in view.read_by.get(name, ()))
        ]
        if leaks:
            logger.warning(
                "blocks: %d nodes from %r to %r form one merged block because tensor %r is read "
                "beyond the join %r that would have closed a smaller block",
                len(atom.nodes), atom.entry, atom.exit, leaks[0], node.name,
            )  # fmt: skip
            return


def _ancestors(view: _View, index: int, members: set[int]) -> list[int]:
    """``index`` and the nodes in ``members`` it depends on, topological."""
    found = {index}
    stack = [index]
    while stack:
        for name in view.inputs_of(stack.pop()):
            writer = view.written_by.get(name)
            if writer in members and writer not in found:
                found.add(writer)
                stack.append(writer)
    return sorted(found, key=view.position.__getitem__)


def _group_atoms(atoms: list[_Atom], max_chain: int) -> list[_Draft]:
    """Atoms -> blocks. A layer-free atom joins the previous block when that is an open
    chain or when it is element-wise right after it; otherwise it waits for the next block
    (or, at the end, becomes the tail of the last one)."""
    drafts: list[_Draft] = []
    pending: list[_Atom] = []
    for atom in atoms:
        last = drafts[-1] if drafts else None
        if atom.layer_count == 0:
            open_chain = last is not None and last.kind == "chain" and last.layer_count < max_chain
            if last is not None and not pending and (open_chain or atom.pointwise):
                last.atoms.append(atom)
            else:
                pending.append(atom)
            continue
        fits_chain = (
            atom.join_op is None
            and last is not None
            and last.kind == "chain"
            and last.layer_count + atom.layer_count <= max_chain
        )
        if fits_chain:
            last.atoms.extend([*pending, atom])
        else:
            kind = "chain" if atom.join_op is None else "residual" if atom.join_op in _RESIDUAL_JOINS else "branch"
            drafts.append(_Draft(kind, [*pending, atom]))
        pending = []
    if not drafts:
        return [_Draft("chain", pending)]
    drafts[-1].atoms.extend(pending)
    return drafts


def _assemble(view: _View, drafts: list[_Draft], quantizable: set[str], source: str, sink: str) -> list[Block]:
    block_of = {index: k for k, draft in enumerate(drafts) for atom in draft.atoms for index in atom.nodes}
    # Constant subgraphs go with their earliest reader (reverse order: readers are placed first).
    previous_dynamic = 0
    fallback: dict[int, int] = {}
    for index in view.order:
        previous_dynamic = block_of.get(index, previous_dynamic)
        fallback[index] = previous_dynamic
    for index in reversed(view.order):
        if index in block_of:
            continue
        readers = [reader for name in view.graph.node[index].output for reader in view.read_by.get(name, ())]
        block_of[index] = min((block_of[reader] for reader in readers), default=fallback[index])
    if not drafts:
        drafts = [_Draft("chain")]
    members: list[list[int]] = [[] for _ in drafts]
    for index in view.order:
        members[block_of[index]].append(index)
    blocks = []
    for k, (draft, nodes) in enumerate(zip(drafts, members)):
        names = [view.graph.node[index].name for index in nodes]
        blocks.append(
            Block(
                index=k,
                node_names=names,
                layer_names=[name for name in names if name in quantizable],
                input_name=draft.atoms[0].entry if draft.atoms else source,
                output_name=draft.atoms[-1].exit if draft.atoms else sink,
                kind=draft.kind,
            )
        )
    return blocks


def format_blocks(blocks: list[Block]) -> str:
    """A text table for ``aquant-onnx inspect --blocks``: index, kind, layers, input -> output."""
    rows = [("block", "kind", "nodes", "layers", "input -> output")]
    for block in blocks:
        rows.append(
            (
                str(block.index),
                block.kind,
                str(len(block.node_names)),
                ", ".join(block.layer_names) or "-",
                f"{block.input_name} -> {block.output_name}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
