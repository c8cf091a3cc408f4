"""sweep(): every (model, target, precision) of a spec converted, then every model's bundle benchmarked
and validated on one node of every device class, as Ray tasks (embedded Ray by default, a cluster at
an address). A failed cell is recorded with its error and the sweep goes on; a re-run skips cells
whose inputs (model, data, settings: a content hash) did not change, so a sweep resumes after a crash.

    out/cells/<model>/<target>-<precision>/{cell.json, bundle/}   one per cell, written whole
    out/bundles/<model>/                                          the model's cells merged into one bundle
    out/results.json                                              what `edgesdk report` draws
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.bundle import MANIFEST, load_bundle, staged_dir, write_atomic
from ..core.errors import ConversionError, EdgeSDKError, UsageError, first_line
from .cluster import (
    CONVERTER,
    BenchSettings,
    Job,
    LocalExecutor,
    RayExecutor,
    connect,
    node_id,
    pack_bundle,
    run_benches,
    unpack_bundle,
)

log = logging.getLogger(__name__)

RESULTS = "results.json"
_MODEL_KEYS = {"name", "factory", "file", "keras", "weights", "input_shape", "calib", "validate", "labels", "task",
               "targets", "precisions", "options", "dynamic_batch", "preprocess", "target"}
_TOP_KEYS = {"out", "targets", "precisions", "models", "bench", "target"}
_PATH_KEYS = ("file", "weights", "calib", "validate", "labels")

Event = dict[str, Any]


@dataclass
class ModelEntry:
    """One model of a sweep: where it comes from, its data, and the targets and precisions it goes to."""

    name: str
    targets: list[str]
    precisions: list[str] | dict[str, list[str]]  # for every target, or per target (a device preset's)
    factory: str | None = None
    file: str | None = None
    weights: str | None = None
    input_shape: list[int] | None = None
    calib: str | None = None
    validate: str | None = None
    labels: str | None = None
    task: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dynamic_batch: bool = False
    preprocess: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """A hash of everything a conversion of this model reads: settings, file contents, factory code."""
        facts: dict[str, Any] = asdict(self)
        for key in _PATH_KEYS:
            if facts[key]:
                facts[key] = content_hash(Path(facts[key]))
        if self.factory:
            facts["factory_code"] = _module_hash(self.factory.split(":")[0])
        return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()

    def precisions_for(self, target: str) -> list[str]:
        return self.precisions.get(target, []) if isinstance(self.precisions, dict) else self.precisions


@dataclass
class SweepSpec:
    models: list[ModelEntry]
    out: Path
    bench: BenchSettings = field(default_factory=BenchSettings)

    def cells(self) -> list[Cell]:
        return [Cell(m.name, t, p) for m in self.models for t in m.targets for p in m.precisions_for(t)]

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models if m.name == name)


@dataclass(frozen=True)
class Cell:
    model: str
    target: str
    precision: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.target}-{self.precision}"


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's relative names and file contents (recursively)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _module_hash(module: str) -> str:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    origin = Path(spec.origin) if spec and spec.origin and spec.origin != "built-in" else None
    return content_hash(origin) if origin and origin.is_file() else module


# -- the spec -------------------------------------------------------------------------------------

def load_spec(spec: str | os.PathLike | dict[str, Any], base: str | os.PathLike | None = None) -> SweepSpec:
    """A SweepSpec from a YAML or JSON file (paths in it are relative to its folder) or a dict (paths
    relative to base, default the working folder). Everything is checked before any work starts."""
    if isinstance(spec, dict):
        data, base_dir = spec, Path(base or ".")
    else:
        path = Path(spec)
        data, base_dir = _read_spec_file(path), path.parent
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise UsageError("A sweep spec is a mapping with a non-empty 'models' list (and optionally out, targets, "
                         "precisions, target, bench).")
    _check_keys(data, _TOP_KEYS, "the spec")
    defaults = {k: data[k] for k in ("targets", "precisions", "target") if data.get(k) is not None}
    models = [_model_entry(m, i, defaults, base_dir) for i, m in enumerate(data["models"])]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UsageError(f"Model names in a sweep must be unique; got {names}.")
    try:
        bench = BenchSettings(**(data.get("bench") or {})).check()
    except TypeError as exc:
        raise UsageError(f"bench: {exc}; it takes runs, warmup and threads.") from None
    return SweepSpec(models, _resolve(base_dir, data.get("out", "build/sweep")), bench)


def _read_spec_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read the sweep spec {path}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); a .yaml/.yml file is read as YAML.") from None


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"Unknown keys in {where}: {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}.")


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base / path).resolve()


def _model_entry(raw: Any, index: int, defaults: dict[str, Any], base: Path) -> ModelEntry:
    """One model of the spec, checked; targets, precisions and target (a device preset) default to the spec's."""
    from ..conversion.formats import get_converter
    from ..conversion.pipeline import with_preset

    if not isinstance(raw, dict):
        raise UsageError(f"models[{index}] must be a mapping with a name and a factory or file.")
    where = f"models[{index}] ({raw.get('name', '?')})"
    _check_keys(raw, _MODEL_KEYS, where)
    name = str(raw.get("name", ""))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise UsageError(f"{where}: name must be letters, digits, '-', '_' or '.' (it names a folder), got {name!r}.")
    entry = dict(raw)
    entry["file"] = entry.pop("keras", None) or entry.get("file")
    if bool(entry.get("factory")) == bool(entry.get("file")):
        raise UsageError(f"{where}: give exactly one of factory (pkg.module:function) or file (a model file).")
    for key in _PATH_KEYS:
        if entry.get(key):
            path = _resolve(base, str(entry[key]))
            if not path.exists():
                raise UsageError(f"{where}: {key} {path} does not exist.")
            entry[key] = str(path)
    for key in ("targets", "precisions", "target"):
        entry[key] = entry.get(key) or defaults.get(key)
    entry["targets"], entry["precisions"] = with_preset(entry.pop("target"), entry["targets"], entry["precisions"])
    for t in entry["targets"]:
        get_converter(t)  # an unknown target fails here, naming the known ones
    bad = [p for t in entry["targets"] for p in ModelEntry(name, entry["targets"], entry["precisions"]).precisions_for(t)
           if not re.fullmatch(r"[a-z0-9]{1,16}", str(p))]
    if bad:
        raise UsageError(f"{where}: precisions are names like fp32, fp16, int8; got {bad}.")
    return ModelEntry(**entry)


