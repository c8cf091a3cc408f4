"""The edgesdk command line: convert, run, bench, doctor, profile; sweep, report, worker (edgesdk.fleet.cli).

Every failure is one clear message and a non-zero exit; --debug shows the traceback."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import click
    from rich.table import Table
except ImportError:  # pragma: no cover - exercised only without the cli extra
    sys.stderr.write("The edgesdk CLI needs click and rich: pip install 'edgesdk[cli]'\n")
    raise SystemExit(1) from None

import numpy as np

from .backends import max_threads
from .conversion.formats import converters, declared_options, target_presets
from .core.consoles import console, results_console
from .core.errors import EdgeSDKError, InputError
from .core.records import Parity
from .tasks.classes import top_k

log = logging.getLogger("edgesdk")


def _shape(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,3,224,224, got '{value}'") from None


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _floats(value: str | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in _csv(value)) if value else None


def format_options(command: Any) -> Any:
    """Add every CLI option the converters declare (edgesdk.core.options.Option) as a click option, and
    its older names as hidden ones (warned about when used)."""
    types = {"int": int, "float": float, "str": str, "bool": bool, "list": str}
    for opt in reversed([o for o in declared_options() if o.cli]):
        kind = click.Choice(list(opt.choices)) if opt.choices else types[opt.kind]
        for old in opt.renamed_from:
            command = click.option("--" + old.replace("_", "-"), old, type=kind, hidden=True)(command)
        command = click.option(opt.flag, opt.name, type=kind, help=opt.help + (
            f" [default: {opt.default}]" if opt.default is not None else ""))(command)
    return command


def _format_options(values: dict[str, Any]) -> dict[str, Any]:
    """The click values of the declared options given, parsed ('none' lists); an old flag's value under
    its current name, with a warning."""
    by_name = {name: o for o in declared_options() for name in (o.name, *o.renamed_from)}
    given = {k: by_name[k].parse_cli(v) for k, v in values.items() if v is not None}
    for old in [k for k in given if k != by_name[k].name]:
        new = by_name[old]
        console.print(f"[yellow]--{old.replace('_', '-')} is now {new.flag}; the old flag goes in the next "
                      "release.[/]", highlight=False)
        given.setdefault(new.name, given[old])
        del given[old]
    return given


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show info logs.")
@click.version_option(package_name="edgesdk")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """edgesdk: convert models for edge devices, run and benchmark them."""
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("source", required=False, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--to", "targets", help=f"Target formats, comma-separated: {', '.join(c.name for c in converters())} "
              "[default: onnx, or the --target preset's].")
@click.option("--precision", help="fp32, fp16, bf16, int8; comma-separated [default: fp32, or the preset's].")
@click.option("--target", "device", type=click.Choice(list(target_presets())),
              help="Preset formats and precisions for a device class: " + "; ".join(
                  f"{d}: " + ", ".join(f"{f} {'/'.join(p)}" for f, p in fs.items()) for d, fs in target_presets().items())
              + ".")
@click.option("--calib", type=click.Path(exists=True), help="INT8 calibration data: image folder, .npy or .npz.")
@click.option("--validate", type=click.Path(exists=True), help="Held-out data to measure parity on (same forms).")
@click.option("--input-shape", help="Input shape where the source does not say, e.g. 1,3,224,224.")
@click.option("--factory", help="pkg.module:function that returns the torch model.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="state_dict for --factory "
              "(loaded with torch.load(weights_only=True)).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Text file: one class name per line.")
@click.option("--mean", help="Image normalization mean per channel, e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Image normalization std per channel.")
@click.option("--resize", type=int, help="Resize the short side to this before the centre crop.")
@click.option("--bgr", is_flag=True, help="The model takes BGR channel order.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option("--dynamic", "dynamic_axes", multiple=True, metavar="INPUT:AXIS=NAME",
              help="Keep another axis dynamic, e.g. input_ids:1=sequence (repeatable or comma-separated; inputs "
              "sharing a NAME share a size). Parity is then measured at two lengths.")
@click.option("--tokenizer", type=click.Path(exists=True), help="A tokenizer.json (or a Hugging Face folder "
              "holding one) to store in the bundle, so `edgesdk run BUNDLE \"text\"` works [default: the one the "
              "model carries].")
@click.option("--outputs", "output_names", help="Keep only these outputs of a torch model, in this order, by the "
              "names edgesdk gives them (output0, logits, feats.1; shown when a name is wrong), e.g. "
              "--outputs output0 to drop YOLO's training branches.")
@click.option("--opset", type=int, help="ONNX opset (default 18).")
@format_options
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max abs error allowed for FP32.")
@click.option("--task", help="How reduced precisions are judged: classification (top-1 agreement), detection "
              "(decoded YOLO detections matched at IoU 0.5), other or any other name such as text-embedding (every "
              "output's cosine) [default: carried by the model, or classification when --labels fit the output].")
@click.option("--trust-source", is_flag=True, help="Convert a SavedModel even if its serving function reads or "
              "writes files or calls Python. A SavedModel is a program and converting it runs it: trust its origin.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--strict", is_flag=True, help="All or nothing: if any (target, precision) fails, write no bundle. "
              "Without it the bundle keeps what passed, lists what failed, and the command exits 1.")
def convert(source: str | None, out: str, targets: str | None, precision: str | None, device: str | None,
            calib: str | None, validate: str | None,
            input_shape: str | None, factory: str | None, weights: str | None, labels: str | None,
            mean: str | None, std: str | None, resize: int | None, bgr: bool, dynamic_batch: bool,
            dynamic_axes: Sequence[str], tokenizer: str | None, output_names: str | None, opset: int | None,
            tolerance: float, task: str | None, trust_source: bool, force: bool,
            strict: bool, **format_option_values: Any) -> None:
    """Convert SOURCE (.onnx, TorchScript .pt, torch.export .pt2, Keras .keras/.h5, a SavedModel folder)
    or --factory to a bundle. A SavedModel is a program, not data: converting it runs its serving
    function, so one that touches files or calls Python is refused without --trust-source. A (target,
    precision) that fails is listed in the table and the manifest, the others are kept, and the command
    exits 1; --strict writes nothing instead."""
    from .conversion.pipeline import convert as do_convert
    from .conversion.sources import load_source
    from .core.bundle import check_output_dir
    from .core.records import Tolerance

    if weights and not factory:
        raise click.UsageError("--weights goes with --factory (a state_dict needs code that builds the model).")
    if not source and not factory:
        raise click.UsageError("Give a SOURCE model file or --factory pkg.module:function.")
    check_output_dir(Path(out), force)  # before any slow work
    with console.status("Loading the source model") as status:
        model = load_source(source, factory=factory, weights=weights, input_shape=_shape(input_shape),
                            dynamic_batch=dynamic_batch, trust_source=trust_source, dynamic_axes=list(dynamic_axes),
                            outputs=_csv(output_names) if output_names else None)
        preprocess = _preprocess_flags(model, mean, std, resize, bgr)
        bundle = do_convert(
            model, targets=_csv(targets) if targets else None, precisions=_csv(precision) if precision else None,
            target=device, calib=calib,
            out=out, validation=validate,
            preprocess=preprocess, labels=labels, task=task, force=force, dynamic_batch=dynamic_batch,
            tolerance=Tolerance(fp32_max_abs=tolerance), tokenizer=tokenizer,
            options={"opset": opset, **_format_options(format_option_values)},
            progress=lambda msg: status.update(msg), strict=strict,
        )
    results_console.print(_bundle_table(bundle))
    if bundle.failed:
        console.print(f"[bold red]{len(bundle.failed)} of {len(bundle.failed) + len(bundle.artifacts)} asked for "
                      f"failed[/]; the bundle holds the others (--strict: all or nothing).", highlight=False)
        sys.exit(1)


def _preprocess_flags(model: Any, mean: str | None, std: str | None, resize: int | None, bgr: bool) -> Any:
    """The Preprocess --mean/--std/--resize/--bgr describe, over what the model carries; None if none is given."""
    from .core.images import Preprocess

    if not (any(v is not None for v in (mean, std, resize)) or bgr):
        return None
    carried = getattr(getattr(model, "module", None), "edgesdk_metadata", None) or {}
    base = carried.get("preprocess") or Preprocess.for_input(model.inputs[0])
    changes: dict[str, Any] = {}
    if mean:
        changes["mean"] = _floats(mean)
    if std:
        changes["std"] = _floats(std)
    if resize:
        changes["resize"] = resize
    if bgr:
        changes["color"] = "BGR"
    return Preprocess(**{**base.to_dict(), **changes, "size": base.size})


def _bundle_table(bundle: Any) -> Table:
    """Each artifact of a fresh bundle: size, parity (or why it failed or was not measured), latency here."""
    table = Table(title=f"Bundle {bundle.path}")
    for col in ("artifact", "file", "size", "max abs err", "agreement", "cosine", "ms (here)"):
        table.add_column(col)
    for a in bundle.artifacts:
        p = a.parity
        if not p.measured or p.problems:
            why = p.reason or "; ".join(p.problems)
            table.add_row(a.id, a.file, f"{a.size_bytes / 1e6:.2f} MB", f"[red]{why}[/]", "-", "-", "-")
            continue
        table.add_row(a.id, a.file, f"{a.size_bytes / 1e6:.2f} MB", f"{p.max_abs or 0.0:.2e}",
                      _agreement(p), f"{1.0 if p.cosine is None else p.cosine:.5f}",
                      ", ".join(f"{b} {ms:.2f}" for b, ms in a.latency_ms.items()) or "-")
    for f in bundle.failed:
        table.add_row(f"[red]{f.id}[/]", "[red]FAILED[/]", "-", f"[red]{f.stage}: {f.reason}[/]", "-", "-", "-")
    return table


def _agreement(parity: Parity) -> str:
    """The task's own measure: top-1 agreement, or detection recall / precision."""
    if parity.detection is not None:
        return f"det R {parity.detection.recall:.1%} P {parity.detection.precision:.1%}"
    return f"{parity.top1_agreement:.1%} top-1" if parity.top1_agreement is not None else "-"


