"""Backends: one module per backend (onnxruntime.py, openvino.py, ...) defines BACKEND, found by the
registry. base.py says what a backend is, registry.py finds them, adapt.py shows a session in the source
model's terms, ranking.py orders (backend, artifact) pairs, probe.py loads fragile files in a child."""

from __future__ import annotations

from .adapt import AdaptedSession, adapt, fixed_axes, inner_session, io_problems, native_specs
from .base import ALLOW_ENV, Backend, Session, check_threads, max_threads
from .probe import PROBE_TIMEOUT_S, load_in_child
from .ranking import Candidate, Ranking, rank
from .registry import backends, check_open_options, format_of_file, get_backend, open_artifact, open_reference

__all__ = ["ALLOW_ENV", "AdaptedSession", "Backend", "Candidate", "PROBE_TIMEOUT_S", "Ranking", "Session", "adapt",
           "backends", "check_open_options", "check_threads", "fixed_axes", "format_of_file", "get_backend",
           "inner_session", "io_problems", "load_in_child", "max_threads", "native_specs", "open_artifact",
           "open_reference", "rank"]
