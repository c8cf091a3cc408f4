"""RSS over Runtime create / run / close cycles, per backend: does loading leak?

    python benchmarks/memory_cycles.py --bundle build/effnet [--cycles 200] [--json build/memory_cycles.json]

Each (artifact, backend) pair runs in a fresh child process: `--cycles` times, open a Runtime on the pair,
run one input, close it. The child reports RSS after the first cycle (the libraries and their one-off
caches loaded), at the middle and after the last; growth between the first and the last is what a device
that reloads models (an app switching models, a server) would see. A plateau is not a leak; a line that
keeps rising is."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.threads_and_memory import rss_mb  # noqa: E402 - after the path is set


def cycle_in_this_process(bundle: str, artifact: str, backend: str, cycles: int) -> dict:
    import numpy as np

    import edgesdk

    marks: dict[int, float] = {}
    x = None
    for i in range(1, cycles + 1):
        with edgesdk.Runtime(bundle, artifact=artifact, backend=backend, threads=2) as rt:
            if x is None:
                x = np.random.default_rng(0).standard_normal(rt.inputs[0].concrete_shape()).astype(np.float32)
            rt.run(x)
        if i in (1, cycles // 10, cycles // 2, cycles):
            marks[i] = round(rss_mb(), 1)
    return {"artifact": artifact, "backend": backend, "cycles": cycles, "rss_mb": marks,
            "growth_mb": round(marks[cycles] - marks[1], 1),
            "growth_after_warmup_mb": round(marks[cycles] - marks[max(cycles // 10, 1)], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="build/effnet")
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, metavar=("ARTIFACT", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(cycle_in_this_process(args.bundle, *args.child, args.cycles)))
        return
    import edgesdk

    bundle = edgesdk.load_bundle(args.bundle)
    rows = []
    for art in bundle.artifacts:
        for backend in edgesdk.backends.backends():
            if art.format not in backend.formats or not backend.available()[0]:
                continue
            out = subprocess.run([sys.executable, __file__, "--bundle", args.bundle, "--cycles", str(args.cycles),
                                  "--child", art.id, backend.name], capture_output=True, text=True)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            row = json.loads(line[7:]) if line else {"artifact": art.id, "backend": backend.name,
                                                      "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
            rows.append(row)
            if "error" in row:
                print(f"{art.id:16} {backend.name:12} error: {row['error']}")
            else:
                marks = row["rss_mb"]
                print(f"{art.id:16} {backend.name:12} RSS MB " + "  ".join(f"@{k}: {v}" for k, v in marks.items())
                      + f"  growth {row['growth_mb']:+.1f} (after cycle {args.cycles // 10}: "
                      f"{row['growth_after_warmup_mb']:+.1f})", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
