"""convert(): source model -> a bundle of artifacts, each checked against the source."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Artifact, Bundle, check_output_dir, load_bundle, sha256_of, staged_dir
from .calibration import CalibrationSet
from .converters import ConversionJob, get_converter
from .errors import ConversionError
from .hardware import detect
from .parity import Tolerance, compare
from .runtimes import adapt, backends
from .sources import SourceModel, from_module, load_source
from .specs import Preprocess

log = logging.getLogger(__name__)

#: `--target` presets: which formats, at which precisions, a device class gets. FP32 rides along as
#: the fallback and the reference the reduced precisions are checked against.
TARGET_PRESETS: dict[str, dict[str, list[str]]] = {
    "jetson": {"onnx": ["fp32"], "tensorrt": ["fp16", "int8"]},  # engines are built on the Jetson itself
    "rpi": {"tflite": ["fp32", "int8"], "onnx": ["fp32", "int8"]},
    "android": {"tflite": ["fp32", "fp16", "int8"]},  # fp16 for the GPU delegate
    "x86": {"onnx": ["fp32", "int8"], "openvino": ["fp32", "int8"]},
}

#: Parity runs on at most this many samples: enough for a stable agreement figure, quick to run.
MAX_PARITY_SAMPLES = 100
LATENCY_RUNS = 20
TIMING_ROUNDS = 3


def _as_source(model: Any, example_input: Any, dynamic_batch: bool) -> SourceModel:
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        shape = tuple(np.shape(example_input)) if example_input is not None else None
        return load_source(model, input_shape=shape, dynamic_batch=dynamic_batch)
    if _is_keras(model):
        from .sources import KerasSource

        return KerasSource(model)
    if example_input is None:
        raise ConversionError("Converting a torch module needs an example input, e.g. torch.randn(1, 3, 224, 224).")
    return from_module(model, example_input, dynamic_batch=dynamic_batch)


def _is_keras(model: Any) -> bool:
    """A Keras model, told without importing Keras or TensorFlow."""
    return any(c.__module__.split(".")[0] in ("keras", "tf_keras") for c in type(model).__mro__)


def _read_labels(labels: Sequence[str] | str | os.PathLike | None) -> list[str] | None:
    if labels is None or isinstance(labels, (list, tuple)):
        return list(labels) if labels is not None else None
    path = Path(labels)
    if not path.is_file():
        raise ConversionError(f"Labels file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _parity_feeds(source: SourceModel, validation: CalibrationSet | None,
                  calibration: CalibrationSet | None) -> tuple[list[dict[str, np.ndarray]], str]:
    if validation is not None:
        return validation.samples[:MAX_PARITY_SAMPLES], f"validation: {validation.source}"
    if calibration is not None:
        return calibration.samples[:MAX_PARITY_SAMPLES], f"calibration samples (no held-out set given): " \
                                                         f"{calibration.source}"
    rng = np.random.default_rng(0)
    feeds = [source.example_feeds()]
    for _ in range(4):
        feeds.append({s.name: rng.standard_normal(s.concrete_shape()).astype(np.float32) for s in source.inputs})
    return feeds, "example input and 4 random inputs"


def measure_parity(session: Any, feeds: list[dict[str, np.ndarray]],
                   reference: list[list[np.ndarray]]) -> tuple[dict[str, Any], float]:
    """Run every feed through session; return (parity vs reference, median latency in ms)."""
    outputs = [session.run(f) for f in feeds]
    parity = compare(reference, outputs)
    times = []
    for _ in range(3 + LATENCY_RUNS):
        t0 = time.perf_counter()
        session.run(feeds[0])
        times.append(time.perf_counter() - t0)
    return parity, float(np.median(times[3:]) * 1e3)


def time_interleaved(stage: Path, artifacts: list[Artifact], source: SourceModel, feed: dict[str, np.ndarray],
                     rounds: int = TIMING_ROUNDS, runs: int = LATENCY_RUNS) -> None:
    """Re-time every (artifact, backend) pair in interleaved rounds, so the latencies the Runtime ranks by
    were taken side by side rather than minutes apart on a machine whose speed drifts. The recorded figure
    is the median over rounds of each round's median."""
    sessions = {}
    for art in artifacts:
        for name in list(art.latency_ms):
            backend = next(b for b in backends() if b.name == name)
            sessions[(art.id, name)] = (art, adapt(backend.open(stage / art.file, precision=art.precision),
                                                   source.inputs, source.outputs, art.io))
    per_round: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
    try:
        keys = list(sessions)
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[: r % len(keys)] if keys else []:
                session = sessions[key][1]
                for _ in range(2):
                    session.run(feed)
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    session.run(feed)
                    times.append(time.perf_counter() - t0)
                per_round[key].append(float(np.median(times) * 1e3))
    finally:
        for _, session in sessions.values():
            session.close()
    for (art_id, name), values in per_round.items():
        if values:
            sessions[(art_id, name)][0].latency_ms[name] = float(np.median(values))


