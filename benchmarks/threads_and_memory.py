"""A Runtime shared by threads, and memory over time, for every (artifact, backend) of a bundle.

    python benchmarks/threads_and_memory.py --bundle build/effnet [--threads 8 --runs 500]
        [--soak 5000] [--cycles 50] [--json build/threads_and_memory.json]

Per pair, three measurements, each in a fresh child process (so one pair's memory is not another's):
  threads: one Runtime, N threads x M runs, each thread on its own input; every output compared with the
           sequential output of that input (identical / different / errors);
  soak:    RSS before and after K sequential runs (a leak per call shows here);
  cycles:  RSS after N threads x C cycles of Runtime create / run / close (a leak per load shows here)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def inputs_for(rt, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(rt.inputs[0].concrete_shape()).astype(np.float32) for _ in range(n)]


def measure_threads(bundle: str, artifact: str, backend: str, threads: int, runs: int) -> dict:
    import edgesdk

    with edgesdk.Runtime(bundle, artifact=artifact, backend=backend) as rt:
        xs = inputs_for(rt, threads)
        expected = [rt.run_all(x) for x in xs]

        def worker(i: int) -> tuple[int, int, int]:
            same = other = errors = 0
            for _ in range(runs):
                try:
                    out = rt.run_all(xs[i])
                except Exception:  # noqa: BLE001 - counted, the figure is the point
                    errors += 1
                    continue
                if all(np.array_equal(a, b) for a, b in zip(out, expected[i])):
                    same += 1
                else:
                    other += 1
            return same, other, errors

        with ThreadPoolExecutor(threads) as pool:
            counts = np.array(list(pool.map(worker, range(threads)))).sum(0)
    return {"calls": threads * runs, "identical": int(counts[0]), "different": int(counts[1]), "errors": int(counts[2])}


def measure_soak(bundle: str, artifact: str, backend: str, runs: int) -> dict:
    import edgesdk

    with edgesdk.Runtime(bundle, artifact=artifact, backend=backend) as rt:
        x = inputs_for(rt, 1)[0]
        for _ in range(20):
            rt.run(x)
        before = rss_mb()
        for _ in range(runs):
            rt.run(x)
        after = rss_mb()
    return {"runs": runs, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1)}


def measure_cycles(bundle: str, artifact: str, backend: str, threads: int, cycles: int) -> dict:
    import edgesdk

    def cycle(_: int) -> None:
        for _ in range(cycles):
            with edgesdk.Runtime(bundle, artifact=artifact, backend=backend) as rt:
                rt.run(inputs_for(rt, 1)[0])

    cycle(0)  # the first load's one-off costs (libraries, plugins) are not a leak
    before = rss_mb()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(cycle, range(threads)))
    return {"cycles": threads * cycles, "rss_before_mb": round(before, 1), "rss_after_mb": round(rss_mb(), 1)}


def child(args: argparse.Namespace) -> None:
    what = {"threads": lambda: measure_threads(args.bundle, args.artifact, args.backend, args.threads, args.runs),
            "soak": lambda: measure_soak(args.bundle, args.artifact, args.backend, args.soak),
            "cycles": lambda: measure_cycles(args.bundle, args.artifact, args.backend, args.threads, args.cycles)}
    print(json.dumps(what[args.child]()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="build/effnet")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--runs", type=int, default=500, help="runs per thread")
    ap.add_argument("--soak", type=int, default=5000, help="sequential runs for the RSS soak")
    ap.add_argument("--cycles", type=int, default=50, help="create/run/close cycles per thread")
    ap.add_argument("--only", nargs="*", help="artifact ids to measure (default: all)")
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--child", choices=["threads", "soak", "cycles"], help=argparse.SUPPRESS)
    ap.add_argument("--artifact", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import logging

    import edgesdk
    from edgesdk.backends import backends

    logging.basicConfig(level=logging.ERROR)
    bundle = edgesdk.load_bundle(args.bundle)
    rows = []
    for art in bundle.artifacts:
        if args.only and art.id not in args.only:
            continue
        for b in backends():
            if art.format not in b.formats or not b.available()[0]:
                continue
            row = {"artifact": art.id, "backend": b.name}
            for kind in ("threads", "soak", "cycles"):
                cmd = [sys.executable, __file__, "--child", kind, "--bundle", args.bundle, "--artifact", art.id,
                       "--backend", b.name, "--threads", str(args.threads), "--runs", str(args.runs),
                       "--soak", str(args.soak), "--cycles", str(args.cycles)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
                row[kind] = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                    "failed": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"}
            rows.append(row)
            t, s, c = row["threads"], row["soak"], row["cycles"]
            print(f"{art.id:16} {b.name:12} threads {t.get('identical', '?')}/{t.get('calls', '?')} identical, "
                  f"{t.get('different', '?')} different, {t.get('errors', '?')} errors | soak RSS "
                  f"{s.get('rss_before_mb', '?')} -> {s.get('rss_after_mb', '?')} MB | cycles RSS "
                  f"{c.get('rss_before_mb', '?')} -> {c.get('rss_after_mb', '?')} MB", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
