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

from ..backends import backends, check_threads
from ..core.bundle import load_bundle
from ..core.errors import EdgeSDKError, UsageError
from ..core.hardware import read_profile
from ..core.records import Parity
from ..core.specs import random_feeds
from ..running.runtime import Runtime
from ..running.timing import percentiles, time_runs  # noqa: F401 - also edgesdk.measuring.bench's public names

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
    parity: Parity = field(default_factory=Parity)
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
                "threads": self.threads, "results": [{**asdict(r), "parity": r.parity.to_dict()} for r in self.results], "machine": self.machine}


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
    results: list[BenchResult] = []
    shared: dict[str, list[np.ndarray]] = {}  # the first Runtime's inputs, used for every pair
    for art_id, backend_name in _bench_pairs(path, backend, artifacts):
        step(f"Benchmarking {art_id or path.name} on {backend_name}")
        results.append(_bench_one(path, art_id, backend_name, threads, mode, runs, warmup, shared))
    hw = read_profile()
    machine = {**hw.to_dict(), "python": platform.python_version(), "machine_id": hw.machine_id}
    return BenchReport(str(path), runs, warmup, threads, results, machine, mode)


def _bench_pairs(path: Path, backend: str, artifacts: Sequence[str] | None) -> list[tuple[str | None, str]]:
    """(artifact id, backend) for every installed backend that runs each selected artifact; a bare file
    is one pair with no artifact id."""
    if not path.is_dir():
        return [(None, backend)]
    names = [backend] if backend != "auto" else [b.name for b in backends()]
    return [(art.id, b.name) for art in load_bundle(path).artifacts
            if not artifacts or art.id in artifacts or art.file in artifacts
            for b in backends() if b.name in names and art.format in b.formats and b.available()[0]]


def _bench_one(path: Path, art_id: str | None, backend: str, threads: int | None, mode: str, runs: int,
               warmup: int, shared: dict[str, list[np.ndarray]]) -> BenchResult:
    """Load, time and describe one pair; a pair that does not load is a result with its error."""
    _reset_peak_rss()
    try:
        t0 = time.perf_counter()
        rt = Runtime(path, backend=backend, artifact=art_id, threads=threads, mode=mode)
        load_s = time.perf_counter() - t0
    except EdgeSDKError as exc:
        log.warning("Skipping %s on %s: %s", art_id, backend, exc)
        return BenchResult(art_id or path.name, "?", backend, "?", {}, 0.0, 0.0, None, 0, {}, str(exc))
    with rt:
        inputs = shared.setdefault("inputs", bench_inputs(rt))
        lat, ips = _time(rt, inputs, runs, warmup, mode)
        nonfinite = any(o.dtype.kind == "f" and not np.isfinite(o).all() for o in rt.run_all(inputs))
        art = rt.artifact
        return BenchResult(
            artifact=art.id if path.is_dir() else path.name, format=art.format, backend=rt.backend,
            precision=art.precision, latency_ms=lat, throughput_ips=ips, load_s=load_s,
            peak_rss_mb=_peak_rss_mb(), size_bytes=art.size_bytes or (rt.bundle.path / art.file).stat().st_size,
            parity=art.parity, execution_precision=rt.execution_precision, mode=mode, nonfinite_outputs=nonfinite,
        )


def _time(rt: Runtime, inputs: list[np.ndarray], runs: int, warmup: int, mode: str) -> tuple[dict[str, float], float]:
    """(latency percentiles in ms, samples per second): one request at a time, or all in flight."""
    batch = rt.inputs[0].concrete_shape()[0] if rt.inputs and rt.inputs[0].shape else 1
    if mode == "throughput":
        rt.run_many([inputs] * max(warmup, 1))
        t0 = time.perf_counter()
        rt.run_many([inputs] * runs)
        elapsed = time.perf_counter() - t0
        return percentiles(rt.last_latencies_s), batch * runs / elapsed
    lat = percentiles(time_runs(lambda: rt.run_all(inputs), runs, warmup))
    return lat, batch * 1e3 / lat["mean"]


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
                        r.parity.max_abs, r.parity.top1_agreement, r.error or ""])
