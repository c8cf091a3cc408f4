"""Integer and boolean arithmetic of an ONNX graph rewritten as float arithmetic, for runtimes whose tensors
are float only (NCNN's Mat).

Why: a transformer's attention mask reaches the graph as int64 and goes through Cast, comparisons, And/Not
and Where before it is added to the attention scores; ncnn has no layer for any of them (pnnx writes them
under their torch names and ncnn refuses the file). At one fixed shape, onnxslim folds everything that
depends only on sizes (causal triangles, position ids, relative-position buckets); what is left depends on
the data, and on 0/1 masks and small integers it has exact float equivalents:

- Cast between int, bool and float: Identity (to bool: min(|x|, 1), x integer-valued);
- And: a*b; Or: max(a, b); Not: 1-x; Xor: |a-b|;
- Equal: 1 - min(|a-b|, 1); a<b: clip(b-a, 0, 1); a<=b: clip(b-a+1, 0, 1) (integer operands);
- Where(c, x, y): c*x + (1-c)*y (exact for c in {0, 1}), with mask fills (-+inf, finfo.min) made -+1e4 so
  that no inf meets a zero and fp16 holds them (softmax gives exp(-1e4) = 0 either way, as BERT's original
  -10000 did);
- Where(IsNaN(p), _, p), the guard for fully masked rows: p (with finite fills no row is all -inf);
- Gather by a constant arange, GatherND by every index in order (transformers' vmap mask, from the
  TorchScript and the torch.export exporters): a Reshape;
- CumSum along the last axis (RoBERTa's position ids): a MatMul by an upper-triangular matrix of ones;
- a lookup in a constant table by computed positions: a one-hot MatMul (a table of one value: that value).

Token ids stay the integer input of their embedding Gathers (pnnx makes each an ncnn Embed, which reads
int32 ids); any other use of them reads their float value from a one-column table by the same ids. Float
comparisons and other integer ops (division, ...) are left as they are or made float as they stand; the
caller checks the rewritten graph against the original (`check_equivalent`) before using it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConversionError, first_line

log = logging.getLogger(__name__)

MASK_FILL = 1.0e4
HUGE = 1.0e30
_FLOAT = 1  # onnx.TensorProto.FLOAT
_INT_TYPES = frozenset({2, 3, 4, 5, 6, 7, 9, 12, 13})  # uint8..int64, bool, uint32, uint64
_COMPARISONS = {"Less": ("b", "a", 0.0), "Greater": ("a", "b", 0.0),
                "LessOrEqual": ("b", "a", 1.0), "GreaterOrEqual": ("a", "b", 1.0)}
_HANDLERS = {"Cast": "_cast", "And": "_and", "Or": "_or", "Xor": "_xor", "Not": "_not", "Equal": "_equal",
             "Where": "_where", "Gather": "_gather", "GatherElements": "_gather", "CumSum": "_cumsum",
             **{op: "_comparison" for op in _COMPARISONS}}
_BOOLEAN_OPS = frozenset({"And", "Or", "Xor", "Not", "Equal", "Where", *_COMPARISONS})
#: Inputs that are shapes, axes or indices, not data: they keep their integer type.
_SHAPE_INPUTS = {"Reshape": {1}, "Unsqueeze": {1}, "Squeeze": {1}, "Slice": {1, 2, 3, 4}, "Expand": {1},
                 "Tile": {1}, "CumSum": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "ReduceMin": {1},
                 "ReduceMean": {1}, "ReduceProd": {1}, "Pad": {1, 3}, "Gather": {1}, "GatherElements": {1},
                 "ConstantOfShape": {0}, "Range": {0, 1, 2}, "TopK": {1}, "Split": {1}, "Resize": {1, 2, 3},
                 "OneHot": {1}}


def token_inputs(model: Any) -> list[str]:
    """The integer inputs that index an embedding (a Gather on a constant table): pnnx makes each such
    Gather an ncnn Embed, which reads its ids as int32."""
    consts = {i.name for i in model.graph.initializer}
    integer = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in _INT_TYPES}
    return [i.name for i in model.graph.input if i.name in integer and any(
        n.op_type == "Gather" and n.input[0] in consts and n.input[1] == i.name for n in model.graph.node)]


def to_float_arithmetic(model: Any) -> Any:
    """The model (an onnx.ModelProto at fixed shapes, constants folded) with its integer and boolean data
    made float. Token ids (token_inputs) stay integer and feed only embedding Gathers: any other use of
    them (RoBERTa's ids != padding) reads their float value from a table indexed by the ids instead."""
    ids = token_inputs(model)
    for name in ids:
        _ids_as_float_by_table(model, name)
    rewrite = _Rewrite(model, set(ids))
    rewrite.run()
    return rewrite.model


def float_inputs(model: Any) -> dict[str, str]:
    """{input name: dtype} of the rewritten model's inputs: what the artifact takes."""
    import onnx

    return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            for v in model.graph.input}


