"""INT8 recipes in one place: which recipe a graph gets and which of its nodes stay in float.

A graph with attention gets the transformer recipe (weights-first: dynamic INT8 MatMuls on ONNX Runtime,
SmoothQuant on OpenVINO, dynamic range on TFLite, dynamic XNNPACK on ExecuTorch); anything else the cnn
recipe (static activation ranges calibrated on every op). Static ranges collapse on attention (cosine
0.34 on MiniLM) where weights-first recipes keep 0.99+. The int8_recipe option ("auto", "cnn",
"transformer") overrides the choice; a target declares the recipes it can apply (Converter.int8_recipes).
Whatever the recipe, the element-wise output tail stays in float (output_tail)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.options import Option
from ..core.records import Quantization

RECIPES = ("auto", "cnn", "transformer")
RECIPE_OPTION = Option("int8_recipe", "str", "auto", "The INT8 recipe: cnn (static, calibrated on every op), "
                       "transformer (weights-first: dynamic MatMul INT8 on ONNX, SmoothQuant on OpenVINO, dynamic "
                       "range on TFLite), or auto: transformer where the graph has attention.", choices=RECIPES)

WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
#: Fused attention ops some exporters and optimizers emit.
ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}


def activation_matmuls(model: Any) -> list[str]:
    """MatMul nodes that multiply two activations (attention's Q.K^T and probs.V), not an input by weights."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not constants & set(n.input)]


def batched_weight_matmuls(model: Any) -> list[str]:
    """MatMul nodes whose constant operand has a rank other than 2 (a batch of weights), which ONNX
    Runtime's dynamic int8 MatMul cannot take."""
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul"
            and any(ranks.get(i, 2) != 2 for i in n.input if i in ranks)]


def graph_kind(model: Any) -> str:
    """"transformer" for a graph with attention (a Softmax and an activation-by-activation MatMul, or a
    fused attention op), else "cnn". It decides the INT8 recipe: static activation ranges calibrated on
    every op collapse on attention (cosine 0.34 on MiniLM), weight-first recipes keep it (0.99+)."""
    ops = {n.op_type for n in model.graph.node}
    if ops & ATTENTION_OPS or ("Softmax" in ops and activation_matmuls(model)):
        return "transformer"
    return "cnn"


def recorded(quant: Quantization, recipe: str) -> Quantization:
    """The record with the recipe that made the artifact (details["recipe"]: "cnn" or "transformer"), the
    same key on every INT8 artifact whichever converter made it."""
    quant.details = {"recipe": recipe, **quant.details}
    return quant


def choose_recipe(asked: str, kind: Callable[[], str]) -> str:
    """The INT8 recipe to use: the one asked for, else (auto) the graph's kind, found only when needed."""
    return kind() if asked == "auto" else asked


def int8_recipe(model: Any, options: dict[str, Any]) -> str:
    """The INT8 recipe for an ONNX model: the int8_recipe option, or its graph's kind."""
    return choose_recipe(options["int8_recipe"], lambda: graph_kind(model))


def output_tail(model: Any) -> list[str]:
    """Nodes after the last weighted layer on every path to the outputs: the cheap element-wise tail
    (a detector's box decoding, sigmoid, concat of pixel boxes with probabilities). One int8 scale across
    boxes in pixels and scores in [0, 1] would round every score to 0 or 1, so the tail stays in float."""
    nodes = list(model.graph.node)
    tail = tail_nodes(nodes, [list(n.input) for n in nodes], [list(n.output) for n in nodes],
                      [n.op_type in WEIGHTED_OPS for n in nodes])
    return [nodes[i].name for i in tail]


def tail_nodes(nodes: list[Any], inputs: list[list[Any]], outputs: list[list[Any]], weighted: list[bool]) -> list[int]:
    """Indices of the unweighted nodes from which no weighted node can be reached, for a graph in
    topological order (ONNX nodes, TFLite ops): walked backwards once, so no recursion limit to meet."""
    consumers: dict[Any, list[int]] = {}
    for i, names in enumerate(inputs):
        for name in names:
            consumers.setdefault(name, []).append(i)  # tensor -> the nodes that read it
    reaches = [False] * len(nodes)
    for i in reversed(range(len(nodes))):
        reaches[i] = any(weighted[c] or reaches[c] for name in outputs[i] for c in consumers.get(name, []))
    return [i for i in range(len(nodes)) if not weighted[i] and not reaches[i]]


def fx_graph_kind(graph_module: Any) -> str:
    """graph_kind on an exported torch FX graph (ExecuTorch's route has no ONNX): "transformer" for a
    fused attention op (transformers' default sdpa) or a softmax and a matmul of two activations, else "cnn"."""
    nodes = [n for n in graph_module.graph.nodes if n.op == "call_function"]
    if any("scaled_dot_product_attention" in str(n.target) for n in nodes):
        return "transformer"
    softmax = any("softmax" in str(n.target) for n in nodes)
    attention = softmax and any(any(k in str(n.target) for k in ("matmul", "bmm")) and
                                all(i.op == "call_function" for i in n.all_input_nodes) for n in nodes)
    return "transformer" if attention else "cnn"
