"""Backends run in a child process while a conversion checks and times its artifacts.

A freshly made artifact is untrusted: OpenVINO's INT8 of a timm edgenext segfaulted inside
`CompiledModel.infer` during convert's parity check and took the user's Python process with it. Here
each backend runs in a child of its own (a new interpreter, started with exec, never forked), one child
per backend for every artifact it checks or times, so the start-up cost is paid once per backend. A
crash or a hang there is that artifact's recorded problem; the conversion goes on with the others.

Parent and child speak JSON lines: commands on the child's stdin, replies on a pipe of their own (some
runtimes print to stdout). Arrays travel as uncompressed .npz files in a private temporary folder,
read back with allow_pickle=False."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import ConversionError, first_line

if TYPE_CHECKING:
    from ..backends import Backend
    from ..core.records import ArtifactIO
    from ..core.specs import TensorSpec

log = logging.getLogger(__name__)

#: How long one command (loading an artifact, running every parity sample, one timing block) may take
#: in the child before it is taken for hung and stopped.
CHILD_TIMEOUT_S = 900.0
#: How long a child may take to start (importing its runtime).
START_TIMEOUT_S = 120.0


class BackendCrashed(ConversionError):
    """The backend's child process died (a signal, an exit) or hung while running an artifact."""


class BackendFailed(ConversionError):
    """The backend raised an exception in its child: the artifact does not load or does not run."""


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class BackendProcess:
    """One backend in a child process. Sessions are opened under a key (the artifact's file) and kept
    until closed; after a crash the next command starts a new child and reopens what it needs."""

    def __init__(self, backend: Backend, workdir: Path):
        self.backend, self.workdir = backend, workdir
        self._proc: subprocess.Popen | None = None
        self._replies: Any = None
        self._stderr: Any = None
        self._opened: dict[str, dict[str, Any]] = {}  # key -> its open command, to reopen after a restart
        self._live: set[str] = set()
        self._ready = False  # the child has said it started
        self.inner_inputs: dict[str, list[TensorSpec]] = {}  # key -> the artifact's own input specs
        self._ahead: dict[str, Any] | None = None  # an open command sent ahead, its reply not yet read
        self._ahead_result: tuple[str, dict[str, Any] | ConversionError] | None = None  # (key, reply or failure)

    # -- the parent's side of the protocol -------------------------------------------------------

    def open(self, key: str, path: Path, precision: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
             io: ArtifactIO) -> dict[str, Any]:
        """Load the artifact in the child; the reply says its problems (I/O contract) or its own input specs.
        An open sent ahead (open_ahead) under this key is collected instead: its reply, or its failure raised."""
        command = _open_command(key, path, precision, inputs, outputs, io)
        if self._ahead is not None and self._ahead["key"] == key:
            self._collect_ahead()
        if self._ahead_result is not None and self._ahead_result[0] == key:
            _, result = self._ahead_result
            self._ahead_result = None
            if isinstance(result, ConversionError):
                raise result
            self._opened[key] = command
            return self._register(key, result)
        self._opened[key] = command
        return self._register(key, self._call(command, "loading the artifact"))

    def open_ahead(self, key: str, path: Path, precision: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                   io: ArtifactIO) -> None:
        """Send the open without waiting for it: the child loads (compiles) the artifact while the parent
        goes on checking others; open() with this key collects the reply, and any other command first
        reads it and keeps it for that open()."""
        if self._ahead is not None:
            self._collect_ahead()
        command = _open_command(key, path, precision, inputs, outputs, io)
        try:
            self._send(command)
        except ConversionError as exc:  # could not start: that open() says so
            self._ahead_result = (key, exc)
            return
        self._ahead = command

    def _collect_ahead(self) -> None:
        assert self._ahead is not None
        key, self._ahead = self._ahead["key"], None
        try:
            reply = self._read_reply(CHILD_TIMEOUT_S, "loading the artifact")
            if not reply.get("ok"):
                raise BackendFailed(reply.get("error") or "failed")
            self._ahead_result = (key, reply)
        except ConversionError as exc:
            self._ahead_result = (key, exc)

    def _register(self, key: str, reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("problems"):
            self._opened.pop(key, None)
        else:
            from ..core.specs import TensorSpec

            self._live.add(key)
            self.inner_inputs[key] = [TensorSpec.from_dict(d) for d in reply["inner_inputs"]]
        return reply

    def is_open(self, key: str) -> bool:
        return key in self._opened

    def run(self, key: str, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Every feed through the artifact opened under key: outputs per feed, in the source's order."""
        feeds_file, outputs_file = self.workdir / f"{self.backend.name}.feeds.npz", self.workdir / f"{self.backend.name}.out.npz"
        names = save_feeds(feeds_file, feeds)
        self._reopen(key)
        reply = self._call({"cmd": "run", "key": key, "feeds": str(feeds_file), "names": names,
                            "out": str(outputs_file)}, "running the artifact")
        try:
            return load_outputs(outputs_file, len(feeds), reply["outputs"])
        finally:
            outputs_file.unlink(missing_ok=True)

    def time_block(self, key: str, feed: dict[str, np.ndarray], runs: int, warmup: int) -> list[float]:
        """Seconds per run of `runs` runs after `warmup`, timed in the child (no messaging in the figure)."""
        feed_file = self.workdir / f"{self.backend.name}.timing.npz"
        names = save_feeds(feed_file, [feed])
        self._reopen(key)
        return self._call({"cmd": "time", "key": key, "feeds": str(feed_file), "names": names, "runs": runs,
                           "warmup": warmup}, "timing the artifact")["times"]

    def start(self) -> None:
        """Start the child without waiting for it: its interpreter and runtime import while the parent goes
        on (exporting, say); the first command waits until it is ready."""
        if self._proc is None:
            self._spawn()

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        proc, self._proc = self._proc, None
        self._live.clear()
        self._ready = False
        self._ahead = None  # a session opened ahead went with the child; a failure kept stays for its open()
        if self._ahead_result is not None and not isinstance(self._ahead_result[1], ConversionError):
            self._ahead_result = None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.stdin.write(b'{"cmd": "exit"}\n')
                proc.stdin.flush()
                proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            for stream in (proc.stdin, self._replies, self._stderr):
                if stream is not None:
                    stream.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _reopen(self, key: str) -> None:
        if key not in self._live and key in self._opened:  # the child was restarted since it was opened
            reply = self._call(self._opened[key], "loading the artifact")
            if reply.get("problems"):
                raise BackendFailed("; ".join(reply["problems"]))
            self._live.add(key)

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        # A backend defined outside edgesdk (a plugin, a test's) imports in the child from the same paths.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._stderr = open(self.workdir / f"{self.backend.name}.stderr.log", "wb")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edgesdk.running.isolated", str(write_end), type(self.backend).__module__,
                 self.backend.name], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(write_end,), env=env, cwd=self.workdir)
        except OSError as exc:
            os.close(read_end)
            raise BackendCrashed(f"Could not start a child process for {self.backend.name}: {first_line(exc)}") from None
        finally:
            os.close(write_end)
        self._replies = os.fdopen(read_end, "rb")
        self._live.clear()

    def _await_start(self) -> None:
        started = self._read_reply(START_TIMEOUT_S, "starting")
        if not started.get("ok"):
            self.close()
            raise BackendFailed(started.get("error") or f"{self.backend.name} could not start")
        self._ready = True

    def _call(self, command: dict[str, Any], doing: str) -> dict[str, Any]:
        if self._ahead is not None:
            self._collect_ahead()
        self._send(command)
        reply = self._read_reply(CHILD_TIMEOUT_S, doing)
        if not reply.get("ok"):
            raise BackendFailed(reply.get("error") or "failed")
        return reply

    def _send(self, command: dict[str, Any]) -> None:
        if self._proc is None or (self._ready and self._proc.poll() is not None):
            self.close()
            self._spawn()
        if not self._ready:  # a child that died while starting says so here
            self._await_start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(command).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # the child is gone: reading its reply says how

    def _read_reply(self, timeout: float, doing: str) -> dict[str, Any]:
        assert self._proc is not None
        ready, _, _ = select.select([self._replies], [], [], timeout)
        line = self._replies.readline() if ready else None
        if line:
            return json.loads(line)
        name = self.backend.name
        if line is None:  # hung
            self._proc.kill()
            self._proc.wait()
            self.close()
            raise BackendCrashed(f"{name} did not finish {doing} in {timeout:g} s and was stopped")
        code = self._proc.wait()
        detail = self._stderr_tail()
        self.close()
        how = f"crashed with {_signal_name(code)}" if code < 0 else f"exited with status {code}"
        raise BackendCrashed(f"{name} {how} while {doing}" + (f" ({detail})" if detail else ""))

    def _stderr_tail(self) -> str:
        try:
            lines = (self.workdir / f"{self.backend.name}.stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""


def _open_command(key: str, path: Path, precision: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                  io: ArtifactIO) -> dict[str, Any]:
    # Absolute: the child runs in a folder of its own, where a path relative to ours means nothing.
    return {"cmd": "open", "key": key, "path": str(Path(path).resolve()), "precision": precision,
            "inputs": [s.to_dict() for s in inputs], "outputs": [s.to_dict() for s in outputs], "io": io.to_dict()}


class BackendProcesses:
    """The children of one conversion, one per backend, started on first use; a context manager."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="edgesdk-check-"))
        self._children: dict[str, BackendProcess] = {}

    def __getitem__(self, backend: Backend) -> BackendProcess:
        if backend.name not in self._children:
            self._children[backend.name] = BackendProcess(backend, self.workdir)
        return self._children[backend.name]

    def start(self, backends: Sequence[Backend]) -> None:
        """Start these backends' children now, so they are ready by the time the first artifact is."""
        for backend in backends:
            try:
                self[backend].start()
            except BackendCrashed as exc:  # could not even spawn: the first command says so again
                log.debug("%s", exc)

    def close(self) -> None:
        for child in self._children.values():
            child.close()
        self._children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BackendProcesses:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- arrays through files ------------------------------------------------------------------------

def save_feeds(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> list[str]:
    """Write feeds (one dict per sample, the same names in each) as one .npz; return the names."""
    names = list(feeds[0]) if feeds else []
    np.savez(path, **{f"{i}_{j}": np.asarray(f[n]) for i, f in enumerate(feeds) for j, n in enumerate(names)})
    return names


def load_feeds(path: Path, names: list[str]) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        count = len(data.files) // max(len(names), 1)
        return [{n: data[f"{i}_{j}"] for j, n in enumerate(names)} for i in range(count)]


def load_outputs(path: Path, samples: int, per_sample: int) -> list[list[np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        return [[data[f"{i}_{k}"] for k in range(per_sample)] for i in range(samples)]


# -- the child's side ------------------------------------------------------------------------------

def _backend(module: str, name: str) -> Backend:
    """The backend the parent named: its module's BACKEND, else the registry's."""
    import importlib

    from ..backends import get_backend

    found = getattr(importlib.import_module(module), "BACKEND", None)
    return found if getattr(found, "name", None) == name else get_backend(name)


class _Child:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.sessions: dict[str, tuple[Any, Any]] = {}  # key -> (the backend's session, adapted)

    def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from ..backends import adapt, io_problems
        from ..core.records import ArtifactIO
        from ..core.specs import TensorSpec

        self.close({"key": cmd["key"]})
        try:
            # This process is the crash guard already: a backend's own probe child would only add its imports.
            probe = {"probe": False} if any(o.name == "probe" for o in self.backend.open_options) else {}
            inner = self.backend.open(Path(cmd["path"]), precision=cmd["precision"], **probe)
        except Exception as exc:  # noqa: BLE001 - a fresh artifact that does not load is the artifact's fault
            return {"ok": True, "problems": [f"does not load on {self.backend.name}: {first_line(exc)}"]}
        inputs = [TensorSpec.from_dict(d) for d in cmd["inputs"]]
        outputs = [TensorSpec.from_dict(d) for d in cmd["outputs"]]
        io = ArtifactIO.from_dict(cmd["io"])
        problems = io_problems(inner, inputs, outputs, io)
        if problems:
            inner.close()
            return {"ok": True, "problems": problems}
        self.sessions[cmd["key"]] = (inner, adapt(inner, inputs, outputs, io))
        return {"ok": True, "inner_inputs": [s.to_dict() for s in inner.inputs]}

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions[cmd["key"]][1]
        outputs = [session.run(f) for f in load_feeds(Path(cmd["feeds"]), cmd["names"])]
        np.savez(cmd["out"], **{f"{i}_{k}": np.asarray(o) for i, outs in enumerate(outputs) for k, o in enumerate(outs)})
        return {"ok": True, "outputs": len(outputs[0]) if outputs else 0}

    def time(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from .timing import time_runs

        session = self.sessions[cmd["key"]][1]
        feed = load_feeds(Path(cmd["feeds"]), cmd["names"])[0]
        return {"ok": True, "times": time_runs(lambda: session.run(feed), cmd["runs"], cmd["warmup"])}

    def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        pair = self.sessions.pop(cmd["key"], None)
        if pair is not None:
            pair[0].close()
        return {"ok": True}


def _child_main(argv: list[str]) -> int:
    fd, module, name = argv
    replies = os.fdopen(int(fd), "w")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        child = _Child(_backend(module, name))
    except Exception as exc:  # noqa: BLE001 - said to the parent, which records it
        reply({"ok": False, "error": f"{name} could not start: {first_line(exc)}"})
        return 1
    reply({"ok": True, "started": time.time()})
    handlers = {"open": child.open, "run": child.run, "time": child.time, "close": child.close}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "exit":
            break
        try:
            reply(handlers[cmd["cmd"]](cmd))
        except Exception as exc:  # noqa: BLE001 - the backend's error, sent back to be recorded
            reply({"ok": False, "error": f"fails on {name}: {first_line(exc)}"})
    for key in list(child.sessions):
        child.close({"key": key})
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
