"""The backend registry: each module of this package that defines BACKEND registers it, so adding a
backend means adding a file. Heavy libraries are imported only when a backend is used, so listing
backends costs nothing. Also what is found through it: the backend for a file, the reference backend of a
source model, open options checked against the declarations, and open_artifact()."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.errors import BackendUnavailable, ModelLoadError, UsageError
from ..core.options import validate
from ..core.records import ArtifactIO
from ..core.registry import discover, lookup
from ..core.specs import TensorSpec
from .adapt import adapt
from .base import Backend, Session


@lru_cache(maxsize=1)
def _registry() -> dict[str, Backend]:
    return discover(__package__, [str(Path(__file__).parent)], "BACKEND", Backend)


def backends() -> list[Backend]:
    return list(_registry().values())


def get_backend(name: str) -> Backend:
    return lookup(_registry(), name, BackendUnavailable, "backend")


def format_of_file(path: str | os.PathLike) -> str:
    """The artifact format of a single model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for b in backends():
        if suffix in b.suffixes:
            return b.suffixes[suffix]
    known = sorted({s for b in backends() for s in b.suffixes})
    raise ModelLoadError(f"Cannot tell which runtime loads '{Path(path).name}': known model file types are "
                         f"{', '.join(known)}, or a bundle folder made by `edgesdk convert`.")


def check_open_options(backend: str, given: dict[str, Any]) -> None:
    """Options for open() from a caller (Runtime(..., device="GPU")): each declared by the backend named or,
    for backend='auto', by some backend (the others do not read it), and of its declared kind."""
    pool = backends() if backend == "auto" else [get_backend(backend)]
    declared = {o.name: o for b in pool for o in b.open_options}
    validate(given, declared.values(), error=UsageError, what="backend option" if backend == "auto" else f"{backend} option")


def open_reference(path: Path) -> Session:
    """A session of a source model file on the reference backend of its format (ONNX Runtime for .onnx)."""
    fmt = format_of_file(path)
    for b in backends():
        if b.reference and fmt in b.formats:
            b.require()
            return b.open(Path(path))
    raise BackendUnavailable(f"No backend is the reference for {fmt} models, so {path} cannot be run as a source.")


def open_artifact(backend: Backend, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], io: ArtifactIO,
                  threads: int | None = None, **options: Any) -> Session:
    """An artifact's session seen in the source model's terms (adapt), checked against the manifest's specs:
    what the Runtime, autotune and the conversion's child processes all open."""
    return adapt(backend.open(path, threads=threads, **options), inputs, outputs, io)
