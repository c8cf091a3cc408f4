"""ONNX rewrites before pnnx, for what pnnx translates wrongly or ncnn has no layer for, each exact:

- ReduceMean/ReduceSum over the last axis only (Llama's and T5's RMSNorm): pnnx writes an ncnn Reduction
  over no axes, which returns its input unreduced. Rewritten as a MatMul with a column of 1/n (or 1).
- GatherElements along the last axis by a constant index that depends on k - q only: DeBERTa's
  relative-position gathers (c2p, p2c, log buckets included) at a fixed length, for which ncnn has no
  layer. Rewritten as a one-hot MatMul that puts the columns in relative order, then Transformer-XL's
  relative shift (reshape the rows one shorter), then a slice: exact (each output is one product by 1).

- Gather from a constant 2-D table with axis=0 written out (torch.export's embeddings): pnnx makes an
  ncnn Embed only of a Gather without the attribute, and leaves this one a Gather ncnn has no layer for.

Each works on a graph at fixed shapes (shape inference gives every size) and leaves any other node alone."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def rewrite_for_pnnx(model: Any) -> int:
    """Apply every rewrite in place; how many nodes changed."""
    return _Graph(model).run()


class _Graph:
    def __init__(self, model: Any):
        import onnx

        self.model = model
        self.consts = {i.name: i for i in model.graph.initializer}
        inferred = onnx.shape_inference.infer_shapes(model)
        self.shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                       for v in [*inferred.graph.input, *inferred.graph.value_info]}
        self.count = 0

    def run(self) -> int:
        rewritten, changed = [], 0
        for node in self.model.graph.node:
            replacement = self._means(node) if node.op_type in ("ReduceMean", "ReduceSum") else None
            if node.op_type == "GatherElements":
                replacement = self._relative_gather(node)
            if node.op_type == "Gather" and self._plain_embedding(node):
                changed += 1
            changed += int(replacement is not None)
            rewritten.extend(replacement if replacement is not None else [node])
        del self.model.graph.node[:]
        self.model.graph.node.extend(rewritten)
        return changed

    def _means(self, node: Any) -> list[Any] | None:
        from onnx import helper

        shape = self._shape(node.input[0])
        axes = self._array(node.input[1]) if len(node.input) > 1 else None
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        if shape is None or axes is None or keep != 1 or list(axes.ravel() % len(shape)) != [len(shape) - 1]:
            return None
        scale = 1.0 / shape[-1] if node.op_type == "ReduceMean" else 1.0
        column = self._const(np.full((shape[-1], 1), scale, np.float32))
        return [helper.make_node("MatMul", [node.input[0], column], list(node.output), name=node.name)]

    def _plain_embedding(self, node: Any) -> bool:
        """A lookup in a constant 2-D table with its axis spelled out (axis=0, as torch.export writes it):
        the attribute dropped, since pnnx makes an Embed only of a Gather without it."""
        table = self.consts.get(node.input[0])
        if table is not None and len(table.dims) == 2 and [(a.name, a.i) for a in node.attribute] == [("axis", 0)]:
            del node.attribute[:]
            return True
        return False

    def _relative_gather(self, node: Any) -> list[Any] | None:
        """out[.., q, k] = data[.., q, g(k - q)]: the columns put in relative order by a one-hot MatMul
        (E[.., q, r] = data[.., q, g(r - Q + 1)], one zero column more), then E's rows re-cut one shorter,
        which shifts row q left by q: out[.., q, k] = E[.., q, k - q + Q - 1]."""
        from onnx import helper

        shape, index = self._shape(node.input[0]), self._array(node.input[1])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if shape is None or index is None or len(shape) < 2 or axis % len(shape) != len(shape) - 1:
            return None
        g = _relative_columns(index, shape)
        if g is None:
            return None
        *lead, rows, width = shape
        cols, span = index.shape[-1], len(g) + 1
        one_hot = np.zeros((width, span), np.float32)
        one_hot[g, np.arange(len(g))] = 1.0
        ordered, flat, cut, recut = self._tmp(), self._tmp(), self._tmp(), self._tmp()
        log.debug("GatherElements %s as a relative shift (%d x %d of %d columns)", node.name, rows, cols, width)
        return [helper.make_node("MatMul", [node.input[0], self._const(one_hot)], [ordered]),
                helper.make_node("Reshape", [ordered, self._ints(*lead, rows * span)], [flat]),
                helper.make_node("Slice", [flat, self._ints(0), self._ints(rows * (span - 1)), self._ints(-1)], [cut]),
                helper.make_node("Reshape", [cut, self._ints(*lead, rows, span - 1)], [recut]),
                helper.make_node("Slice", [recut, self._ints(rows - 1), self._ints(rows - 1 + cols), self._ints(-1)],
                                 list(node.output))]

    def _shape(self, name: str) -> list[int] | None:
        shape = self.shapes.get(name)
        return shape if shape and all(shape) else None

    def _array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.consts[name]) if name in self.consts else None

    def _const(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._tmp()
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _ints(self, *values: int) -> str:
        return self._const(np.array(values, np.int64))

    def _tmp(self) -> str:
        self.count += 1
        return f"edgesdk_pnnx_{self.count}"


def _relative_columns(index: np.ndarray, data_shape: list[int]) -> np.ndarray | None:
    """g such that index[.., q, k] == g[k - q + Q - 1] at every leading position (the index depends on the
    relative position only), with the data's rows; None otherwise."""
    if index.ndim != len(data_shape) or index.shape[:-1] != tuple(data_shape[:-1]):
        return None
    grids = index.reshape(-1, *index.shape[-2:])
    if not (grids == grids[0]).all():
        return None
    grid = grids[0].astype(np.int64)
    rows, cols = grid.shape
    g = np.concatenate([grid[::-1, 0], grid[0, 1:]])  # k - q from -(rows - 1) to cols - 1
    q, k = np.indices(grid.shape)
    if not (grid == g[k - q + rows - 1]).all() or g.min() < 0 or g.max() >= data_shape[-1]:
        return None
    return g