def check_equivalent(original: Path, rewritten: Path, feeds_list: list[dict[str, np.ndarray]],
                     tolerance: float = 1e-4) -> float:
    """The largest relative difference between the two graphs' outputs on ONNX Runtime over feeds_list;
    ConversionError past tolerance (the rewrite changed what the model computes)."""
    import onnxruntime as ort

    try:
        first = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
        second = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"])
        types = {i.name: i.type for i in second.get_inputs()}
        worst = 0.0
        for feeds in feeds_list:
            cast = {k: v.astype(np.float32) if types.get(k) == "tensor(float)" else v for k, v in feeds.items()}
            for w, g in zip(first.run(None, feeds), second.run(None, cast)):
                w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
                worst = max(worst, float(np.max(np.abs(w - g)) / max(float(np.max(np.abs(w))), 1e-6)))
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types: the rewrite left a type it cannot handle
        raise ConversionError(f"Rewriting the graph's integer arithmetic as float left a graph ONNX Runtime cannot "
                              f"run ({first_line(exc)}): an integer op this rewrite does not know. Choose another "
                              "format than ncnn.") from None
    if not np.isfinite(worst) or worst > tolerance:
        raise ConversionError(f"Rewriting the graph's integer mask arithmetic as float changed its outputs "
                              f"({worst:.2e} relative, tolerance {tolerance:.0e}): this model's integer ops are "
                              "not masks of 0/1. Choose another format than ncnn.")
    return worst


def _ids_as_float_by_table(model: Any, name: str) -> None:
    """Every use of the ids `name` but an embedding Gather takes Gather(arange(vocab) as float, ids) instead."""
    from onnx import helper, numpy_helper

    consts = {i.name: i for i in model.graph.initializer}
    embeddings = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in consts and n.input[1] == name]
    others = [n for n in model.graph.node if name in n.input and n not in embeddings]
    if not others:
        return
    vocab = max(int(consts[n.input[0]].dims[0]) for n in embeddings)
    table, values, axes = f"{name}_edgesdk_values", f"{name}_edgesdk_float", f"{name}_edgesdk_axes"
    # a table of one column: pnnx makes a 1-D table an Embed of width 0
    model.graph.initializer.extend([numpy_helper.from_array(np.arange(vocab, dtype=np.float32)[:, None], table),
                                    numpy_helper.from_array(np.array([-1], np.int64), axes)])
    for node in others:
        node.input[:] = [values if i == name else i for i in node.input]
    model.graph.node.insert(0, helper.make_node("Squeeze", [f"{values}_column", axes], [values]))
    model.graph.node.insert(0, helper.make_node("Gather", [table, name], [f"{values}_column"]))


