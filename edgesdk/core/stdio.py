"""Silencing native libraries that print to the process's stdout (TFLite's converter, MNN's import):
library code writes through logging, and a CLI's --json output must stay parseable."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence stdout down to the file descriptor: TFLite's C++ converter prints its settings there."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real fd 1 (some embedded interpreters)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        sys.stdout.flush()
        _flush_c_stdio()  # what the library printf'd is still in C's buffer: send it to devnull too
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to reach (some embedded interpreters)
        pass


def last_lines(text: str, n: int = 3) -> str:
    """The last n meaningful lines of a tool's output, joined: where its real error usually is."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("I0000", "W0000"))]
    return " | ".join(lines[-n:]) or "no message"


def run_tool(argv: list[str], what: str, cwd: str | os.PathLike | None = None, timeout: float = 3600,
             env: dict[str, str] | None = None) -> str:
    """Run a converter tool in a child process (a crash or sys.exit there is a ConversionError here, not
    the caller's death); its combined output, or ConversionError naming `what` and the tool's last words."""
    import subprocess

    from ..core.errors import ConversionError

    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{what} did not finish in {timeout:.0f} s.") from None
    except OSError as exc:
        raise ConversionError(f"{what} could not start ({argv[0]}): {exc}") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        how = f"signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
        raise ConversionError(f"{what} failed ({how}): {last_lines(output)}")
    return output
