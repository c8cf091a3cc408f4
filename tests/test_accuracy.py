"""Accuracy on labelled data: the labelled-set forms, the 95% interval, and mAP checked against
pycocotools (COCO's own evaluation) on the same detections."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesdk import CalibrationSet, Preprocess, TensorSpec, UsageError
from edgesdk.measuring.accuracy import (
    LabelledSet,
    class_index,
    classification_accuracy,
    detection_accuracy,
    load_labelled,
    mean_average_precision,
    wilson_interval,
    yolo_to_xyxy,
)

ROOT = Path(__file__).resolve().parent.parent


def _coco_map():
    spec = importlib.util.spec_from_file_location("eval_detect", ROOT / "benchmarks" / "eval_detect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.coco_map


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(50, 50)[0] > 0.92


def _noisy_detections(rng: np.random.Generator, images: int = 25, classes: int = 3):
    truths, preds = [], []
    for _ in range(images):
        k = rng.integers(1, 6)
        xy = rng.uniform(0, 180, (k, 2))
        wh = rng.uniform(15, 70, (k, 2))
        truth = np.column_stack([rng.integers(0, classes, k), xy, xy + wh]).astype(np.float64)
        boxes, scores, cls = [], [], []
        for c, x1, y1, x2, y2 in truth:
            if rng.uniform() < 0.85:  # found, with some localisation error and sometimes the wrong class
                jitter = rng.normal(0, 0.12 * (x2 - x1), 4)
                boxes.append([x1, y1, x2, y2] + jitter)
                scores.append(rng.uniform(0.3, 1.0))
                cls.append(c if rng.uniform() < 0.9 else (c + 1) % classes)
        for _ in range(rng.integers(0, 4)):  # false positives
            x, y = rng.uniform(0, 200, 2)
            boxes.append([x, y, x + rng.uniform(10, 50), y + rng.uniform(10, 50)])
            scores.append(rng.uniform(0.0, 0.8))
            cls.append(rng.integers(0, classes))
        preds.append({"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "scores": np.asarray(scores),
                      "classes": np.asarray(cls, np.int64)})
        truths.append(truth)
    return truths, preds


def test_map_matches_pycocotools():
    truths, preds = _noisy_detections(np.random.default_rng(3))
    ours = mean_average_precision(truths, preds)
    coco = _coco_map()(truths, preds, 3)
    assert 0.2 < ours["map50_95"] < ours["map50"] < 1.0
    assert ours["map50"] == pytest.approx(coco["map50"], abs=2e-3)
    assert ours["map50_95"] == pytest.approx(coco["map50_95"], abs=2e-3)


def test_map_exact_cases():
    truth = [np.array([[0, 10, 10, 50, 50], [1, 60, 60, 100, 100]], np.float64)]
    perfect = [{"boxes": truth[0][:, 1:], "scores": np.array([0.9, 0.8]), "classes": np.array([0, 1])}]
    assert mean_average_precision(truth, perfect) == {"map50": 1.0, "map50_95": 1.0}
    # Class 0 found with IoU 0.72 (passes 0.50-0.70, fails 0.75-0.95), class 1 missed.
    taller = np.array([[10, 10, 50, 10 + 40 / 0.72]])  # IoU with [10, 10, 50, 50]: 40 / (y2 - 10) = 0.72
    shifted = [{"boxes": taller, "scores": np.array([0.9]), "classes": np.array([0])}]
    m = mean_average_precision(truth, shifted)
    assert m["map50"] == pytest.approx(0.5)  # class 0 AP 1, class 1 AP 0
    assert m["map50_95"] == pytest.approx(0.5 * 5 / 10)


def test_labelled_forms(tmp_path: Path):
    for cls in ("cat", "dog"):
        (tmp_path / "folders" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "folders" / cls / f"{i}.png")
    data = load_labelled(tmp_path / "folders")
    assert data.kind == "classes" and len(data) == 6 and {lab for _, lab in data.items} == {"cat", "dog"}
    csv = tmp_path / "folders" / "labels.csv"
    csv.write_text("file,label\ncat/0.png,cat\ndog/1.png,1\n")
    data = load_labelled(csv)
    assert data.items == [("cat/0.png", "cat"), ("dog/1.png", "1")]
    assert [class_index(lab, ["cat", "dog"]) for _, lab in data.items] == [0, 1]
    with pytest.raises(UsageError, match="not one of 2 class names"):
        class_index("horse", ["cat", "dog"])
    csv.write_text("cat/0.png,cat\nnot-an-image,dog\n")
    with pytest.raises(UsageError, match="rows \\[2\\]"):
        load_labelled(csv)
    csv.write_text("cat/9.png,cat\n")
    with pytest.raises(UsageError, match="not there"):
        load_labelled(csv)
    assert load_labelled(tmp_path / "folders" / "cat") is None  # a plain folder of images has no labels
    # A labelled set is also held-out or calibration data: its images, in order.
    calib = CalibrationSet.from_any(tmp_path / "folders", [TensorSpec("input", (1, 3, 8, 8))],
                                    Preprocess(size=(8, 8), resize=None))
    assert len(calib) == 6


def test_payload_round_trip_stays_inside(tmp_path: Path):
    (tmp_path / "a" / "x").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x" / "0.png")
    data = load_labelled(tmp_path / "a")
    payload = data.to_payload()
    copy = LabelledSet.from_payload(payload, tmp_path / "b")
    assert (copy.root / copy.items[0][0]).read_bytes() == (tmp_path / "a" / "x" / "0.png").read_bytes()
    assert [lab for _, lab in copy.items] == [lab for _, lab in data.items]
    hostile = {**payload, "files": {"../escape.png": b"x"}}
    with pytest.raises(Exception, match="not a plain path"):
        LabelledSet.from_payload(hostile, tmp_path / "c")
    assert not (tmp_path / "escape.png").exists()


def test_classification_accuracy_counts(tmp_path: Path):
    """A 'model' that answers the red level: top-1 and top-5 counted, with the interval."""
    items = []
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 25, 0, 0)).save(tmp_path / f"{i}.png")
        items.append((f"{i}.png", str(i if i < 7 else 0)))  # 3 wrong labels
    data = LabelledSet("classes", tmp_path, items)

    def run(x):
        scores = np.zeros((1, 10), np.float32)
        scores[0, int(round(float(x[0, 0].mean()) * 255 / 25))] = 1
        return [scores]

    acc = classification_accuracy(run, data, Preprocess(size=(8, 8), resize=None, mean=(0, 0, 0), std=(1, 1, 1)), None)
    assert acc["top1"] == pytest.approx(0.7) and acc["samples"] == 10 and acc["top5"] == pytest.approx(1.0)
    assert acc["top1_ci95"][0] < 0.7 < acc["top1_ci95"][1]


def test_detector_map_on_yolo_labels(tmp_path: Path):
    """The trained shapes detector, run by torch on scenes written with YOLO labels, scores as COCO would."""
    import torch

    from apps.shapes_detector import CLASSES, SIZE, shapes_yolo, write_scenes

    write_scenes(tmp_path, 24, seed=4321)
    data = load_labelled(tmp_path)
    assert data.kind == "yolo" and len(data) == 24
    first = data.items[0][1]
    boxes = yolo_to_xyxy(first, SIZE, SIZE)
    assert boxes.shape[1] == 5 and (boxes[:, 3] > boxes[:, 1]).all()
    model = shapes_yolo()

    def run(x):
        with torch.no_grad():
            return [model(torch.from_numpy(x)).numpy()]

    m = detection_accuracy(run, data, TensorSpec("images", (1, 3, SIZE, SIZE)), len(CLASSES))
    assert m["samples"] == 24 and m["map50"] > 0.6 and 0 < m["map50_95"] < m["map50"]