def padded(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds with each 0/1 integer input (a mask) zero over the last quarter of its last axis: what
    padding looks like, so that a check covers the masked path too."""
    out = {}
    for name, array in feeds.items():
        out[name] = array
        if array.dtype.kind in "iub" and array.ndim and array.shape[-1] > 1 and set(np.unique(array)) <= {0, 1}:
            out[name] = array.copy()
            out[name][..., -max(array.shape[-1] // 4, 1):] = 0
    return out


def _inferred(model: Any) -> tuple[dict[str, int], dict[str, list[int | None]]]:
    """({tensor: ONNX element type}, {tensor: shape, None where unknown}) by ONNX's shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in values}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    return types, shapes


def _integer_data(model: Any, dtypes: dict[str, int], keep: set[str]) -> set[str]:
    """Integer/bool tensors computed from the non-`keep` inputs and the ids' float values: the data the
    rewrite makes float."""
    data = {i.name for i in model.graph.input if dtypes.get(i.name) in _INT_TYPES and i.name not in keep}
    data.update(f"{name}_edgesdk_float" for name in keep)
    floated = set(data)
    for node in model.graph.node:  # topological order
        shape_inputs = _SHAPE_INPUTS.get(node.op_type, set())
        if any(name in data for k, name in enumerate(node.input) if k not in shape_inputs):
            data.update(node.output)
            floated.update(o for o in node.output if dtypes.get(o) in _INT_TYPES)
    return floated


@dataclass
class _Rewrite:
    """One pass over the graph in order; `nodes` collects the rewritten graph."""

    model: Any
    ids: set[str]
    nodes: list[Any] = field(default_factory=list)
    count: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list[int | None]] = field(default_factory=dict)
    floated: set[str] = field(default_factory=set)
    consts: dict[str, Any] = field(default_factory=dict)
    producers: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        graph = self.model.graph
        self.dtypes, self.shapes = _inferred(self.model)
        self.floated = _integer_data(self.model, self.dtypes, self.ids)
        self.consts = {i.name: i for i in graph.initializer}
        self.producers = {o: n for n in graph.node for o in n.output}
        for node in graph.node:
            self._node(node)
        del graph.node[:]
        graph.node.extend(self.nodes)
        for value in graph.input:
            if value.name in self.floated:
                value.type.tensor_type.elem_type = _FLOAT
        for value in graph.output:
            if value.name in self.floated:
                value.type.tensor_type.elem_type = _FLOAT
        del graph.value_info[:]

    # one node ------------------------------------------------------------------------------------------
    def _node(self, node: Any) -> None:
        op, ins, outs = node.op_type, list(node.input), list(node.output)
        if op == "Where" and self._nan_guard(ins):
            self._emit("Identity", [ins[2]], outs)
            return
        if op == "Gather" and self._identity_gather(node):
            return
        if op == "GatherND" and self._identity_gather_nd(node):
            return
        if not self._touches_floated(node):
            self.nodes.append(node)
            return
        handler = _HANDLERS.get(op)
        if handler is not None:
            getattr(self, handler)(ins, outs, node)
            return
        self._keep_with_float_constants(node)

    def _touches_floated(self, node: Any) -> bool:
        """Whether the node computes on integer data: floated tensors, or (for the boolean ops, such as
        Where on a folded causal mask) integer/bool constants."""
        shape_inputs = _SHAPE_INPUTS.get(node.op_type, set())
        data = [n for k, n in enumerate(node.input) if k not in shape_inputs]
        if any(n in self.floated for n in data) or any(o in self.floated for o in node.output):
            return True
        if node.op_type in ("Gather", "GatherElements") and node.input[1] in self.floated:
            return True  # indices computed as float
        return node.op_type in _BOOLEAN_OPS and any(
            n in self.consts and self.dtypes.get(n) in _INT_TYPES for n in data)

    def _keep_with_float_constants(self, node: Any) -> None:
        """A float-safe op (Add, Mul, Reshape, Concat, CumSum, ...) on integer data: its integer constants
        in data positions become float."""
        shape_inputs = _SHAPE_INPUTS.get(node.op_type, set())
        for k, name in enumerate(node.input):
            if k not in shape_inputs and name in self.consts and self.dtypes.get(name) in _INT_TYPES:
                node.input[k] = self._float_copy(name)
        self.nodes.append(node)

    # the rewrites ----------------------------------------------------------------------------------------
    def _cast(self, ins: list[str], outs: list[str], node: Any) -> None:
        source = ins[0]
        if self.dtypes.get(outs[0]) == 9 and self.dtypes.get(source) != 9:  # to bool: x != 0
            self._emit("Min", [self._op("Abs", [source]), self._const(1.0)], outs)
        else:
            self._emit("Identity", [source], outs)

    def _and(self, ins: list[str], outs: list[str], node: Any) -> None:
        self._emit("Mul", self._data(ins), outs)

    def _or(self, ins: list[str], outs: list[str], node: Any) -> None:
        self._emit("Max", self._data(ins), outs)

    def _xor(self, ins: list[str], outs: list[str], node: Any) -> None:
        self._emit("Abs", [self._op("Sub", self._data(ins))], outs)

    def _not(self, ins: list[str], outs: list[str], node: Any) -> None:
        self._emit("Sub", [self._const(1.0), ins[0]], outs)

    def _equal(self, ins: list[str], outs: list[str], node: Any) -> None:
        a, b = self._data(ins)
        differ = self._op("Min", [self._op("Abs", [self._op("Sub", [a, b])]), self._const(1.0)])
        self._emit("Sub", [self._const(1.0), differ], outs)

    def _where(self, ins: list[str], outs: list[str], node: Any) -> None:
        cond, x, y = self._data(ins)
        x, y = self._clamped(x), self._clamped(y)
        keep_y = self._op("Sub", [self._const(1.0), cond])
        self._emit("Add", [self._op("Mul", [cond, x]), self._op("Mul", [keep_y, y])], outs)

    def _comparison(self, ins: list[str], outs: list[str], node: Any) -> None:
        first, second, offset = _COMPARISONS[node.op_type]
        a, b = self._data(ins)
        named = {"a": a, "b": b}
        diff = self._op("Sub", [named[first], named[second]])
        if offset:
            diff = self._op("Add", [diff, self._const(offset)])
        self._emit("Clip", [diff, self._const(0.0), self._const(1.0)], outs)


    def _gather(self, ins: list[str], outs: list[str], node: Any) -> None:
        """A lookup by computed (float) indices: from a table of one value, that value everywhere; from a
        2-D table along its rows (RoBERTa's position ids), a one-hot matrix times the table."""
        from onnx import numpy_helper

        table = self.consts.get(ins[0])
        values = numpy_helper.to_array(table) if table is not None else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if values is not None and values.size and (values == values.ravel()[0]).all() and self._shape(outs[0]):
            filled = np.full(self._shape(outs[0]), values.ravel()[0], dtype=values.dtype)
            self._emit("Identity", [self._const(filled)], outs)
        elif values is not None and values.ndim == 2 and axis == 0 and node.op_type == "Gather":
            rows = self._const(np.arange(values.shape[0], dtype=np.float32))
            distance = self._op("Abs", [self._op("Sub", [self._op("Unsqueeze", [ins[1], self._const(np.array([-1]))]),
                                                         rows])])
            one_hot = self._op("Sub", [self._const(1.0), self._op("Min", [distance, self._const(1.0)])])
            self._emit("MatMul", [one_hot, self._float_copy(ins[0])], outs)
        else:
            self._keep_with_float_constants(node)

    def _cumsum(self, ins: list[str], outs: list[str], node: Any) -> None:
        """A running sum along the last axis (RoBERTa's position ids; pnnx has no ncnn layer for ONNX's
        CumSum): the data times an upper-triangular matrix of ones."""
        from onnx import numpy_helper

        shape = self._shape(ins[0])
        axis = int(numpy_helper.to_array(self.consts[ins[1]])) if ins[1] in self.consts else None
        plain = not any(a.i for a in node.attribute if a.name in ("exclusive", "reverse"))
        if shape is None or axis is None or axis % len(shape) != len(shape) - 1 or not plain:
            self._keep_with_float_constants(node)
            return
        ones = np.triu(np.ones((shape[-1], shape[-1]), np.float32))
        self._emit("MatMul", [self._data([ins[0]])[0], self._const(ones)], outs)

    # patterns --------------------------------------------------------------------------------------------
    def _nan_guard(self, ins: list[str]) -> bool:
        producer = self.producers.get(ins[0])
        return producer is not None and producer.op_type == "IsNaN" and producer.input[0] == ins[2]

    def _identity_gather(self, node: Any) -> bool:
        """Gather(data, arange(n)) along an axis of size n: the data, reshaped."""
        from onnx import numpy_helper

        index = self.consts.get(node.input[1])
        shape = self._shape(node.input[0])
        if index is None or shape is None:
            return False
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % len(shape)
        values = numpy_helper.to_array(index)
        if values.size != shape[axis] or not np.array_equal(values.ravel(), np.arange(shape[axis])):
            return False
        target = [*shape[:axis], *values.shape, *shape[axis + 1:]]
        self._emit("Reshape", [node.input[0], self._const(np.array(target, np.int64))], list(node.output))
        return True

    def _identity_gather_nd(self, node: Any) -> bool:
        """GatherND(data, every index of data in order) (torch.export's vmap mask): the data, reshaped."""
        from onnx import numpy_helper

        index, shape = self.consts.get(node.input[1]), self._shape(node.input[0])
        batch_dims = next((a.i for a in node.attribute if a.name == "batch_dims"), 0)
        if index is None or shape is None or batch_dims:
            return False
        values = numpy_helper.to_array(index)
        if values.shape[-1] != len(shape) or values.size // len(shape) != int(np.prod(shape)):
            return False
        flat = np.ravel_multi_index(values.reshape(-1, len(shape)).T, shape, mode="clip")
        if not np.array_equal(flat, np.arange(flat.size)):
            return False
        target = np.array(values.shape[:-1], np.int64)
        self._emit("Reshape", [node.input[0], self._const(target)], list(node.output))
        return True

    # helpers ---------------------------------------------------------------------------------------------
    def _shape(self, name: str) -> list[int] | None:
        shape = self.shapes.get(name)
        return shape if shape is not None and None not in shape else None

    def _data(self, names: list[str]) -> list[str]:
        return [self._float_copy(n) if n in self.consts and self.dtypes.get(n) in _INT_TYPES else n for n in names]

    def _clamped(self, name: str) -> str:
        """A mask fill (a constant of -+inf or of the float range's ends, |v| >= 1e30) made -+1e4."""
        from onnx import numpy_helper

        if name not in self.consts:
            return name
        values = numpy_helper.to_array(self.consts[name]).astype(np.float32)
        huge = np.abs(values) >= HUGE
        if not huge.any():
            return name
        return self._const(np.where(huge, np.sign(values) * MASK_FILL, values).astype(np.float32))

    def _float_copy(self, name: str) -> str:
        from onnx import numpy_helper

        return self._const(numpy_helper.to_array(self.consts[name]).astype(np.float32))

    def _const(self, value: Any) -> str:
        from onnx import numpy_helper

        name = self._name()
        array = np.asarray(value, dtype=np.float32 if np.asarray(value).dtype.kind == "f" else None)
        self.model.graph.initializer.append(numpy_helper.from_array(array, name))
        self.consts[name] = self.model.graph.initializer[-1]
        self.dtypes[name] = self.consts[name].data_type
        return name

    def _op(self, op: str, ins: list[str]) -> str:
        out = self._name()
        self._emit(op, ins, [out])
        return out

    def _emit(self, op: str, ins: list[str], outs: list[str]) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, outs, name=self._name()))

    def _name(self) -> str:
        self.count += 1
        return f"edgesdk_float_{self.count}"
