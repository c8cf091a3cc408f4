"""What every sample app shares, so each app file holds only its own model's work: the command line
(model, backend, precision, artifact, threads, latency log, JSON), image inputs (files, folders, a
camera or video), and how results and errors are printed. Uses edgesdk's public API only."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import edgesdk
from edgesdk.core.images import list_images
from edgesdk.stream import Frame


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def app_parser(prog: str, doc: str, default_model: str, default_log: str) -> argparse.ArgumentParser:
    """The options every app takes; the app adds its own."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.splitlines()[0])
    ap.add_argument("--model", default=default_model, help=f"bundle folder or model file (default {default_model})")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--artifact", help="one artifact of the bundle, e.g. tflite-int8")
    ap.add_argument("--threads", type=positive_int,
                    help="inference threads (default: every core; all but one when images are pipelined)")
    ap.add_argument("--log", default=default_log, help="JSONL file with every sample's timings")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    return ap


def add_image_inputs(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("inputs", nargs="*", help="image files or folders")
    ap.add_argument("--video", help="camera index or video file (needs OpenCV)")
    ap.add_argument("--sequential", action="store_true",
                    help="one image at a time (default: decode, inference and post-processing overlap)")


def stream_results(frames: Iterable[Frame], key: str) -> list[dict[str, Any]]:
    """One result per frame, in input order: {"input", key: frame.result} or {"input", "error"}."""
    return [{"input": f.name, "error": f.error} if f.error else {"input": f.name, key: f.result} for f in frames]


def open_runtime(args: argparse.Namespace, stream: bool = False) -> edgesdk.Runtime:
    """The app's Runtime. A pipelined stream (several images, a video) leaves one core to decoding and
    post-processing unless --threads says otherwise: a model on every core would fight them for it."""
    threads = args.threads
    if threads is None and stream and not getattr(args, "sequential", True):
        threads = stream_threads()
    return edgesdk.Runtime(args.model, backend=args.backend, precision=args.precision, artifact=args.artifact,
                           threads=threads)


def stream_threads() -> int | None:
    """Inference threads for a pipelined stream: all cores but one (None, the backend's choice, on one core)."""
    cores = os.cpu_count() or 1  # what the backends take by default
    return cores - 1 if cores > 1 else None


def image_paths(inputs: list[str]) -> list[Path]:
    """Every image given; a folder without images is an error (a typo, not an empty result)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise edgesdk.InputError(f"Folder {p} holds no images (.jpg, .png, ...).")
            paths += found
        else:
            paths.append(p)  # a missing or unreadable file is reported by decode, per image
    return paths


def frames(source: str) -> Iterator[tuple[str, Any]]:
    """Frames of a camera index or a video file, as RGB PIL images (needs OpenCV)."""
    try:
        import cv2
    except ImportError:
        raise edgesdk.BackendUnavailable("--video needs OpenCV: pip install opencv-python-headless") from None
    from PIL import Image

    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise edgesdk.InputError(f"Cannot open camera or video '{source}'.")
    index = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield f"{source}#{index}", Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()


def image_items(args: argparse.Namespace, paths: list[Path]) -> Iterator[tuple[str, Any]]:
    """(name, image path or frame) for each input: the camera or video when --video is given."""
    return frames(args.video) if args.video else ((str(p), p) for p in paths)


def print_results(results: list[dict[str, Any]], latency: edgesdk.LatencyLog, as_json: bool,
                  line: Callable[[dict[str, Any]], str], header: dict[str, Any]) -> None:
    """Results as one JSON document, or one line each (line() says what) and the latency table."""
    if as_json:
        print(json.dumps({**header, "results": results, "latency": latency.summary()}, indent=2))
        return
    if header.get("artifact"):
        print(f"{header['artifact']} on {header['backend']}")
    for r in results:
        print(f"{r['input']}: error: {r['error']}" if "error" in r else line(r))
    print(latency.table())


def run_app(body: Callable[[], list[dict[str, Any]]]) -> int:
    """Exit status of an app: 0 when every input went through, 2 when some failed, 1 (message on
    stderr) when nothing could run."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        results = body()
    except edgesdk.EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if all("error" not in r for r in results) else 2


def missing_model(path: str, hint: str) -> bool:
    """True, with the message on stderr, when there is no model at path."""
    if Path(path).exists():
        return False
    print(f"error: no model at {path}. {hint}", file=sys.stderr)
    return True
