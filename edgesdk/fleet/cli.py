"""The CLI's commands beyond one machine: sweep, report, worker, and bench --fleet (on Ray)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.consoles import console, results_console

_PHASES = {"convert": "Converting cells", "source_accuracy": "Source accuracy", "bench": "Benchmarking on devices"}
_STATUS = {"ok": "[green]ok[/]", "failed": "[red]failed[/]", "not available": "[yellow]not available[/]"}


class _Bar:
    """A rich progress bar per phase, and one line per cell or device as it completes."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, event: dict[str, Any]) -> None:
        phase = event["phase"]
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(_PHASES.get(phase, phase), total=event["total"] or 1)
        self.progress.update(self.tasks[phase], completed=event["done"] or 1)
        status = _STATUS.get(event["status"] or "ok", event["status"])
        where = " (cached)" if event["cached"] else f" on {event['node']}" if event.get("node") else ""
        line = f"{event['key']}: {status}{where}"
        if event.get("error"):
            line += f" - {str(event['error'])[:200]}"
        self.progress.console.print(line, highlight=False, markup=True)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


@click.command("sweep")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--address", help="Ray cluster to run on (HOST:6379; default $RAY_ADDRESS, else Ray embedded here).")
@click.option("--workers", type=click.IntRange(1), help="Conversion slots of an embedded Ray [default: cores, "
              "at most one per 4 GB of memory].")
@click.option("--sequential", is_flag=True, help="Run every step in this process, without Ray (the reference).")
@click.option("--no-bench", is_flag=True, help="Convert and validate only.")
@click.option("--retry-failed", is_flag=True, help="Run failed cells again even if their inputs did not change.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Also write the HTML report here.")
def sweep_command(spec: str, address: str | None, workers: int | None, sequential: bool, no_bench: bool, retry_failed: bool,
          report_path: str | None) -> None:
    """Convert every (model, target, precision) of SPEC (YAML or JSON), then benchmark and validate every
    bundle on one node of every device class, as Ray tasks. A re-run skips cells whose inputs did not change."""
    from .sweep import RESULTS, load_spec
    from .sweep import sweep as run_sweep

    parsed = load_spec(spec)
    with _progress() as progress:
        results = run_sweep(parsed, address=address, workers=workers, sequential=sequential, bench=not no_bench,
                            retry_failed=retry_failed, progress=_Bar(progress))
    results_console.print(_summary_table(results))
    console.print(f"Results: {parsed.out / RESULTS} ({results['wall_s']:.1f} s; phases {results['phases_s']})")
    if report_path:
        from ..measuring.report import report

        console.print(f"Report: {report(results, report_path)}")


def _summary_table(results: dict[str, Any]) -> Table:
    table = Table(title="Sweep: device class x artifact x backend")
    for col in ("model", "device", "artifact", "backend", "status", "p50 ms", "p90 ms", "p99 ms", "ips", "RSS MB",
                "accuracy", "drop pts", "auto"):
        table.add_column(col, justify="left" if col in ("model", "device", "artifact", "backend", "status") else "right")
    for name, model in results["models"].items():
        for cell in model["cells"]:
            if cell["status"] != "ok":
                table.add_row(name, "", cell["key"].split("/")[1], "", _STATUS.get(cell["status"], cell["status"]),
                              *[""] * 8)
        for node in model["bench"]:
            for r in node.get("rows", []) or [{"artifact": "", "status": node.get("status"), "error": node.get("error")}]:
                table.add_row(name, node["device_class"], *_row_cells(r))
    return table


def _row_cells(r: dict[str, Any]) -> list[str]:
    from ..measuring.report import accuracy_of

    value, metric = accuracy_of(r)
    drop = (r.get("accuracy") or {}).get("drop")
    fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"  # noqa: E731
    return [r.get("artifact", ""), r.get("backend") or "-", _STATUS.get(r.get("status"), str(r.get("status"))),
            fmt(r.get("p50_ms"), ".3f"), fmt(r.get("p90_ms"), ".3f"), fmt(r.get("p99_ms"), ".3f"),
            fmt(r.get("throughput_ips"), ".1f"), fmt(r.get("peak_rss_mb"), ".0f"),
            f"{value:.4f} {metric}" if value is not None else "-", fmt(drop * 100 if drop is not None else None, "+.2f"),
            "*" if r.get("auto_pick") else ""]


