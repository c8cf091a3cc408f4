"""Plugin discovery shared by the converter and backend registries: every module of a package that
defines the named attribute registers it. Adding a format or backend means adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

from .errors import BackendUnavailable

T = TypeVar("T")


class Plugin:
    """What converters and backends share: a name, the Python modules they need, the pip extra that
    installs those, and whether they can be used here."""

    name: str = ""
    modules: tuple[str, ...] = ()  # Python modules it needs; the first one's version is reported
    extra: str = ""  # the pip extra that installs them

    def describe(self) -> str:
        """How messages name it: 'Converting to tflite', "Backend 'openvino'"."""
        return self.name

    def available(self) -> tuple[bool, str]:
        """(True, version) or (False, why not and what to install)."""
        version = "?"
        for i, module in enumerate(self.modules):
            try:
                loaded = importlib.import_module(module)
            except ImportError as exc:
                return False, f"'{module}' is not installed ({exc}); pip install 'edgesdk[{self.extra}]'"
            if i == 0:
                version = getattr(loaded, "__version__", "?")
        return True, version

    def require(self) -> None:
        """Raise BackendUnavailable, saying what to install, unless it can be used here."""
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"{self.describe()} is unavailable: {why}")


def discover(package: str, paths: list[str], attr: str, kind: type[T]) -> dict[str, T]:
    found: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(paths), key=lambda i: i.name):
        obj = getattr(importlib.import_module(f"{package}.{info.name}"), attr, None)
        if isinstance(obj, kind):
            found[obj.name] = obj
    return found


def lookup(found: dict[str, T], name: str, error: type[Exception], what: str) -> T:
    """found[name], or `error` naming the known ones ("Unknown backend 'x'. Known backends: ...")."""
    try:
        return found[name]
    except KeyError:
        raise error(f"Unknown {what} '{name}'. Known {what.split()[-1]}s: {', '.join(found)}.") from None