# -- one cell, where it runs ------------------------------------------------------------------------

class _Warnings(logging.Handler):
    """Collects the warnings a conversion logs, to keep with its cell's record."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage()[:500])


def import_root() -> str:
    """Where factories import from: the working folder, as for `edgesdk convert --factory` (put on
    sys.path here, and in every worker, where Ray starts them elsewhere)."""
    root = os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
    return root


def convert_cell(entry: dict[str, Any], target: str, precision: str, root: str | None = None) -> dict[str, Any]:
    """Runs on a converter node: one (model, target, precision) converted and checked against the
    source; the bundle comes back packed (through Ray's object store), or the error that stopped it."""
    from ..conversion.pipeline import convert

    if root and root not in sys.path:
        sys.path.insert(0, root)
    model = ModelEntry(**entry)
    record: dict[str, Any] = {"node": node_id(), "host": socket.gethostname(), "pid": os.getpid()}
    handler = _Warnings()
    logging.getLogger("edgesdk").addHandler(handler)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="edgesdk-cell-") as tmp:
            bundle = convert(_source(model), targets=[target], precisions=[precision], calib=model.calib,
                             out=Path(tmp) / "bundle", validation=model.validate, labels=model.labels, task=model.task,
                             preprocess=_preprocess(model.preprocess),
                             dynamic_batch=model.dynamic_batch, options=dict(model.options))
            record.update(status="ok", blob=pack_bundle(bundle.path),
                          artifacts=[_artifact_summary(a) for a in bundle.artifacts])
    except EdgeSDKError as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a converter library's own failure: recorded, the sweep goes on
        record.update(status="failed", error=f"{type(exc).__name__} (unexpected): {first_line(exc)}")
    finally:
        logging.getLogger("edgesdk").removeHandler(handler)
    return {**record, "wall_s": round(time.perf_counter() - t0, 2), "warnings": handler.lines}


