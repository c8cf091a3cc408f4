"""Streams of frames (image files, video, a camera) through decode -> infer -> post-process, pipelined.

Each group of stages runs in a thread of its own, joined by short queues, so while the model runs
on frame N the next frame is decoded and the previous one post-processed: a stream goes at the rate
of its slowest stage (the model, when the app is right) instead of the sum of them all. Frames come
out in input order whatever the timing, each with its stage timings and end-to-end latency.

    steps = [[("decode", decode), ("preprocess", preprocess)], [("infer", infer)], [("postprocess", post)]]
    for frame in run_stream(items, steps, latency):
        print(frame.name, frame.error or frame.result)

A stage is a function of the Frame: it reads what earlier stages left on it and adds its own
(frame.image = ..., frame.x = ...). An InputError in the first group (reading and preparing the item:
an unreadable file) marks that frame (frame.error) and skips its later stages; the stream goes on. Any
other exception, or an InputError later (a model whose output the post-processing cannot read fails
every frame alike), stops the stream and is raised to the caller, with the other threads stopped."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .core.errors import InputError
from .measuring.latency import LatencyLog

Stage = tuple[str, Callable[["Frame"], None]]


class Frame:
    """One item of a stream: its position, name and source (a path or a decoded frame), its timings,
    and whatever the stages add to it as attributes."""

    def __init__(self, index: int, name: str, source: Any):
        self.index, self.name, self.source = index, name, source
        self.error: str | None = None
        self.result: Any = None
        self.log: dict[str, Any] = {}  # extra fields for this frame's line in the latency log
        self.stages_ms: dict[str, float] = {}
        self.started = self.finished = 0.0  # perf_counter() at its first stage's start and last stage's end

    @property
    def latency_ms(self) -> float:
        """End to end: from the start of its first stage to the end of its last, queues included."""
        return (self.finished - self.started) * 1e3

    def run(self, stages: Sequence[Stage], item_errors: bool = False) -> None:
        """Run stages on this frame, timing each, unless it is already marked bad. item_errors: an
        InputError is this item's fault (marks the frame, skips the rest) rather than the stream's."""
        for name, step in stages:
            if self.error is not None:
                break
            t0 = time.perf_counter()
            if not self.started:
                self.started = t0
            try:
                step(self)
            except InputError as exc:
                if not item_errors:
                    raise
                self.error = str(exc)
            finally:
                self.finished = time.perf_counter()
                self.stages_ms[name] = self.stages_ms.get(name, 0.0) + (self.finished - t0) * 1e3


_DONE = object()  # end of the stream, passed down the queues


class _Failure:
    """An exception raised in a worker thread, passed down to the caller."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def run_stream(items: Iterable[tuple[str, Any]], steps: Sequence[Sequence[Stage]], latency: LatencyLog | None = None,
               pipelined: bool = True, depth: int = 1) -> Iterator[Frame]:
    """Frames of (name, source) items through groups of stages, in input order, each logged to latency.

    pipelined=True runs each group but the last in a thread of its own (the last runs in the caller's
    thread as the frames are consumed), with at most `depth` frames waiting between two groups;
    pipelined=False runs every stage of one frame before the next frame starts (the reference)."""
    frames = (Frame(i, name, source) for i, (name, source) in enumerate(items))
    if not pipelined or len(steps) < 2:
        later = [stage for group in steps[1:] for stage in group]
        for frame in frames:
            frame.run(steps[0], item_errors=True)
            frame.run(later)
            _log(latency, frame)
            yield frame
        return
    yield from _Pipeline(frames, steps, depth).run(latency)


def _log(latency: LatencyLog | None, frame: Frame) -> None:
    if latency is not None:
        meta = {"input": frame.name, **frame.log, **({"error": frame.error} if frame.error else {})}
        latency.record(frame.stages_ms, frame.started, frame.finished, **meta)


class _Pipeline:
    """One thread per group of stages but the last, joined by bounded queues."""

    def __init__(self, frames: Iterator[Frame], steps: Sequence[Sequence[Stage]], depth: int):
        self.steps = steps
        self.stop = threading.Event()
        self.queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=max(1, depth)) for _ in steps[:-1]]
        sources: list[Any] = [frames, *self.queues[:-1]]
        self.threads = [threading.Thread(target=self._work, args=(src, group, out, i == 0), daemon=True,
                                         name=f"edgesdk-stream-{group[0][0]}")
                        for i, (src, group, out) in enumerate(zip(sources, steps[:-1], self.queues))]

    def run(self, latency: LatencyLog | None) -> Iterator[Frame]:
        for t in self.threads:
            t.start()
        try:
            while (item := self.queues[-1].get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise item.exc
                item.run(self.steps[-1])
                _log(latency, item)
                yield item
        finally:
            self.stop.set()
            for q in self.queues:  # unblock workers waiting to put
                while not q.empty():
                    q.get_nowait()
            for t in self.threads:
                t.join(timeout=10)

    def _work(self, source: Any, stages: Sequence[Stage], out: queue.Queue[Any], first: bool) -> None:
        try:
            for frame in self._items(source):
                if isinstance(frame, _Failure):
                    self._put(out, frame)
                    return
                frame.run(stages, item_errors=first)
                if not self._put(out, frame):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            self._put(out, _Failure(exc))
            return
        self._put(out, _DONE)

    def _items(self, source: Any) -> Iterator[Any]:
        if not isinstance(source, queue.Queue):
            yield from source
            return
        while (item := self._get(source)) is not _DONE:
            yield item
            if isinstance(item, _Failure):
                return

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Put unless the stream was stopped; False when it was."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
