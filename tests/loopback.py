"""Where Ray's processes listen and talk: the tests' check that a cluster stays on 127.0.0.1."""

from __future__ import annotations

import socket

from edgesdk.fleet.cluster import is_loopback


def sockets_of_ray() -> tuple[list[tuple[str, int, str]], list[tuple[str, str]]]:
    """(every listening TCP socket or bound UDP socket of this process and its descendants, as (ip, port,
    process name); every connected socket's remote address that is not loopback, as (address, process))."""
    import psutil

    listening, remote = [], []
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns, name = proc.net_connections("inet"), proc.name()
        except psutil.Error:  # a worker that ended meanwhile
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):
                listening.append((c.laddr.ip, c.laddr.port, name))
            elif c.raddr and not is_loopback(c.raddr.ip):
                remote.append((f"{c.raddr.ip}:{c.raddr.port}", name))
    return listening, remote


def assert_loopback_only() -> None:
    listening, remote = sockets_of_ray()
    assert listening, "no listening socket found: the check would pass vacuously"
    assert all(is_loopback(ip) for ip, _, _ in listening), [s for s in listening if not is_loopback(s[0])]
    assert not remote, remote
