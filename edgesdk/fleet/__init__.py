"""Beyond one machine, on Ray: sweeps of models x formats x precisions (sweep), benchmarks on every device
class of a cluster (cluster), and their CLI commands (cli)."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    """`from edgesdk.fleet import fleet_bench` (edgesdk.fleet was one module until 0.2): still works, warned."""
    cluster = importlib.import_module(f"{__name__}.cluster")
    if name.startswith("__") or not hasattr(cluster, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"edgesdk.fleet.{name} moved to edgesdk.fleet.cluster.{name}; the old path goes in the next "
                  "release.", DeprecationWarning, stacklevel=2)
    return getattr(cluster, name)
