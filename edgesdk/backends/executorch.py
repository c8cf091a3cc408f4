"""ExecuTorch backend: .pte programs through ExecuTorch's Python runtime (XNNPACK for delegated graphs).

A .pte of random bytes aborts the whole process (SIGABRT) inside the loader, so a file is checked in
two steps before this process loads it: its header (the ET12 identifier and, where the extended
header is present, the declared program and segment sizes must fit in the file), then a load in a
child process. A file that loaded in a child once is remembered by its sha256 in edgesdk's cache, so
the ~10 s child start is paid once per file, not per open.
The runtime needs torch (its Python binding links libtorch; `executorch-numpy-runtime`, the torch-free
one, needs Python 3.12+ and sets no threads). A Method holds its planned memory between calls, so each
thread borrows a Method of its own. XNNPACK's thread pool is one per process: `threads` resizes it
for every ExecuTorch session in the process."""

from __future__ import annotations

import hashlib
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cache import cache_dir
from ..core.errors import InferenceError, ModelLoadError, first_line
from ..core.options import Option
from ..core.specs import TensorSpec, check_feeds, guess_layout
from .base import Backend
from .pool import PooledSession, WorkerPool
from .probe import flatbuffer_head, load_in_child

log = logging.getLogger(__name__)

#: ExecuTorch ScalarType codes -> numpy dtype names
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
           11: "bool"}
_PROBE = """
import sys
from executorch.runtime import Runtime
program = Runtime.get().load_program(sys.argv[1])
for name in program.method_names:
    program.load_method(name)
"""


@lru_cache(maxsize=1)
def _runtime() -> Any:
    from executorch.runtime import Runtime

    return Runtime.get()


def check_header(path: Path) -> None:
    """The cheap checks: the flatbuffer identifier, and the sizes the extended header declares."""
    size = path.stat().st_size
    head = flatbuffer_head(path, b"ET12", "an ExecuTorch program", 40)
    if head[8:12] == b"eh00" and len(head) >= 40:
        program_size = int.from_bytes(head[16:24], "little")
        segment_base, segment_size = int.from_bytes(head[24:32], "little"), int.from_bytes(head[32:40], "little")
        needed = max(program_size, segment_base + segment_size if segment_base else 0)
        if needed > size:
            raise ModelLoadError(f"{path} is truncated: its header declares {needed} bytes, the file has {size}. "
                                 "Re-convert it.")


def _probe(path: Path) -> None:
    """Load the program in a child process once per file content: an abort there is an error here."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    marker = cache_dir() / "executorch-loads" / digest
    if marker.exists():
        return
    load_in_child(_PROBE, path, "ExecuTorch")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as exc:
        log.debug("Could not remember the ExecuTorch probe of %s: %s", path, exc)


def _spec(prefix: str, i: int, meta: Any) -> TensorSpec:
    shape = tuple(int(d) for d in meta.sizes())
    return TensorSpec(f"{prefix}_{i}", shape, _DTYPES.get(int(meta.dtype()), "float32"), guess_layout(shape))


class ExecuTorchSession(PooledSession):
    """A loaded program behind the Session protocol; each call runs a Method of its own."""

    def __init__(self, path: Path):
        try:
            self._program = _runtime().load_program(path)
            first = self._program.load_method("forward")
        except Exception as exc:  # noqa: BLE001 - the binding raises RuntimeError and its own types
            raise ModelLoadError(f"ExecuTorch cannot load {path}: {first_line(exc)}; re-convert it.") from None
        if first is None:
            raise ModelLoadError(f"{path} has no 'forward' method; it has {sorted(self._program.method_names)}.")
        meta = first.metadata
        self.inputs = [_spec("input", i, meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        self.outputs = [_spec("output", i, meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
        lock = threading.Lock()

        def make() -> Any:
            with lock:
                return self._program.load_method("forward")

        self._pool: WorkerPool[Any] | None = WorkerPool(make, first)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._pool is None:
            raise InferenceError("This ExecuTorch session is closed.")
        check_feeds(self.inputs, feeds)
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
        with self._pool.borrow() as method:
            try:
                outs = method.execute(tensors)
            except Exception as exc:  # noqa: BLE001 - inputs were checked: this is the runtime failing
                raise InferenceError(f"ExecuTorch failed while running the model: {first_line(exc)}") from None
            return [o.detach().numpy().copy() for o in outs]


class ExecuTorchBackend(Backend):
    name = "executorch"
    formats = ("executorch",)
    suffixes = {".pte": "executorch"}
    modules = ("executorch.runtime",)
    extra = "executorch"
    open_options = (
        Option("probe", "bool", True, "Load each new file in a child process first (once per file content), so "
               "an abort in ExecuTorch cannot take down the caller; conversion's own child processes, isolated "
               "already, turn it off (it cost 6 s of imports per artifact there)."),
    )
    precision_preference = ("int8", "fp32")
    # Android's PyTorch runtime, beside TFLite; beside ONNX Runtime on other ARM; behind it on x86 (1.13x here).
    device_rank = {"android": 1, "rpi": 21, "arm": 21, "x86": 33, "jetson": 33, "nvidia": 43}

    def installed(self) -> tuple[bool, str]:
        from importlib.metadata import PackageNotFoundError, version
        from importlib.util import find_spec

        try:
            found = find_spec("executorch.runtime") is not None
            return (True, version("executorch")) if found else (False, "executorch.runtime is missing")
        except (ImportError, PackageNotFoundError) as exc:
            return False, f"'executorch' is not installed ({exc}); pip install 'edgesdk[{self.extra}]'"

    def load(self, path: Path, threads: int | None = None, **options: Any) -> ExecuTorchSession:
        check_header(path)
        if options["probe"]:
            _probe(path)
        if threads:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))  # noqa: SLF001 - the binding's only thread setting
        return ExecuTorchSession(path)


BACKEND = ExecuTorchBackend()
