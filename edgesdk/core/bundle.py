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

from .errors import ConversionError, ModelLoadError, first_line, missing_extra
from .images import Preprocess
from .migrations import SCHEMA_VERSION, migrate
from .records import ArtifactIO, Failure, Parity, Quantization
from .specs import TensorSpec

log = logging.getLogger(__name__)

MANIFEST = "edgesdk.json"


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
    parity: Parity = field(default_factory=Parity)
    quantization: Quantization = field(default_factory=Quantization)
    latency_ms: dict[str, float] = field(default_factory=dict)  # backend -> median ms at conversion
    measured_on: str | None = None  # the machine_id those latencies were measured on
    companions: dict[str, str] = field(default_factory=dict)  # other files it needs (e.g. .bin) -> sha256
    io: ArtifactIO = field(default_factory=ArtifactIO)  # how its tensors differ from the source's

    @property
    def id(self) -> str:
        return f"{self.format}-{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "file": self.file, "format": self.format, "precision": self.precision,
            "layout": self.layout, "sha256": self.sha256, "size_bytes": self.size_bytes,
            "versions": self.versions, "parity": self.parity.to_dict(),
            "quantization": self.quantization.to_dict(), "latency_ms": self.latency_ms,
            "measured_on": self.measured_on, "companions": self.companions, "io": self.io.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        """An artifact from its manifest entry (already validated against the current schema)."""
        keys = cls.__dataclass_fields__
        art = cls(**{k: v for k, v in d.items() if k in keys and k not in ("parity", "quantization", "io")})
        art.parity = Parity.from_dict(d.get("parity"))
        art.quantization = Quantization.from_dict(d.get("quantization"))
        art.io = ArtifactIO.from_dict(d.get("io"))
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
    failed: list[Failure] = field(default_factory=list)  # (target, precision) pairs asked for and not made

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
        from .version import __version__

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
            **({"failed": [f.to_dict() for f in self.failed]} if self.failed else {}),
        }

    def write_manifest(self) -> None:
        write_atomic(self.path / MANIFEST, json.dumps(self.to_manifest(), indent=2))

    def __repr__(self) -> str:
        failed = f", failed={[f.id for f in self.failed]}" if self.failed else ""
        return f"Bundle({str(self.path)!r}, artifacts={[a.id for a in self.artifacts]}{failed})"


#: A manifest is a few kB; anything this large is not one (and would cost memory to parse).
MAX_MANIFEST_BYTES = 32 << 20


#: A manifest nests a handful of levels; JSON deeper than this is refused before it is parsed.
MAX_NESTING = 32


