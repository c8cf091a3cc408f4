"""`make arm-check`: prove the device side on 64-bit ARM without a board.

Builds (once, cached) a Debian bookworm arm64 root under build/arm64/root with debootstrap, runs it
through qemu-user-static, installs edgesdk there from this checkout with the device-side extra only
(`edgesdk[runtimes]`: no torch, no TensorFlow), and runs tools/arm_device.py in it on the bundles `make
demo` converted here: the classifier (build/effnet), the detector (build/shapes) and the VAD (build/vad), and
all-MiniLM-L6-v2 on NCNN FP32/FP16 (build/minilm-arm-ncnn, made here: token ids as int32 blobs).
Every artifact runs on every backend installed there; its outputs are compared with this machine's
outputs of the same artifact on the same inputs (FP32: max abs error <= 1e-4, relative beyond +-1;
other precisions: the parity rules of edgesdk.Tolerance), and with the source FP32 model's.

    python tools/arm_check.py [--samples 50] [--rebuild-root]

Prints one table and writes build/arm64/report.json; exits 1 on a mismatch. Emulated timings mean
nothing and are never reported as device speed. Needs root (chroot, mounts) and, for the first build,
Debian's debootstrap and qemu-user-static (the Makefile target installs them)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from arm_device import import_cost, run_everywhere  # noqa: E402

from edgesdk.conversion.parity import compare  # noqa: E402 - numpy only

log = logging.getLogger("arm_check")
REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "build" / "arm64"
ROOT, EXCHANGE = WORK / "root", WORK / "exchange"
VENV, SRC, MNT = "/opt/edgesdk", "/opt/edgesdk-src", "/mnt/exchange"
MIRROR = "http://deb.debian.org/debian"
BUNDLES = {"classifier": REPO / "build" / "effnet", "classifier-mobile": REPO / "build" / "effnet-arm-mobile",
           "detector": REPO / "build" / "shapes", "vad": REPO / "build" / "vad",
           "text": REPO / "build" / "minilm-arm-ncnn"}
#: The classifier in the device-side mobile formats `edgesdk[runtimes]` carries (MNN, NCNN), made here if
#: missing. ExecuTorch is left out: its runtime links libtorch, so it is not part of `runtimes`.
MOBILE = {"mnn": ["fp32", "int8"], "ncnn": ["fp32", "fp16"]}
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "LANG": "C.UTF-8", "PIP_DEFAULT_TIMEOUT": "180", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
              "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt", "PYTHONDONTWRITEBYTECODE": "1",
              "QEMU_CPU": "cortex-a76"}


class Steps:
    """Wall time of each step, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 1)
            print(f"== {name}: {self.seconds[name]:.0f} s", flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


# -- the arm64 root ------------------------------------------------------------------------------

def ensure_binfmt() -> None:
    """qemu-user-static registered for aarch64 (binfmt_misc mounted), so the root's binaries run."""
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(misc)])
    if not (misc / "qemu-aarch64").exists():
        run(["update-binfmts", "--enable", "qemu-aarch64"])
    if not (misc / "qemu-aarch64").exists():
        raise SystemExit("qemu-aarch64 is not registered with binfmt_misc: apt-get install qemu-user-static binfmt-support")


