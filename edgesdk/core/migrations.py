"""Manifests written by older edgesdk versions, brought to the schema version this edgesdk reads.

A change to manifest.schema.json bumps SCHEMA_VERSION and adds one function here that takes a manifest
of the previous version to the new one. load_bundle runs the chain before validating, so an older bundle
keeps loading; one from a newer edgesdk, or older than any migration reaches, is refused with a
message naming both versions."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from .errors import ModelLoadError

log = logging.getLogger(__name__)

#: The manifest schema version this edgesdk writes and reads.
SCHEMA_VERSION = 4

#: The typed keys of a version-2 quantization record; version 1 kept every key at the top.
_QUANTIZATION_KEYS = {"method", "weights", "activations", "calibration", "calibration_samples",
                      "calibration_source", "float_nodes"}


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 typed the per-artifact records: quantization keys a converter alone knows move under
    `details`; a latency that was one number (backend unknown) is dropped; parity says whether it was
    measured."""
    for art in data.get("artifacts") or []:
        if not isinstance(art, dict):
            continue
        quant = art.get("quantization")
        if isinstance(quant, dict) and "float_layers" in quant and "float_nodes" not in quant:
            quant = {("float_nodes" if k == "float_layers" else k): v for k, v in quant.items()}  # TFLite's old name
        if isinstance(quant, dict):
            details = {k: v for k, v in quant.items() if k not in _QUANTIZATION_KEYS}
            art["quantization"] = {**{k: v for k, v in quant.items() if k in _QUANTIZATION_KEYS},
                                   **({"details": details} if details else {})}
        if not isinstance(art.get("latency_ms", {}), dict):
            art["latency_ms"], art["measured_on"] = {}, None
        parity = art.get("parity")
        if isinstance(parity, dict) and "measured" not in parity:
            parity["measured"] = bool(parity)
    data["schema_version"] = 2
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 added `arch` to parity records. An older record does not say where it was measured:
    it stays unknown, never guessed."""
    data["schema_version"] = 3
    return data


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 lists the failed (target, precision) pairs. A version-3 bundle was all or nothing: none failed."""
    data["schema_version"] = 4
    return data


#: MIGRATIONS[v] takes a version-v manifest to version v + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def migrate(data: Any, where: str) -> Any:
    """The manifest brought to SCHEMA_VERSION (a copy; the file is not rewritten). ModelLoadError for a
    version this edgesdk cannot read."""
    if not isinstance(data, dict):
        return data  # the schema check says what is wrong with it
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if not isinstance(version, int) or isinstance(version, bool) or version not in MIGRATIONS:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise ModelLoadError(
            f"{where} has manifest schema version {version!r}; this edgesdk reads version {SCHEMA_VERSION}"
            + (" and older. Upgrade edgesdk to load it, or re-convert the model with this one."
               if newer else ". Re-convert the model with this edgesdk."))
    data = copy.deepcopy(data)
    while data["schema_version"] != SCHEMA_VERSION:
        data = MIGRATIONS[data["schema_version"]](data)
    log.info("%s uses manifest schema version %s; read it as version %s.", where, version, SCHEMA_VERSION)
    return data
