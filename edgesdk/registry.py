"""Plugin discovery shared by the converter and backend registries: every module of a package that
defines the named attribute registers it. Adding a format or backend means adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

T = TypeVar("T")


def discover(package: str, paths: list[str], attr: str, kind: type[T]) -> dict[str, T]:
    found: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(paths), key=lambda i: i.name):
        obj = getattr(importlib.import_module(f"{package}.{info.name}"), attr, None)
        if isinstance(obj, kind):
            found[obj.name] = obj
    return found