def convert(
    model: Any,
    example_input: Any = None,
    targets: Sequence[str] = ("onnx",),
    precisions: Sequence[str] | Mapping[str, Sequence[str]] = ("fp32",),
    calib: Any = None,
    out: str | os.PathLike = "build/model",
    *,
    validation: Any = None,
    preprocess: Preprocess | None = None,
    labels: Sequence[str] | str | os.PathLike | None = None,
    task: str | None = None,
    force: bool = False,
    dynamic_batch: bool = False,
    tolerance: Tolerance = Tolerance(),
    options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    """Convert a model to every (target, precision) asked for and write a bundle folder at `out`.

    model is a torch nn.Module (with example_input), a Keras model, a model file path, or a SourceModel.
    precisions go to every target that has them, or are given per target ({"onnx": ["fp32"], ...}). calib is the
    INT8 calibration data (image folder, .npy/.npz, array or iterable); validation, in the same forms,
    is the held-out data parity is measured on. Every artifact is run against the source; an FP32
    artifact off by more than tolerance.fp32_max_abs raises ConversionError and writes nothing."""
    step = progress or (lambda msg: log.info("%s", msg))
    out_path = Path(out)
    check_output_dir(out_path, force)  # fail before any slow work
    converters = [get_converter(t) for t in targets]
    for conv in converters:
        conv.require()
    if isinstance(precisions, Mapping):
        per_target = {t: list(precisions.get(t, ())) for t in targets}
        bad = [f"{t} {p}" for t, ps in per_target.items() for p in ps if p not in get_converter(t).precisions]
        if bad:
            raise ConversionError(f"Unsupported target precisions: {', '.join(bad)}.")
    else:
        per_target = {c.name: [p for p in precisions if p in c.precisions] for c in converters}
    # Each precision goes to every target that supports it (bf16 exists for OpenVINO only, say).
    unsupported = [] if isinstance(precisions, Mapping) else [
        p for p in precisions if not any(p in c.precisions for c in converters)]
    if unsupported:
        raise ConversionError(f"No target among {', '.join(c.name for c in converters)} produces "
                              f"{', '.join(unsupported)}: " +
                              "; ".join(f"{c.name} supports {', '.join(c.precisions)}" for c in converters) + ".")
    step("Loading the source model")
    source = _as_source(model, example_input, dynamic_batch)
    # A model may carry its own metadata (see edgesdk.zoo); explicit arguments win.
    carried = getattr(getattr(source, "module", None), "edgesdk_metadata", None) or {}
    preprocess = preprocess or carried.get("preprocess")
    labels = labels if labels is not None else carried.get("labels")
    task = task or carried.get("task")
    calibration = validation_set = None
    if calib is not None:
        calibration = CalibrationSet.from_any(calib, source.inputs, preprocess)
        preprocess = preprocess or calibration.preprocess
    if validation is not None:
        validation_set = CalibrationSet.from_any(validation, source.inputs, preprocess)
    feeds, parity_data = _parity_feeds(source, validation_set, calibration)
    step(f"Running the source model on {len(feeds)} parity samples")
    reference = [source.run(f) for f in feeds]
    label_list = _read_labels(labels)
    machine = detect().machine_id
    artifacts: list[Artifact] = []
    with staged_dir(out_path, force) as stage:
        for conv in converters:
            wanted = per_target[conv.name]
            if not wanted:
                continue
            step(f"Converting to {conv.name} ({', '.join(wanted)})")
            job = ConversionJob(source, wanted, stage, calibration,
                                {"task": task, **(options or {}), "dynamic_batch": dynamic_batch}, artifacts)
            for art in conv.convert(job):
                path = stage / art.file
                art.sha256, art.size_bytes = sha256_of(path), path.stat().st_size
                for name in art.companions:
                    art.companions[name] = sha256_of(stage / name)
                    art.size_bytes += (stage / name).stat().st_size
                runners = [b for b in backends() if art.format in b.formats and b.available()[0]]
                proxy = False
                if not runners and path.suffix == ".onnx":  # e.g. TensorRT's QDQ ONNX, checked on ORT
                    runners = [b for b in backends() if art.format in b.checks_formats and b.available()[0]][:1]
                    proxy = bool(runners)
                if not runners:
                    log.warning("No installed backend runs %s artifacts; parity of %s not measured.",
                                art.format, art.file)
                for i, runner in enumerate(runners):
                    step(f"Checking {art.file} on {runner.name}")
                    session = adapt(runner.open(path, precision=art.precision), source.inputs, source.outputs,
                                    art.io)
                    try:
                        parity, ms = measure_parity(session, feeds, reference)
                    finally:
                        session.close()
                    if not proxy:  # a proxy's speed says nothing about the real backend's
                        art.latency_ms[runner.name] = ms
                    if i == 0:  # parity from the first backend that runs the format; the others are timed
                        art.parity = {**parity, "data": parity_data,
                                      "backend": f"{runner.name} (checks the file {art.format} builds from)"
                                      if proxy else runner.name}
                art.measured_on = machine
                ok, why = tolerance.accepts(art.precision, art.parity)
                if art.precision == "fp32" and not ok:
                    raise ConversionError(f"The {art.format} FP32 artifact does not match the source: {why} "
                                          f"on {art.parity['samples']} samples. Nothing was written.")
                if not ok:
                    log.warning("%s: %s, outside tolerance; Runtime(precision='auto') will not pick it.",
                                art.id, why)
                artifacts.append(art)
        step("Timing every artifact on every backend, interleaved")
        time_interleaved(stage, artifacts, source, feeds[0])
        bundle = Bundle(
            path=stage, inputs=source.inputs, outputs=source.outputs, artifacts=artifacts,
            preprocess=preprocess, labels=label_list,
            task=task or ("classification" if label_list else None),
            meta={
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "source": {"kind": source.kind, "description": source.description},
                "calibration": calibration.describe() if calibration else None,
            },
        )
        bundle.write_manifest()
    return load_bundle(out_path)