def _preprocess(given: dict[str, Any] | None) -> Any:
    """The spec's preprocess mapping over Preprocess's defaults (size, resize, mean, std, color, layout)."""
    from ..core.images import Preprocess

    if not given:
        return None
    try:
        return Preprocess.from_dict({**Preprocess().to_dict(), **given})
    except (TypeError, ValueError, KeyError) as exc:
        raise UsageError(f"preprocess {given}: {exc}; keys are size, resize, mean, std, color, layout.") from None


def _source(model: ModelEntry) -> Any:
    from ..conversion.sources import load_source

    return load_source(model.file, factory=model.factory, weights=model.weights, input_shape=model.input_shape,
                       dynamic_batch=model.dynamic_batch)


def _artifact_summary(art: Any) -> dict[str, Any]:
    return {"id": art.id, "file": art.file, "sha256": art.sha256, "size_bytes": art.size_bytes,
            "parity": art.parity.to_dict()}


def source_accuracy(entry: dict[str, Any], manifest: dict[str, Any], payload: dict[str, Any],
                    root: str | None = None) -> dict[str, Any]:
    """Runs on a converter node: the source model's accuracy on the labelled data, the baseline every
    artifact's drop is measured from."""
    from ..core.images import Preprocess
    from ..core.specs import TensorSpec
    from ..measuring.accuracy import LabelledSet, evaluate

    if root and root not in sys.path:
        sys.path.insert(0, root)
    model = ModelEntry(**entry)
    try:
        source = _source(model)
        name = source.inputs[0].name
        pre = Preprocess.from_dict(manifest["preprocess"]) if manifest.get("preprocess") else None
        with tempfile.TemporaryDirectory(prefix="edgesdk-data-") as tmp:
            data = LabelledSet.from_payload(payload, Path(tmp))
            return {"status": "ok", **evaluate(lambda x: source.run({name: x}), data, manifest.get("task"), pre,
                                               [TensorSpec.from_dict(s) for s in manifest["inputs"]], manifest.get("labels"))}
    except EdgeSDKError as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


# -- the sweep's folder ---------------------------------------------------------------------------

class Store:
    """out/cells/<model>/<target>-<precision>/: the cell's bundle, then its cell.json (written last, so a
    crash in between leaves a cell that is simply run again)."""

    def __init__(self, out: Path):
        self.out = out

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.model / f"{cell.target}-{cell.precision}"

    def load(self, cell: Cell, digest: str, retry_failed: bool) -> dict[str, Any] | None:
        """The recorded result of cell when its inputs are unchanged (and its bundle still loads)."""
        try:
            record = json.loads((self.cell_dir(cell) / "cell.json").read_text())
        except (OSError, ValueError):
            return None
        if record.get("hash") != digest or (record.get("status") == "failed" and retry_failed):
            return None
        if record.get("status") == "ok":
            try:
                load_bundle(self.cell_dir(cell) / "bundle")
            except EdgeSDKError:
                return None
        return record

    def save(self, cell: Cell, record: dict[str, Any]) -> dict[str, Any]:
        folder = self.cell_dir(cell)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cell.json").unlink(missing_ok=True)
        shutil.rmtree(folder / "bundle", ignore_errors=True)
        blob = record.pop("blob", None)
        if blob is not None:
            unpack_bundle(blob, folder / "bundle")
        _write_json(folder / "cell.json", record)
        return record


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, default=str))


def merge_bundles(parts: list[Path], out: Path) -> Path:
    """One bundle at out holding every artifact of the cell bundles in parts (written whole)."""
    with staged_dir(out, force=True) as stage:
        manifest: dict[str, Any] | None = None
        for part in parts:
            data = json.loads((part / MANIFEST).read_text())
            _copy_files(part, stage)
            if manifest is None:
                manifest = data
                continue
            ids = {a["id"] for a in manifest["artifacts"]}
            manifest["artifacts"] += [a for a in data["artifacts"] if a["id"] not in ids]
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2))
    load_bundle(out)  # the merged manifest is checked like any other
    return out


