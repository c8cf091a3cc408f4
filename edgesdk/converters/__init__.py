"""The converter registry. Each module here defines one target format and exposes it as CONVERTER."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, ConversionError

if TYPE_CHECKING:
    from ..bundle import Artifact
    from ..calibration import CalibrationSet
    from ..sources import SourceModel


@dataclass
class ConversionJob:
    """Everything a converter needs: the source, what to produce, and where to write it."""

    source: SourceModel
    precisions: list[str]
    stage: Path  # the bundle's staging folder; artifact files go here
    calibration: CalibrationSet | None = None
    options: dict[str, Any] = field(default_factory=dict)  # dynamic_batch, opset, int8_method, ...
    artifacts: list[Artifact] = field(default_factory=list)  # made so far, by earlier converters


class Converter:
    """Base class of a target format's converter."""

    name: str = ""  # the format name used on the CLI (--to) and in the manifest
    precisions: tuple[str, ...] = ("fp32",)
    modules: tuple[str, ...] = ()  # Python modules it needs
    optional: tuple[str, ...] = ()  # modules some routes need (e.g. onnx2tf for torch -> TFLite); doctor lists them
    extra: str = ""

    def available(self) -> tuple[bool, str]:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return False, f"'{module}' is not installed ({exc}); pip install 'edgesdk[{self.extra}]'"
        return True, ""

    def require(self) -> None:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"Converting to {self.name} is unavailable: {why}")

    def convert(self, job: ConversionJob) -> list[Artifact]:
        """Write the requested precisions of this format into job.stage; return their records
        (parity is filled in afterwards by edgesdk.convert)."""
        raise NotImplementedError


@lru_cache(maxsize=1)
def _registry() -> dict[str, Converter]:
    from ..registry import discover

    return discover(__name__, __path__, "CONVERTER", Converter)


def converters() -> list[Converter]:
    return list(_registry().values())


def get_converter(name: str) -> Converter:
    try:
        return _registry()[name]
    except KeyError:
        raise ConversionError(f"Unknown target format '{name}'. Known formats: {', '.join(_registry())}.") from None
