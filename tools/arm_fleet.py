"""`make arm-fleet`: an arm64 device joins a Ray cluster as a fleet worker, with only the device side
installed, and runs `edgesdk bench --fleet` beside this machine.

The device is `make arm-check`'s Debian arm64 root run by qemu-user: edgesdk[runtimes,fleet] from this
checkout in it (no torch, no TensorFlow), joined with `edgesdk worker --device-class arm64-qemu`. This
machine starts a Ray head with its own class. One fleet bench of a bundle then returns a row per
(device class, artifact, backend). Emulated timings mean nothing and are never reported as device
speed: this proves the path (join, ship the bundle through the object store, run, report back).

    python tools/arm_fleet.py [--bundle build/shapes] [--runs 5]

Needs root (chroot, mounts) and the root `make arm-check` builds."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from arm_check import (  # noqa: E402
    CHROOT_ENV,
    EXCHANGE,
    ROOT,
    SRC,
    VENV,
    WORK,
    chroot,
    ensure_binfmt,
    ensure_root,
    install_edgesdk,
    mounted,
)

log = logging.getLogger("arm_fleet")
REPO = Path(__file__).resolve().parent.parent
PORT = 6389
DEVICE_CLASS = "arm64-qemu"
JOIN_TIMEOUT_S = 600


def host_ip() -> str:
    """The address Ray's nodes use for this machine (a chroot shares its network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def wait_for_class(address: str, cls: str) -> float:
    """Seconds until a node of the class joined the cluster."""
    import ray

    t0 = time.monotonic()
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        while time.monotonic() - t0 < JOIN_TIMEOUT_S:
            if any(n["Alive"] and f"edgesdk/{cls}" in n["Resources"] for n in ray.nodes()):
                return time.monotonic() - t0
            time.sleep(2)
    finally:
        ray.shutdown()
    raise SystemExit(f"the arm64 worker did not join within {JOIN_TIMEOUT_S} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "build" / "shapes"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from edgesdk.fleet.cluster import BenchSettings, fleet_bench

    ensure_binfmt()
    ensure_root(ROOT)
    address = f"{host_ip()}:{PORT}"
    with mounted(ROOT, EXCHANGE):
        install_edgesdk(ROOT)
        chroot(ROOT, f"{VENV}/bin/python", "-m", "pip", "install", "-q", "-c", f"{SRC}/constraints.txt", "ray", "pyyaml")
        # Every node and the driver share one token (Ray's token authentication), given in the environment.
        # Ray also wants one Python on every node, to the patch unless told "minor" (Debian's 3.11.2 here).
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                "RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL": "minor"}
        os.environ.update(auth)
        subprocess.run([ray_bin(), "start", "--head", "--port", str(PORT), "--num-cpus", "1", "--include-dashboard=false",
                        "--resources", json.dumps({"edgesdk/x86": 1})], check=True)
        worker = subprocess.Popen(["chroot", str(ROOT), f"{VENV}/bin/edgesdk", "worker", "--address", address,
                                   "--device-class", DEVICE_CLASS, "--num-cpus", "1"],
                                  env={**CHROOT_ENV, **auth}, start_new_session=True)
        try:
            joined = wait_for_class(address, DEVICE_CLASS)
            log.info("arm64 worker joined after %.0f s", joined)
            t0 = time.monotonic()
            results = fleet_bench(args.bundle, BenchSettings(runs=args.runs, warmup=1, threads=1), address=address)
            results["join_s"], results["bench_s"] = round(joined, 1), round(time.monotonic() - t0, 1)
        finally:
            subprocess.run([ray_bin(), "stop", "--force"], check=False)  # the head and the chroot's raylet (one PID space)
            os.killpg(worker.pid, 9) if worker.poll() is None else None
    out = WORK / "fleet.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    for node in next(iter(results["models"].values()))["bench"]:
        for r in node.get("rows", []) or [{"artifact": "-", "status": node.get("status"), "error": node.get("error")}]:
            print(f"{node['device_class']:12s} {node.get('machine', {}).get('arch', '?'):8s} {r['artifact']:15s} "
                  f"{str(r.get('backend')):12s} {r['status']:14s} {r.get('agreement', {}).get('value', '')}")
    print(f"wrote {out}; the arm64 timings are emulated and mean nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