def ensure_root(root: Path, rebuild: bool = False) -> bool:
    """A bookworm arm64 root with python3 at root, built by debootstrap into a staging folder and moved
    into place only when complete. False when a cached one was reused."""
    if rebuild and root.exists():
        shutil.rmtree(root)
    if (root / "etc" / "debian_version").exists() and (root / "usr" / "bin" / "python3").exists():
        return False
    stage = root.with_name(root.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.parent.mkdir(parents=True, exist_ok=True)
    run(["debootstrap", "--arch=arm64", "--variant=minbase",
         "--include=python3,python3-venv,python3-pip,ca-certificates", "bookworm", str(stage), MIRROR])
    stage.replace(root)
    return True


#: The device the root is presented as: a Raspberry Pi 5 (Cortex-A76 cores, its device files as
#: tests/hwroots/pi5 records them). The host's own x86 /sys and /proc/cpuinfo would be seen through
#: qemu-user: ONNX Runtime's cpuinfo crashes (SIGSEGV) on an x86 /sys under an ARM binary, and
#: OpenVINO's CPU plugin crashes without the MIDR and topology files.
DEVICE_FILES = REPO / "tests" / "hwroots" / "pi5"


#: As many emulated cores as this machine has: more makes ONNX Runtime pin threads to CPUs that do not exist.
CORES = os.cpu_count() or 1


def device_cpuinfo(path: Path, cores: int) -> Path:
    """The presented device's /proc/cpuinfo with `cores` processors."""
    blocks = (DEVICE_FILES / "proc" / "cpuinfo").read_text().strip().split("\n\n")
    processors = [b for b in blocks if b.startswith("processor")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(processors[:cores] + [b for b in blocks if not b.startswith("processor")]) + "\n")
    return path


def device_sysfs(sys_dir: Path, cores: int = CORES, midr: str = "0x00000000411fd0b1") -> None:
    """The /sys files ARM runtimes read, as on the presented device, in a tmpfs: cpu ranges, each core's
    MIDR_EL1 (Cortex-A76 r1p1; oneDNN's JIT in OpenVINO reads it) and topology (hwloc), and the
    device-tree model. Without them OpenVINO's CPU plugin crashes under qemu-user."""
    cpu = sys_dir / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(f"0-{cores - 1}\n")
    for i in range(cores):
        files = {"regs/identification/midr_el1": midr, "topology/core_id": str(i),
                 "topology/physical_package_id": "0", "topology/thread_siblings": f"{1 << i:x}",
                 "topology/thread_siblings_list": str(i), "topology/core_siblings": f"{(1 << cores) - 1:x}",
                 "topology/core_siblings_list": f"0-{cores - 1}", "online": "1"}
        for rel, text in files.items():
            (cpu / f"cpu{i}" / rel).parent.mkdir(parents=True, exist_ok=True)
            (cpu / f"cpu{i}" / rel).write_text(text + "\n")
    model = sys_dir / "firmware" / "devicetree" / "base" / "model"
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEVICE_FILES / "proc" / "device-tree" / "model", model)


@contextlib.contextmanager
def mounted(root: Path, exchange: Path) -> Iterator[None]:
    """proc (with the device's cpuinfo), a device sysfs, dev and the exchange folder inside the root,
    unmounted whatever happens."""
    targets: list[tuple[list[str], Path, Any]] = [
        (["-t", "proc", "proc"], root / "proc", None),
        (["--bind", str(device_cpuinfo(WORK / "cpuinfo", CORES))], root / "proc" / "cpuinfo", None),
        (["-t", "tmpfs", "tmpfs"], root / "sys", device_sysfs),
        (["--bind", "/dev"], root / "dev", None),
        (["--bind", str(exchange)], root / MNT.lstrip("/"), None)]
    done: list[Path] = []
    try:
        for args, target, fill in targets:
            if not target.exists():
                target.mkdir(parents=True)
            run(["mount", *args, str(target)])
            done.append(target)
            if fill:
                fill(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False)


def chroot(root: Path, *cmd: str, **kw: Any) -> subprocess.CompletedProcess:
    return run(["chroot", str(root), *cmd], env=CHROOT_ENV, **kw)