@click.command("report")
@click.argument("results", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="HTML file to write [default: report.html "
              "beside the results].")
def report_command(results: str, out: str | None) -> None:
    """Write a self-contained HTML page (and PNG charts) from a sweep's results.json or a fleet bench's JSON."""
    from ..measuring.report import report as write_report

    base = Path(results) if Path(results).is_dir() else Path(results).parent
    results_console.print(f"Wrote {write_report(results, out or base / 'report.html')}")


@click.command("worker")
@click.option("--address", required=True, help="The Ray head to join, HOST:6379.")
@click.option("--device-class", "cls", help="The class this device advertises [default: detected, e.g. rpi5, x86].")
@click.option("--converter-slots", type=click.IntRange(0), default=0, show_default=True,
              help="Conversions this node takes at once (0: a device that only runs benchmarks).")
@click.option("--num-cpus", type=click.IntRange(1), help="CPUs Ray may use here [default: all].")
@click.option("--backends", help="Only these backends on this node, comma-separated (sets EDGESDK_BACKENDS).")
@click.option("--dry-run", is_flag=True, help="Print the ray start command instead of running it.")
def worker_command(address: str, cls: str | None, converter_slots: int, num_cpus: int | None, backends: str | None,
           dry_run: bool) -> None:
    """Join a Ray cluster as a device of a class (detected with HardwareProfile), for sweeps and fleet benchmarks."""
    from ..core.hardware import read_profile
    from .cluster import device_class, ray_start_line

    cls = cls or device_class(read_profile())
    cmd = ray_start_line(address, cls, converter_slots, num_cpus)
    env = {**os.environ, **({"EDGESDK_BACKENDS": backends} if backends else {})}
    shown = ("EDGESDK_BACKENDS=" + shlex.quote(backends) + " " if backends else "") + shlex.join(cmd)
    if dry_run:
        results_console.print(shown, highlight=False)
        return
    console.print(f"Joining {address} as device class {cls}: {shown}", highlight=False)
    beside = Path(sys.executable).with_name("ray")  # a venv's ray, when the venv is not on PATH
    binary = shutil.which("ray", path=env.get("PATH")) or str(beside)
    try:
        os.execve(binary, [binary, *cmd[1:]], env)
    except OSError as exc:
        raise click.ClickException(f"Could not run `ray`: {exc}. Install it with: pip install 'edgesdk[fleet]'") from None


def bench_on_fleet(model: str, runs: int, warmup: int, threads: int | None, address: str | None, data: str | None,
                json_path: str | None) -> None:
    """`edgesdk bench MODEL --fleet`: one table over every device class in the cluster."""
    from ..core.errors import UsageError
    from ..measuring.accuracy import load_labelled
    from .cluster import BenchSettings
    from .cluster import fleet_bench as run

    labelled = load_labelled(data) if data else None
    if data and labelled is None:
        raise UsageError(f"{data} holds no labels: give class sub-folders, a file,label CSV or images/ + labels/.")
    with _progress() as progress:
        task = progress.add_task("Benchmarking on every device class", total=None)

        def done(result: dict[str, Any]) -> None:
            progress.console.print(f"{result['device_class']} ({result.get('host', '?')}): "
                                   f"{_STATUS.get(result.get('status', 'ok'), 'ok')} {result.get('error') or ''}")
            progress.advance(task)

        results = run(model, BenchSettings(runs, warmup, threads), labelled, address, done)
    results_console.print(_summary_table({"models": {k: {**v, "cells": []} for k, v in results["models"].items()}}))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, default=str))
