"""Wall time of one sweep (benchmarks/sweep.yaml: EfficientNet-Lite0 + the shapes detector over
onnx/openvino/tflite x fp32/int8) on an embedded Ray with 1 conversion worker and with 2, and the ratio.

    python benchmarks/sweep_workers.py [--spec benchmarks/sweep.yaml] [--workers 1,2] [--json FILE]

Each run starts from an empty sweep folder and an empty edgesdk cache (onnx2tf's SavedModels would
otherwise make the second run faster), and benchmarks the bundles on this machine's device class, so
the last run's results.json feeds `edgesdk report`. Run it on a quiet machine: the runs are minutes long
and cannot be interleaved."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "benchmarks" / "sweep.yaml"))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()

    from edgesdk.fleet.sweep import load_spec, sweep

    os.chdir(ROOT)  # the factories (apps.shapes_detector) import from the repository root
    runs = []
    for workers in (int(w) for w in args.workers.split(",")):
        spec = load_spec(args.spec)
        spec.out = spec.out.with_name(f"{spec.out.name}-w{workers}")
        shutil.rmtree(spec.out, ignore_errors=True)  # no cell cached from an earlier run
        os.environ["EDGESDK_CACHE"] = tempfile.mkdtemp(prefix=f"edgesdk-cache-w{workers}-")
        t0 = time.perf_counter()
        results = sweep(spec, workers=workers, progress=lambda e: sys.stderr.write(
            f"[{e['phase']}] {e['key']}: {e['status']}{' - ' + str(e['error'])[:120] if e['error'] else ''}\n"))
        wall = time.perf_counter() - t0
        cells = [c for m in results["models"].values() for c in m["cells"]]
        runs.append({"workers": workers, "wall_s": round(wall, 1), "phases_s": results["phases_s"], "out": str(spec.out),
                     "cells": len(cells), "ok": sum(c["status"] == "ok" for c in cells)})
        print(f"workers={workers}: {wall:.1f} s wall, phases {results['phases_s']}, {runs[-1]['ok']}/{len(cells)} cells ok",
              flush=True)
    if len(runs) >= 2:
        base = runs[0]
        for r in runs[1:]:
            print(f"speed-up {base['workers']} -> {r['workers']} workers: whole sweep {base['wall_s'] / r['wall_s']:.2f}x, "
                  f"conversions {base['phases_s']['convert'] / r['phases_s']['convert']:.2f}x")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
