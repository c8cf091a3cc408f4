"""What this machine is: architecture, CPU vendor and instruction-set flags, cores, and the device class
(Jetson, NVIDIA GPU host, Raspberry Pi, Android, x86, other ARM) that decides which backend goes first.

Everything is read from files under a root folder (/proc/cpuinfo, /etc/nv_tegra_release, the device
tree, /system/build.prop, /proc/driver/nvidia), so a test can present a Jetson Orin, a Pi 5, a phone
or an Intel or AMD box by pointing `root` at a folder of such files."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The CPU flags that decide which kernels runtimes use (quantized dot products, bf16, wide vectors).
#: ARM's "asimd" is reported as neon and "asimddp" as dotprod, the names their users know.
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                     "amx_bf16", "neon", "dotprod", "i8mm", "sve", "bf16", "fp16")
_ARM_ALIASES = {"asimd": "neon", "asimddp": "dotprod", "fphp": "fp16", "asimdhp": "fp16", "bf16": "bf16"}
_ARM_IMPLEMENTERS = {"0x41": "arm", "0x42": "broadcom", "0x4e": "nvidia", "0x51": "qualcomm", "0x53": "samsung",
                     "0x61": "apple", "0xc0": "ampere"}
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
              "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
              "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE",
              "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
              "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3", "0x004": "Carmel"}
#: Jetson module -> CUDA compute capability (the GPU is part of the module).
_JETSON_CC = (("orin", "8.7"), ("xavier", "7.2"), ("tx2", "6.2"), ("nano", "5.3"), ("tx1", "5.3"))
#: L4T major.minor -> JetPack, for the releases people run.
_JETPACK = {"36.4": "6.1/6.2", "36.3": "6.0", "36.2": "6.0 DP", "35.6": "5.1.4", "35.5": "5.1.3", "35.4": "5.1.2",
            "35.3": "5.1.1", "35.2": "5.1", "35.1": "5.0.2", "34.1": "5.0", "32.7": "4.6.x", "32.6": "4.6",
            "32.5": "4.5"}
#: Discrete GPU name fragment -> compute capability, for hosts without nvidia-smi (first match wins).
_GPU_CC = (("h100", "9.0"), ("h200", "9.0"), ("l40", "8.9"), ("l4", "8.9"), ("rtx 40", "8.9"), ("rtx 50", "12.0"),
           ("a100", "8.0"), ("a30", "8.0"), ("a10", "8.6"), ("rtx 30", "8.6"), ("rtx a", "8.6"), ("t4", "7.5"),
           ("rtx 20", "7.5"), ("gtx 16", "7.5"), ("v100", "7.0"), ("gtx 10", "6.1"), ("p100", "6.0"))

DEVICE_CLASSES = ("jetson", "nvidia", "x86", "rpi", "android", "arm")


@dataclass
class HardwareProfile:
    arch: str
    system: str
    cpu_model: str
    cores: int
    flags: list[str] = field(default_factory=list)
    cpu_vendor: str = ""
    device: str = "x86"  # one of DEVICE_CLASSES: what the backend ranking keys on
    board: str = ""  # device-tree model or Android product, e.g. "Raspberry Pi 5 Model B Rev 1.0"
    jetson: dict[str, str] = field(default_factory=dict)  # module, l4t, jetpack
    gpus: list[dict[str, str]] = field(default_factory=list)  # name, compute_capability
    android: dict[str, str] = field(default_factory=dict)  # model, release, sdk

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def machine_id(self) -> str:
        """A short fingerprint: same CPU, cores, flags, board and GPUs -> same id."""
        gpus = ",".join(g.get("name", "") for g in self.gpus)
        key = f"{self.arch}|{self.cpu_model}|{self.cores}|{','.join(self.flags)}"
        if self.board or gpus:  # kept out of the key when absent, so x86 ids stay what bundles recorded
            key += f"|{self.board}|{gpus}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def summary(self) -> str:
        parts = [f"{self.device}: {self.board or self.cpu_model}", f"{self.arch}, {self.cores} cores"]
        if self.jetson:
            parts.append(f"L4T {self.jetson.get('l4t', '?')} (JetPack {self.jetson.get('jetpack', '?')})")
        parts += [f"GPU {g['name']} (sm {g.get('compute_capability', '?')})" for g in self.gpus]
        if self.android:
            parts.append(f"Android {self.android.get('release', '?')} (SDK {self.android.get('sdk', '?')})")
        return "; ".join(parts)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _props(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _cpu(root: Path) -> tuple[str, str, set[str], int, str]:
    """(model, vendor, flags, processors, arch guess) from /proc/cpuinfo."""
    model, vendor, flags, processors, arch = "", "", set(), 0, ""
    parts, implementer = [], ""
    for line in _read(root / "proc" / "cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
        elif key in ("model name", "cpu model") and not model:
            model = value
        elif key == "hardware" and not model:
            model = value
        elif key == "vendor_id":
            vendor = {"genuineintel": "intel", "authenticamd": "amd"}.get(value.lower(), value.lower())
            arch = "x86_64"
        elif key == "flags":
            flags.update(value.split())
            arch = "x86_64"
        elif key == "features":
            flags.update(_ARM_ALIASES.get(f, f) for f in value.split())
        elif key == "cpu implementer":
            implementer = value.lower()
        elif key == "cpu part":
            parts.append(value.lower())
        elif key == "cpu architecture":
            arch = "aarch64" if value.startswith("8") or value.startswith("9") else "armv7l"
    if implementer:
        vendor = vendor or _ARM_IMPLEMENTERS.get(implementer, implementer)
        if not model:
            names = sorted({_ARM_PARTS.get(p, p) for p in parts})
            model = " + ".join(names) if names else ""
    return model, vendor, flags, processors, arch


def _jetson(root: Path, board: str) -> dict[str, str]:
    release = _read(root / "etc" / "nv_tegra_release")
    if not release and "jetson" not in board.lower():
        return {}
    info = {"module": board}
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
    if m:
        l4t = f"{m.group(1)}.{m.group(2)}"
        info["l4t"] = l4t
        info["jetpack"] = _JETPACK.get(".".join(l4t.split(".")[:2]), "unknown")
    return info


def _gpus(root: Path, jetson: dict[str, str], real_root: bool) -> list[dict[str, str]]:
    if jetson:
        module = jetson.get("module", "").lower()
        cc = next((v for k, v in _JETSON_CC if k in module), "")
        return [{"name": f"{jetson.get('module') or 'Jetson'} integrated GPU", "compute_capability": cc}]
    gpus = []
    if real_root and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout
            for line in out.strip().splitlines():
                name, _, cc = line.partition(",")
                gpus.append({"name": name.strip(), "compute_capability": cc.strip()})
        except (OSError, subprocess.SubprocessError):
            pass
    if not gpus:
        for info in sorted((root / "proc" / "driver" / "nvidia" / "gpus").glob("*/information")):
            model = next((line.split(":", 1)[1].strip() for line in _read(info).splitlines()
                          if line.lower().startswith("model:")), "NVIDIA GPU")
            cc = next((v for k, v in _GPU_CC if k in model.lower()), "")
            gpus.append({"name": model, "compute_capability": cc})
    return gpus


def read_profile(root: str | os.PathLike = "/") -> HardwareProfile:
    """The hardware profile read from the files under `root` ("/" for this machine). Read once per
    process and root: a machine does not change while a process runs, and nvidia-smi takes a while."""
    return _cached_profile(str(Path(root).resolve()))


@lru_cache(maxsize=32)
def _cached_profile(root_path: str) -> HardwareProfile:
    root = Path(root_path)
    real = root.resolve() == Path("/")
    model, vendor, flags, processors, arch_guess = _cpu(root)
    board = _read(root / "proc" / "device-tree" / "model") or _read(root / "sys" / "firmware" / "devicetree" / "base" / "model")
    props = _props(_read(root / "system" / "build.prop")) or _props(_read(root / "vendor" / "build.prop"))
    android: dict[str, str] = {}
    if props or (real and os.environ.get("ANDROID_ROOT")):
        android = {"model": props.get("ro.product.model", ""), "release": props.get("ro.build.version.release", ""),
                   "sdk": props.get("ro.build.version.sdk", "")}
        board = board or android["model"]
    jetson = _jetson(root, board)
    gpus = _gpus(root, jetson, real)
    arch = platform.machine() if real else (arch_guess or platform.machine())
    if jetson:
        device = "jetson"
    elif android:
        device = "android"
    elif board.startswith("Raspberry Pi"):
        device = "rpi"
    elif gpus:
        device = "nvidia"
    elif arch in ("x86_64", "amd64", "i686", "x86"):
        device = "x86"
    else:
        device = "arm"
    return HardwareProfile(
        arch=arch,
        system=f"{platform.system()} {platform.release()}" if real else ("Android" if android else "Linux"),
        cpu_model=model or (platform.processor() if real else "") or "unknown",
        cores=(os.cpu_count() or 1) if real else max(processors, 1),
        flags=sorted(f for f in flags if f in INTERESTING_FLAGS),
        cpu_vendor=vendor,
        device=device,
        board=board,
        jetson=jetson,
        gpus=gpus,
        android=android,
    )
