"""The device half of `make arm-check`: runs inside the arm64 root (or any device) with only the
device-side install (`edgesdk[runtimes]`: numpy, the runtimes, no converter library) and writes what
the host half compares.

    python tools/arm_device.py EXCHANGE

EXCHANGE holds bundles/<model>/ (converted on the host) and inputs/<model>.npz. This writes
device/<model>/<artifact>@<backend>.npz (every artifact on every backend installed here, through
edgesdk.Runtime) and device/report.json: the hardware profile, the Runtime's own choice per bundle and
why, `edgesdk doctor`'s output, and the footprint (installed sizes, import time and RSS, peak RSS per
artifact). Timings under emulation mean nothing; they are recorded only as ratios to the host's.
Uses the standard library, numpy and edgesdk's public API only."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Libraries that convert models: none of them may be on a device install.
CONVERTER_LIBRARIES = ("torch", "tensorflow", "tensorflow-cpu", "onnx2tf", "onnx", "onnxslim", "nncf", "keras",
                       "tf2onnx", "onnxscript")
#: The distributions whose installed size is reported one by one.
SIZED = ("edgesdk", "numpy", "onnxruntime", "openvino", "ai-edge-litert", "mnn", "ncnn", "jsonschema", "pillow", "click", "rich")


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    """inputs/<model>.npz: keys 'SAMPLE/INPUT_NAME' -> one feed dict per sample, in order."""
    with np.load(path, allow_pickle=False) as data:
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            sample, name = key.split("/", 1)
            feeds.setdefault(int(sample), {})[name] = data[key]
    return [feeds[i] for i in sorted(feeds)]


def save_outputs(path: Path, outputs: list[list[np.ndarray]]) -> None:
    """One file per (artifact, backend): keys 'SAMPLE/OUTPUT_INDEX'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{i}/{k}": o for i, outs in enumerate(outputs) for k, o in enumerate(outs)}
    tmp = path.with_suffix(".partial.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def run_pair(bundle_dir: Path, artifact: str, backend: str, feeds_file: Path, out_file: Path) -> dict[str, Any]:
    """One artifact on one backend through edgesdk.Runtime, its outputs saved; the error if it fails."""
    import edgesdk

    entry: dict[str, Any] = {"artifact": artifact, "backend": backend}
    try:
        with edgesdk.Runtime(bundle_dir, artifact=artifact, backend=backend) as rt:
            feeds = load_feeds(feeds_file)
            t0 = time.perf_counter()
            outputs = [rt.run_all(f) for f in feeds]
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            entry["executes_in"] = rt.execution_precision
        save_outputs(out_file, outputs)
    except edgesdk.EdgeSDKError as exc:
        entry["error"] = str(exc)
    return entry


def run_everywhere(bundle_dir: Path, feeds_file: Path, out_dir: Path, isolate: bool = True) -> list[dict[str, Any]]:
    """Every artifact of the bundle on every installed backend that runs its format. isolate=True runs
    each pair in its own process, so a runtime that crashes (a signal, as under emulation) costs that
    pair, recorded with the signal, not the whole check."""
    import edgesdk
    from edgesdk.backends import backends

    done = []
    for art in edgesdk.load_bundle(bundle_dir).artifacts:
        for backend in (b for b in backends() if art.format in b.formats and b.available()[0]):
            out_file = out_dir / f"{art.id}@{backend.name}.npz"
            if not isolate:
                entry = run_pair(bundle_dir, art.id, backend.name, feeds_file, out_file)
            else:
                entry = _run_isolated(bundle_dir, art.id, backend.name, feeds_file, out_file)
            done.append(entry)
            print(f"  {bundle_dir.name}: {art.id} on {backend.name}: {entry.get('error') or 'ok'}", flush=True)
    return done


def _run_isolated(bundle_dir: Path, artifact: str, backend: str, feeds_file: Path, out_file: Path) -> dict[str, Any]:
    result = out_file.with_suffix(".json")
    done = subprocess.run([sys.executable, __file__, "--pair", str(bundle_dir), artifact, backend, str(feeds_file),
                           str(out_file)], capture_output=True, text=True)
    if done.returncode == 0 and result.exists():
        entry = json.loads(result.read_text())
        result.unlink()
        return entry
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
    return {"artifact": artifact, "backend": backend,
            "error": f"the process died ({how}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"}


def own_choice(bundle_dir: Path) -> dict[str, Any]:
    """What Runtime(bundle) picks here by itself, and whether it trusted latencies measured elsewhere."""
    import edgesdk

    with edgesdk.Runtime(bundle_dir) as rt:
        foreign = [a.id for a in rt.bundle.artifacts if a.latency_ms and a.measured_on != rt.profile.machine_id]
        return {"artifact": rt.artifact.id, "backend": rt.backend, "device": rt.profile.device,
                "explanation": rt.explain(), "latencies_from_elsewhere": foreign,
                "ranking": [f"{c.artifact.id}@{c.backend.name}" for c in rt.ranking.candidates],
                "skipped": list(rt.skipped)}


def installed_sizes() -> dict[str, int]:
    """Bytes on disk of each distribution in SIZED, and of the whole environment's site-packages."""
    sizes = {}
    for name in SIZED:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        sizes[name] = sum(f.locate().stat().st_size for f in files if Path(f.locate()).is_file())
    site = Path(np.__file__).resolve().parent.parent
    sizes["site-packages"] = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    return sizes


def converter_libraries() -> list[str]:
    """Converter libraries present in this environment (there should be none)."""
    found = []
    for name in CONVERTER_LIBRARIES:
        try:
            importlib.metadata.distribution(name)
            found.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


#: Peak RSS in MB of the running process, from /proc/self/status: VmHWM starts again at exec, where
#: getrusage's ru_maxrss carries over the parent's peak (a child of a 1 GB process reports 1 GB).
PEAK_RSS = ("(lambda s: int(s.split('VmHWM:')[1].split()[0]) / 1024)"
            "(open('/proc/self/status').read())")


def import_cost() -> dict[str, float]:
    """`import edgesdk` in a fresh interpreter: seconds and peak RSS in MB (best of three)."""
    code = f"import time; t = time.perf_counter(); import edgesdk; print(time.perf_counter() - t, {PEAK_RSS})"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(3)]
    return {"seconds": min(float(r[0]) for r in runs), "peak_rss_mb": min(float(r[1]) for r in runs)}