def _copy_files(part: Path, stage: Path) -> None:
    for f in sorted(part.rglob("*")):
        if not f.is_file() or f.name == MANIFEST:
            continue
        dest = stage / f.relative_to(part)
        if dest.exists():
            if dest.read_bytes() != f.read_bytes():
                raise ConversionError(f"Two cells wrote different {f.relative_to(part)}: cannot merge them into one bundle.")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)


# -- the sweep ------------------------------------------------------------------------------------

def sweep(spec: SweepSpec | str | os.PathLike | dict[str, Any], *, address: str | None = None,
          workers: int | None = None, sequential: bool = False, bench: bool = True, retry_failed: bool = False,
          progress: Callable[[Event], None] | None = None) -> dict[str, Any]:
    """Run a sweep and return (and write to out/results.json) its results. address (or $RAY_ADDRESS)
    joins a Ray cluster; without it Ray starts embedded here with `workers` conversion slots (default
    sized to cores and memory). sequential=True runs every step in this process, without Ray: the
    reference a distributed sweep must agree with. bench=False stops after conversion and accuracy."""
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    if sequential:
        results = _Run(spec, LocalExecutor(), progress).all(bench, retry_failed)
    else:
        with connect(address, workers) as cluster:
            results = _Run(spec, RayExecutor(cluster), progress).all(bench, retry_failed)
    results.update(started=started, wall_s=round(time.perf_counter() - t0, 2), out=str(spec.out))
    spec.out.mkdir(parents=True, exist_ok=True)
    _write_json(spec.out / RESULTS, results)
    return results


