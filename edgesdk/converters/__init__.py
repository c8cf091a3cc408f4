"""The converter registry. Each module here defines one target format and exposes it as CONVERTER."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConversionError
from ..options import Option
from ..registry import Plugin

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


class Converter(Plugin):
    """Base class of a target format's converter. `name` is the format name used on the CLI (--to)
    and in the manifest; `modules` and `extra` say what it needs (see Plugin)."""

    precisions: tuple[str, ...] = ("fp32",)
    optional: tuple[str, ...] = ()  # modules some routes need (e.g. onnx2tf for torch -> TFLite); doctor lists them
    options: tuple[Option, ...] = ()  # what it reads from job.options; the CLI's flags come from these
    # `--target` presets: device class -> the precisions this format gets there (FP32 rides along as the
    # fallback and the reference the reduced precisions are checked against).
    presets: dict[str, tuple[str, ...]] = {}

    def describe(self) -> str:
        return f"Converting to {self.name}"

    def notes(self) -> list[str]:
        """Facts for `edgesdk doctor` beyond its libraries (e.g. whether NCNN's INT8 tools are found)."""
        return []

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


#: The format `convert` makes when none is named: the one every runtime here can run.
DEFAULT_TARGET = "onnx"

#: Options every target reads (set by convert's own arguments, not per format).
COMMON_OPTIONS = (
    Option("opset", "int", None, "ONNX opset of the export every target builds from (default 18).", cli=False),
    Option("dynamic_batch", "bool", False, "Export with a dynamic batch dimension.", cli=False),
    Option("task", "str", None, "classification, detection, other: how parity is judged.", cli=False),
    Option("int8_recipe", "str", "auto", "The INT8 recipe: cnn (static, calibrated on every op), transformer "
           "(weights-first: dynamic MatMul INT8 on ONNX, SmoothQuant on OpenVINO, dynamic range on TFLite), or "
           "auto: transformer where the graph has attention.", choices=("auto", "cnn", "transformer")),
)


def declared_options() -> list[Option]:
    """Every option any target declares, the common ones first."""
    return [*COMMON_OPTIONS, *(o for c in converters() for o in c.options)]


def target_presets() -> dict[str, dict[str, list[str]]]:
    """device class -> {format: precisions}, from each converter's declared presets."""
    presets: dict[str, dict[str, list[str]]] = {}
    for conv in converters():
        for device, precisions in conv.presets.items():
            presets.setdefault(device, {})[conv.name] = list(precisions)
    return dict(sorted(presets.items()))


def format_table() -> str:
    """The README's format table (markdown), from the converter and backend declarations."""
    from ..runtimes import backends

    rows = ["| format | precisions | runs on | file types | pip extra | `--target` presets | options |",
            "|---|---|---|---|---|---|---|"]
    for conv in converters():
        runners = [b.name for b in backends() if conv.name in b.formats]
        suffixes = sorted({s for b in backends() for s, f in b.suffixes.items() if f == conv.name})
        presets = ", ".join(f"{d}: {'/'.join(p)}" for d, p in sorted(conv.presets.items())) or "-"
        options = ", ".join(f"`{o.flag}`" if o.cli else f"`{o.name}`" for o in conv.options) or "-"
        rows.append(f"| {conv.name} | {', '.join(conv.precisions)} | {', '.join(runners) or '-'} | "
                    f"{', '.join(suffixes) or '-'} | `{conv.extra}` | {presets} | {options} |")
    return "\n".join(rows)