def peak_rss(bundle_dir: Path, artifact: str, backend: str, feeds_file: Path) -> float:
    """Peak RSS in MB of a fresh process that loads one artifact and runs one input."""
    code = (
        "import sys, edgesdk\n"
        "sys.path.insert(0, sys.argv[4])\n"
        "from arm_device import load_feeds\n"
        "feeds = load_feeds(__import__('pathlib').Path(sys.argv[3]))\n"
        "with edgesdk.Runtime(sys.argv[1], artifact=sys.argv[2].split('@')[0], backend=sys.argv[2].split('@')[1]) as rt:\n"
        "    rt.run_all(feeds[0])\n"
        f"print('PEAK_RSS_MB', {PEAK_RSS})\n")
    done = subprocess.run([sys.executable, "-c", code, str(bundle_dir), f"{artifact}@{backend}", str(feeds_file),
                           str(Path(__file__).parent)], capture_output=True, text=True)
    found = re.search(r"PEAK_RSS_MB (\S+)", done.stdout)  # runtimes may print around it (MNN does on ARM)
    return float(found.group(1)) if done.returncode == 0 and found else float("nan")


def doctor() -> dict[str, Any]:
    done = subprocess.run([str(Path(sys.executable).with_name("edgesdk")), "doctor"], capture_output=True, text=True)
    return {"returncode": done.returncode, "output": done.stdout[-4000:] + done.stderr[-2000:]}


def main(exchange: Path) -> int:
    from edgesdk.core.hardware import read_profile

    profile = read_profile()
    report: dict[str, Any] = {"machine": platform.machine(), "profile": profile.summary(), "device": profile.device,
                              "python": platform.python_version(), "runs": {}, "choice": {}, "peak_rss_mb": {}}
    print(f"device side on {platform.machine()}: {profile.summary()}", flush=True)
    for bundle_dir in sorted((exchange / "bundles").iterdir()):
        feeds_file = exchange / "inputs" / f"{bundle_dir.name}.npz"
        runs = run_everywhere(bundle_dir, feeds_file, exchange / "device" / bundle_dir.name)
        report["runs"][bundle_dir.name] = runs
        report["choice"][bundle_dir.name] = own_choice(bundle_dir)
        report["peak_rss_mb"][bundle_dir.name] = {
            f"{r['artifact']}@{r['backend']}": peak_rss(bundle_dir, r["artifact"], r["backend"], feeds_file)
            for r in runs if "error" not in r}
    report.update(doctor=doctor(), sizes=installed_sizes(), converter_libraries=converter_libraries(),
                  import_edgesdk=import_cost())
    out = exchange / "device" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}", flush=True)
    return 0


def pair_main(args: list[str]) -> int:
    """--pair BUNDLE ARTIFACT BACKEND FEEDS OUT: one pair, its record written beside OUT as .json."""
    bundle_dir, artifact, backend, feeds_file, out_file = args
    entry = run_pair(Path(bundle_dir), artifact, backend, Path(feeds_file), Path(out_file))
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).with_suffix(".json").write_text(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(pair_main(sys.argv[2:]) if sys.argv[1:2] == ["--pair"] else main(Path(sys.argv[1])))
