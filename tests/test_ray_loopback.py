"""An embedded Ray (edgesdk sweep / bench --fleet with no address) stays on this machine's loopback. In a
module of its own: no other cluster runs beside it (test_fleet's runs for that whole module)."""

from __future__ import annotations

import os

import ray

from edgesdk.fleet.cluster import connect, is_loopback
from tests.loopback import assert_loopback_only


def test_an_embedded_ray_listens_on_loopback_only():
    """edgesdk sweep / bench --fleet without an address start Ray here: on 127.0.0.1 only, and the driver
    and a task agree on it. Ray's switch is restored afterwards."""

    before = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    with connect(workers=1) as embedded:
        assert embedded.embedded and all(is_loopback(n["address"]) for n in embedded.describe()["nodes"])
        assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker started and answered
        assert_loopback_only()
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == before and not ray.is_initialized()
