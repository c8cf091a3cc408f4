"""Conversion time, side by side with Ultralytics' own export (issue 28, part 3): the same YOLOv8n
module (random init from the yaml, nothing downloaded) exported by `YOLO.export(format=...)` and converted
by `edgesdk.convert` (FP32, parity on; with its default quick timing and with --timing off; for TFLite
also by the onnx2tf route, which FP32 of a static model takes only when litert-torch fails), one format at
a time in an interpreter of its own, interleaved over rounds (the order rotated) so the machine's drift
hits all alike. Prints seconds per tool and format (medians), the ratio edgesdk /
Ultralytics, and where edgesdk's time went (its log lines per stage, last round).

    .venv/bin/python benchmarks/convert_time.py --formats onnx,openvino --rounds 2 --json build/convert_time.json

Ultralytics must not install anything: YOLO_AUTOINSTALL=False and YOLO_OFFLINE=1 are set; a format whose
requirements it finds missing is reported as not measured."""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
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


#: edgesdk's variants, each timed beside Ultralytics: the defaults, and with conversion-time timing off
#: (parity stays on), and for TFLite the litert-torch route (the one Ultralytics' export takes).
VARIANTS: dict[str, dict[str, Any]] = {"edgesdk": {}, "edgesdk --timing off": {"timing": "off"}}
TFLITE_VARIANTS = {"edgesdk --tflite-route onnx2tf": {"tflite_route": "onnx2tf"}}


def time_edgesdk(fmt: str, size: int, out: Path, options: dict[str, Any]) -> tuple[float, list[tuple[str, float]]]:
    import torch
    from ultralytics import YOLO

    module = YOLO("yolov8n.yaml").model.eval()
    steps: list[tuple[str, float]] = []
    started = time.perf_counter()
    edgesdk.convert(module, torch.rand(1, 3, size, size), targets=[fmt], precisions=["fp32"], out=out / "b",
                    outputs=["output0"], task="detection", strict=True, options=options,
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
    formats = args.formats.split(",")
    if len(formats) > 1:  # one interpreter per format: Ultralytics' MNN export imports MNN's converter in
        results = {}      # its process, which aborts where TensorFlow was loaded (protobuf descriptors)
        for fmt in formats:
            with tempfile.NamedTemporaryFile(suffix=".json") as part:
                subprocess.run([sys.executable, __file__, "--formats", fmt, "--size", str(args.size),
                                "--rounds", str(args.rounds), "--json", part.name], check=False)
                text = Path(part.name).read_text()
                results.update(json.loads(text)["formats"] if text else {fmt: "crashed"})
    else:
        results = {formats[0]: time_format(formats[0], args.size, args.rounds)}
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "rounds": args.rounds, "formats": results}, indent=1))


def time_format(fmt: str, size: int, rounds: int) -> dict[str, Any]:
    """Seconds per tool (medians over rounds, the order rotated each round), printed with edgesdk's stages."""
    logging.basicConfig(level=logging.WARNING)
    import_torchvision()
    here = os.getcwd()
    variants = {**VARIANTS, **(TFLITE_VARIANTS if fmt == "tflite" else {})}
    tools = ["ultralytics", *variants]
    seconds: dict[str, list[float]] = {t: [] for t in tools}
    stages: dict[str, list[tuple[str, float]]] = {}
    for r in range(rounds):
        for tool in tools[r % len(tools):] + tools[:r % len(tools)]:  # rotated: no tool always first
            with tempfile.TemporaryDirectory() as tmp:
                if tool == "ultralytics":
                    took = time_ultralytics(fmt, size, Path(tmp))
                else:
                    took, stages[tool] = time_edgesdk(fmt, size, Path(tmp), variants[tool])
                if took is not None:
                    seconds[tool].append(took)
                os.chdir(here)
    row: dict[str, Any] = {t: statistics.median(v) if v else None for t, v in seconds.items()}
    row["stages_s"] = stages
    peer = row["ultralytics"]
    print(f"{fmt}: ultralytics {peer or float('nan'):.1f} s; " + "; ".join(
        f"{t} {row[t]:.1f} s ({row[t] / peer:.2f}x)" if peer else f"{t} {row[t]:.1f} s" for t in variants), flush=True)
    for tool, steps in stages.items():
        print(f"  {tool}: " + ", ".join(f"{n} {s}" for n, s in steps), flush=True)
    return row


if __name__ == "__main__":
    main()
