"""What this machine is: architecture, CPU and its instruction-set flags, cores. Used by doctor, by
bench reports, and to tell whether a latency recorded in a bundle was measured here."""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The CPU flags that decide which kernels runtimes use (quantized dot products, bf16, wide vectors).
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                     "amx_bf16", "neon", "asimd", "asimddp", "sve", "i8mm")


@dataclass
class HardwareProfile:
    arch: str
    system: str
    cpu_model: str
    cores: int
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def machine_id(self) -> str:
        """A short fingerprint: same CPU model, core count and flags -> same id."""
        key = f"{self.arch}|{self.cpu_model}|{self.cores}|{','.join(self.flags)}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def detect(root: str | os.PathLike = "/") -> HardwareProfile:
    """Read the hardware profile (from /proc under `root`, so tests can present other machines)."""
    cpu_model, flags = "", set()
    cpuinfo = Path(root) / "proc" / "cpuinfo"
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not cpu_model:
                cpu_model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    return HardwareProfile(
        arch=platform.machine(),
        system=f"{platform.system()} {platform.release()}",
        cpu_model=cpu_model or platform.processor() or "unknown",
        cores=os.cpu_count() or 1,
        flags=sorted(f for f in flags if f in INTERESTING_FLAGS),
    )
