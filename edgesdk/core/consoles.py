"""The CLI's two consoles: status, progress and errors on stderr; results (tables, JSON) on stdout.
Tables keep their columns when piped to a file or CI log, where rich would assume 80 columns."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
results_console = Console(width=None if sys.stdout.isatty() else 160)
