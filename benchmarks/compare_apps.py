"""The sample apps against their own model, in one run: each app on the same inputs before (the code
as of a66a5a4: full decode with a copy, resize-then-crop, float passes, PNG drawing, one image at a
time) and after (reduced JPEG decode, one resize, fused normalisation, letterbox into the tensor, JPEG
drawing, stages pipelined). Variants alternate within each round (rounds rotate the order).

Per app: images/s on the wall clock, the share of the wall time outside inference, and the stream's
images/s against the model's own (Runtime.run back to back on one preprocessed input, same Runtime).
Then Runtime.run against the plain backend call per backend (ONNX Runtime, OpenVINO, LiteRT) on a
tiny CNN, silero-vad and EfficientNet-Lite0, and what the reduced JPEG decode changes in the
classifier's answers (top-1 agreement with the exact decode on the 100 photos).

    python benchmarks/compare_apps.py [--rounds 5] [--json build/compare_apps.json] [--classify-artifacts onnx-int8@onnxruntime] [--skip-detect]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the apps package

import edgesdk  # noqa: E402
from apps import classify as classify_app  # noqa: E402
from apps import detect as detect_app  # noqa: E402
from apps.common import stream_threads  # noqa: E402
from edgesdk.core.images import list_images, preprocess_image  # noqa: E402

WORK = Path("build/compare_apps")


# -- the apps before (a66a5a4), kept here as the reference ----------------------------------------

def old_load(path: Path, color: str = "RGB") -> Any:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        pil = im.copy()
    return pil.convert("L" if color == "GRAY" else "RGB")


def old_preprocess(im: Any, pre: Any) -> np.ndarray:
    from PIL import Image

    out_h, out_w = pre.size
    w, h = im.size
    scale = pre.resize / min(w, h)
    im = im.resize((max(out_w, round(w * scale)), max(out_h, round(h * scale))), Image.BILINEAR)
    left, top = (im.size[0] - out_w) // 2, (im.size[1] - out_h) // 2
    im = im.crop((left, top, left + out_w, top + out_h))
    arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32)


def old_classify(rt: edgesdk.Runtime, paths: list[Path], latency: edgesdk.LatencyLog) -> None:
    for p in paths:
        with latency.sample(input=str(p)):
            with latency.stage("decode"):
                image = old_load(p, rt.preprocess.color)
            with latency.stage("preprocess"):
                x = old_preprocess(image, rt.preprocess)
            with latency.stage("infer"):
                scores = rt.run(x)
            with latency.stage("postprocess"):
                edgesdk.top_k(scores[0], 5, rt.labels)


def old_detect(detector: detect_app.Detector, paths: list[Path], latency: edgesdk.LatencyLog,
               out_dir: Path | None) -> None:
    from PIL import Image, ImageDraw

    from edgesdk.tasks.yolo import letterbox

    for p in paths:
        with latency.sample(input=str(p)):
            with latency.stage("decode"):
                image = np.asarray(old_load(p))
            with latency.stage("preprocess"):
                canvas, lb = letterbox(image, detector.size)
                x = np.ascontiguousarray((canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])
            with latency.stage("infer"):
                outputs = detector.rt.run_all(x)
            with latency.stage("postprocess"):
                det = detector.postprocess(outputs, lb)
            if out_dir is not None:
                with latency.stage("draw"):
                    pil = Image.fromarray(image)
                    d = ImageDraw.Draw(pil)
                    for (x1, y1, x2, y2), s, c in zip(det["boxes"], det["scores"], det["classes"]):
                        d.rectangle([x1, y1, x2, y2], outline=(255, 56, 56), width=2)
                        d.text((x1 + 2, max(0, y1 - 11)), f"{detector.label(int(c))} {s:.2f}", fill=(255, 56, 56))
                    pil.save(out_dir / (p.stem + ".png"))


# -- one app, its variants side by side --------------------------------------------------------------

def own_rate(rt: edgesdk.Runtime, x: np.ndarray, runs: int = 60) -> float:
    """The model's own images/s on this Runtime: run() back to back on one preprocessed input."""
    from edgesdk.running.timing import time_runs

    return 1.0 / float(np.median(time_runs(lambda: rt.run(x), runs, 5)))