def _load_inputs(rt: Any, paths: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Each input -> (name, batch): images through the bundle's preprocessing, .npy as is, and for a bundle
    with a tokenizer, any argument that is not a file is a text."""
    from .core.images import Preprocess, is_image_path, list_images, preprocess_image

    items: list[tuple[str, np.ndarray]] = []
    files: list[Path] = []
    texts: list[tuple[str, Any]] = []
    for p in map(Path, paths):
        if not p.exists():
            if rt.bundle.meta.get("tokenizer"):
                texts.append((str(p), rt.tokenize(str(p))))
                continue
            raise InputError(f"No file {p}" + (": this bundle has no tokenizer, so text cannot be given."
                                                if " " in str(p) else "."))
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() == ".npy" and f.is_file()) + list_images(p)
            if not found:
                raise InputError(f"Folder {p} holds no images (.jpg, .png, ...) and no .npy arrays: nothing to run.")
            files.extend(found)
        else:
            files.append(p)
    for f in files:
        if f.suffix.lower() == ".npy":
            try:
                arr = np.load(f, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"Cannot read {f} as a .npy array: {exc}") from None
            items.append((str(f), arr))
        elif is_image_path(f):
            pre = rt.preprocess or Preprocess.for_input(rt.inputs[0])
            items.append((str(f), preprocess_image(f, pre)))
        else:
            raise InputError(f"Cannot use {f} as input: give images (.jpg, .png, ...) or .npy arrays.")
    return texts + items


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--backend", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--artifact", help="Force one artifact of the bundle (id like onnx-int8, or file name).")
@click.option("--threads", type=click.IntRange(1, max_threads()), help="Intra-op threads (default: the backend's).")
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def run(model: str, inputs: Sequence[str], backend: str, precision: str, artifact: str | None,
        threads: int | None, k: int, as_json: bool) -> None:
    """Run MODEL (bundle folder or model file) on images, .npy arrays, or texts (a bundle with a tokenizer)."""
    from .conversion.parity import is_class_scores
    from .running.runtime import Runtime

    with Runtime(model, backend=backend, precision=precision, artifact=artifact, threads=threads) as rt:
        results = []
        for name, arr in _load_inputs(rt, inputs):
            outputs = rt.run_all(arr)
            entry: dict[str, Any] = {"input": name, "artifact": rt.artifact.id, "backend": rt.backend}
            if any(o.dtype.kind == "f" and not np.isfinite(o).all() for o in outputs):
                entry["warning"] = "outputs hold NaN or infinite values: the model file may be corrupt"
            if is_class_scores(outputs[0]) and (rt.labels or rt.bundle.task == "classification"):
                entry["top"] = top_k(outputs[0][0], k, rt.labels)
            elif rt.bundle.task == "text-embedding" and isinstance(arr, dict) and outputs[0].ndim == 3:
                from .tasks.text import mean_pool

                vector = mean_pool(outputs[0], arr["attention_mask"])[0]
                entry["embedding"] = {"dims": int(vector.size), "tokens": int(arr["attention_mask"].sum()),
                                      "head": [round(float(v), 5) for v in vector[:6]]}
            else:
                entry["outputs"] = [{"name": s.name, "shape": list(o.shape), "min": float(o.min()),
                                     "max": float(o.max()), "mean": float(o.mean())} for s, o in zip(rt.outputs, outputs)]
            results.append(entry)
        if as_json:
            click.echo(json.dumps(results, indent=2))
            return
        results_console.print(f"[bold]{rt.artifact.id}[/] on [bold]{rt.backend}[/]")
        for entry in results:
            if "warning" in entry:
                console.print(f"[bold red]warning:[/] {entry['input']}: {entry['warning']}", highlight=False)
            if "top" in entry:
                best = ", ".join(f"{t['label']} {t['score']:.3f}" for t in entry["top"])
                results_console.print(f"{entry['input']}: {best}")
            elif "embedding" in entry:
                e = entry["embedding"]
                results_console.print(f"{entry['input']!r}: {e['tokens']} tokens -> unit embedding of {e['dims']} "
                                      f"dims, starting {e['head']}")
            else:
                results_console.print(f"{entry['input']}: " + "; ".join(
                    f"{o['name']} {o['shape']} mean {o['mean']:.4g}" for o in entry["outputs"]))


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--threads", type=click.IntRange(1, max_threads()), help="Intra-op threads (default: the backend's choice).")
@click.option("--backend", default="auto", show_default=True, help="Only this backend.")
@click.option("--artifact", "artifacts", multiple=True, help="Only these artifacts (repeatable).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the report as CSV.")
@click.option("--mode", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: one request at a time. throughput: the backend's throughput setting, all requests "
              "in flight at once (OpenVINO async infer requests).")
@click.option("--fleet", is_flag=True, help="Run on one node of every device class of a Ray cluster (see `edgesdk worker`).")
@click.option("--address", help="With --fleet: the Ray cluster (HOST:6379; default $RAY_ADDRESS, else Ray embedded here).")
@click.option("--data", type=click.Path(exists=True), help="With --fleet: labelled data for accuracy (class "
              "sub-folders, a file,label CSV, or images/ + labels/ in YOLO format).")
def bench(model: str, runs: int, warmup: int, threads: int | None, backend: str, artifacts: Sequence[str],
          json_path: str | None, csv_path: str | None, mode: str, fleet: bool, address: str | None, data: str | None) -> None:
    """Benchmark every artifact of MODEL on every backend that runs it (here, or with --fleet on every device class)."""
    from .core.bundle import check_writable_parent
    from .measuring.bench import benchmark, write_csv

    for report_path in filter(None, (json_path, csv_path)):  # before minutes of timing, not after
        check_writable_parent(Path(report_path), InputError)
    if fleet:
        if csv_path or mode != "latency" or backend != "auto" or artifacts:
            raise click.UsageError("--fleet times every artifact on every backend in latency mode; it writes --json.")
        from .fleet.cli import bench_on_fleet

        return bench_on_fleet(model, runs, warmup, threads, address, data, json_path)
    if address or data:
        raise click.UsageError("--address and --data go with --fleet.")
    with console.status("Benchmarking") as status:
        report = benchmark(model, runs=runs, warmup=warmup, threads=threads, artifacts=artifacts or None,
                           backend=backend, progress=lambda m: status.update(m), mode=mode)
    table = Table(title=f"{model}: {mode} mode, {runs} runs after {warmup} warm-up, threads={threads or 'default'}")
    for col in ("artifact", "backend", "computes in", "p50 ms", "p90 ms", "p99 ms", "mean ms", "img/s", "load s", "peak RSS MB",
                "size MB", "top-1 agree", "max abs err"):
        table.add_column(col, justify="left" if col in ("artifact", "backend") else "right")
    for r in report.results:
        if r.error:
            table.add_row(r.artifact, r.backend, f"[red]failed: {r.error}[/]", *[""] * 10)
            continue
        lat, p = r.latency_ms, r.parity
        table.add_row(r.artifact, r.backend, r.execution_precision, f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}",
                      f"{lat['mean']:.2f}", f"{r.throughput_ips:.1f}", f"{r.load_s:.2f}",
                      f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "-", f"{r.size_bytes / 1e6:.2f}",
                      f"{p.top1_agreement:.1%}" if p.top1_agreement is not None else "-",
                      f"{p.max_abs:.1e}" if p.max_abs is not None else "-")
    results_console.print(table)
    for r in report.results:
        if r.nonfinite_outputs:
            console.print(f"[bold red]warning:[/] {r.artifact} on {r.backend} returned NaN or infinite outputs: the "
                          "model file may be corrupt (only a bundle's files are checked against its manifest).",
                          highlight=False)
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2))
    if csv_path:
        write_csv(report, csv_path)


@cli.command()
@click.argument("source", required=False, type=click.Path(exists=True))
@click.option("--factory", help="pkg.module:function that returns the torch model.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="state_dict for --factory.")
@click.option("--input-shape", help="Input shape where the source does not say, e.g. 1,3,224,224.")
@click.option("--top", type=int, default=10, show_default=True, help="How many layers to list, by FLOPs.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole profile as JSON.")
def profile(source: str | None, factory: str | None, weights: str | None, input_shape: str | None, top: int,
            as_json: bool) -> None:
    """Where a PyTorch model's cost is: parameters, FLOPs, size, activation memory, the costliest layers."""
    from .conversion.sources import load_source
    from .optimize import measure_cost

    if not source and not factory:
        raise click.UsageError("Give a SOURCE model file (TorchScript .pt, .pt2) or --factory pkg.module:function.")
    model = load_source(source, factory=factory, weights=weights, input_shape=_shape(input_shape))
    if getattr(model, "kind", "") != "torch":
        raise InputError("edgesdk profile measures PyTorch models (a factory, TorchScript or torch.export file).")
    report = measure_cost(model.module, model.example_inputs)
    if as_json:
        results_console.print_json(json.dumps(report.to_dict()))
        return
    results_console.print(f"params {report.params:,} | FLOPs {report.flops / 1e9:.3f} G | size {report.size_bytes / 1e6:.2f} MB"
                          f" | activations {report.activation_bytes / 1e6:.2f} MB (largest layer in+out "
                          f"{report.peak_activation_bytes / 1e6:.2f} MB)")
    table = Table(title=f"Top {top} layers by FLOPs")
    for col in ("layer", "type", "params", "MFLOPs", "share", "output"):
        table.add_column(col, justify="right" if col in ("params", "MFLOPs", "share") else "left")
    for layer in report.top(top):
        table.add_row(layer.name, layer.type, f"{layer.params:,}", f"{layer.flops / 1e6:.2f}",
                      f"{layer.flops / max(report.flops, 1):.1%}", str(layer.output_shape))
    results_console.print(table)


@cli.command()
@click.argument("model", required=False, type=click.Path(exists=True))
@click.option("--autotune", is_flag=True, help="Time the top candidates for MODEL here (cached per machine).")
@click.option("--hardware", "hardware_root", type=click.Path(exists=True, file_okay=False),
              help="Read the hardware profile from this root folder instead of / (to see another device's ranking).")
def doctor(model: str | None, autotune: bool, hardware_root: str | None) -> None:
    """What this machine has (device class, CPU flags, GPUs, backends and converters with versions) and,
    given a MODEL bundle, how the Runtime ranks its (backend, artifact) pairs here, and why."""
    import platform

    from .backends import backends
    from .conversion.formats import converters
    from .core.hardware import read_profile

    hw = read_profile(hardware_root or "/")
    results_console.print(f"[bold]edgesdk[/] {__import__('edgesdk').__version__} on Python {platform.python_version()}, "
              f"{hw.system} ({hw.arch})")
    results_console.print(f"Device: {hw.summary()}")
    results_console.print(f"CPU: {hw.cpu_model} ({hw.cpu_vendor or '?'}), {hw.cores} logical cores; "
                          f"flags: {', '.join(hw.flags) or 'none of note'}")
    table = Table(title="Backends")
    for col in ("backend", "formats", "status", "details"):
        table.add_column(col)
    for b in backends():
        info = b.info()
        details = "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in info.items()
                            if k not in ("available", "version", "reason"))
        status = f"[green]{info['version']}[/]" if info["available"] else f"[red]missing[/]: {info['reason']}"
        table.add_row(b.name, ", ".join(b.formats), status, details)
    results_console.print(table)
    table = Table(title="Converters")
    for col in ("format", "precisions", "status", "libraries"):
        table.add_column(col)
    for c in converters():
        ok, why = c.available()
        table.add_row(c.name, ", ".join(c.precisions), "[green]ready[/]" if ok else f"[red]missing[/]: {why}",
                      ", ".join([*(f"{m} {_version(m)}" for m in ("torch", *c.modules, *c.optional)), *c.notes()]))
    results_console.print(table)
    if model:
        from .running.runtime import Runtime

        with Runtime(model, autotune=autotune, hardware=hw) as rt:
            results_console.print(f"[bold]{model}[/]: how the Runtime ranks it here")
            results_console.print(rt.explain(), highlight=False)


def _register_fleet_commands() -> None:
    from .fleet.cli import report_command, sweep_command, worker_command

    for command in (sweep_command, report_command, worker_command):
        cli.add_command(command)


_register_fleet_commands()


def _version(module: str) -> str:
    """The installed version of the distribution that provides an import name (tensorflow may come
    from tensorflow-cpu), without importing it."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for distribution in packages_distributions().get(module, [module]):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "not installed"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning every failure into one message and a non-zero exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if not debug:  # TensorFlow's C++ start-up notices drown the CLI's output; --debug keeps them
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        cli.main(args=args, prog_name="edgesdk", standalone_mode=False)
    except click.exceptions.Abort:
        console.print("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgeSDKError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if debug:
            raise
        console.print(f"[bold red]unexpected error:[/] {exc.__class__.__name__}: {exc}\n"
                      "Run again with --debug for the traceback, and please report it.", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
