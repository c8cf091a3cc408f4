"""LatencyLog: per-stage timers for applications (decode, preprocess, infer, postprocess, ...), running
percentiles, frames per second or real-time factor, a JSONL file with every sample, and a summary table.

    log = LatencyLog("build/classify.jsonl")
    for path in images:
        with log.sample(input=str(path)):
            with log.stage("decode"):
                img = load(path)
            with log.stage("infer"):
                out = rt.run(x)
    print(log.table())

A pipelined stream (edgesdk.stream) times its frames in several threads and hands each one to
log.record(); frames per second are then counted on the wall clock, not summed per frame.

For audio, log.sample(audio_s=0.032) records how much audio a sample covered; the summary then gives
the real-time factor (processing time / audio time; below 1 keeps up with a live stream)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: How often the JSONL file is flushed while samples come (and always on close).
FLUSH_EVERY_S = 0.5


class LatencyLog:
    """Collects stage timings per sample; writes each sample as one JSON line when a path is given."""

    def __init__(self, jsonl: str | os.PathLike | None = None, name: str = "",
                 inference_stages: tuple[str, ...] = ("infer",)):
        """inference_stages: the stages that run models; the summary reports the share of time outside them."""
        self.name = name
        self.inference_stages = inference_stages
        self.stages: dict[str, list[float]] = {}  # stage -> ms per sample, in first-seen order
        self.totals: list[float] = []  # ms per sample, all stages
        self.audio_s = 0.0
        self.samples = 0
        self._current: dict[str, float] | None = None
        self._first, self._last = float("inf"), float("-inf")  # perf_counter() span of all samples
        self._file = None
        self._flushed = float("-inf")
        if jsonl is not None:
            try:
                Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
                self._file = open(jsonl, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                from ..core.errors import InputError

                raise InputError(f"Cannot write the latency log {jsonl}: {exc.strerror or exc}. Choose another "
                                 "path.") from None
        self.path = Path(jsonl) if jsonl is not None else None

    @contextmanager
    def sample(self, audio_s: float | None = None, **meta: Any) -> Iterator[dict[str, Any]]:
        """One unit of work (an image, an audio chunk). Yields a dict the caller may add results to."""
        if self._current is not None:
            raise RuntimeError("LatencyLog.sample() does not nest; close the current sample first.")
        self._current = {}
        extra: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            yield extra
        finally:
            stages, self._current = self._current, None
            self.record(stages, t0, time.perf_counter(), audio_s, **{**meta, **extra})

    def record(self, stages_ms: dict[str, float], started: float, finished: float, audio_s: float | None = None,
               **meta: Any) -> None:
        """One sample timed elsewhere (a pipelined stream's frame): its stage times, and when it started
        and finished (time.perf_counter()) end to end."""
        total = (finished - started) * 1e3
        self.samples += 1
        self.totals.append(total)
        self._first = min(self._first, started)
        self._last = max(self._last, finished)
        for stage, ms in stages_ms.items():
            self.stages.setdefault(stage, []).append(ms)
        if audio_s:
            self.audio_s += audio_s
        if self._file is not None:
            line = {"sample": self.samples - 1, **meta, "total_ms": round(total, 4),
                    "stages_ms": {k: round(v, 4) for k, v in stages_ms.items()}}
            if audio_s:
                line["audio_s"] = audio_s
            self._file.write(json.dumps(line, default=str) + "\n")
            if finished - self._flushed > FLUSH_EVERY_S:  # not per line: a syscall per 0.3 ms audio chunk showed
                self._file.flush()
                self._flushed = finished

    @property
    def wall_s(self) -> float:
        """Seconds from the first sample's start to the last one's end."""
        return max(0.0, self._last - self._first) if self.samples else 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage of the current sample (a stage used twice in a sample adds up)."""
        if self._current is None:
            raise RuntimeError("LatencyLog.stage() belongs inside LatencyLog.sample().")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._current[name] = self._current.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def summary(self) -> dict[str, Any]:
        """Percentiles per stage and of each sample end to end ("total"), samples per second of wall
        time, the share of the wall time outside inference, and the real-time factor."""
        def stats(values: list[float]) -> dict[str, float]:
            a = np.asarray(values) if values else np.zeros(1)
            return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                    "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "count": len(values)}

        wall_s = self.wall_s
        out: dict[str, Any] = {"samples": self.samples, "stages": {k: stats(v) for k, v in self.stages.items()},
                               "total": stats(self.totals), "wall_s": wall_s,
                               "per_second": self.samples / wall_s if wall_s else 0.0}
        # The share of the wall time in which no model ran: where the app, not the model, sets the pace.
        # Pipelined, inference overlaps the other stages and the share falls towards zero.
        infer = sum(sum(self.stages.get(stage, [])) for stage in self.inference_stages) / 1e3
        if wall_s and infer:
            out["share_outside_infer"] = max(0.0, 1 - infer / wall_s)
        if self.audio_s:
            out["audio_s"] = self.audio_s
            out["real_time_factor"] = sum(self.totals) / 1e3 / self.audio_s
        return out

    def table(self) -> str:
        """The summary as a text table (rich when installed)."""
        s = self.summary()
        rows = [(k, v) for k, v in s["stages"].items()] + [("total", s["total"])]
        footer = f"{s['samples']} samples, {s['per_second']:.1f}/s"
        if "share_outside_infer" in s:
            footer += f", {s['share_outside_infer']:.1%} of the time outside inference"
        if "real_time_factor" in s:
            footer += f", real-time factor {s['real_time_factor']:.4f} ({s['audio_s']:.1f} s of audio)"
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            lines = [f"{'stage':14s} {'p50 ms':>9s} {'p90 ms':>9s} {'p99 ms':>9s} {'mean ms':>9s}"]
            lines += [f"{k:14s} {v['p50']:9.3f} {v['p90']:9.3f} {v['p99']:9.3f} {v['mean']:9.3f}" for k, v in rows]
            return "\n".join([self.name, *lines, footer] if self.name else [*lines, footer])
        table = Table(title=self.name or None, caption=footer)
        for col in ("stage", "p50 ms", "p90 ms", "p99 ms", "mean ms"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for k, v in rows:
            table.add_row(k, *(f"{v[q]:.3f}" for q in ("p50", "p90", "p99", "mean")))
        with open(os.devnull, "w") as sink:  # rendered to text, not printed
            console = Console(width=100, record=True, file=sink)
            console.print(table)
            return console.export_text()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LatencyLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
