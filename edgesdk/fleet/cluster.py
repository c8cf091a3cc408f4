"""Benchmarks across a fleet of devices on Ray: each device joins a Ray cluster as a worker with a
resource naming its device class (`edgesdk/<class>`), and a bundle's benchmark runs on one node of every
class present. Bundles travel through Ray's object store, so devices need no shared disk, only
`edgesdk[runtimes,fleet]`. With no cluster address, Ray starts embedded on this machine.

    ray start --address HEAD:6379 --resources '{"edgesdk/rpi5": 1}'     # or: edgesdk worker --address HEAD:6379
    edgesdk bench build/effnet --fleet --address HEAD:6379
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import EdgeSDKError, UsageError, first_line, require

log = logging.getLogger(__name__)

#: Resource prefix of a device class; a node advertises one unit, so benchmarks on it never overlap.
CLASS_PREFIX = "edgesdk/"
#: Resource of nodes that can convert (torch, TensorFlow, OpenVINO installed); one unit per conversion slot.
CONVERTER = "edgesdk/converter"
#: A task lost with its node is re-run elsewhere this many times (Ray's own retry).
TASK_RETRIES = 3
#: How often the driver checks, while it waits, whether a device class has left the cluster.
POLL_S = 2.0
#: Memory a conversion may take (torch + TensorFlow + the model): the embedded pool is sized by it too.
GB_PER_CONVERSION = 4


def ray_module() -> Any:
    return require("ray", "fleet", "Sweeps and fleet benchmarks (Ray)")


def device_class(profile: Any) -> str:
    """The class a node advertises: a Raspberry Pi's model ('rpi5'), a Jetson's module ('jetson-orin'),
    else the profile's device class ('x86', 'arm', 'nvidia', 'android')."""
    board = profile.board.lower()
    if profile.device == "rpi":
        m = re.search(r"raspberry pi (\d+)", board)
        return f"rpi{m.group(1)}" if m else "rpi"
    if profile.device == "jetson":
        m = re.search(r"(orin|xavier|nano|tx2|tx1)", board)
        return f"jetson-{m.group(1)}" if m else "jetson"
    return profile.device


def check_class_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
        raise UsageError(f"Device class {name!r}: use lower-case letters, digits, '-', '_' or '.', e.g. rpi5 or jetson-orin.")
    return name