def compare(name: str, variants: dict[str, Callable[[edgesdk.LatencyLog], None]], own: dict[str, Callable[[], float]],
            rounds: int) -> dict[str, Any]:
    """Each variant once per round (rotating order), and the model's own rate beside the stream."""
    per: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    own_rates: dict[str, list[float]] = {k: [] for k in own}
    names = list(variants)
    for r in range(rounds):
        for v in names[r % len(names):] + names[:r % len(names)]:
            with edgesdk.LatencyLog(name=v) as log:
                variants[v](log)
            per[v].append(log.summary())
        for k, rate in own.items():
            own_rates[k].append(rate())
        sys.stderr.write(f"{name} round {r + 1}/{rounds}: " + ", ".join(
            f"{v} {per[v][-1]['per_second']:.0f}/s" for v in names) + "\n")
    out: dict[str, Any] = {}
    for v, sums in per.items():
        stages = {s: float(np.median([x["stages"][s]["p50"] for x in sums])) for s in sums[0]["stages"]}
        out[v] = {"per_second": float(np.median([x["per_second"] for x in sums])),
                  "share_outside_infer": float(np.median([x.get("share_outside_infer", 0.0) for x in sums])),
                  "latency_p50_ms": float(np.median([x["total"]["p50"] for x in sums])), "stages_p50_ms": stages}
    for k, rates in own_rates.items():
        out[f"model_own_{k}"] = float(np.median(rates))
    return out


def classify_case(bundle: Path, rounds: int, artifact: str | None = None, backend: str = "auto") -> dict[str, Any]:
    paths = list_images(Path("build/photos/eval"))
    threads = stream_threads()
    with edgesdk.Runtime(bundle, artifact=artifact, backend=backend) as rt_all, \
            edgesdk.Runtime(bundle, threads=threads, artifact=artifact, backend=backend) as rt_pipe:
        x_all = preprocess_image(paths[0], rt_all.preprocess)
        items = [(str(p), p) for p in paths]
        variants = {
            "before": lambda log: old_classify(rt_all, paths, log),
            "after_sequential": lambda log: classify_app.classify(rt_all, items, 5, log, pipelined=False),
            "after_pipelined": lambda log: classify_app.classify(rt_pipe, items, 5, log, pipelined=True),
        }
        own = {"all_cores": lambda: own_rate(rt_all, x_all), "pipelined_threads": lambda: own_rate(rt_pipe, x_all)}
        result = compare(f"classify {rt_all.artifact.id}", variants, own, rounds)
        result |= {"artifact": rt_all.artifact.id, "backend": rt_all.backend, "inputs": f"{len(paths)} JPEG photos 512x512",
                   "threads_pipelined": threads}
    return result


def detect_case(bundle: Path, images: list[Path], label: str, rounds: int, draw: bool) -> dict[str, Any]:
    threads = stream_threads()
    out_before, out_after = WORK / f"draw-before-{label}", WORK / f"draw-after-{label}"
    for d in (out_before, out_after):
        d.mkdir(parents=True, exist_ok=True)
    with edgesdk.Runtime(bundle) as rt_all, edgesdk.Runtime(bundle, threads=threads) as rt_pipe:
        det_all, det_pipe = detect_app.Detector(rt_all), detect_app.Detector(rt_pipe)
        items = [(str(p), p) for p in images]
        x_all, _ = det_all.preprocess(edgesdk.core.images.load_image(images[0]))
        x_pipe, _ = det_pipe.preprocess(edgesdk.core.images.load_image(images[0]))
        variants = {
            "before": lambda log: old_detect(det_all, images, log, out_before if draw else None),
            "after_sequential": lambda log: detect_app.detect_all(det_all, items, log, out_after if draw else None,
                                                                  pipelined=False),
            "after_pipelined": lambda log: detect_app.detect_all(det_pipe, items, log, out_after if draw else None,
                                                                 pipelined=True),
        }
        own = {"all_cores": lambda: own_rate(rt_all, x_all), "pipelined_threads": lambda: own_rate(rt_pipe, x_pipe)}
        result = compare(f"detect {label}{' --out' if draw else ''}", variants, own, rounds)
        result |= {"artifact": rt_all.artifact.id, "backend": rt_all.backend, "threads_pipelined": threads,
                   "inputs": f"{len(images)} {label} scenes 256x256", "out": draw}
    return result


# -- Runtime.run against the plain backend call --------------------------------------------------------

