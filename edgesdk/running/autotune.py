"""Autotune: time the top-ranked (backend, artifact) pairs on this machine for a few runs and remember
the result per (bundle, machine), so the next Runtime of the same bundle starts with the fastest pair
without timing anything."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.cache import cache_dir
from ..core.errors import EdgeSDKError
from ..core.specs import random_feeds
from .timing import time_runs

if TYPE_CHECKING:
    from ..backends import Ranking
    from ..core.bundle import Bundle
    from ..core.hardware import HardwareProfile

log = logging.getLogger(__name__)

CANDIDATES = 4  # how many of the ranked pairs are timed
WARMUP, RUNS = 3, 15


def cache_key(bundle: Bundle, profile: HardwareProfile, extra: str) -> str:
    manifest = (bundle.path / "edgesdk.json").read_bytes()  # holds every artifact's sha256
    return hashlib.sha256(manifest + f"|{profile.machine_id}|{extra}".encode()).hexdigest()[:24]


def autotune(bundle: Bundle, ranking: Ranking, profile: HardwareProfile, threads: int | None,
             key_extra: str = "") -> dict[str, Any]:
    """{"ms": {"artifact|backend": median ms}, "cached": bool, "file": cache file}."""
    path = cache_dir() / "autotune" / f"{cache_key(bundle, profile, key_extra)}.json"
    try:
        cached = json.loads(path.read_text())
        log.info("Autotune: using the timings cached in %s", path)
        return {**cached, "cached": True, "file": str(path)}
    except (OSError, ValueError):
        pass
    from ..backends import open_artifact
    from ..core.bundle import verify_artifact, write_atomic

    feeds = random_feeds(bundle.inputs)
    timings: dict[str, float] = {}
    for cand in ranking.candidates[:CANDIDATES]:
        name = f"{cand.artifact.id}|{cand.backend.name}"
        try:
            session = open_artifact(cand.backend, verify_artifact(bundle, cand.artifact), bundle.inputs,
                                    bundle.outputs, cand.artifact.io, threads, precision=cand.artifact.precision)
        except EdgeSDKError as exc:
            log.info("Autotune: %s does not load here (%s)", name, exc)
            continue
        try:
            timings[name] = float(np.median(time_runs(lambda s=session: s.run(feeds), RUNS, WARMUP))) * 1e3
        finally:
            session.close()
    result = {"ms": timings, "machine_id": profile.machine_id, "runs": RUNS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(result))
    except OSError as exc:
        log.warning("Autotune result not cached (%s)", exc)
    return {**result, "cached": False, "file": str(path)}