def copy_checkout(dest: Path) -> None:
    """The files git knows (tracked, and untracked ones it does not ignore): what a clone would hold."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    shutil.rmtree(dest, ignore_errors=True)
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def install_edgesdk(root: Path) -> str:
    """edgesdk[runtimes] from this checkout in a venv of the root. Dependencies are resolved again only
    when pyproject.toml or constraints.txt change; edgesdk itself is reinstalled every time."""
    for name in ("etc/ssl/certs/ca-certificates.crt", "etc/resolv.conf"):  # pip needs the host's CA and DNS
        if Path("/", name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path("/", name), root / name)
    copy_checkout(root / SRC.lstrip("/"))
    if not (root / VENV.lstrip("/") / "bin" / "python").exists():
        chroot(root, "python3", "-m", "venv", VENV)
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "constraints.txt").read_bytes()).hexdigest()
    stamp = root / VENV.lstrip("/") / ".edgesdk-deps"
    pip = [f"{VENV}/bin/python", "-m", "pip", "install", "-q", "-c", f"{SRC}/constraints.txt"]
    if not stamp.exists() or stamp.read_text() != key:
        chroot(root, *pip, f"{SRC}[runtimes]")
        stamp.write_text(key)
    chroot(root, *pip, "--no-deps", "--force-reinstall", SRC)
    return key[:12]


# -- inputs and the host's outputs ---------------------------------------------------------------

def save_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{i}/{name}": a for i, f in enumerate(feeds) for name, a in f.items()})


def classifier_feeds(bundle: Path, samples: int) -> list[dict[str, np.ndarray]]:
    """Photos 50-99 (never calibrated on), centre crop, through the bundle's own preprocessing."""
    import edgesdk
    from edgesdk.core.images import preprocess_image
    from edgesdk.models import zoo

    b = edgesdk.load_bundle(bundle)
    return [{b.inputs[0].name: preprocess_image(p, b.preprocess)} for p in zoo.sample_photos()[50:50 + samples]]


def detector_feeds(bundle: Path, samples: int) -> list[dict[str, np.ndarray]]:
    """Generated scenes of the repo's shapes detector (seeded: the same on every run)."""
    import edgesdk
    from apps.shapes_detector import make_scene, to_input

    rng = np.random.default_rng(1234)
    name = edgesdk.load_bundle(bundle).inputs[0].name
    return [{name: to_input(make_scene(rng)[0])} for _ in range(samples)]


