"""Which nodes aquant-onnx quantizes (DESIGN §2): Conv (grouped/depthwise too), ConvTranspose,
Gemm with a constant B, and MatMul with one constant operand."""

from __future__ import annotations

from dataclasses import dataclass

import onnx


@dataclass(frozen=True)
class LayerSpec:
    """One quantizable node, as found on the graph."""

    name: str  # ONNX node name: the key of everything learned for this layer
    op_type: str
    input_name: str  # the activation tensor quantized at the layer's input
    weight_name: str  # the constant operand
    output_name: str
    group: int = 1
    kernel_shape: tuple[int, ...] = ()
    in_channels: int = 0  # C of the input activation (conv) or K (Gemm/MatMul)

    @property
    def is_depthwise(self) -> bool:
        return self.op_type == "Conv" and self.group > 1 and self.group == self.in_channels

    @property
    def is_spatial_conv(self) -> bool:
        """A Conv whose kernel covers more than one pixel (AQuant's im2col case, k > 1)."""
        return self.op_type == "Conv" and any(k > 1 for k in self.kernel_shape)


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def constant_names(model: onnx.ModelProto) -> set[str]:
    """Names of the initializers (``load_model`` turns Constant nodes into initializers)."""
    return {t.name for t in model.graph.initializer}


def is_quantizable(node: onnx.NodeProto, constants: set[str]) -> bool:
    """A node whose weight operand is in ``constants`` (initializer names) and whose
    activation is not."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return len(node.input) > 1 and node.input[1] in constants and node.input[0] not in constants
    if node.op_type == "Gemm":
        return node.input[1] in constants and node.input[0] not in constants
    if node.op_type == "MatMul":
        return (node.input[0] in constants) != (node.input[1] in constants)
    return False


def find_quantizable_layers(model: onnx.ModelProto) -> list[LayerSpec]:
    """Quantizable layers in graph (topological) order. Expects ``load_model`` output."""
    constants = constant_names(model)
    shapes = {vi.name: vi.type.tensor_type.shape for vi in (*model.graph.value_info, *model.graph.input)}
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if not is_quantizable(node, constants):
            continue
        if node.op_type == "MatMul" and node.input[0] in constants:
            activation, weight = node.input[1], node.input[0]
        else:
            activation, weight = node.input[0], node.input[1]
        weight_shape = weights.get(weight, ())
        kernel = tuple(_attr(node, "kernel_shape", weight_shape[2:])) if node.op_type.startswith("Conv") else ()
        group = int(_attr(node, "group", 1))
        in_channels = 0
        shape = shapes.get(activation)
        if shape is not None and len(shape.dim) >= 2:
            axis = -1 if node.op_type == "MatMul" else 1
            dim = shape.dim[axis]
            in_channels = dim.dim_value if dim.HasField("dim_value") else 0
        layers.append(
            LayerSpec(
                name=node.name,
                op_type=node.op_type,
                input_name=activation,
                weight_name=weight,
                output_name=node.output[0],
                group=group,
                kernel_shape=tuple(int(k) for k in kernel),
                in_channels=in_channels,
            )
        )
    return layers


def has_depthwise_conv(layers: list[LayerSpec]) -> bool:
    return any(layer.is_depthwise for layer in layers)
