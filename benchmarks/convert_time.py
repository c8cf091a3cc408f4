"""Conversion time, side by side with Ultralytics' own export (issue 28, part 3): the same YOLOv8n
module (random init from the yaml, nothing downloaded) exported by `YOLO.export(format=...)` and converted
by `edgesdk.convert` (FP32, parity and timing on), one format at a time, interleaved over rounds so the
machine's drift hits both alike. Prints seconds per tool and format, the ratio edgesdk / Ultralytics,
and where edgesdk's time went (its log lines per stage).

    .venv/bin/python benchmarks/convert_time.py --formats onnx,openvino --rounds 2 --json build/convert_time.json

Ultralytics must not install anything: YOLO_AUTOINSTALL=False and YOLO_OFFLINE=1 are set; a format whose
requirements it finds missing is reported as not measured."""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.update({"YOLO_AUTOINSTALL": "False", "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"})

import edgesdk  # noqa: E402
from tests.corpus import import_torchvision  # noqa: E402

ULTRALYTICS_FORMAT = {"onnx": "onnx", "openvino": "openvino", "tflite": "tflite", "ncnn": "ncnn", "mnn": "mnn",
                      "executorch": "executorch"}


def time_ultralytics(fmt: str, size: int, out: Path) -> float | None:
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    os.chdir(out)  # it writes next to the weights, or here for a yaml model
    started = time.perf_counter()
    try:
        model.export(format=ULTRALYTICS_FORMAT[fmt], imgsz=size, half=False, int8=False, dynamic=False)
    except Exception as exc:  # a missing requirement, an exporter failure: not measured
        logging.warning("Ultralytics could not export %s: %s", fmt, str(exc)[:200])
        return None
    return time.perf_counter() - started


def time_edgesdk(fmt: str, size: int, out: Path) -> tuple[float, list[tuple[str, float]]]:
    import torch
    from ultralytics import YOLO

    module = YOLO("yolov8n.yaml").model.eval()
    steps: list[tuple[str, float]] = []
    started = time.perf_counter()
    edgesdk.convert(module, torch.rand(1, 3, size, size), targets=[fmt], precisions=["fp32"], out=out / "b",
                    outputs=["output0"], task="detection", strict=True,
                    progress=lambda msg: steps.append((msg[:70], time.perf_counter())))
    total = time.perf_counter() - started
    stages = [(name, round(end - start, 2)) for (name, start), (_, end) in zip(steps, [*steps[1:], ("end", started + total)])]
    return total, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="onnx,openvino,tflite")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import_torchvision()
    here = os.getcwd()
    results: dict[str, Any] = {}
    for fmt in args.formats.split(","):
        peer, ours, stages = [], [], []
        for r in range(args.rounds):
            order = ("ultralytics", "edgesdk") if r % 2 == 0 else ("edgesdk", "ultralytics")
            for tool in order:
                with tempfile.TemporaryDirectory() as tmp:
                    if tool == "ultralytics":
                        peer.append(time_ultralytics(fmt, args.size, Path(tmp)))
                    else:
                        seconds, stages = time_edgesdk(fmt, args.size, Path(tmp))
                        ours.append(seconds)
                    os.chdir(here)
        measured = [p for p in peer if p is not None]
        row = {"ultralytics_s": statistics.median(measured) if measured else None, "edgesdk_s": statistics.median(ours),
               "stages_s": stages}
        row["ratio"] = row["edgesdk_s"] / row["ultralytics_s"] if row["ultralytics_s"] else None
        results[fmt] = row
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "n/a"
        print(f"{fmt}: ultralytics {row['ultralytics_s'] or float('nan'):.1f} s, edgesdk {row['edgesdk_s']:.1f} s "
              f"({ratio}); edgesdk stages: " + ", ".join(f"{n} {s}" for n, s in stages), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "rounds": args.rounds, "formats": results}, indent=1))


if __name__ == "__main__":
    main()
