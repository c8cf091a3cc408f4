"""Session adaptation: a backend's session seen in the source model's terms (its input and output names,
order, layout and integer widths), and the checks that an artifact fits its bundle's manifest."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import ModelLoadError
from ..core.records import ArtifactIO
from ..core.specs import TensorSpec
from .base import Session


class AdaptedSession:
    """A backend session seen in the source model's terms: the source's input and output names, order
    and layout. A TFLite artifact made from a torch model is NHWC inside; its users still feed NCHW."""

    def __init__(self, session: Session, inputs: list[TensorSpec], outputs: list[TensorSpec], io: ArtifactIO):
        self._session = session
        self._inner_run = getattr(session, "run_unchecked", session.run)
        self.inputs, self.outputs = inputs, outputs
        self._in_perm = list(io.inputs or [None] * len(inputs))
        self._out_inverse = [None if p is None else list(np.argsort(p)) for p in io.outputs or [None] * len(outputs)]
        self._in_names = inner_names(session.inputs, inputs, io.input_names, aliases(session, "input"))
        by_name = {s.name: s.dtype for s in session.inputs}
        self._in_dtypes = [by_name.get(n, s.dtype) for n, s in zip(self._in_names, inputs)]
        inner_out = [s.name for s in session.outputs]
        self._out_order = [inner_out.index(n) for n in inner_names(session.outputs, outputs, io.output_names,
                                                                    aliases(session, "output"))]

    def _inner_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The artifact's feeds: its names and dtypes, transposed into its layout unless already in it."""
        inner = {}
        for spec, name, dtype, perm in zip(self.inputs, self._in_names, self._in_dtypes, self._in_perm):
            a = _narrowed(feeds[spec.name], dtype)
            if perm is not None and spec.accepts_shape(a.shape):
                a = np.ascontiguousarray(a.transpose(perm))
            inner[name] = a
        return inner

    def _outer_outputs(self, outs: list[np.ndarray]) -> list[np.ndarray]:
        ordered = [outs[i] for i in self._out_order]
        return [o.transpose(p) if p is not None else o for o, p in zip(ordered, self._out_inverse)]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._outer_outputs(self._session.run(self._inner_feeds(feeds)))

    def run_unchecked(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """run() for feeds the caller has checked against the specs (the Runtime does)."""
        return self._outer_outputs(self._inner_run(self._inner_feeds(feeds)))

    def close(self) -> None:
        self._session.close()

    def __getattr__(self, name: str) -> Any:  # execution_precision, config, run_many, ...
        attr = getattr(self._session, name)
        if name == "run_many":
            def run_many(feeds_list: list[dict[str, np.ndarray]]) -> tuple[list[list[np.ndarray]], list[float]]:
                outs, latencies = attr([self._inner_feeds(f) for f in feeds_list])
                return [self._outer_outputs(o) for o in outs], latencies
            return run_many
        return attr


def native_specs(session: Session, inputs: list[TensorSpec]) -> list[TensorSpec]:
    """The inputs in the layout the session's artifact computes in (its permutation of the source's)."""
    if not isinstance(session, AdaptedSession):
        return list(inputs)
    return [s if p is None else s.permuted(p) for s, p in zip(inputs, session._in_perm)]  # noqa: SLF001


def fixed_axes(session: Session, inputs: list[TensorSpec]) -> list[dict[int, int]]:
    """Per source input, the axes the source names (a dynamic batch or sequence) that the loaded artifact
    fixes, with their size: {source axis: size}. Empty where the artifact keeps them dynamic."""
    inner = inner_session(session)
    perms = session._in_perm if isinstance(session, AdaptedSession) else [None] * len(inputs)  # noqa: SLF001
    by_name = {s.name: s for s in inner.inputs}
    names = session._in_names if isinstance(session, AdaptedSession) else [s.name for s in inputs]  # noqa: SLF001
    found = []
    for spec, name, perm in zip(inputs, names, perms):
        mine = by_name.get(name)
        axes: dict[int, int] = {}
        if mine is not None and len(mine.shape) == len(spec.shape):
            for j, size in enumerate(mine.shape):
                i = perm[j] if perm is not None else j
                if isinstance(spec.shape[i], str) and isinstance(size, int):
                    axes[i] = size
        found.append(axes)
    return found


def inner_session(session: Session) -> Session:
    """The backend's own session under an AdaptedSession (its specs are the artifact's: fixed lengths,
    NHWC), or the session itself."""
    return session._session if isinstance(session, AdaptedSession) else session  # noqa: SLF001


def _narrowed(array: np.ndarray, dtype: str) -> np.ndarray:
    """int64 token ids for a runtime that took them as int32 (MNN): cast, refusing values that do not fit."""
    if array.dtype == np.int64 and dtype == "int32":
        if array.size and (array.max() > np.iinfo(np.int32).max or array.min() < np.iinfo(np.int32).min):
            from ..core.errors import InputError

            raise InputError("Integer inputs beyond the int32 range: this runtime takes them as int32.")
        return array.astype(np.int32)
    return array


def aliases(session: Session, what: str) -> list[set[str]]:
    """Every name each of a session's inputs (what="input") or outputs answers to: its spec's name, plus
    the other names a backend knows it by (an OpenVINO tensor may be both '/ReduceMean_output_0' and
    'speech_prob'), from the session's optional `input_aliases` / `output_aliases`."""
    specs = session.inputs if what == "input" else session.outputs
    extra = getattr(session, f"{what}_aliases", None) or [set() for _ in specs]
    return [{s.name, *a} for s, a in zip(specs, extra)]


def _by_alias(inner: list[TensorSpec], source: list[TensorSpec], names: list[set[str]]) -> list[str] | None:
    """The inner names matching the source's, one each, in the source's order; None if any is missing."""
    found = []
    for spec in source:
        matches = [i for i, known in enumerate(names) if spec.name in known]
        if len(matches) != 1:
            return None
        found.append(inner[matches[0]].name)
    return found if len(set(found)) == len(found) else None


def inner_names(inner: list[TensorSpec], source: list[TensorSpec], declared: list[str] | None,
                names: list[set[str]] | None = None) -> list[str]:
    """The artifact's tensor names, in the source's order: the source's own names where the artifact
    kept them (as a name or an alias), else the names its converter declared (onnx2tf renames 'output'
    to 'output_0'), else by position (a bare file, or a bundle from before names were declared)."""
    matched = _by_alias(inner, source, names or [{s.name} for s in inner]) if len(inner) == len(source) else None
    if matched is not None:
        return matched
    own = [s.name for s in inner]
    if declared and sorted(declared) == sorted(own):
        return list(declared)
    return own


def io_problems(session: Session, inputs: list[TensorSpec], outputs: list[TensorSpec],
                io: ArtifactIO) -> list[str]:
    """What breaks the I/O contract between an artifact's session and its source: a different count
    of inputs or outputs, or names that are neither the source's nor the ones its converter declared."""
    problems = []
    for what, inner, source, declared in (("input", session.inputs, inputs, io.input_names),
                                          ("output", session.outputs, outputs, io.output_names)):
        names = sorted(s.name for s in inner)
        if len(inner) != len(source):
            problems.append(f"{len(inner)} {what}(s) {names} where the source has {len(source)} "
                            f"{[s.name for s in source]}")
        elif _by_alias(inner, source, aliases(session, what)) is None and names != sorted(declared or []):
            problems.append(f"{what} names {names} match neither the source's {[s.name for s in source]} nor "
                            f"those its converter declared ({declared or 'none'})")
    return problems


def adapt(session: Session, inputs: list[TensorSpec], outputs: list[TensorSpec], io: ArtifactIO) -> Session:
    """The session as the source model's specs describe it; the session itself when nothing differs."""
    if not inputs or not outputs:  # a bare model file: its own specs are the contract
        return session
    if len(session.inputs) != len(inputs) or len(session.outputs) != len(outputs):
        raise ModelLoadError(f"The artifact does not fit its bundle's manifest: "
                             f"{'; '.join(io_problems(session, inputs, outputs, io))}. Re-convert the model.")
    same_names = ([s.name for s in session.inputs] == [s.name for s in inputs] and
                  [s.name for s in session.outputs] == [s.name for s in outputs])
    narrowed = any(s.dtype == "int64" and i.dtype == "int32" for s, i in zip(inputs, session.inputs))
    if same_names and not io.permutes and not narrowed:
        return session
    return AdaptedSession(session, inputs, outputs, io)
