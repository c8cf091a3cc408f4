"""Old import paths from edgesdk 0.1's flat layout, and where those modules live now. `import
edgesdk.runtime` or `from edgesdk.zoo import minilm` keeps working for one release, with a
DeprecationWarning that names the new path; the next release removes this file."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module -> new module. Packages (runtimes, converters) move with their submodules.
MOVED = {
    "errors": "core.errors", "version": "core.version", "records": "core.records", "specs": "core.specs",
    "images": "core.images", "migrations": "core.migrations", "bundle": "core.bundle", "options": "core.options",
    "registry": "core.registry", "cache": "core.cache", "consoles": "core.consoles", "hardware": "core.hardware",
    "yolo": "tasks.yolo", "text": "tasks.text", "audio": "tasks.audio", "classes": "tasks.classes",
    "runtimes": "backends",
    "runtime": "running.runtime", "autotune": "running.autotune", "pool": "backends.pool",
    "isolated": "running.isolated", "timing": "running.timing",
    "bench": "measuring.bench", "latency": "measuring.latency", "accuracy": "measuring.accuracy",
    "report": "measuring.report",
    "convert": "conversion.pipeline", "sources": "conversion.sources", "calibration": "conversion.calibration",
    "onnx_tools": "conversion.onnx_tools", "parity": "conversion.parity", "stdio": "core.stdio",
    "converters": "conversion.formats",
    "zoo": "models.zoo", "whisper": "models.whisper",
    "sweep": "fleet.sweep", "cli_fleet": "fleet.cli",
}  # edgesdk.fleet is a package now; its __getattr__ forwards the old module's names to fleet.cluster


def new_path(old: str) -> str | None:
    """'edgesdk.runtimes.tflite' -> 'edgesdk.backends.tflite'; None for a name that did not move."""
    package, _, rest = old.partition(".")
    head, _, tail = rest.partition(".")
    if package != "edgesdk" or head not in MOVED:
        return None
    return f"edgesdk.{MOVED[head]}" + (f".{tail}" if tail else "")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        warnings.warn(f"{module.__name__} moved to {self.new}; the old path goes in the next release.",
                      DeprecationWarning, stacklevel=2)  # warnings skips importlib's frames
        # The import system returns what sys.modules holds after exec_module: the module at its new path.
        sys.modules[module.__name__] = importlib.import_module(self.new)


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds an old module path and hands back the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = new_path(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
