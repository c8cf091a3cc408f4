"""A test-only backend: ONNX Runtime, except that running a file whose name holds "int8" kills its own
process with SIGSEGV (as OpenVINO did on a timm edgenext's INT8) or, with EDGESDK_TEST_FAULT=hang, never
returns. Registered by the tests that use it; convert() must survive it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from edgesdk.backends.onnxruntime import OnnxRuntimeBackend


class _Faulty:
    def __init__(self, session: Any):
        self.inputs, self.outputs, self._session = session.inputs, session.outputs, session

    def run(self, feeds: Any) -> Any:
        if os.environ.get("EDGESDK_TEST_FAULT") == "hang":
            time.sleep(3600)
        os.kill(os.getpid(), signal.SIGSEGV)

    def close(self) -> None:
        self._session.close()


class CrashingBackend(OnnxRuntimeBackend):
    name = "crashing"

    def load(self, path: Path, threads: int | None = None, **options: Any) -> Any:
        session = super().load(path, threads, **options)
        return _Faulty(session) if "int8" in Path(path).name else session


BACKEND = CrashingBackend()