def default_workers() -> int:
    """Embedded pool size: the cores, but no more conversions than memory holds at GB_PER_CONVERSION each."""
    cores = os.cpu_count() or 1
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = GB_PER_CONVERSION * cores
    return max(1, min(cores, int(mem_gb // GB_PER_CONVERSION)))


@dataclass
class Cluster:
    """The Ray cluster a sweep or fleet bench runs on: embedded here, or one it joined at address."""

    address: str | None
    embedded: bool
    workers: int | None = None

    def device_classes(self) -> dict[str, list[str]]:
        """{class: [node id, ...]} over the nodes alive now."""
        classes: dict[str, list[str]] = {}
        for node in ray_module().nodes():
            if not node.get("Alive"):
                continue
            for res in node.get("Resources", {}):
                if res.startswith(CLASS_PREFIX) and res != CONVERTER:
                    classes.setdefault(res[len(CLASS_PREFIX):], []).append(node["NodeID"])
        return classes

    def describe(self) -> dict[str, Any]:
        ray = ray_module()
        nodes = [{"id": n["NodeID"][:12], "address": n.get("NodeManagerAddress"), "alive": n.get("Alive"),
                  "resources": {k: v for k, v in n.get("Resources", {}).items() if k.startswith(CLASS_PREFIX) or k == "CPU"}}
                 for n in ray.nodes()]
        return {"address": self.address or "embedded", "embedded": self.embedded, "workers": self.workers, "nodes": nodes}


@contextlib.contextmanager
def connect(address: str | None = None, workers: int | None = None) -> Iterator[Cluster]:
    """Join the Ray cluster at address (or $RAY_ADDRESS), or start Ray embedded here with `workers`
    conversion slots and this machine's device class; shut down on exit what was started here. A Ray
    session the caller already opened is used as it is."""
    ray = ray_module()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        yield Cluster(address, embedded=False, workers=workers)
        return
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers}.")
    if address and workers is not None:
        raise UsageError("workers sizes an embedded Ray; a cluster's size is its nodes' resources.")
    # Embedded, or a cluster on this machine's loopback: nothing listens beyond 127.0.0.1. Only an address
    # the user gives on the network takes Ray there.
    with loopback_only() if not address or is_loopback(address) else contextlib.nullcontext():
        if address:
            _init(ray, address=address)
        else:
            from ..core.hardware import read_profile

            workers = workers or default_workers()
            resources = {CONVERTER: float(workers), CLASS_PREFIX + device_class(read_profile()): 1.0}
            # address="local": a Ray of its own, even when another cluster runs on this machine (a bare
            # ray.init() would join that one).
            _init(ray, address="local", num_cpus=workers, resources=resources, include_dashboard=False)
        try:
            yield Cluster(address, embedded=not address, workers=workers)
        finally:
            ray.shutdown()


#: Ray's switch for its single-machine mode (the default on macOS and Windows): with it off, every service
#: Ray starts listens on 127.0.0.1, and a node address of 127.0.0.1 is not swapped for the network one.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback(address: str) -> bool:
    """Whether an address ('127.0.0.1:6379', 'localhost:6379', '[::1]:6379', a bare IP such as
    '::ffff:127.0.0.1') is this machine's loopback."""
    import ipaddress

    host = address.split("://", 1)[-1]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Ray on 127.0.0.1 only, for what starts (or connects) inside: on Linux Ray maps a node address of
    127.0.0.1 back to the machine's network address, so its services listened on eth0. Ray reads its switch
    from the environment when imported (the processes it starts inherit the variable) and keeps it as a
    constant in this process, which is set too; both are restored on exit."""
    ray_module()
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(LOOPBACK_ENV), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env
        if old_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = old_flag


def _init(ray: Any, **kwargs: Any) -> None:
    try:
        ray.init(logging_level=logging.WARNING, log_to_driver=False, configure_logging=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = kwargs["address"] if kwargs.get("address") not in (None, "local") else "an embedded Ray"
        raise UsageError(f"Could not start or join Ray ({where}): {first_line(exc)}. For a cluster, give the head's "
                         "address as HOST:6379 (ray start --head prints it).") from None


# -- bundles through the object store ---------------------------------------------------------------

def pack_bundle(path: str | os.PathLike) -> bytes:
    """A bundle folder as one uncompressed tar (model weights barely compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def unpack_bundle(blob: bytes, dest: Path) -> Path:
    """Unpack a packed bundle to dest (whole or not at all); members that would land outside dest,
    links and devices are refused by tarfile's 'data' filter."""
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            _extract(tar, stage)
        os.replace(stage, dest)
    except FileExistsError:
        shutil.rmtree(stage, ignore_errors=True)  # another task on this node unpacked it first
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if not dest.is_dir():
            raise UsageError(f"Could not unpack the bundle shipped to this node: {exc}") from None
    return dest


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract plain files and folders only, inside dest. Pythons without tarfile's filters (Debian
    bookworm's 3.11.2, on Raspberry Pi OS) get the same rule checked here."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():
        name = Path(member.name)
        if not (member.isfile() or member.isdir()) or name.is_absolute() or ".." in name.parts:
            raise tarfile.TarError(f"refusing the member {member.name!r}: not a plain file inside the bundle")
    tar.extractall(dest)  # noqa: S202 - every member checked above


def local_copy(blob: bytes, key: str) -> Path:
    """This node's copy of a shipped bundle, unpacked once per content (key) in the cache folder."""
    from ..core.cache import cache_dir

    dest = cache_dir() / "fleet" / key
    if not (dest / "edgesdk.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        unpack_bundle(blob, dest)
    return dest


def content_key(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:24]


# -- the benchmark a device runs ------------------------------------------------------------------

@dataclass
class BenchSettings:
    runs: int = 50
    warmup: int = 5
    threads: int | None = None

    def check(self) -> BenchSettings:
        if self.runs < 1 or self.warmup < 0:
            raise UsageError(f"bench needs runs >= 1 and warmup >= 0 (got runs={self.runs}, warmup={self.warmup}).")
        return self


def bench_on_node(blob: bytes, model: str, settings: dict[str, Any], labelled: dict[str, Any] | None,
                  cls: str) -> dict[str, Any]:
    """Runs on a device: every artifact of the shipped bundle on every backend installed here, timed,
    with accuracy on the labelled data when given; artifacts no backend here runs are rows marked
    'not available'. Returns {"device_class", "node", "host", "machine", "rows"}."""
    from ..core.bundle import load_bundle
    from ..core.hardware import read_profile
    from ..measuring.bench import benchmark

    path = local_copy(blob, content_key(blob))
    bundle = load_bundle(path)
    s = BenchSettings(**settings)
    report = benchmark(path, runs=s.runs, warmup=s.warmup, threads=s.threads)
    data = _labelled_here(labelled)
    rows = [_row(r, bundle, data, s.threads) for r in report.results]
    benched = {r["artifact"] for r in rows}
    rows += [_unavailable_row(a) for a in bundle.artifacts if a.id not in benched]
    _mark_auto_pick(rows, bundle)
    profile = read_profile()
    return {"device_class": cls, "model": model, "node": node_id(), "host": socket.gethostname(),
            "machine": {"summary": profile.summary(), "arch": profile.arch, "machine_id": profile.machine_id},
            "rows": rows}


def node_id() -> str:
    """The Ray node this runs on, or 'local' outside Ray (never starting Ray to find out)."""
    try:
        import ray
    except ImportError:
        return "local"
    return ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else "local"


def _labelled_here(labelled: dict[str, Any] | None) -> Any:
    """The shipped labelled set, written once per content into this node's cache folder."""
    if not labelled:
        return None
    from ..core.cache import cache_dir
    from ..measuring.accuracy import LabelledSet

    digest = hashlib.sha256()
    for name, data in sorted(labelled["files"].items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    dest = cache_dir() / "fleet" / f"data-{digest.hexdigest()[:24]}"
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=dest.parent))
        LabelledSet.from_payload(labelled, stage)
        try:
            os.replace(stage, dest)
        except OSError:  # another task on this node wrote it first
            shutil.rmtree(stage, ignore_errors=True)
    return LabelledSet.from_payload({**labelled, "files": {}}, dest)


def _row(result: Any, bundle: Any, data: Any, threads: int | None) -> dict[str, Any]:
    lat = result.latency_ms
    row = {"artifact": result.artifact, "format": result.format, "backend": result.backend,
           "precision": result.precision, "status": "failed" if result.error else "ok", "error": result.error,
           "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"),
           "throughput_ips": result.throughput_ips, "peak_rss_mb": result.peak_rss_mb,
           "size_bytes": result.size_bytes, "load_s": result.load_s, "agreement": agreement(result.parity)}
    if data is not None and not result.error:
        row["accuracy"] = _accuracy(bundle, result.artifact, result.backend, data, threads)
    return row


def agreement(parity: Any) -> dict[str, Any]:
    """The recorded parity figure that stands for accuracy without labels."""
    if parity.top1_agreement is not None:
        return {"metric": "top1_agreement", "value": parity.top1_agreement}
    if parity.detection is not None:
        return {"metric": "detection_recall", "value": parity.detection.recall}
    return {"metric": "cosine", "value": parity.cosine} if parity.cosine is not None else {}


def _accuracy(bundle: Any, artifact: str, backend: str, data: Any, threads: int | None) -> dict[str, Any]:
    from ..measuring.accuracy import evaluate
    from ..running.runtime import Runtime

    try:
        with Runtime(bundle.path, artifact=artifact, backend=backend, threads=threads) as rt:
            return evaluate(rt.run_all, data, bundle.task, bundle.preprocess, bundle.inputs, bundle.labels)
    except EdgeSDKError as exc:
        return {"error": str(exc)}


def _unavailable_row(art: Any) -> dict[str, Any]:
    from ..backends import backends

    runners = [b for b in backends() if art.format in b.formats]
    why = "; ".join(f"{b.name}: {b.available()[1]}" for b in runners) or f"no backend runs {art.format}"
    return {"artifact": art.id, "format": art.format, "backend": None, "precision": art.precision,
            "status": "not available", "error": why, "size_bytes": art.size_bytes}


def _mark_auto_pick(rows: list[dict[str, Any]], bundle: Any) -> None:
    """Mark the row Runtime(precision='auto') would load on this device, ranked with the timings just taken."""
    from ..backends import rank
    from ..core.records import Tolerance

    measured = {(r["backend"], r["artifact"]): r["p50_ms"] for r in rows if r["status"] == "ok"}
    try:
        best = rank(bundle, Tolerance(), measured=measured).candidates[0]
    except (EdgeSDKError, IndexError):
        return
    for r in rows:
        r["auto_pick"] = (r["artifact"], r["backend"]) == (best.artifact.id, best.backend.name)


# -- executors: Ray tasks, or the same functions in this process ------------------------------

@dataclass
class Job:
    """One function call: its key in the results, the Ray resources it needs, and the device class it
    must run on (None: any node with those resources)."""

    key: Any
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)
    device_class: str | None = None


class LocalExecutor:
    """Runs jobs one after another in this process: the sequential reference, and a sweep without Ray."""

    def __init__(self) -> None:
        from ..core.hardware import read_profile

        self.classes = [device_class(read_profile())]

    def share(self, value: Any) -> Any:
        return value

    def run(self, jobs: list[Job], on_done: Callable[[Any, dict[str, Any]], None]) -> None:
        for job in jobs:
            try:
                result = job.fn(*job.args)
            except EdgeSDKError as exc:
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            on_done(job.key, result)

    def describe(self) -> dict[str, Any]:
        return {"address": "sequential (no Ray)", "embedded": False, "nodes": []}


class RayExecutor:
    """Runs jobs as Ray tasks on a cluster: a task whose node dies is re-run by Ray on another node
    (TASK_RETRIES times); one whose device class has no node left is cancelled and recorded."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._remotes: dict[tuple[Callable[..., Any], int], Any] = {}

    @property
    def classes(self) -> list[str]:
        return sorted(self.cluster.device_classes())

    def share(self, value: Any) -> Any:
        return ray_module().put(value)

    def run(self, jobs: list[Job], on_done: Callable[[Any, dict[str, Any]], None]) -> None:
        ray = ray_module()
        keys, classes = {}, {}
        for job in jobs:
            options = dict(job.options)
            max_calls = options.pop("max_calls", 0)  # a property of the function in Ray, not of one call
            if (job.fn, max_calls) not in self._remotes:
                self._remotes[job.fn, max_calls] = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False,
                                                              max_calls=max_calls)(job.fn)
            ref = self._remotes[job.fn, max_calls].options(**options).remote(*job.args)
            keys[ref], classes[ref] = job.key, job.device_class
        refs = list(keys)
        while refs:
            done, refs = ray.wait(refs, num_returns=1, timeout=POLL_S)
            for ref in done:
                on_done(keys[ref], _result(ray, ref))
            if not done:
                refs = self._drop_stranded(refs, keys, classes, on_done)

    def _drop_stranded(self, refs: list[Any], keys: dict[Any, Any], classes: dict[Any, str | None],
                       on_done: Callable[[Any, dict[str, Any]], None]) -> list[Any]:
        present = self.cluster.device_classes()
        kept = []
        for ref in refs:
            cls = classes[ref]
            if cls is None or cls in present:
                kept.append(ref)
                continue
            ray_module().cancel(ref, force=True)
            on_done(keys[ref], {"status": "failed", "error": f"every node of device class {cls} left the cluster "
                                                             "before this task could finish"})
        return kept

    def describe(self) -> dict[str, Any]:
        return self.cluster.describe()


def _result(ray: Any, ref: Any) -> dict[str, Any]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:  # the task raised, or its worker or node died past its retries
        return {"status": "failed", "error": f"{type(exc).__name__}: {first_line(exc)}"}


def fleet_bench(bundle_path: str | os.PathLike, settings: BenchSettings, labelled: Any = None,
                address: str | None = None, on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Benchmark one bundle on one node of every device class in the cluster (embedded: this machine).
    Returns {"cluster", "models": {name: {"bench": [one result per device class]}}}, what `edgesdk report` reads."""
    from ..core.bundle import load_bundle

    bundle = load_bundle(bundle_path)  # checked here before anything is shipped
    name = Path(bundle_path).resolve().name
    t0 = time.perf_counter()
    with connect(address) as cluster:
        executor = RayExecutor(cluster)
        results = run_benches(executor, {name: pack_bundle(bundle.path)}, settings.check(), {name: labelled}, on_done)
        info = executor.describe()
    return {"cluster": info, "wall_s": time.perf_counter() - t0,
            "models": {name: {"bundle": str(bundle.path), "task": bundle.task, "bench": results.get(name, [])}}}


def run_benches(executor: Any, blobs: dict[str, bytes], settings: BenchSettings, labelled: dict[str, Any],
                on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """One bench job per (model, device class present), each bundle shared (put in the object store) once."""
    classes = executor.classes
    if not classes:
        raise UsageError("No node in the cluster names a device class: start workers with "
                         "`ray start --address HEAD --resources '{\"edgesdk/<class>\": 1}'` or `edgesdk worker`.")
    jobs = []
    for model, blob in blobs.items():
        blob_ref = executor.share(blob)
        data = labelled.get(model)
        data_ref = executor.share(data.to_payload()) if data is not None else None
        jobs += [Job((model, cls), bench_on_node, (blob_ref, model, settings.__dict__, data_ref, cls),
                     {"num_cpus": 1, "resources": {CLASS_PREFIX + cls: 1}}, cls) for cls in classes]
    out: dict[str, list[dict[str, Any]]] = {}

    def done(key: tuple[str, str], result: dict[str, Any]) -> None:
        result.setdefault("model", key[0])
        result.setdefault("device_class", key[1])
        result.setdefault("rows", [])
        out.setdefault(key[0], []).append(result)
        if on_done:
            on_done(result)

    executor.run(jobs, done)
    for results in out.values():
        results.sort(key=lambda r: r["device_class"])
    return out


def ray_start_line(address: str, cls: str, converter_slots: int = 0, cpus: int | None = None,
                   block: bool = True) -> list[str]:
    """The `ray start` line that joins this machine to the cluster as a worker of device class cls."""
    import json

    resources = {CLASS_PREFIX + check_class_name(cls): 1}
    if converter_slots:
        resources[CONVERTER] = converter_slots
    cmd = ["ray", "start", "--address", address, "--resources", json.dumps(resources)]
    if cpus:
        cmd += ["--num-cpus", str(cpus)]
    return cmd + (["--block"] if block else [])
