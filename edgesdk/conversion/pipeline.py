"""convert(): source model -> a bundle of artifacts, each checked against the source."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, backends
from ..core.bundle import Artifact, Bundle, check_output_dir, load_bundle, sha256_of, staged_dir
from ..core.errors import BackendUnavailable, CalibrationError, ConversionError, EdgeSDKError, UsageError, first_line
from ..core.hardware import read_profile
from ..core.images import Preprocess
from ..core.options import validate as validate_options
from ..core.records import Failure, Parity
from ..running.isolated import BackendCrashed, BackendFailed, BackendProcesses
from ..running.timing import interleaved_blocks
from .calibration import CalibrationSet
from .formats import DEFAULT_TARGET, ConversionJob, declared_options, get_converter, target_presets
from .parity import TASKS, Tolerance, compare, is_class_scores, not_measured
from .sources import SourceModel, from_module, load_source

log = logging.getLogger(__name__)

#: Parity runs on at most this many samples: enough for a stable agreement figure, quick to run.
MAX_PARITY_SAMPLES = 100
LATENCY_RUNS = 20
TIMING_ROUNDS = 3


def _as_source(model: Any, example_input: Any, dynamic_batch: bool, trust_source: bool = False,
               dynamic_axes: Any = None, outputs: Sequence[str] | None = None) -> SourceModel:
    if outputs and (isinstance(model, (SourceModel, str, os.PathLike)) or _is_keras(model)):
        raise ConversionError("outputs= picks among a torch module's outputs; this source keeps the outputs it "
                              "declares (load a torch file with edgesdk.conversion.sources.load_source and "
                              "pass the module itself, or cut an ONNX file with onnx.utils.extract_model).")
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        if isinstance(example_input, (dict, tuple, list)):
            raise ConversionError("A model file is converted from its own inputs: give example_input as one "
                                  "array's shape source only (or load it yourself and pass a SourceModel).")
        shape = tuple(np.shape(example_input)) if example_input is not None else None
        return load_source(model, input_shape=shape, dynamic_batch=dynamic_batch, trust_source=trust_source,
                           dynamic_axes=dynamic_axes)
    if _is_keras(model):
        from .sources import KerasSource

        return KerasSource(model)
    if example_input is None:
        raise ConversionError("Converting a torch module needs an example input, e.g. torch.randn(1, 3, 224, 224).")
    return from_module(model, example_input, dynamic_batch=dynamic_batch, dynamic_axes=dynamic_axes, outputs=outputs)


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
    feeds = [source.example_feeds()] + [source.stand_in_feeds(seed) for seed in range(1, 5)]
    lengths = sorted({tuple(f[s.name].shape) for f in feeds for s in source.inputs[:1]})
    return feeds, "example input and 4 random inputs" + (f" (shapes {', '.join(map(str, lengths))})"
                                                         if len(lengths) > 1 else "")


@dataclass
class ParityCheck:
    """What every artifact of one conversion is checked against. Artifacts run in the backends' child
    processes (edgesdk.running.isolated): a backend that crashes on one fails that artifact, not the caller."""

    source: SourceModel
    feeds: list[dict[str, np.ndarray]]
    reference: list[list[np.ndarray]]
    data: str  # where the feeds came from, for the manifest
    task: str | None
    num_classes: int | None
    children: BackendProcesses | None = None  # set by convert() for the conversion's length
    crashed: set[str] = field(default_factory=set)  # ids of artifacts whose backend crashed or hung on them
    timing: bool = True  # whether the other backends will time each artifact (they load it during parity)

    def runners(self, art: Artifact, path: Path) -> tuple[list[Backend], bool]:
        """(installed backends that run the artifact, whether they only check the file it builds from)."""
        runners = installed_runners(art.format)
        if not runners:  # e.g. TensorRT's QDQ ONNX, checked on ONNX Runtime
            runners = [b for b in backends() if art.format in b.checks_formats and path.suffix in b.suffixes
                       and b.available()[0]][:1]
            return runners, bool(runners)
        return runners, False

    def measure(self, art: Artifact, path: Path, runner: Backend) -> Parity:
        """The artifact's parity on one backend, in that backend's child process; a failure to load or run
        it, a crash or a hang is a problem recorded, never an exception here."""
        assert self.children is not None, "convert() sets the child processes"
        child = self.children[runner]
        try:
            opened = child.open(art.file, path, art.precision, self.source.inputs, self.source.outputs, art.io)
            if opened.get("problems"):
                return Parity(measured=True, problems=opened["problems"])
            feeds, reference, data = self._fitting(child.inner_inputs[art.file])
            outputs = child.run(art.file, feeds)
        except BackendCrashed as exc:
            self.crashed.add(art.id)
            return Parity(measured=True, problems=[str(exc)])
        except BackendFailed as exc:
            return Parity(measured=True, problems=[str(exc)])
        result = compare(reference, outputs, [s.name for s in self.source.outputs], self.task, self.num_classes)
        result.data = data or None
        return result

    def _fitting(self, inner_inputs: list[Any]) -> tuple[list[dict[str, np.ndarray]], list[list[np.ndarray]], str]:
        """(feeds, reference outputs, where they came from if not the parity data) an artifact can take."""
        fits = [i for i, f in enumerate(self.feeds) if _fits(inner_inputs, self.source.inputs, f)]
        if fits:
            return [self.feeds[i] for i in fits], [self.reference[i] for i in fits], ""
        # a fixed-shape artifact (MNN, NCNN, a fixed TFLite) and data of other lengths
        feeds = [self.source.example_feeds(), *(self.source.stand_in_feeds(seed) for seed in (1, 2))]
        return (feeds, [self.source.run(f) for f in feeds],
                "example input and 2 stand-ins at the artifact's fixed shape (no parity sample has it)")

    def check(self, art: Artifact, path: Path, step: Callable[[str], None]) -> list[Backend]:
        """Fill in art.parity; return the backends whose speed is worth timing (not a proxy's)."""
        runners, proxy = self.runners(art, path)
        if not runners:
            log.warning("No installed backend runs %s artifacts; parity of %s not measured, so "
                        "Runtime(precision='auto') will not pick it.", art.format, art.file)
            art.parity = not_measured(f"no backend that runs {art.format} was installed at conversion")
            return []
        runner = runners[0]  # parity on the first backend that runs the format; every one is timed
        if self.timing and not proxy:  # the others load (compile) it while parity runs on the first
            assert self.children is not None
            for other in runners[1:]:
                self.children[other].open_ahead(art.file, path, art.precision, self.source.inputs,
                                                self.source.outputs, art.io)
        step(f"Checking {art.file} on {runner.name}")
        measured = self.measure(art, path, runner)
        art.parity = replace(measured, data=measured.data or self.data, arch=platform.machine(),
                             backend=f"{runner.name} (checks the file {art.format} builds from)" if proxy else runner.name)
        return [] if proxy or art.parity.problems else runners


def _fits(inner: list[Any], source: list[Any], feeds: dict[str, np.ndarray]) -> bool:
    """Whether feeds have the sizes an artifact fixed along the source's dynamic axes beyond the batch
    (an MNN or NCNN artifact takes one sequence length): parity of such an artifact uses the samples that do."""
    by_name = {s.name: s for s in inner}
    for spec, mine in zip(source, inner):
        mine = by_name.get(spec.name, mine)  # runtimes may order inputs otherwise (TFLite: by name)
        for i, dim in enumerate(spec.shape):
            if i and isinstance(dim, str) and i < len(mine.shape) and isinstance(mine.shape[i], int) \
                    and feeds[spec.name].shape[i] != mine.shape[i]:
                return False
    return True


def time_interleaved(children: BackendProcesses, stage: Path, pairs: list[tuple[Artifact, Backend]],
                     source: SourceModel, feed: dict[str, np.ndarray], rounds: int = TIMING_ROUNDS,
                     runs: int = LATENCY_RUNS, budget_s: float = 4.0) -> None:
    """Time every (artifact, backend) pair in interleaved rounds into artifact.latency_ms, so the latencies
    the Runtime ranks by were taken side by side rather than minutes apart on a machine whose speed drifts.
    Each pair runs in its backend's child process, which times its own runs. The recorded figure is the
    median over rounds of each round's median. A pair that fails is left untimed; one whose backend
    crashes or hangs is a problem of its artifact (never picked automatically)."""
    opened = [(art, backend) for art, backend in pairs if _open_for_timing(children, stage, art, backend, source)]
    if not opened:
        return
    if not all(_fits(children[b].inner_inputs[a.file], source.inputs, feed) for a, b in opened):
        feed = source.example_feeds()  # a fixed-shape artifact: its shape for all

    def block(art: Artifact, backend: Backend, count: int, warmup: int) -> float | None:
        try:
            return float(np.median(children[backend].time_block(art.file, feed, count, warmup))) * 1e3
        except (BackendCrashed, BackendFailed) as exc:
            _timing_failed(art, backend, exc)
            return None

    first = {i: block(a, b, 2, 1) for i, (a, b) in enumerate(opened)}  # a warm figure sizes the rounds
    timed = [i for i, ms in first.items() if ms is not None]
    runs = _affordable_runs(max((first[i] for i in timed), default=0.0) / 1e3, runs, budget_s)
    blocks = {i: (lambda i=i: block(*opened[i], runs, 2 if runs >= LATENCY_RUNS else 1)) for i in timed}
    for i, per_round in interleaved_blocks(blocks, rounds).items():
        art, backend = opened[i]
        if per_round and not art.parity.problems:
            art.latency_ms[backend.name] = float(np.median(per_round))


def _open_for_timing(children: BackendProcesses, stage: Path, art: Artifact, backend: Backend,
                     source: SourceModel) -> bool:
    """Whether the pair's session is open in its child (parity opened it on its own backend)."""
    child = children[backend]
    if child.is_open(art.file):
        return True
    try:
        opened = child.open(art.file, stage / art.file, art.precision, source.inputs, source.outputs, art.io)
    except (BackendCrashed, BackendFailed) as exc:
        _timing_failed(art, backend, exc)
        return False
    if opened.get("problems"):
        log.warning("%s is not timed on %s: %s", art.id, backend.name, "; ".join(opened["problems"]))
        return False
    return True


def _timing_failed(art: Artifact, backend: Backend, exc: Exception) -> None:
    """A crash while timing is the artifact's problem (a Runtime must not pick it); a failure leaves the pair untimed."""
    if isinstance(exc, BackendCrashed):
        art.parity.problems.append(str(exc))
        log.warning("%s: %s; it will not be picked automatically.", art.id, exc)
    else:
        log.warning("%s is not timed on %s: %s", art.id, backend.name, exc)


#: What timing at conversion may cost per (artifact, backend) pair, in seconds, by the timing option: a 30-s
#: speech encoder at 0.4 s a run is timed with fewer runs rather than for minutes, and the quick default
#: keeps a YOLOv8n conversion's timing under a second (3 rounds of 6 runs at 15 ms; the 20 runs of "full"
#: took 2.4 s, longer than Ultralytics' whole export).
TIMING_BUDGET_S = {"quick": 0.3, "full": 4.0}


def _affordable_runs(slowest_s: float, runs: int, budget_s: float) -> int:
    """runs, or fewer (at least 3) when the slowest pair's single run makes rounds x runs exceed the budget."""
    return max(3, min(runs, int(budget_s / TIMING_ROUNDS / max(slowest_s, 1e-6))))


def installed_runners(fmt: str) -> list[Backend]:
    """The installed backends that run a format, in the registry's order (the first checks parity)."""
    return [b for b in backends() if fmt in b.formats and b.available()[0]]


def _backends_for(plan: list[tuple[Any, list[str]]], timing: str) -> list[Backend]:
    """The installed backends that will check (the first for each format) or time (all) the planned formats."""
    chosen: list[Backend] = []
    for converter, _ in plan:
        runs_it = installed_runners(converter.name)
        chosen += [b for b in (runs_it if timing != "off" else runs_it[:1]) if b not in chosen]
    return chosen


def _hash(art: Artifact, stage: Path) -> None:
    """Record the sha256 and size of an artifact's file and its companions."""
    path = stage / art.file
    art.sha256, art.size_bytes = sha256_of(path), path.stat().st_size
    for name in art.companions:
        art.companions[name] = sha256_of(stage / name)
        art.size_bytes += (stage / name).stat().st_size


def _check_task(task: Any) -> None:
    """A task is a short lowercase name; those in parity.TASKS change how parity is judged, any other
    (e.g. "voice-activity") is judged like "other", on every output's cosine."""
    import re

    if task is not None and not (isinstance(task, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", task)):
        raise UsageError(f"task must be a short lowercase name such as {', '.join(TASKS)}; got {task!r}.")


def _task(task: str | None, labels: list[str] | None, reference: list[list[np.ndarray]]) -> str | None:
    """The task parity is judged by: as given (or carried by the model), else classification for a
    labelled model whose first output holds class scores."""
    _check_task(task)
    if task is None and labels and reference and is_class_scores(np.asarray(reference[0][0])):
        return "classification"
    return task


def convert(
    model: Any,
    example_input: Any = None,
    targets: Sequence[str] | None = None,
    precisions: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    calib: Any = None,
    out: str | os.PathLike = "build/model",
    *,
    validation: Any = None,
    preprocess: Preprocess | None = None,
    labels: Sequence[str] | str | os.PathLike | None = None,
    task: str | None = None,
    force: bool = False,
    dynamic_batch: bool = False,
    dynamic_axes: Any = None,
    tolerance: Tolerance = Tolerance(),
    options: dict[str, Any] | None = None,  # per-format options, declared by each converter (see options.py)
    progress: Callable[[str], None] | None = None,
    trust_source: bool = False,
    tokenizer: str | os.PathLike | None = None,
    strict: bool = False,
    target: str | None = None,
    outputs: Sequence[str] | None = None,
) -> Bundle:
    """Convert a model to every (target, precision) asked for and write a bundle folder at `out`.

    model: a torch nn.Module (with example_input), a Keras model, a model file or a SourceModel. precisions
    go to every target that has them, or per target ({"onnx": ["fp32"], ...}); target names a device class
    ("rpi", "x86", ...) whose preset gives the targets and precisions not given (default: onnx, fp32).
    calib (INT8 calibration) and validation (held-out data for parity) take an image folder, .npy/.npz, an
    array or an iterable. Every artifact is run against the source in a child process per backend; one that
    fails to export, convert or match is recorded in bundle.failed and the bundle keeps the others
    (strict=True: ConversionError and nothing written, as when nothing passed). task ("classification",
    "detection", "other") decides how reduced precisions are judged. dynamic_axes keeps axes beyond the
    batch dynamic ({"input_ids": {1: "sequence"}} or ["input_ids:1=sequence"]). trust_source=True converts a
    SavedModel with file-system or Python-calling ops (it runs here). tokenizer (default: the model's) is
    copied into the bundle, so Runtime.run("some text") works with only the `tokenizers` package. Outputs
    in any structure get names from their paths (structure.py); outputs=["output0"] keeps only those."""
    step = progress or (lambda msg: log.info("%s", msg))
    out_path = Path(out)
    check_output_dir(out_path, force)  # fail before any slow work
    plan, options = _check_request(options, task, target, targets, precisions)
    with BackendProcesses() as children:
        children.start(_backends_for(plan, options["timing"]))  # they start up while the source exports
        step("Loading the source model")
        source = _as_source(model, example_input, dynamic_batch, trust_source, dynamic_axes, outputs)
        prepared = replace(_prepare(source, calib, validation, preprocess, labels, task, step),
                           dynamic_batch=dynamic_batch)
        prepared.checker.children, prepared.checker.timing = children, options["timing"] != "off"
        with staged_dir(out_path, force) as stage:
            failed = _write_bundle(stage, plan, prepared, options, tolerance, strict, tokenizer, step)
    for failure in failed:
        log.warning("%s. The bundle keeps the artifacts that passed; strict=True (--strict) fails the whole "
                    "conversion instead.", failure.describe())
    return load_bundle(out_path)


def _write_bundle(stage: Path, plan: list[tuple[Any, list[str]]], prepared: Prepared, options: dict[str, Any],
                  tolerance: Tolerance, strict: bool, tokenizer: str | os.PathLike | None,
                  step: Callable[[str], None]) -> list[Failure]:
    """Convert, check and time into the stage folder and write its manifest; returns what failed."""
    children = prepared.checker.children
    artifacts, timed, failed = _convert_all(plan, prepared, stage, options, tolerance, step)
    _keep_or_raise(artifacts, failed, strict)
    _remove_unshipped(stage, artifacts)
    if options["timing"] != "off":
        step("Timing every artifact on every backend, interleaved")
        time_interleaved(children, stage, timed, prepared.source, prepared.checker.feeds[0],
                         budget_s=TIMING_BUDGET_S[options["timing"]])
    bundle = _bundle(stage, prepared, artifacts)
    bundle.failed = failed
    _add_tokenizer(bundle, stage, prepared.source, tokenizer)
    bundle.write_manifest()
    return failed


def _add_tokenizer(bundle: Bundle, stage: Path, source: SourceModel, tokenizer: str | os.PathLike | None) -> None:
    """The tokenizer given, or the one the model carries, copied into the bundle (text models)."""
    tokenizer = tokenizer or (getattr(getattr(source, "module", None), "edgesdk_metadata", None) or {}).get("tokenizer")
    if tokenizer is not None:
        from ..tasks.text import bundle_tokenizer

        bundle.meta["tokenizer"] = bundle_tokenizer(stage, tokenizer, source.inputs)


def _keep_or_raise(artifacts: list[Artifact], failed: list[Failure], strict: bool) -> None:
    """A partial result is a bundle unless strict; no artifact at all is always an error (nothing is written)."""
    if not failed:
        return
    listing = "; ".join(f.describe() for f in failed)
    if not artifacts:
        raise ConversionError(f"No artifact was made: {listing}. Nothing was written.")
    if strict:
        raise ConversionError(f"{len(failed)} of {len(failed) + len(artifacts)} artifacts failed (strict): {listing}. "
                              "Nothing was written; without strict the bundle keeps the others.")


def _remove_unshipped(stage: Path, artifacts: list[Artifact]) -> None:
    """Delete every file in the staging folder that no kept artifact names: a failed artifact's files and
    what a failed conversion left behind, so the bundle holds exactly what its manifest lists."""
    keep = {Path(name) for a in artifacts for name in (a.file, *a.companions)}
    keep_dirs = {p for name in keep for p in name.parents}
    for path in sorted(stage.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(stage)
        if rel in keep or rel in keep_dirs:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@dataclass
class Prepared:
    """What every target's conversion shares: the source, its data and what parity checks against."""

    source: SourceModel
    preprocess: Preprocess | None
    labels: list[str] | None
    calibration: CalibrationSet | None
    checker: ParityCheck
    dynamic_batch: bool = False


def _check_request(options: dict[str, Any] | None, task: str | None, target: str | None,
                   targets: Sequence[str] | None, precisions: Any) -> tuple[list[tuple[Any, list[str]]], dict[str, Any]]:
    """(the plan, every option validated with its default) for what convert() was asked, before any slow work."""
    _check_not_keywords(options or {})
    options = validate_options(dict(options or {}), declared_options())
    _check_task(task)
    plan = _plan(*with_preset(target, targets, precisions))
    _check_int8_recipe(plan, options["int8_recipe"])
    return plan, options


#: convert()'s own keywords: one way in for each setting, so they are not options as well.
KEYWORDS = ("task", "dynamic_batch", "dynamic_axes", "tolerance", "preprocess", "labels", "calib", "validation",
            "tokenizer", "target", "strict", "force", "trust_source", "outputs")


def _check_not_keywords(options: Mapping[str, Any]) -> None:
    """options={"dynamic_batch": True} used to pass and be overwritten by the keyword's default."""
    both = [k for k in options if k in KEYWORDS]
    if both:
        raise UsageError(f"{', '.join(both)} {'is a keyword' if len(both) == 1 else 'are keywords'} of convert(), "
                         f"not {'an option' if len(both) == 1 else 'options'}: convert(..., "
                         + ", ".join(f"{k}={options[k]!r}" for k in both) + ").")


def with_preset(device: str | None, targets: Sequence[str] | None,
                precisions: Sequence[str] | Mapping[str, Sequence[str]] | None
                ) -> tuple[list[str], Sequence[str] | Mapping[str, Sequence[str]]]:
    """(targets, precisions) as given, or from the device class's preset (every target's declared presets)
    where not given; without a preset, onnx and fp32."""
    if device is None:
        return list(targets or [DEFAULT_TARGET]), precisions or ["fp32"]
    presets = target_presets()
    if device not in presets:
        raise UsageError(f"Unknown target device class {device!r}; the presets are {', '.join(presets)}.")
    preset = presets[device]
    chosen = list(targets or preset)
    return chosen, precisions or {t: preset.get(t, ["fp32"]) for t in chosen}


def _check_int8_recipe(plan: list[tuple[Any, list[str]]], recipe: str) -> None:
    """A target that cannot apply the INT8 recipe asked for refuses it, before any work."""
    refusing = [c for c, precisions in plan if "int8" in precisions and recipe not in c.int8_recipes]
    if refusing:
        raise UsageError(f"The INT8 recipe {recipe!r} cannot be applied by " + "; ".join(
            f"{c.name} (it applies: {', '.join(c.int8_recipes)})" for c in refusing)
            + ". Convert those targets in a separate call, or leave int8_recipe at 'auto'.")


def _plan(targets: Sequence[str], precisions: Sequence[str] | Mapping[str, Sequence[str]]) -> list[tuple[Any, list[str]]]:
    """(converter, its precisions) per target, every converter's libraries present, every precision made
    by some target (or, given per target, by that target)."""
    converters = [get_converter(t) for t in targets]
    for conv in converters:
        conv.require()
    if isinstance(precisions, Mapping):
        per_target = {t: list(precisions.get(t, ())) for t in targets}
        bad = [f"{t} {p}" for t, ps in per_target.items() for p in ps if p not in get_converter(t).precisions]
        if bad:
            raise ConversionError(f"Unsupported target precisions: {', '.join(bad)}.")
        return [(c, per_target[c.name]) for c in converters]
    # Each precision goes to every target that supports it (bf16 exists for OpenVINO only, say).
    unsupported = [p for p in precisions if not any(p in c.precisions for c in converters)]
    if unsupported:
        raise ConversionError(f"No target among {', '.join(c.name for c in converters)} produces "
                              f"{', '.join(unsupported)}: " +
                              "; ".join(f"{c.name} supports {', '.join(c.precisions)}" for c in converters) + ".")
    return [(c, [p for p in precisions if p in c.precisions]) for c in converters]


def _prepare(source: SourceModel, calib: Any, validation: Any, preprocess: Preprocess | None, labels: Any,
             task: str | None, step: Callable[[str], None]) -> Prepared:
    """Calibration and validation data, labels, task, and the source's reference outputs. A model may
    carry its own metadata (see edgesdk.models.zoo); explicit arguments win."""
    carried = getattr(getattr(source, "module", None), "edgesdk_metadata", None) or {}
    preprocess = preprocess or carried.get("preprocess")
    labels = labels if labels is not None else carried.get("labels")
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
    task = _task(task or carried.get("task"), label_list, reference)
    checker = ParityCheck(source, feeds, reference, parity_data, task, len(label_list) if label_list else None)
    return Prepared(source, preprocess, label_list, calibration, checker)


def _convert_all(plan: list[tuple[Any, list[str]]], prepared: Prepared, stage: Path, options: dict[str, Any],
                 tolerance: Tolerance, step: Callable[[str], None]
                 ) -> tuple[list[Artifact], list[tuple[Artifact, Backend]], list[Failure]]:
    """Every artifact written into stage, hashed and checked: (those that passed, the (artifact, backend)
    pairs to time, the (target, precision) pairs that failed). Failed artifacts stay in the staging folder
    until every target is made (later targets may build from them) and are removed before it is published."""
    machine = read_profile().machine_id
    made: list[Artifact] = []  # every artifact written, passed or not: what later converters may build from
    artifacts: list[Artifact] = []
    timed: list[tuple[Artifact, Backend]] = []
    failed: list[Failure] = []
    for conv, wanted in plan:
        if not wanted:
            continue
        step(f"Converting to {conv.name} ({', '.join(wanted)})")
        _warn_fixed_shapes(conv.name, prepared.dynamic_batch, prepared.source)
        arts, failures = _convert_target(conv, wanted, prepared, stage, options, made)
        failed += failures
        for art in arts:
            made.append(art)
            _hash(art, stage)
            runners = prepared.checker.check(art, stage / art.file, step)
            art.measured_on = machine
            failure = _judge(art, tolerance, art.id in prepared.checker.crashed)
            if failure is not None:
                failed.append(failure)
                continue
            timed += [(art, b) for b in runners]
            artifacts.append(art)
    return artifacts, timed, failed


def _convert_target(conv: Any, wanted: list[str], prepared: Prepared, stage: Path, options: dict[str, Any],
                    made: list[Artifact]) -> tuple[list[Artifact], list[Failure]]:
    """One target's artifacts. When its conversion fails with several precisions asked for, each is tried
    alone, so one precision's failure (INT8 calibration, say) does not take the others with it."""
    try:
        job = ConversionJob(prepared.source, wanted, stage, prepared.calibration, options, made,
                            task=prepared.checker.task, dynamic_batch=prepared.dynamic_batch)
        return list(conv.convert(job)), []
    except (CalibrationError, UsageError, BackendUnavailable):
        raise  # what the caller gave is wrong (data, options, a missing extra): every target would say the same
    except Exception as exc:  # noqa: BLE001 - recorded against this target, the others go on
        if len(wanted) == 1 or getattr(exc, "stage", None) == "export":  # the export fails every precision alike
            return [], [_failure(conv.name, p, exc) for p in wanted]
        log.info("%s failed (%s); trying each precision alone.", conv.name, first_line(exc))
    arts: list[Artifact] = []
    failures: list[Failure] = []
    for precision in wanted:
        got, failed = _convert_target(conv, [precision], prepared, stage, options, made)
        arts += got
        failures += failed
    return arts, failures


#: What to try, per stage at which a (target, precision) failed.
_HINTS = {
    "export": "check that the model runs on its example input; --outputs keeps only the outputs you need",
    "convert": "try another target or precision, or see the log above for the converter's own message",
    "parity": "its outputs differ from the source's; the other targets' artifacts were checked separately",
    "crash": "the backend crashed or hung running it; the artifact was not shipped",
}


def _failure(target: str, precision: str, exc: BaseException) -> Failure:
    stage = getattr(exc, "stage", "convert") if isinstance(exc, ConversionError) else "convert"
    reason = first_line(exc) if isinstance(exc, EdgeSDKError) else f"{type(exc).__name__}: {first_line(exc)}"
    return Failure(target, precision, stage, reason, _HINTS.get(stage))


def _warn_fixed_shapes(fmt: str, dynamic_batch: bool, source: SourceModel) -> None:
    """Say when a dynamic batch (or other dynamic axes) was asked for a format whose backends run one
    shape only: its artifacts keep the example's shape."""
    runners = [b for b in backends() if fmt in b.formats]
    other = sorted({n for axes in source.dynamic_axes.values() for n in axes.values()} - {"batch"})
    if other and runners and not any(b.dynamic_shapes for b in runners):
        example = {s.name: list(v.shape) for s, v in zip(source.inputs, source.example_feeds().values())}
        log.warning("%s artifacts take one shape: the dynamic axes %s are fixed at the example's size %s, and "
                    "other sizes are refused with an InputError (pad inputs to that size). Formats that keep "
                    "them: %s.", fmt, ", ".join(other), example,
                    ", ".join(sorted({f for b in backends() if b.dynamic_shapes for f in b.formats})))
    if dynamic_batch and runners and not any(b.dynamic_batch for b in runners):
        log.warning("%s artifacts keep the example input's batch: %s refuses other batch sizes with an "
                    "InputError. Formats whose backends take any batch: %s.", fmt, ", ".join(b.name for b in runners),
                    ", ".join(sorted({f for b in backends() if b.dynamic_batch for f in b.formats})))


def _judge(art: Artifact, tolerance: Tolerance, crashed: bool = False) -> Failure | None:
    """The artifact's failure, or None when it ships: an FP32 artifact outside tolerance, and any artifact
    its backend crashed or hung on, fail; another reduced-precision artifact outside tolerance is kept,
    never auto-picked."""
    ok, why = tolerance.accepts(art.precision, art.parity)
    if crashed:
        return Failure(art.format, art.precision, "crash", "; ".join(art.parity.problems), _HINTS["crash"])
    if art.precision == "fp32" and not ok:
        return Failure(art.format, art.precision, "parity",
                       f"the FP32 artifact does not match the source: {why} (on {art.parity.samples} samples)",
                       _HINTS["parity"])
    if not ok:
        log.warning("%s: %s; Runtime(precision='auto') will not pick it.", art.id, why)
    return None


def _bundle(stage: Path, prepared: Prepared, artifacts: list[Artifact]) -> Bundle:
    source = prepared.source
    return Bundle(
        path=stage, inputs=source.inputs, outputs=source.outputs, artifacts=artifacts,
        preprocess=prepared.preprocess, labels=prepared.labels, task=prepared.checker.task,
        meta={
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {"kind": source.kind, "description": source.description},
            "calibration": prepared.calibration.describe() if prepared.calibration else None,
        },
    )
