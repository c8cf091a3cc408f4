"""Object detection post-processing for Ultralytics-format models: letterbox pre-processing with the
inverse box mapping, decoding of YOLOv5 [1, N, 5+nc] (with objectness) and YOLOv8/v11 [1, 4+nc, N]
outputs, and class-aware vectorized NMS in numpy. Boxes are (x1, y1, x2, y2) in pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import InputError


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: scale, then padding (left, top)."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # original image size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map (x1, y1, x2, y2) boxes from model-input pixels back to the original image, clipped."""
        out = np.asarray(boxes, np.float32).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def _fit(width: int, height: int, size: tuple[int, int]) -> tuple[int, int, Letterbox]:
    """(resized width, resized height, mapping) of an image fitted into size (height, width)."""
    out_h, out_w = size
    if (height, width) == (out_h, out_w):
        return width, height, Letterbox(1.0, 0.0, 0.0, width, height)
    scale = min(out_h / height, out_w / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w, new_h, Letterbox(scale, float((out_w - new_w) // 2), float((out_h - new_h) // 2), width, height)


def letterbox(image: np.ndarray, size: tuple[int, int] = (640, 640), color: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize an HxWx3 uint8 image to fit `size` (height, width) keeping its aspect ratio, centred on a
    gray canvas, as Ultralytics does. Returns the canvas and the mapping back."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"letterbox expects an HxWx3 image, got shape {list(image.shape)}.")
    new_w, new_h, lb = _fit(image.shape[1], image.shape[0], size)
    if lb.scale == 1.0 and (new_h, new_w) == tuple(size):  # already the model's size: nothing to resize or pad
        return image, lb
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.full((*size, 3), color, np.uint8)
    x, y = int(lb.pad_x), int(lb.pad_y)
    canvas[y:y + new_h, x:x + new_w] = resized
    return canvas, lb


def letterbox_tensor(image: Any, size: tuple[int, int] = (640, 640), layout: str = "NCHW",
                     color: int = 114) -> tuple[np.ndarray, Letterbox]:
    """letterbox() straight into the model's float32 [0, 1] input (NCHW or NHWC batch of one): the
    image (a PIL RGB image or an HxWx3 uint8 array) is resized once and scaled into place, with no
    canvas, no float copy and no transpose copy. The same numbers as letterbox() then / 255."""
    from PIL import Image

    pil = None if isinstance(image, np.ndarray) else image
    width, height = pil.size if pil is not None else (image.shape[1], image.shape[0])
    if pil is None and (image.ndim != 3 or image.shape[2] != 3):
        raise InputError(f"letterbox expects an HxWx3 image, got shape {list(image.shape)}.")
    new_w, new_h, lb = _fit(width, height, size)
    if (new_w, new_h) != (width, height):
        pil = (pil or Image.fromarray(image)).resize((new_w, new_h), Image.BILINEAR)
    pixels = np.asarray(pil) if pil is not None else image
    out_h, out_w = size
    x, y = int(lb.pad_x), int(lb.pad_y)
    if layout == "NCHW":
        out = np.empty((1, 3, out_h, out_w), np.float32)
        window, pixels = out[0, :, y:y + new_h, x:x + new_w], pixels.transpose(2, 0, 1)
    else:
        out = np.empty((1, out_h, out_w, 3), np.float32)
        window = out[0, y:y + new_h, x:x + new_w]
    if (new_h, new_w) != (out_h, out_w):
        out.fill(color / 255.0)
    np.multiply(pixels, np.float32(1 / 255.0), out=window)
    return out, lb


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def decode(output: np.ndarray, num_classes: int | None = None, layout: str = "auto",
           conf_threshold: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy [K, 4], scores [K], class ids [K]) of one image's raw output above conf_threshold.

    layout "v8": [1, 4+nc, N] (YOLOv8/v11: box then class scores, no objectness);
    layout "v5": [1, N, 5+nc] (YOLOv5: box, objectness, class scores; score = objectness x class);
    "auto" tells them apart by the channel count when num_classes is given, else by which axis is the
    long one (N anchors >> channels)."""
    out = np.asarray(output, np.float32)
    if out.ndim == 3:
        if out.shape[0] != 1:
            raise InputError(f"decode takes one image's output; got a batch of {out.shape[0]}.")
        out = out[0]
    if out.ndim != 2:
        raise InputError(f"Expected a detection output [1, 4+nc, N] or [1, N, 5+nc], got shape {list(np.shape(output))}.")
    if layout == "auto":  # by the channel count when the classes are known, else by the long axis (anchors)
        if num_classes and out.shape[0] == 4 + num_classes:
            layout = "v8"
        elif num_classes and out.shape[1] == 5 + num_classes:
            layout = "v5"
        else:
            layout = "v8" if out.shape[0] < out.shape[1] else "v5"
    if layout == "v8":
        rows = out.T  # [N, 4+nc]
        expected = 4 + num_classes if num_classes else None
        if rows.shape[1] < 5 or (expected and rows.shape[1] != expected):
            raise InputError(f"A YOLOv8 output has 4+{num_classes or 'nc'} channels; this one has {rows.shape[1]}.")
        class_scores = rows[:, 4:]
    elif layout == "v5":
        rows = out
        expected = 5 + num_classes if num_classes else None
        if rows.shape[1] < 6 or (expected and rows.shape[1] != expected):
            raise InputError(f"A YOLOv5 output has 5+{num_classes or 'nc'} channels; this one has {rows.shape[1]}.")
        class_scores = rows[:, 5:] * rows[:, 4:5]
    else:
        raise InputError(f"Unknown detection layout '{layout}': use v8, v5 or auto.")
    classes = class_scores.argmax(1)
    scores = class_scores[np.arange(len(classes)), classes]
    keep = scores > conf_threshold
    return _xywh_to_xyxy(rows[keep, :4]), scores[keep], classes[keep]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None = None, iou_threshold: float = 0.45,
        max_detections: int = 300) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first. Class-aware when classes are given:
    boxes of different classes never suppress each other (done by moving each class's boxes into a
    region of its own: offsets of class x (span + 1), where span is the whole coordinate range, so boxes
    of two classes never overlap, negative coordinates included)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = np.asarray(boxes, np.float64)
    if classes is not None:
        span = float(b.max() - b.min()) + 1.0
        b = b + (np.asarray(classes, np.float64) * span)[:, None]
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou(b[i], b[rest]) <= iou_threshold]
    return np.asarray(keep, np.int64)


def postprocess(output: np.ndarray, lb: Letterbox | None = None, num_classes: int | None = None,
                layout: str = "auto", conf_threshold: float = 0.25, iou_threshold: float = 0.45,
                max_detections: int = 300) -> dict[str, np.ndarray]:
    """decode -> class-aware NMS -> boxes in original-image pixels: {"boxes", "scores", "classes"}."""
    boxes, scores, classes = decode(output, num_classes, layout, conf_threshold)
    keep = nms(boxes, scores, classes, iou_threshold, max_detections)
    boxes = boxes[keep]
    if lb is not None:
        boxes = lb.to_original(boxes)
    return {"boxes": boxes, "scores": scores[keep], "classes": classes[keep]}


def embed_nms(onnx_in: str | os.PathLike, onnx_out: str | os.PathLike, iou_threshold: float = 0.45,
              score_threshold: float = 0.25, max_per_class: int = 100) -> None:
    """Write a copy of a YOLOv8-layout ONNX model ([1, 4+nc, N] output) with NMS inside it (ONNX's
    NonMaxSuppression, class-aware), for runtimes that run the whole pipeline in the graph. Outputs:
    det_boxes [K, 4] (x1, y1, x2, y2 in input pixels), det_scores [K], det_classes [K] (int64)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_in))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 11:
        raise InputError("embed_nms needs an ONNX model of opset 11 or later.")
    graph = model.graph
    if len(graph.output) != 1:
        raise InputError(f"embed_nms expects one [1, 4+nc, N] output; {onnx_in} has {len(graph.output)}.")
    consts = {
        "nms_starts_box": np.array([0], np.int64), "nms_ends_box": np.array([4], np.int64),
        "nms_starts_cls": np.array([4], np.int64), "nms_ends_cls": np.array([1 << 30], np.int64),
        "nms_axis2": np.array([2], np.int64), "nms_max": np.array([max_per_class], np.int64),
        "nms_iou": np.array([iou_threshold], np.float32), "nms_score": np.array([score_threshold], np.float32),
        "nms_zero": np.array(0, np.int64), "nms_col1": np.array([1], np.int64), "nms_col2": np.array([2], np.int64),
        "nms_half": np.array([0.5], np.float32), "nms_zero_f": np.array(0.0, np.float32), "nms_sign": np.array([-1, -1, 1, 1], np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    graph.node.extend(_nms_nodes(graph.output[0].name, opset))
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["detections", 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["detections"]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT64, ["detections"]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_out))


def _nms_nodes(raw: str, opset: int) -> list[Any]:
    """The nodes from the raw [1, 4+nc, N] output to det_boxes, det_scores and det_classes (they read
    the nms_* constants embed_nms adds)."""
    from onnx import helper

    n = helper.make_node
    return [
        n("Transpose", [raw], ["nms_rows"], perm=[0, 2, 1]),  # [1, N, 4+nc]
        n("Slice", ["nms_rows", "nms_starts_box", "nms_ends_box", "nms_axis2"], ["nms_xywh"]),  # [1, N, 4]
        n("Slice", [raw, "nms_starts_cls", "nms_ends_cls", "nms_col1"], ["nms_all_scores"]),  # [1, nc, N]
        # One label per box, its best class (as decode() and Ultralytics do): zero the other classes.
        (n("ReduceMax", ["nms_all_scores", "nms_col1"], ["nms_best"], keepdims=1) if opset >= 18 else
         n("ReduceMax", ["nms_all_scores"], ["nms_best"], axes=[1], keepdims=1)),
        n("Equal", ["nms_all_scores", "nms_best"], ["nms_is_best"]),
        n("Where", ["nms_is_best", "nms_all_scores", "nms_zero_f"], ["nms_scores"]),
        n("NonMaxSuppression", ["nms_xywh", "nms_scores", "nms_max", "nms_iou", "nms_score"], ["nms_selected"],
          center_point_box=1),  # [K, 3]: batch, class, box
        n("Gather", ["nms_selected", "nms_col2"], ["nms_box_idx2d"], axis=1),
        n("Squeeze", ["nms_box_idx2d", "nms_col1"], ["nms_box_idx"]),
        n("Gather", ["nms_selected", "nms_col1"], ["nms_cls2d"], axis=1),
        n("Squeeze", ["nms_cls2d", "nms_col1"], ["det_classes"]),
        n("Gather", ["nms_xywh", "nms_zero"], ["nms_xywh0"], axis=0),  # [N, 4]
        n("Gather", ["nms_xywh0", "nms_box_idx"], ["nms_sel_xywh"], axis=0),  # [K, 4]
        # xyxy = (cx, cy, cx, cy) + (-w/2, -h/2, w/2, h/2)
        n("Slice", ["nms_sel_xywh", "nms_starts_box", "nms_axis2", "nms_col1"], ["nms_cxcy"]),
        n("Slice", ["nms_sel_xywh", "nms_axis2", "nms_ends_box", "nms_col1"], ["nms_wh"]),
        n("Concat", ["nms_cxcy", "nms_cxcy"], ["nms_cc"], axis=1),
        n("Concat", ["nms_wh", "nms_wh"], ["nms_ww"], axis=1),
        n("Mul", ["nms_ww", "nms_half"], ["nms_hh"]),
        n("Mul", ["nms_hh", "nms_sign"], ["nms_delta"]),
        n("Add", ["nms_cc", "nms_delta"], ["det_boxes"]),
        n("GatherND", ["nms_scores", "nms_selected"], ["det_scores"]),
    ]
