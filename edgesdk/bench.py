"""benchmark(): load time, latency percentiles after warm-up with fixed threads, throughput, peak
memory, size and recorded parity, for every (artifact, backend) of a bundle, on the same inputs."""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import load_bundle
from .errors import EdgeSDKError, UsageError
from .hardware import detect
from .runtime import Runtime
from .runtimes import backends, check_threads
from .specs import random_feeds
from .timing import percentiles, time_runs  # noqa: F401 - also edgesdk.bench's public names

log = logging.getLogger(__name__)


@dataclass
class BenchResult:
    artifact: str
    format: str
    backend: str
    precision: str
    latency_ms: dict[str, float]
    throughput_ips: float
    load_s: float
    peak_rss_mb: float | None
    size_bytes: int
    parity: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    execution_precision: str = ""  # what the backend computed in (OpenVINO: f32 or bf16)
    mode: str = "latency"
    nonfinite_outputs: bool = False  # NaN/Inf out on the bench inputs: a corrupt (bare) file, or overflow


@dataclass
class BenchReport:
    model: str
    runs: int
    warmup: int
    threads: int | None
    results: list[BenchResult]
    machine: dict[str, Any]
    mode: str = "latency"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "mode": self.mode, "runs": self.runs, "warmup": self.warmup,
                "threads": self.threads, "results": [asdict(r) for r in self.results], "machine": self.machine}


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter for this process (Linux), so each artifact gets its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:
        return None


def bench_inputs(rt: Runtime, seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs of the model's input specs: the same for every artifact."""
    return list(random_feeds(rt.inputs, seed).values())


def benchmark(
    model: str | os.PathLike,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    artifacts: Sequence[str] | None = None,
    backend: str = "auto",
    progress: Callable[[str], None] | None = None,
    mode: str = "latency",
) -> BenchReport:
    """Benchmark every artifact of a bundle (or one model file) on every installed backend that runs it.

    mode="latency" times one request at a time (the edge-device case). mode="throughput" opens each
    backend with its throughput setting and submits all runs at once, through asynchronous requests where
    the backend has them (OpenVINO); latencies are then per request, under load."""
    step = progress or (lambda msg: log.info("%s", msg))
    threads = check_threads(threads)
    if mode not in ("latency", "throughput"):
        raise UsageError(f"mode must be 'latency' or 'throughput', not {mode!r}.")
    if runs < 1 or warmup < 0:
        raise UsageError(f"runs must be at least 1 and warmup at least 0 (got runs={runs}, warmup={warmup}).")
    path = Path(model)
    pairs: list[tuple[str | None, str]] = []
    if path.is_dir():
        bundle = load_bundle(path)
        names = [backend] if backend != "auto" else [b.name for b in backends()]
        for art in bundle.artifacts:
            if artifacts and art.id not in artifacts and art.file not in artifacts:
                continue
            for b in backends():
                if b.name in names and art.format in b.formats and b.available()[0]:
                    pairs.append((art.id, b.name))
    else:
        pairs.append((None, backend))
    results: list[BenchResult] = []
    inputs: list[np.ndarray] | None = None
    for art_id, backend_name in pairs:
        step(f"Benchmarking {art_id or path.name} on {backend_name}")
        _reset_peak_rss()
        try:
            t0 = time.perf_counter()
            rt = Runtime(path, backend=backend_name, artifact=art_id, threads=threads, mode=mode)
            load_s = time.perf_counter() - t0
        except EdgeSDKError as exc:
            log.warning("Skipping %s on %s: %s", art_id, backend_name, exc)
            results.append(BenchResult(art_id or path.name, "?", backend_name, "?", {}, 0.0, 0.0, None, 0, {},
                                       str(exc)))
            continue
        with rt:
            if inputs is None:
                inputs = bench_inputs(rt)
            batch = rt.inputs[0].concrete_shape()[0] if rt.inputs and rt.inputs[0].shape else 1
            if mode == "throughput":
                rt.run_many([inputs] * max(warmup, 1))
                t0 = time.perf_counter()
                rt.run_many([inputs] * runs)
                elapsed = time.perf_counter() - t0
                lat = percentiles(rt.last_latencies_s)
                ips = batch * runs / elapsed
            else:
                lat = percentiles(time_runs(lambda rt=rt, feeds=inputs: rt.run_all(feeds), runs, warmup))
                ips = batch * 1e3 / lat["mean"]
            nonfinite = any(o.dtype.kind == "f" and not np.isfinite(o).all() for o in rt.run_all(inputs))
            art = rt.artifact
            size = art.size_bytes or (rt.bundle.path / art.file).stat().st_size
            results.append(BenchResult(
                artifact=art.id if path.is_dir() else path.name, format=art.format, backend=rt.backend,
                precision=art.precision, latency_ms=lat, throughput_ips=ips, load_s=load_s,
                peak_rss_mb=_peak_rss_mb(), size_bytes=size, parity=art.parity,
                execution_precision=rt.execution_precision, mode=mode, nonfinite_outputs=nonfinite,
            ))
    hw = detect()
    machine = {**hw.to_dict(), "python": platform.python_version(), "machine_id": hw.machine_id}
    return BenchReport(str(path), runs, warmup, threads, results, machine, mode)


def write_csv(report: BenchReport, path: str | os.PathLike) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["artifact", "format", "backend", "precision", "execution_precision", "mode", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
                    "throughput_ips", "load_s", "peak_rss_mb", "size_bytes", "max_abs", "top1_agreement", "error"])
        for r in report.results:
            lat = r.latency_ms
            w.writerow([r.artifact, r.format, r.backend, r.precision, r.execution_precision, r.mode, lat.get("p50"), lat.get("p90"), lat.get("p99"),
                        lat.get("mean"), r.throughput_ips, r.load_s, r.peak_rss_mb, r.size_bytes,
                        r.parity.get("max_abs"), r.parity.get("top1_agreement"), r.error or ""])