def nesting_depth(raw: bytes) -> int:
    """How deep raw JSON nests its arrays and objects (brackets inside strings do not count).
    ValueError past MAX_NESTING."""
    import re

    import numpy as np

    text = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw)
    codes = np.frombuffer(text, np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    depth = int(np.cumsum(steps).max(initial=0))
    if depth > MAX_NESTING:
        raise ValueError(f"JSON nested {depth} levels deep (a manifest needs fewer than {MAX_NESTING})")
    return depth


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (edgesdk/manifest.schema.json): the written contract."""
    return json.loads((Path(__file__).with_name("manifest.schema.json")).read_text())


def validate_manifest(data: Any, where: str | os.PathLike = MANIFEST) -> None:
    """Raise ModelLoadError unless data follows the manifest schema and its io permutations fit its
    tensors. Every problem is listed (up to ten), each with where in the manifest it is."""
    try:
        import jsonschema
    except ImportError as exc:
        raise missing_extra("jsonschema", "runtimes", "Reading a bundle manifest") from exc
    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    problems = [f"at {'/'.join(map(str, e.absolute_path)) or 'the top'}: {e.message[:200]}" for e in errors[:10]]
    if not problems:
        problems = _io_problems(data)
    if problems:
        raise ModelLoadError(f"{where} is not a valid edgesdk manifest: " + "; ".join(problems) +
                             ". Re-convert the model, or re-copy the bundle.")


def _io_problems(data: dict[str, Any]) -> list[str]:
    """Layout permutations must be permutations of each tensor's axes."""
    problems = []
    for i, art in enumerate(data["artifacts"]):
        for what in ("inputs", "outputs"):
            perms = (art.get("io") or {}).get(what) or []
            if len(perms) > len(data[what]):
                problems.append(f"at artifacts/{i}/io/{what}: {len(perms)} entries for {len(data[what])} {what}")
                continue
            for perm, spec in zip(perms, data[what]):
                if perm is not None and sorted(perm) != list(range(len(spec["shape"]))):
                    problems.append(f"at artifacts/{i}/io/{what}: {perm} is not a permutation of the "
                                    f"{len(spec['shape'])} axes of '{spec['name']}'")
    return problems


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and validate a bundle folder's manifest. Raises ModelLoadError if it is missing, malformed,
    or names a file outside the folder."""
    root = Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ModelLoadError(f"{root} is not an edgesdk bundle: it has no {MANIFEST}. "
                             "Create one with `edgesdk convert`, or pass a model file.")
    if manifest.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelLoadError(f"{manifest} is {manifest.stat().st_size >> 20} MB, too large to be a manifest.")
    try:
        raw = manifest.read_bytes()
        nesting_depth(raw)  # before json.loads: deep nesting can overflow the C stack (a segfault, not an error)
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{manifest} is not readable JSON ({exc.__class__.__name__}: {first_line(exc)[:200]}). "
                             "Re-convert the model, or re-copy the bundle.") from None
    data = migrate(data, str(manifest))
    validate_manifest(data, manifest)
    for art in data["artifacts"]:
        for name in [art["file"], *(art.get("companions") or {})]:
            inside(root, name)
    known = {"schema_version", "edgesdk_version", "task", "inputs", "outputs", "preprocess", "labels", "artifacts",
             "failed"}
    return Bundle(
        path=root,
        inputs=[TensorSpec.from_dict(d) for d in data["inputs"]],
        outputs=[TensorSpec.from_dict(d) for d in data["outputs"]],
        artifacts=[Artifact.from_dict(d) for d in data["artifacts"]],
        preprocess=Preprocess.from_dict(data["preprocess"]) if data.get("preprocess") else None,
        labels=data.get("labels"),
        task=data.get("task"),
        meta={k: v for k, v in data.items() if k not in known},
        failed=[Failure.from_dict(f) for f in data.get("failed") or []],
    )


def inside(root: Path, name: str) -> Path:
    """root/name, after checking that it stays inside root once every symlink is resolved: a manifest
    may not point at ../../etc/passwd, an absolute path, or a link that leads out of the bundle."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name or "\0" in name:
        raise ModelLoadError(f"The manifest in {root} names the file {name!r}, which is not a plain path inside the "
                             "bundle. Refusing it; re-convert the model or re-copy the bundle.")
    real_root = root.resolve()
    real = (root / name).resolve()
    if real != real_root and real_root not in real.parents:
        raise ModelLoadError(f"{root / name} leads outside the bundle (to {real}): refusing it. Bundles may not "
                             "contain links to other places; re-copy the bundle.")
    return root / name


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole: a temp file beside it, then a rename, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        path = inside(bundle.path, name)  # checked again at open: a link may have appeared since the load
        if not path.is_file():
            raise ModelLoadError(f"File {name} of artifact {artifact.id} listed in {bundle.path / MANIFEST} is "
                                 "missing. Re-convert the model or re-copy the bundle.")
        if not digest:
            raise ModelLoadError(f"The manifest in {bundle.path} records no sha256 for {name}: it is corrupt, and "
                                 "an unchecked file is never run. Re-convert the model.")
        if sha256_of(path) != digest:
            raise ModelLoadError(f"{path} is corrupt: its sha256 does not match the manifest. The file was "
                                 "modified or damaged; re-convert or re-copy the bundle.")
    return bundle.artifact_path(artifact)


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to touch an existing output folder unless force is given, and refuse a location that
    cannot be written (a parent that is a file, a read-only folder) before any slow work starts."""
    if out.exists() and not force:
        raise ConversionError(f"Output folder {out} already exists. Choose another folder, or pass "
                              "force=True (--force on the CLI) to replace it.")
    if out.exists() and not out.is_dir():
        raise ConversionError(f"Output path {out} exists and is not a folder.")
    check_writable_parent(out, ConversionError)


def check_writable_parent(out: Path, error: type[Exception] = ConversionError) -> None:
    """Raise `error` unless out's nearest existing parent is a folder this process can create files in
    (tried for real: permission bits say nothing for root or on a read-only mount)."""
    parent = Path(os.path.abspath(out)).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise error(f"Cannot write {out}: {parent} is a file, not a folder. Choose another output path.")
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as exc:
        raise error(f"Cannot write {out}: {parent} is not writable ({exc.strerror or exc}). "
                    "Choose another output path.") from None


STAGE_TAG, OLD_TAG = "partial", "old"


def _stage_name(out: Path, tag: str) -> str:
    """.NAME.partial-PID- (tempfile adds a random tail): the PID tells a live conversion's folder from a dead one's."""
    return f".{out.name}.{tag}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_stages(out: Path) -> list[Path]:
    """Remove staging folders beside `out` left by conversions that died (killed, power cut): their
    process is gone, or (older names without a PID) they predate this process. A bundle a crash left
    only in an `.old-` folder is put back first. Returns what was removed."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    started = _process_start_time()
    for tag in (OLD_TAG, STAGE_TAG):
        for folder in sorted(out.parent.glob(f".{out.name}.{tag}-*")):
            pid = folder.name.split(f".{tag}-", 1)[1].split("-", 1)[0]
            stale = (not _alive(int(pid))) if pid.isdigit() else folder.stat().st_mtime < started
            if not stale or pid == str(os.getpid()):
                continue
            if tag == OLD_TAG and (folder / out.name).is_dir() and not out.exists():
                os.replace(folder / out.name, out)
                log.warning("Restored bundle %s, which an interrupted --force replacement had left in %s.", out, folder)
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("Removed %s, left by a conversion that did not finish.", folder)
            removed.append(folder)
    return removed


def _process_start_time() -> float:
    try:
        return Path(f"/proc/{os.getpid()}").stat().st_mtime
    except OSError:
        return float("inf")  # unknown: only PID-named folders are judged


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE). False where the kernel,
    libc or filesystem cannot, so the caller falls back to two renames."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on failure it is removed,
    so no half-written bundle is ever left under the target name. An existing bundle is swapped out in
    one atomic step where the filesystem allows, so a crash never leaves the path without a bundle."""
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=_stage_name(out, STAGE_TAG), dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    check_output_dir(out, force)
    if out.exists() and _exchange(stage, out):
        shutil.rmtree(stage, ignore_errors=True)  # it now holds the old bundle
    elif out.exists():
        old = Path(tempfile.mkdtemp(prefix=_stage_name(out, OLD_TAG), dir=out.parent))
        os.replace(out, old / out.name)  # a crash here leaves the bundle in .old-, restored by the next run
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)
    log.info("Wrote bundle %s", out)