class _Run:
    """One sweep's phases on one executor: convert the cells, merge each model's bundle, measure the
    sources' accuracy, benchmark every bundle on every device class."""

    def __init__(self, spec: SweepSpec, executor: Any, progress: Callable[[Event], None] | None):
        self.spec, self.executor, self.store = spec, executor, Store(spec.out)
        self.root = import_root()
        self.progress = progress or (lambda event: None)
        self.models: dict[str, dict[str, Any]] = {
            m.name: {"task": m.task, "cells": [], "bench": [], "bundle": None, "labelled": None, "source_accuracy": None}
            for m in spec.models}
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []

    def all(self, bench: bool, retry_failed: bool) -> dict[str, Any]:
        self._phase("convert", lambda: self.convert(retry_failed))
        self._phase("merge", self.merge)
        labelled = self._labelled()
        self._phase("source_accuracy", lambda: self.source_accuracy(labelled))
        if bench:
            self._phase("bench", lambda: self.bench(labelled))
        return {"cluster": self.executor.describe(), "phases_s": self.timings, "models": self.models,
                "bench_settings": asdict(self.spec.bench), "notes": self.notes}

    def _phase(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)

    def _event(self, phase: str, key: str, record: dict[str, Any], done: int, total: int) -> None:
        self.progress({"phase": phase, "key": key, "status": record.get("status"), "error": record.get("error"),
                       "cached": record.get("cached", False), "node": record.get("node"), "done": done, "total": total,
                       "record": record})

    def convert(self, retry_failed: bool) -> None:
        from ..conversion.formats import get_converter

        cells = self.spec.cells()
        fingerprints = {m.name: m.fingerprint() for m in self.spec.models}
        jobs, count = [], {"done": 0}

        def finish(cell: Cell, record: dict[str, Any]) -> None:
            record = self.store.save(cell, {**record, **self._cell_facts(cell, fingerprints)})
            self._record(cell, record, count, len(cells))

        for cell in cells:
            digest = _cell_hash(fingerprints[cell.model], cell)
            cached = self.store.load(cell, digest, retry_failed)
            if cached is not None:
                self._record(cell, {**cached, "cached": True}, count, len(cells))
            elif cell.precision not in get_converter(cell.target).precisions:
                finish(cell, {"status": "not available", "error": f"{cell.target} has no {cell.precision}: it makes "
                              f"{', '.join(get_converter(cell.target).precisions)}"})
            else:
                jobs.append(Job(cell, convert_cell, (asdict(self.spec.model(cell.model)), cell.target, cell.precision, self.root),
                                {"num_cpus": 1, "resources": {CONVERTER: 1}, "max_calls": 1}))
        self.executor.run(jobs, finish)

    def _cell_facts(self, cell: Cell, fingerprints: dict[str, str]) -> dict[str, Any]:
        return {"key": cell.key, "target": cell.target, "precision": cell.precision,
                "hash": _cell_hash(fingerprints[cell.model], cell)}

    def _record(self, cell: Cell, record: dict[str, Any], count: dict[str, int], total: int) -> None:
        count["done"] += 1
        record.setdefault("cached", False)
        self.models[cell.model]["cells"].append(record)
        self._event("convert", cell.key, record, count["done"], total)

    def merge(self) -> None:
        for name, model in self.models.items():
            model["cells"].sort(key=lambda r: r["key"])
            parts = [self.store.cell_dir(Cell(name, r["target"], r["precision"])) / "bundle"
                     for r in model["cells"] if r["status"] == "ok"]
            out = self.spec.out / "bundles" / name
            if parts:
                model["bundle"] = str(merge_bundles(parts, out))
                model["task"] = load_bundle(model["bundle"]).task
            else:  # no cell converted: no bundle, rather than an earlier sweep's
                shutil.rmtree(out, ignore_errors=True)

    def _labelled(self) -> dict[str, Any]:
        from ..measuring.accuracy import load_labelled

        sets = {}
        for entry in self.spec.models:
            data = load_labelled(entry.validate) if entry.validate else None
            if data is not None and self.models[entry.name]["bundle"]:
                sets[entry.name] = data
                self.models[entry.name]["labelled"] = data.source
        return sets

    def source_accuracy(self, labelled: dict[str, Any]) -> None:
        jobs = []
        for name, data in labelled.items():
            manifest = json.loads((Path(self.models[name]["bundle"]) / MANIFEST).read_text())
            jobs.append(Job(name, source_accuracy, (asdict(self.spec.model(name)), manifest,
                                                    self.executor.share(data.to_payload()), self.root),
                            {"num_cpus": 1, "resources": {CONVERTER: 1}}))

        count = {"done": 0}

        def done(name: str, result: dict[str, Any]) -> None:
            count["done"] += 1
            self.models[name]["source_accuracy"] = result
            self._event("source_accuracy", name, result, count["done"], len(jobs))

        self.executor.run(jobs, done)

    def bench(self, labelled: dict[str, Any]) -> None:
        blobs = {name: pack_bundle(m["bundle"]) for name, m in self.models.items() if m["bundle"]}
        count = {"done": 0}
        total = len(blobs) * len(self.executor.classes)

        def done(result: dict[str, Any]) -> None:
            count["done"] += 1
            _add_drops(result, self.models[result["model"]]["source_accuracy"])
            self.models[result["model"]]["bench"].append(result)
            self._event("bench", f"{result['model']} on {result['device_class']}",
                        {"status": result.get("status", "ok"), **result}, count["done"], total)

        if blobs and not self.executor.classes:
            self.notes.append("No node of the cluster names a device class (edgesdk/<class>): nothing was benchmarked. "
                              "Start device workers with `edgesdk worker --address HEAD`.")
            log.warning("%s", self.notes[-1])
        elif blobs:
            run_benches(self.executor, blobs, self.spec.bench, labelled, done)
        for model in self.models.values():
            model["bench"].sort(key=lambda r: r["device_class"])


def _cell_hash(fingerprint: str, cell: Cell) -> str:
    from ..core.version import __version__

    return hashlib.sha256(f"{fingerprint}|{cell.target}|{cell.precision}|{__version__}".encode()).hexdigest()[:32]


def _add_drops(result: dict[str, Any], source: dict[str, Any] | None) -> None:
    """Each row's accuracy drop from the source model, in the metric both were measured in."""
    if not source or source.get("status") != "ok":
        return
    metric = source["metric"]
    for row in result.get("rows", []):
        acc = row.get("accuracy") or {}
        if metric in acc:
            acc["drop"] = round(source[metric] - acc[metric], 9) + 0.0  # + 0.0: no "-0.00" for float noise
