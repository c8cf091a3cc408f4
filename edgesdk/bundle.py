"""A bundle: one folder holding a model's artifacts and edgesdk.json, the manifest that is the
contract between converters and runtimes. Bundles are written atomically: staged in a temporary
folder beside the target and renamed into place only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConversionError, ModelLoadError
from .specs import Preprocess, TensorSpec

log = logging.getLogger(__name__)

MANIFEST = "edgesdk.json"
SCHEMA_VERSION = 1


@dataclass
class Artifact:
    """One converted model file in a bundle and what is known about it."""

    file: str
    format: str
    precision: str
    layout: str | None = None
    sha256: str = ""
    size_bytes: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)  # backend -> median ms at conversion
    measured_on: str | None = None  # the machine_id those latencies were measured on
    companions: dict[str, str] = field(default_factory=dict)  # other files it needs (e.g. .bin) -> sha256
    # How the artifact's tensors differ from the source's: {"inputs": [perm or None], "outputs": [...]},
    # perm taking a source-layout array to the artifact's (e.g. NCHW -> NHWC = [0, 2, 3, 1]).
    io: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.format}-{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "file": self.file, "format": self.format, "precision": self.precision,
            "layout": self.layout, "sha256": self.sha256, "size_bytes": self.size_bytes,
            "versions": self.versions, "parity": self.parity, "quantization": self.quantization,
            "latency_ms": self.latency_ms, "measured_on": self.measured_on, "companions": self.companions,
            "io": self.io,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        keys = cls.__dataclass_fields__
        art = cls(**{k: v for k, v in d.items() if k in keys})
        if not isinstance(art.latency_ms, dict):  # early bundles kept one number, backend unknown: drop it
            art.latency_ms, art.measured_on = {}, None
        return art


@dataclass
class Bundle:
    """A bundle folder and its manifest."""

    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    artifacts: list[Artifact]
    preprocess: Preprocess | None = None
    labels: list[str] | None = None
    task: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # source, calibration, created, versions

    def artifact(self, key: str) -> Artifact:
        """An artifact by id ("onnx-int8") or file name ("model.int8.onnx")."""
        for a in self.artifacts:
            if key in (a.id, a.file):
                return a
        raise ModelLoadError(f"Bundle {self.path} has no artifact '{key}'; it has: "
                             f"{', '.join(a.id for a in self.artifacts)}")

    def artifact_path(self, artifact: Artifact) -> Path:
        return self.path / artifact.file

    def to_manifest(self) -> dict[str, Any]:
        from . import __version__

        return {
            "schema_version": SCHEMA_VERSION,
            "edgesdk_version": __version__,
            **self.meta,
            "task": self.task,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "labels": self.labels,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    def write_manifest(self) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.to_manifest(), indent=2))
        os.replace(tmp, self.path / MANIFEST)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, artifacts={[a.id for a in self.artifacts]})"


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle folder's manifest. Raises ModelLoadError if it is missing or malformed."""
    root = Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ModelLoadError(f"{root} is not an edgesdk bundle: it has no {MANIFEST}. "
                             "Create one with `edgesdk convert`, or pass a model file.")
    try:
        data = json.loads(manifest.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ModelLoadError(f"{manifest} has schema version {data.get('schema_version')}; this edgesdk "
                                 f"reads version {SCHEMA_VERSION}. Re-convert the model or upgrade edgesdk.")
        known = {"schema_version", "edgesdk_version", "task", "inputs", "outputs", "preprocess", "labels",
                 "artifacts"}
        return Bundle(
            path=root,
            inputs=[TensorSpec.from_dict(d) for d in data["inputs"]],
            outputs=[TensorSpec.from_dict(d) for d in data["outputs"]],
            artifacts=[Artifact.from_dict(d) for d in data["artifacts"]],
            preprocess=Preprocess.from_dict(data["preprocess"]) if data.get("preprocess") else None,
            labels=data.get("labels"),
            task=data.get("task"),
            meta={k: v for k, v in data.items() if k not in known},
        )
    except ModelLoadError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{manifest} is corrupt ({exc.__class__.__name__}: {exc}). "
                             "Re-convert the model.") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_artifact(bundle: Bundle, artifact: Artifact) -> Path:
    """The artifact's path, after checking that it and its companion files exist and that their bytes
    match the recorded sha256 (corrupted weights otherwise run silently on every runtime)."""
    for name, digest in [(artifact.file, artifact.sha256), *artifact.companions.items()]:
        path = bundle.path / name
        if not path.is_file():
            raise ModelLoadError(f"File {name} of artifact {artifact.id} listed in {bundle.path / MANIFEST} is "
                                 "missing. Re-convert the model or re-copy the bundle.")
        if digest and sha256_of(path) != digest:
            raise ModelLoadError(f"{path} is corrupt: its sha256 does not match the manifest. The file was "
                                 "modified or damaged; re-convert or re-copy the bundle.")
    return bundle.artifact_path(artifact)


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to touch an existing output folder unless force is given."""
    if out.exists() and not force:
        raise ConversionError(f"Output folder {out} already exists. Choose another folder, or pass "
                              "force=True (--force on the CLI) to replace it.")
    if out.exists() and not out.is_dir():
        raise ConversionError(f"Output path {out} exists and is not a folder.")


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on failure it is removed,
    so no half-written bundle is ever left under the target name."""
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    check_output_dir(out, force)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("Wrote bundle %s", out)
