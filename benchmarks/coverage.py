"""What converts: the third-party corpus (tests/corpus.py: Ultralytics YOLO, Hugging Face transformers
families, timm/torchvision mobile CNNs and hybrids) x every format x FP32/INT8, each converted straight
from the module the library builds (random init, nothing downloaded). Each cell is

  ok        the artifact was made and matched the source (FP32: within tolerance; INT8: task rules),
  mismatch  it was made but did not match (the figure that failed),
  failed    export or conversion failed (the stage and the converter's reason),
  n/a       the format cannot be made on this machine (TensorRT without an NVIDIA GPU),

printed as a table, written as JSON (--json) and as the README's markdown table (--markdown).

    .venv/bin/python benchmarks/coverage.py --json build/coverage.json --markdown build/coverage.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.corpus, run from anywhere

import edgesdk  # noqa: E402
from edgesdk.conversion.formats import converters  # noqa: E402
from edgesdk.core.records import Tolerance  # noqa: E402
from tests.corpus import CASES  # noqa: E402

PRECISIONS = ("fp32", "int8")
CALIB_SAMPLES = 16


def _available_formats() -> tuple[list[str], dict[str, str]]:
    """(formats this machine can make, {format: why not} for the others)."""
    made, missing = [], {}
    for c in converters():
        ok, why = c.available()
        (made.append(c.name) if ok else missing.__setitem__(c.name, why))
    return made, missing


def _cell_of_failure(failure: Any) -> dict[str, Any]:
    state = "mismatch" if failure.stage == "parity" else "failed"
    return {"state": state, "stage": failure.stage, "reason": failure.reason[:400]}


def _cell_of_artifact(art: Any) -> dict[str, Any]:
    """ok when the default tolerance accepts its parity (as Runtime's pick does), else mismatch and why."""
    p = art.parity
    figure = {k: getattr(p, k) for k in ("max_abs", "cosine", "top1_agreement") if getattr(p, k) is not None}
    if p.detection is not None:
        figure["detection"] = p.detection.to_dict()
    accepted, why = Tolerance().accepts(art.precision, p)
    route = {"route": art.versions["route"]} if "route" in art.versions else {}  # TFLite: which route made it
    return {"state": "ok" if accepted else "mismatch", "backend": p.backend, **route, **figure,
            **({} if accepted else {"stage": "parity", "reason": why})}


def convert_case(name: str, formats: list[str], out: Path) -> dict[str, Any]:
    """Every (format, precision) of one corpus model: one convert() call, partial bundles on."""
    case = CASES[name]
    module, example = case.make()
    by_name = {c.name: c for c in converters()}
    precisions = {f: [p for p in PRECISIONS if p in by_name[f].precisions and not by_name[f].missing_for(p)]
                  for f in formats}
    not_here = {f"{f}-{p}": {"state": "n/a", "reason": by_name[f].missing_for(p)[:200]}
                for f in formats for p in PRECISIONS if p in by_name[f].precisions and by_name[f].missing_for(p)}
    started = time.perf_counter()
    try:
        bundle = edgesdk.convert(module, example, targets=formats, precisions=precisions, out=out,
                                 calib=case.calib(CALIB_SAMPLES) if case.calib else None, force=True,
                                 **case.convert_kwargs)
    except edgesdk.EdgeSDKError as exc:  # nothing was made: every cell failed the same way
        reason = str(exc)[:400]
        return {f"{f}-{p}": {"state": "failed", "stage": "conversion (no artifact made)", "reason": reason}
                for f in formats for p in precisions[f]} | not_here | {"_seconds": time.perf_counter() - started}
    cells = {f"{a.format}-{a.precision}": _cell_of_artifact(a) for a in bundle.artifacts}
    cells |= {f"{f.target}-{f.precision}": _cell_of_failure(f) for f in bundle.failed}
    return cells | not_here | {"_seconds": time.perf_counter() - started}


def markdown(results: dict[str, dict[str, Any]], formats: list[str], missing: dict[str, str]) -> str:
    """The README table: one row per model, one column per format, FP32 / INT8 in each cell."""
    mark = {"ok": "ok", "mismatch": "**mismatch**", "failed": "**failed**", "n/a": "n/a", None: "-"}
    cols = [*formats, *missing]
    lines = ["| model | family | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, cells in results.items():
        row = []
        for f in cols:
            if f in missing:
                row.append("n/a")
                continue
            row.append(" / ".join(mark[cells.get(f"{f}-{p}", {}).get("state")] for p in PRECISIONS))
        lines.append(f"| {name} | {CASES[name].family} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def problems(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per cell that is not ok: model, cell, stage and reason."""
    return [f"{name} {cell}: {v['state']} at {v.get('stage', 'parity')}: {v.get('reason', v)}"
            for name, cells in results.items() for cell, v in cells.items()
            if not cell.startswith("_") and v["state"] not in ("ok", "n/a")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help=f"comma-separated, of: {', '.join(CASES)} [default: all]")
    parser.add_argument("--formats", help="comma-separated [default: every format this machine can make]")
    parser.add_argument("--json", help="write the cells here")
    parser.add_argument("--markdown", help="write the README table here")
    parser.add_argument("--update", action="store_true", help="merge these cells into the --json file's (re-run "
                        "one format or model after a fix)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    formats, missing = _available_formats()
    if args.formats:
        formats = [f for f in args.formats.split(",") if f in formats]
    names = args.models.split(",") if args.models else list(CASES)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = convert_case(name, formats, Path(tmp) / name)
            ok = sum(1 for k, v in results[name].items() if not k.startswith("_") and v["state"] == "ok")
            sys.stderr.write(f"{name}: {ok} ok of {len(results[name]) - 1} in {results[name]['_seconds']:.0f} s\n")
    if args.update and args.json and Path(args.json).is_file():
        earlier = json.loads(Path(args.json).read_text())
        formats = sorted(set(earlier["formats"]) | set(formats))
        results = {name: {**earlier["models"].get(name, {}), **results.get(name, {})}
                   for name in [*earlier["models"], *(n for n in results if n not in earlier["models"])]}
    table = markdown(results, formats, missing)
    print(table)
    print("\n".join(problems(results)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"formats": formats, "not_available": missing, "models": results},
                                              indent=1, default=str))
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
