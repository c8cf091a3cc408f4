"""The converter registry. Each module here defines one target format and exposes it as CONVERTER."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import ConversionError, ExportError, first_line
from ...core.options import Option
from ...core.registry import Plugin, lookup
from ..int8 import RECIPE_OPTION
from ..onnx_tools import DEFAULT_OPSET

if TYPE_CHECKING:
    from ...core.bundle import Artifact
    from ..calibration import CalibrationSet
    from ..sources import SourceModel


@dataclass
class ConversionJob:
    """Everything a converter needs: the source, what to produce, and where to write it."""

    source: SourceModel
    precisions: list[str]
    stage: Path  # the bundle's staging folder; artifact files go here
    calibration: CalibrationSet | None = None
    options: dict[str, Any] = field(default_factory=dict)  # every declared option, validated, defaults filled in
    artifacts: list[Artifact] = field(default_factory=list)  # made so far, by earlier converters
    task: str = "other"  # how parity is judged (convert's task keyword, or what the source says)
    dynamic_batch: bool = False  # export with a dynamic batch dimension (convert's keyword)


def onnx_for(job: ConversionJob, tmp: Path) -> Path:
    """An FP32 ONNX file of the source, the interchange most targets build from: the bundle's own if made,
    else a fresh export."""
    made = next((a for a in job.artifacts if a.format == "onnx" and a.precision == "fp32"), None)
    if made is not None:
        return job.stage / made.file
    path = tmp / "model.onnx"
    export_source(job, path)
    return path


def export_source(job: ConversionJob, path: Path) -> dict[str, str]:
    """The source exported to ONNX at path (the versions of what exported it); a failure is an ExportError,
    recorded against every target built from it."""
    try:
        return job.source.export_onnx(path, job.options["opset"], job.dynamic_batch, job.options["exporter"])
    except ConversionError as exc:
        raise ExportError(str(exc)) from exc.__cause__
    except Exception as exc:  # noqa: BLE001 - an exporter's own exception, with its first line as the cause
        raise ExportError(f"The ONNX export failed: {type(exc).__name__}: {first_line(exc)}") from exc


class Converter(Plugin):
    """Base class of a target format's converter. `name` is the format name used on the CLI (--to)
    and in the manifest; `modules` and `extra` say what it needs (see Plugin)."""

    precisions: tuple[str, ...] = ("fp32",)
    optional: tuple[str, ...] = ()  # modules some routes need (e.g. onnx2tf for torch -> TFLite); doctor lists them
    options: tuple[Option, ...] = ()  # what it reads from job.options; the CLI's flags come from these
    # The INT8 recipes (the int8_recipe option) it can apply; asking one of the others is refused.
    int8_recipes: tuple[str, ...] = ("auto",)
    # `--target` presets: device class -> the precisions this format gets there (FP32 rides along as the
    # fallback and the reference the reduced precisions are checked against).
    presets: dict[str, tuple[str, ...]] = {}

    def describe(self) -> str:
        return f"Converting to {self.name}"

    def notes(self) -> list[str]:
        """Facts for `edgesdk doctor` beyond its libraries (e.g. whether NCNN's INT8 tools are found)."""
        return []

    def missing_for(self, precision: str) -> str | None:
        """Why this machine cannot make `precision` though the converter is installed (a tool it needs is
        absent); None when it can."""
        return None

    def convert(self, job: ConversionJob) -> list[Artifact]:
        """Write the requested precisions of this format into job.stage; return their records
        (parity is filled in afterwards by edgesdk.convert)."""
        raise NotImplementedError


@lru_cache(maxsize=1)
def _registry() -> dict[str, Converter]:
    from ...core.registry import discover

    return discover(__name__, __path__, "CONVERTER", Converter)


def converters() -> list[Converter]:
    return list(_registry().values())


def get_converter(name: str) -> Converter:
    return lookup(_registry(), name, ConversionError, "target format")


#: The format `convert` makes when none is named: the one every runtime here can run.
DEFAULT_TARGET = "onnx"

#: Options every target reads.
COMMON_OPTIONS = (
    Option("opset", "int", DEFAULT_OPSET, "ONNX opset of the export every target builds from.", cli=False),
    Option("exporter", "str", "auto", "torch's ONNX exporter: legacy (TorchScript tracing, fast) for models whose "
           "only dynamic axis is the batch, dynamo (torch.export) for dynamic sequence axes; each falls back to "
           "the other (auto), or only the one named.", choices=("auto", "dynamo", "legacy")),
    Option("timing", "str", "quick", "How artifacts are timed for the Runtime's ranking on this machine: quick "
           "(3 interleaved rounds, about 0.3 s per artifact and backend), full (up to 20 runs a round, as edgesdk "
           "bench; for slow models), off (not timed: the Runtime ranks by device tier and precision, and "
           "Runtime(autotune=True) times on the device).", choices=("quick", "full", "off")),
    RECIPE_OPTION,
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
    from ...backends import backends

    rows = ["| format | precisions | runs on | file types | pip extra | `--target` presets | `--int8-recipe` | options |",
            "|---|---|---|---|---|---|---|---|"]
    for conv in converters():
        runners = [b.name for b in backends() if conv.name in b.formats]
        suffixes = sorted({s for b in backends() for s, f in b.suffixes.items() if f == conv.name})
        presets = ", ".join(f"{d}: {'/'.join(p)}" for d, p in sorted(conv.presets.items())) or "-"
        options = ", ".join(f"`{o.flag}`" if o.cli else f"`{o.name}`" for o in conv.options) or "-"
        rows.append(f"| {conv.name} | {', '.join(conv.precisions)} | {', '.join(runners) or '-'} | "
                    f"{', '.join(suffixes) or '-'} | `{conv.extra}` | {presets} | {', '.join(conv.int8_recipes)} | "
                    f"{options} |")
    return "\n".join(rows)