def plain_call(rt: edgesdk.Runtime, native: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The backend's own call on the Runtime's loaded model, fed in the artifact's own layout."""
    from edgesdk.backends import inner_session

    inner = inner_session(rt._session)  # noqa: SLF001 - the benchmark measures what sits above it
    if rt.backend == "onnxruntime":
        session, names = inner._session, inner._output_names  # noqa: SLF001
        return lambda: session.run(names, native)
    if rt.backend == "openvino":
        request = inner._compiled.create_infer_request()  # noqa: SLF001
        by_index = dict(enumerate(native.values()))
        return lambda: request.infer(by_index)
    interpreter = inner._pool.take().it  # noqa: SLF001
    ins = [d["index"] for _, d in inner._in]  # noqa: SLF001
    outs = [d["index"] for _, d in inner._out]  # noqa: SLF001
    arrays = list(native.values())

    def tflite() -> list[np.ndarray]:
        for index, x in zip(ins, arrays):
            interpreter.set_tensor(index, x)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outs]
    return tflite


def overhead_case(bundle: Path, artifact: str, backend: str, threads: int, rounds: int, runs: int) -> dict[str, Any]:
    from common import interleaved

    from edgesdk.core.specs import random_feeds

    with edgesdk.Runtime(bundle, artifact=artifact, backend=backend, threads=threads) as rt:
        feeds = random_feeds(rt.inputs, seed=1)
        native = {s.name: np.ascontiguousarray(np.moveaxis(feeds[s.name], 1, -1)) if n != s else feeds[s.name]
                  for s, n in zip(rt.inputs, rt.native_inputs)}
        runners = {"plain": plain_call(rt, native), "runtime": lambda: rt.run_all(feeds)}
        if any(n != s for s, n in zip(rt.inputs, rt.native_inputs)):
            runners["runtime_native_layout"] = lambda: rt.run_all(native)
        per_round = interleaved(runners, rounds, runs, max(5, runs // 10))
    plain = np.asarray(per_round["plain"])
    row: dict[str, Any] = {"bundle": str(bundle), "artifact": artifact, "backend": backend, "threads": threads,
                           "plain_us": float(np.median(plain) * 1e3)}
    for k in runners:
        if k != "plain":
            diff = np.asarray(per_round[k]) - plain
            row[f"{k}_us"] = float(np.median(per_round[k]) * 1e3)
            row[f"{k}_overhead_us"] = float(np.median(diff) * 1e3)
            row[f"{k}_overhead_pct"] = float(np.median(diff / plain) * 100)
    return row


def tiny_cnn_bundle() -> Path:
    out = WORK / "tiny"
    if not out.exists():
        import torch
        from torch import nn

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(32, 10)).eval()
        edgesdk.convert(model, torch.randn(1, 3, 32, 32), targets=["onnx", "openvino", "tflite"], precisions=["fp32"],
                        out=out)
    return out


def overhead(effnet: Path, vad: Path, rounds: int) -> list[dict[str, Any]]:
    cases = [(tiny_cnn_bundle(), a, b, 1, 2000) for a, b in
             (("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino"), ("tflite-fp32", "tflite"))]
    cases += [(vad, a, b, 1, 1000) for a, b in (("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino"))]
    cases += [(effnet, a, b, 2, 40) for a, b in
              (("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino"), ("tflite-fp32", "tflite"))]
    return [overhead_case(*c[:4], rounds, c[4]) for c in cases]


def reduced_decode_parity(bundle: Path) -> dict[str, Any]:
    """What decoding JPEGs at reduced scale changes in the classifier's answers: the 100 photos, exact
    decode vs reduced, on the artifact the app picks."""
    from edgesdk.models import zoo

    photos = zoo.sample_photos()
    with edgesdk.Runtime(bundle) as rt:
        exact = np.concatenate([rt.run(preprocess_image(p, rt.preprocess)) for p in photos])
        reduced = np.concatenate([rt.run(preprocess_image(p, rt.preprocess, reduced_decode=True)) for p in photos])
        artifact = rt.artifact.id
    top5 = np.argsort(-exact, 1)[:, :5]
    cos = np.sum(exact * reduced, 1) / (np.linalg.norm(exact, axis=1) * np.linalg.norm(reduced, axis=1))
    return {"artifact": artifact, "photos": len(photos), "top1_agreement": float((exact.argmax(1) == reduced.argmax(1)).mean()),
            "top1_within_exact_top5": float(np.mean([r in t for r, t in zip(reduced.argmax(1), top5)])),
            "mean_cosine": float(cos.mean())}


def ensure_inputs(shapes: Path) -> tuple[list[Path], list[Path]]:
    """The detector bundle and its scenes as `make demo` builds them, plus a JPEG copy (camera-like)."""
    from PIL import Image

    from apps.shapes_detector import shapes_yolo, write_scenes

    data = Path("build/shapes-data")
    if not (data / "images").exists():
        write_scenes(data, 64, seed=0)
    if not shapes.exists():
        import torch

        edgesdk.convert(shapes_yolo(), torch.zeros(1, 3, 256, 256), targets=["onnx", "openvino", "tflite"],
                        precisions=["fp32", "int8"], calib=data / "calib.npy", out=shapes)
    png = list_images(data / "images")
    jpg_dir = WORK / "scenes-jpg"
    jpg_dir.mkdir(parents=True, exist_ok=True)
    for p in png:
        if not (jpg_dir / f"{p.stem}.jpg").exists():
            Image.open(p).convert("RGB").save(jpg_dir / f"{p.stem}.jpg", quality=95)
    return png, list_images(jpg_dir)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--effnet", default="build/effnet")
    ap.add_argument("--shapes", default="build/shapes")
    ap.add_argument("--vad", default="build/vad")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--classify-artifacts", default="",
                    help="comma-separated ARTIFACT[@BACKEND] to run the classifier's comparison on as well, e.g. "
                         "onnx-int8@onnxruntime,tflite-int8")
    ap.add_argument("--skip-detect", action="store_true")
    args = ap.parse_args()

    from common import ensure_effnet_bundle

    from apps.speech import build_vad_bundle

    WORK.mkdir(parents=True, exist_ok=True)
    effnet, shapes, vad = Path(args.effnet), Path(args.shapes), Path(args.vad)
    ensure_effnet_bundle(effnet, ["onnx", "openvino", "tflite"])
    if not vad.exists():
        build_vad_bundle(vad)
    png, jpg = ensure_inputs(shapes)
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "apps": {
        "classify": classify_case(effnet, args.rounds)}}
    if not args.skip_detect:
        for label, images in (("png", png), ("jpeg", jpg)):
            for draw in (False, True):
                report["apps"][f"detect_{label}{'_out' if draw else ''}"] = detect_case(
                    shapes, images, label.upper(), args.rounds, draw)
    for item in filter(None, args.classify_artifacts.split(",")):
        artifact, _, backend = item.partition("@")
        report["apps"][f"classify_{item}"] = classify_case(effnet, args.rounds, artifact, backend or "auto")
    report["reduced_decode_parity"] = reduced_decode_parity(effnet)
    if not args.skip_overhead:
        report["runtime_overhead"] = overhead(effnet, vad, args.rounds)
    print_report(report)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"{'app':22s} {'variant':18s} {'img/s':>7s} {'outside':>8s} {'p50 ms':>7s}  stream/own")
    for app, r in report["apps"].items():
        for v in ("before", "after_sequential", "after_pipelined"):
            line = f"{app:22s} {v:18s} {r[v]['per_second']:7.1f} {r[v]['share_outside_infer']:8.1%} {r[v]['latency_p50_ms']:7.2f}"
            if v == "after_pipelined":
                line += (f"  {r[v]['per_second'] / r['model_own_pipelined_threads']:.2f}x of {r['model_own_pipelined_threads']:.0f}/s "
                         f"({r['threads_pipelined']} thr), {r[v]['per_second'] / r['model_own_all_cores']:.2f}x of "
                         f"{r['model_own_all_cores']:.0f}/s (all cores)")
            print(line)
        print(f"{'':22s} {r['artifact']} on {r['backend']}; {r['inputs']}")
    p = report["reduced_decode_parity"]
    print(f"reduced JPEG decode on {p['artifact']}, {p['photos']} photos: top-1 agreement {p['top1_agreement']:.2f}, "
          f"top-1 within the exact top-5 {p['top1_within_exact_top5']:.2f}, mean cosine {p['mean_cosine']:.4f}")
    for row in report.get("runtime_overhead", []):
        extra = (f"; native layout {row['runtime_native_layout_overhead_us']:+.1f} us "
                 f"({row['runtime_native_layout_overhead_pct']:+.1f}%)" if "runtime_native_layout_us" in row else "")
        print(f"{Path(row['bundle']).name:8s} {row['artifact']:14s} {row['backend']:12s} {row['threads']} thr: plain "
              f"{row['plain_us']:8.1f} us, Runtime.run {row['runtime_us']:8.1f} us ({row['runtime_overhead_us']:+.1f} us, "
              f"{row['runtime_overhead_pct']:+.1f}%){extra}")


if __name__ == "__main__":
    sys.exit(main())