def vad_feeds(bundle: Path, samples: int) -> list[dict[str, np.ndarray]]:
    """silero-vad windows of the recorded voices alsa-utils ships (the speech app's parity data)."""
    from edgesdk.models import zoo
    from edgesdk.tasks.audio import load_wav

    voices = sorted(Path("/usr/share/sounds/alsa").glob("*.wav"))
    audio = np.concatenate([load_wav(v, zoo.VAD_RATE) for v in voices])
    windows = list(zoo.silero_vad_windows(zoo.silero_vad_source(), audio))
    step = max(1, len(windows) // samples)
    return windows[::step][:samples]


def text_feeds(bundle: Path, samples: int) -> list[dict[str, np.ndarray]]:
    """Generated sentences never used at conversion (seed 7), padded or cut to the NCNN artifacts' length."""
    import edgesdk
    from edgesdk.models import zoo

    length = int(edgesdk.load_bundle(bundle).inputs[0].shape[1])
    return [_minilm_tokens()([s], length=length) for s in zoo.sample_sentences(samples, seed=7)]


def _minilm_tokens() -> Any:
    from edgesdk.models import zoo
    from edgesdk.tasks.text import Tokenizer, tokenizer_file

    return Tokenizer(tokenizer_file(zoo.minilm_folder()), {"inputs": {"input_ids": "ids",
                                                                      "attention_mask": "attention_mask"}})


FEEDS = {"classifier": classifier_feeds, "classifier-mobile": classifier_feeds, "detector": detector_feeds,
         "vad": vad_feeds, "text": text_feeds}
#: Inputs per model beyond the classifier's (its count is --samples): each is seconds under emulation.
SAMPLES = {"detector": 16, "vad": 50, "text": 16}
#: MiniLM's NCNN length: longer than most generated sentences, so that most inputs are padded.
TEXT_LENGTH = 32


def ensure_mobile_bundle(folder: Path) -> None:
    """EfficientNet-Lite0 in MOBILE's formats, calibrated on photos 0-49 and checked on 50-99 like the demo's."""
    if (folder / "edgesdk.json").exists():
        return
    import torch

    import edgesdk
    from edgesdk.models import zoo

    calib, evaluation = zoo.split_photos(REPO / "build" / "photos")
    edgesdk.convert(zoo.efficientnet_lite0(), torch.zeros(1, 3, 224, 224), targets=list(MOBILE), precisions=MOBILE,
                    calib=calib, validation=evaluation, out=folder)


def ensure_text_bundle(folder: Path) -> None:
    """all-MiniLM-L6-v2 on NCNN FP32 and FP16: token ids as int32 blobs, the mask rewritten as float, and
    fp16 storage, which ARM has and x86 does not, kept off the layers that read the ids."""
    if (folder / "edgesdk.json").exists():
        return
    import edgesdk
    from edgesdk.models import zoo

    model = zoo.minilm()
    example = _minilm_tokens()(zoo.sample_sentences(1, seed=99), length=TEXT_LENGTH)  # padded: the mask matters
    edgesdk.convert(model, example, targets=["ncnn"], precisions=["fp32", "fp16"], out=folder)


def prepare_exchange(exchange: Path, samples: int) -> None:
    """Copy the bundles, write the inputs, and run every artifact on every backend here."""
    shutil.rmtree(exchange, ignore_errors=True)
    ensure_mobile_bundle(BUNDLES["classifier-mobile"])
    ensure_text_bundle(BUNDLES["text"])
    for model, src in BUNDLES.items():
        if not (src / "edgesdk.json").exists():
            raise SystemExit(f"{src} is missing: run `make demo` first (make arm-check does).")
        shutil.copytree(src, exchange / "bundles" / model)
        feeds = FEEDS[model](src, SAMPLES.get(model, samples))
        save_feeds(exchange / "inputs" / f"{model}.npz", feeds)
        run_everywhere(exchange / "bundles" / model, exchange / "inputs" / f"{model}.npz", exchange / "host" / model,
                       isolate=False)


# -- the comparison --------------------------------------------------------------------------------

def load_outputs(path: Path) -> list[list[np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        by_sample: dict[int, dict[int, np.ndarray]] = {}
        for key in data.files:
            i, k = map(int, key.split("/"))
            by_sample.setdefault(i, {})[k] = data[key]
    return [[outs[k] for k in sorted(outs)] for _, outs in sorted(by_sample.items())]


@dataclass
class Row:
    model: str
    artifact: str
    backend: str
    vs_x86: str
    vs_source: str
    ok: bool


def judge(reference: list[list[np.ndarray]], got: list[list[np.ndarray]], precision: str, task: str | None,
          names: list[str]) -> tuple[bool, str]:
    """(within the rules, what was measured) of got against reference: edgesdk.Tolerance's rules, so
    FP32 within 1e-4 (relative beyond +-1), other precisions by top-1 agreement or detection match."""
    from edgesdk.conversion.parity import Tolerance

    return Tolerance().accepts(precision, compare(reference, got, names, task))


def source_figure(parity: Any) -> str:
    """The task's measure of agreement with the source FP32."""
    if parity.problems:
        return "; ".join(parity.problems)
    if parity.detection is not None:
        return f"detections R {parity.detection.recall:.1%} P {parity.detection.precision:.1%}"
    if parity.top1_agreement is not None:
        return f"top-1 {parity.top1_agreement:.1%}"
    return f"cosine {min([o.cosine for o in parity.outputs] or [parity.cosine or 1.0]):.5f}"


def reference_file(host_dir: Path, bundle: Any) -> Path:
    """The source FP32's outputs: the bundle's first FP32 artifact on the first backend that ran it here."""
    fp32 = [a.id for a in bundle.artifacts if a.precision == "fp32"]
    found = sorted(host_dir.glob(f"{fp32[0]}@*.npz")) if fp32 else []
    if not found:
        raise SystemExit(f"No host output of an FP32 artifact in {host_dir}.")
    return found[0]


def compare_model(exchange: Path, model: str) -> list[Row]:
    import edgesdk

    bundle = edgesdk.load_bundle(exchange / "bundles" / model)
    names = [s.name for s in bundle.outputs]
    host_dir, device_dir = exchange / "host" / model, exchange / "device" / model
    source = load_outputs(reference_file(host_dir, bundle))
    rows = []
    for got_file in sorted(device_dir.glob("*.npz")):
        art_id, backend = got_file.stem.split("@")
        art = bundle.artifact(art_id)
        same = host_dir / got_file.name
        host_file = same if same.exists() else next(iter(sorted(host_dir.glob(f"{art_id}@*.npz"))), None)
        got = load_outputs(got_file)
        if host_file is None:
            rows.append(Row(model, art_id, backend, "no x86 output to compare", "-", False))
            continue
        ok, why = judge(load_outputs(host_file), got, art.precision, bundle.task, names)
        vs_source = compare(source, got, names, bundle.task)
        rows.append(Row(model, art_id, backend, ("" if host_file == same else f"(x86 {host_file.stem}) ") + why,
                        source_figure(vs_source), ok))
    return rows


def int8_table(exchange: Path) -> list[dict[str, Any]]:
    """Each INT8 classifier artifact's top-1 agreement with the source FP32, on x86 and on ARM."""
    return [row for model in ("classifier", "classifier-mobile") if (exchange / "bundles" / model).is_dir()
            for row in _int8_rows(exchange, model)]


def _int8_rows(exchange: Path, model: str) -> list[dict[str, Any]]:
    import edgesdk

    bundle = edgesdk.load_bundle(exchange / "bundles" / model)
    names = [s.name for s in bundle.outputs]
    source = load_outputs(reference_file(exchange / "host" / model, bundle))
    table = []
    for art in (a for a in bundle.artifacts if a.precision == "int8"):
        for device_file in sorted((exchange / "device" / model).glob(f"{art.id}@*.npz")):
            host_file = exchange / "host" / model / device_file.name
            if not host_file.exists():
                continue
            x86 = compare(source, load_outputs(host_file), names, bundle.task).top1_agreement
            arm = compare(source, load_outputs(device_file), names, bundle.task).top1_agreement
            table.append({"artifact": art.id, "backend": device_file.stem.split("@")[1], "x86": x86, "arm": arm,
                          "recorded": art.parity.top1_agreement, "samples": len(source)})
    return table


def choice_problems(report: dict[str, Any]) -> list[str]:
    """What the Runtime's own choice on the device must satisfy: an ARM device class, the best tier
    first, and no trust in latencies measured on another machine."""
    from edgesdk.backends import get_backend

    problems = []
    if report["machine"] != "aarch64" or report["device"] not in ("arm", "rpi", "jetson", "android"):
        problems.append(f"the device side saw {report['machine']} / device class {report['device']}")
    for model, choice in report["choice"].items():
        tiers = [get_backend(c.split("@")[1]).device_rank.get(report["device"], 99) // 10 for c in choice["ranking"]]
        if tiers and tiers[0] != min(tiers):
            problems.append(f"{model}: picked {choice['ranking'][0]}, not a pair of the best tier")
        if choice["latencies_from_elsewhere"] and "measured here" in choice["explanation"]:
            problems.append(f"{model}: the ranking used latencies measured on another machine")
    return problems


def excuse_unranked(rows: list[Row], device: dict[str, Any]) -> list[Row]:
    """Mismatching pairs the Runtime never picks by itself on the device (its recorded parity does not
    speak for them there): an architecture difference the policy already handles, reported, not a
    failure. A mismatch on any pair the device would pick is a failure."""
    excused = []
    for r in rows:
        ranked = device["choice"].get(r.model, {}).get("ranking", [])
        if not r.ok and f"{r.artifact}@{r.backend}" not in ranked:
            r.vs_x86 += " [differs on ARM; never picked automatically there]"
            excused.append(r)
    return excused


# -- the report --------------------------------------------------------------------------------------

def print_report(rows: list[Row], int8: list[dict[str, Any]], device: dict[str, Any], host_import: dict[str, float],
                 steps: Steps, problems: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"arm64 ({device['profile']}) vs this machine: the same artifacts on the same inputs")
    for col in ("model", "artifact", "backend on ARM", "parity vs x86", "agreement vs source FP32", ""):
        table.add_column(col)
    for r in rows:
        table.add_row(r.model, r.artifact, r.backend, r.vs_x86, r.vs_source,
                      "ok" if r.ok else "[yellow]differs[/]" if "never picked" in r.vs_x86 else "[red]MISMATCH[/]")
    console.print(table)
    console.print("INT8 top-1 agreement with the source FP32, photos 50-"
                  f"{50 + (int8[0]['samples'] if int8 else 0) - 1}: " + "; ".join(
                      f"{t['artifact']}@{t['backend']}: x86 {t['x86']:.1%}, ARM {t['arm']:.1%}" for t in int8))
    for model, c in device["choice"].items():
        console.print(f"Runtime's own choice on ARM, {model}: {c['artifact']} on {c['backend']} "
                      f"(ranking: {', '.join(c['ranking'][:4])})")
    for model, rss in device["peak_rss_mb"].items():
        console.print(f"Peak RSS on ARM, {model} (MB, qemu's own memory included): " +
                      ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    sizes = device["sizes"]
    console.print("Installed on ARM (MB): " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sizes.items()) +
                  f"; converter libraries present: {device['converter_libraries'] or 'none'}")
    imp = device["import_edgesdk"]
    console.print(f"import edgesdk: peak RSS {imp['peak_rss_mb']:.0f} MB on ARM (emulated) vs "
                  f"{host_import['peak_rss_mb']:.0f} MB here; time ratio ARM/x86 {imp['seconds'] / host_import['seconds']:.1f}x "
                  "(emulation, not device speed)")
    console.print("Steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.seconds.items()))
    for p in problems:
        console.print(f"[red]problem:[/] {p}")


def run_device_side(steps: Steps, samples: int, rebuild_root: bool) -> None:
    with steps.step("arm64 root (debootstrap, cached)"):
        ensure_binfmt()
        ensure_root(ROOT, rebuild_root)
    with steps.step("install edgesdk[runtimes] in the root"):
        install_edgesdk(ROOT)
    with steps.step("inputs and x86 outputs"):
        prepare_exchange(EXCHANGE, samples)
    with steps.step("device side under emulation"), mounted(ROOT, EXCHANGE):
        chroot(ROOT, f"{VENV}/bin/python", f"{SRC}/tools/arm_device.py", MNT)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/arm_check.py", description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50, help="classifier inputs: photos 50..50+N-1 (at most 50)")
    ap.add_argument("--rebuild-root", action="store_true", help="debootstrap the arm64 root again")
    ap.add_argument("--compare-only", action="store_true", help="compare the outputs of the last run again")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    steps = Steps()
    if not args.compare_only:
        run_device_side(steps, args.samples, args.rebuild_root)
    with steps.step("compare"):
        device = json.loads((EXCHANGE / "device" / "report.json").read_text())
        rows = [r for model in BUNDLES for r in compare_model(EXCHANGE, model)]
        excused = excuse_unranked(rows, device)
        problems = choice_problems(device) + [f"{r.model} {r.artifact}@{r.backend}: {r.vs_x86}" for r in rows
                                              if not r.ok and r not in excused]
        problems += [f"converter library on the device: {name}" for name in device["converter_libraries"]]
        problems += [f"device run failed: {r}" for runs in device["runs"].values() for r in runs if "error" in r]
        int8 = int8_table(EXCHANGE)
    host_import = import_cost()
    print_report(rows, int8, device, host_import, steps, problems)
    (WORK / "report.json").write_text(json.dumps({
        "rows": [r.__dict__ for r in rows], "int8": int8, "device": device, "host_import": host_import,
        "steps_s": steps.seconds, "problems": problems}, indent=2, default=str))
    return 1 if problems else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
