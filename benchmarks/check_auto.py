"""Did precision="auto" pick the fastest pair? Loads a bundle with the automatic choice (from the
timings recorded at conversion) and with autotune, then times every (artifact, backend) pair of the
bundle in interleaved rounds on the same input and threads, and compares the picks with the fastest
pair at the same precision. Bar: within 5%.

    python benchmarks/check_auto.py [--bundle build/effnet] [--threads N] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="build/effnet")
    ap.add_argument("--threads", type=int, default=None,
                    help="default: each backend's own, as Runtime(bundle) runs and as conversion timed them")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()

    from common import interleaved

    import edgesdk
    from edgesdk.backends import backends

    bundle = edgesdk.load_bundle(args.bundle)
    auto = edgesdk.Runtime(args.bundle, threads=args.threads)
    tuned = edgesdk.Runtime(args.bundle, threads=args.threads, autotune=True)
    picks = {"auto": (auto.artifact.id, auto.backend), "autotune": (tuned.artifact.id, tuned.backend)}
    x = np.random.default_rng(0).standard_normal(bundle.inputs[0].concrete_shape()).astype(np.float32)
    runtimes = {}
    for art in bundle.artifacts:
        for b in backends():
            if art.format in b.formats and b.available()[0]:
                runtimes[f"{art.id} on {b.name}"] = edgesdk.Runtime(args.bundle, artifact=art.id, backend=b.name,
                                                                    threads=args.threads)
    per_round = interleaved({k: (lambda rt=rt: rt.run(x)) for k, rt in runtimes.items()}, args.rounds, args.runs,
                            args.warmup)
    p50 = {k: float(np.median(v)) for k, v in per_round.items()}
    print(f"{args.bundle}: {args.rounds} interleaved rounds x {args.runs} runs, threads {args.threads or 'default'}")
    for k in sorted(p50, key=p50.get):
        print(f"  {k:34s} {p50[k]:7.2f} ms")
    report = {"p50_ms": p50, "picks": {}}
    for how, (art_id, backend) in picks.items():
        precision = bundle.artifact(art_id).precision
        same = {k: v for k, v in p50.items() if bundle.artifact(k.split(" on ")[0]).precision == precision}
        best = min(same, key=same.get)
        ratio = p50[f"{art_id} on {backend}"] / same[best] - 1
        verdict = "within" if ratio <= 0.05 else "NOT within"
        print(f"{how}: picked {art_id} on {backend} ({p50[f'{art_id} on {backend}']:.2f} ms); fastest {precision} "
              f"pair: {best} ({same[best]:.2f} ms): {ratio:+.1%}, {verdict} 5%")
        report["picks"][how] = {"pick": f"{art_id} on {backend}", "fastest": best, "slower_by": ratio}
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
