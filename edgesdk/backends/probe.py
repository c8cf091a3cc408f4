"""Loading a model file in a child process first, for runtimes that can crash the process on a bad file."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ModelLoadError

#: How long a child process may take to load a model file it probes.
PROBE_TIMEOUT_S = 300


def load_in_child(code: str, path: Path, what: str) -> None:
    """Run `code` (which loads sys.argv[1]) in a child process: for runtimes that can crash the process
    on a bad file (TFLite's older interpreters, ExecuTorch), a crash there is a ModelLoadError here."""
    import subprocess
    import sys

    from ..core.errors import first_line

    try:
        result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"{path} did not load in {PROBE_TIMEOUT_S} s in a child process ({what}); it may be "
                             "corrupt or far too large for this device.") from None
    except OSError as exc:
        raise ModelLoadError(f"Could not start a child process to check {path}: {first_line(exc)}") from None
    if result.returncode != 0:
        why = f"signal {-result.returncode}" if result.returncode < 0 else (
            (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1])
        raise ModelLoadError(f"{path} cannot be loaded by {what} ({why}); it may be truncated or corrupt, or use "
                             "an operator this runtime lacks. Re-convert it.")


def flatbuffer_head(path: Path, identifier: bytes, what: str, length: int = 8) -> bytes:
    """The first `length` bytes of a flatbuffer model file (TFLite, ExecuTorch), once its 4-byte file
    identifier is checked: the cheap test that catches another format or a truncated file before a
    runtime that may crash on it sees the file."""
    with open(path, "rb") as f:
        head = f.read(length)
    if path.stat().st_size < 16 or head[4:8] != identifier:
        raise ModelLoadError(f"{path} is not {what} (no {identifier.decode()} flatbuffer identifier); it may be "
                             "truncated or another format. Re-convert it.")
    return head
