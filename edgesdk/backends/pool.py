"""A pool of per-call workers (OpenVINO infer requests, TFLite interpreters) that are not safe to
share between threads: each call borrows one, so concurrent callers never see each other's tensors."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator
from typing import Generic, NoReturn, TypeVar

from ..core.errors import InferenceError

T = TypeVar("T")


class WorkerPool(Generic[T]):
    """Hands each caller a worker of its own for the length of one call. Workers are made on demand
    (at most one per concurrent caller) and reused; `first` is kept as the first idle one."""

    def __init__(self, make: Callable[[], T], first: T | None = None):
        self._make = make
        self._idle: queue.SimpleQueue[T] = queue.SimpleQueue()
        if first is not None:
            self._idle.put(first)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[T]:
        worker = self.take()
        try:
            yield worker
        finally:
            self._idle.put(worker)

    def take(self) -> T:
        """An idle worker, or a new one; hand it back with give() (borrow() does both, at a few
        microseconds more per call: what a tiny model's run() cannot spare)."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._make()

    def give(self, worker: T) -> None:
        self._idle.put(worker)

    def clear(self) -> None:
        """Drop every idle worker and the factory (on close): a factory that is a bound method of the model
        (OpenVINO's compiled.create_infer_request) kept the whole compiled model alive after close."""
        self._make = _closed
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                return


def _closed() -> NoReturn:
    raise InferenceError("This session is closed.")


class PooledSession:
    """A session whose per-call workers live in a WorkerPool: close() lets them (and what they hold) go."""

    _pool: WorkerPool | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
        self._pool = None
