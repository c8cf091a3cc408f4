"""NCNN backend: model.ncnn.param + .bin (+ the .json edgesdk writes beside them) on ncnn's CPU path.

The ncnn binding trusts its caller, so this backend checks everything first (each has a test):
- load_param / load_model return -1 on a bad file and carrying on segfaults: return codes are checked.
- float64, a missing input, a 4-D or channels-last array run silently with wrong numbers or crash:
  every input is checked against the shapes and dtypes in the artifact's .json.
- ncnn.Mat(array) borrows the array's memory, and a first layer that works in place on it (Abs, x*2)
  segfaults: each input is copied into a Mat of ncnn's own (Mat.clone()).
- ncnn's Mat holds 4-byte values: masks go in as exact floats (below 2**24), token ids as int32 bits,
  which ncnn's Embed reads (the .json's "blob" says which).
- A .bin of random bytes of the right size loads and gives NaN: a finite output on zeros is required at open.
- ncnn's default options compute in fp16 (4e-3 off on EfficientNet-Lite0): fp16 storage and arithmetic
  are on only for an fp16 artifact, and only the CPU decides whether it really computes in it.
- OpenMP threads spin between calls and slowed a loaded machine 2-5x: OMP_WAIT_POLICY=PASSIVE unless set.
One Net serves every thread: each call makes its own Extractor, which ncnn allows."""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InferenceError, InputError, ModelLoadError
from ..core.hardware import read_profile
from ..core.specs import TensorSpec, check_feeds, guess_layout
from .base import Backend

log = logging.getLogger(__name__)

PARAM_MAGIC = "7767517"
#: How an input lies in its Mat, and the integers it holds exactly.
_BLOBS = {"float32": 2**24, "int32": 2**31}


@lru_cache(maxsize=1)
def _ncnn() -> Any:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import ncnn

    return ncnn


def companion_paths(path: Path) -> tuple[Path, Path]:
    """(.bin, .json) beside a .param file."""
    stem = path.name[: -len(".param")] if path.name.endswith(".param") else path.stem
    return path.with_name(f"{stem}.bin"), path.with_name(f"{stem}.json")


def _read_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec], str, list[str]]:
    """(inputs, outputs, precision, each input's Mat encoding) from the artifact's .json; ModelLoadError if
    missing or malformed."""
    try:
        data = json.loads(path.read_text())
        specs = [[TensorSpec(str(t["name"]), tuple(int(d) for d in t["shape"]), str(t["dtype"]),
                             guess_layout(tuple(t["shape"]))) for t in data[key]] for key in ("inputs", "outputs")]
        blobs = [str(t.get("blob", "float32")) for t in data["inputs"]]
        for spec in specs[0]:
            np.dtype(spec.dtype)
        if data.get("format") != "edgesdk-ncnn-io" or not all(specs) or not set(blobs) <= set(_BLOBS):
            raise ValueError("not an edgesdk ncnn I/O file")
    except FileNotFoundError:
        raise ModelLoadError(f"{path.name} is missing beside the NCNN model: NCNN files do not say their input "
                             "shapes, and edgesdk writes them there. Re-convert with `edgesdk convert --to ncnn`.") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(f"{path} is not a valid NCNN I/O description ({exc}); re-convert the model.") from None
    return specs[0], specs[1], str(data.get("precision", "fp32")), blobs


def _options(threads: int | None, fp16: bool) -> Any:
    opt = _ncnn().Option()
    opt.num_threads = int(threads or os.cpu_count() or 1)
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
        setattr(opt, flag, fp16)
    opt.use_bf16_storage = False
    opt.use_vulkan_compute = False
    return opt


def _as_blob(spec: TensorSpec, array: np.ndarray, blob: str) -> np.ndarray:
    """The array as the 4-byte values its Mat holds: float32, or token ids as int32 (ncnn's Embed reads
    its ids as int32 from a float Mat) viewed as float32."""
    if array.dtype.kind in "iub" and array.size and int(np.abs(array.astype(np.int64)).max()) >= _BLOBS[blob]:
        raise InputError(f"Input '{spec.name}' holds integers of {_BLOBS[blob]} or more, which this NCNN model "
                         "cannot hold exactly in its 32-bit tensors. Choose another format for this model.")
    if blob == "int32":
        return np.ascontiguousarray(array, np.int32).view(np.float32)
    return np.ascontiguousarray(array, np.float32)


class NCNNSession:
    """An ncnn Net behind the Session protocol."""

    def __init__(self, path: Path, threads: int | None, precision: str | None):
        binary, io_file = companion_paths(path)
        self.inputs, self.outputs, declared, self._blobs = _read_io(io_file)
        fp16 = (precision or declared) == "fp16"
        self.execution_precision = "fp16" if fp16 and "fp16" in read_profile().flags else "fp32"
        self._net: Any = _ncnn().Net()
        self._net.opt = _options(threads, fp16)
        if self._net.load_param(str(path)) != 0 or self._net.load_model(str(binary)) != 0:
            raise ModelLoadError(f"ncnn cannot load {path} with {binary.name}: the files are truncated, corrupt or "
                                 "from another model. Re-convert it.")
        self._check_blobs(path)
        zeros = {s.name: np.zeros(s.shape, np.dtype(s.dtype)) for s in self.inputs}
        if not all(np.isfinite(o).all() for o in self.run(zeros)):
            raise ModelLoadError(f"{binary} gives NaN or infinite outputs on a zero input: its weights are corrupt "
                                 "or belong to another model. Re-convert it.")

    def _check_blobs(self, path: Path) -> None:
        ins, outs = set(self._net.input_names()), set(self._net.output_names())
        missing = [s.name for s in self.inputs if s.name not in ins] + [s.name for s in self.outputs if s.name not in outs]
        if missing:
            raise ModelLoadError(f"{path} has no blobs {missing} that its .json declares; re-convert the model.")

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._net is None:
            raise InferenceError("This NCNN session is closed.")
        check_feeds(self.inputs, feeds)
        ncnn = _ncnn()
        held = [_as_blob(s, feeds[s.name][0], blob) for s, blob in zip(self.inputs, self._blobs)]
        # ncnn's own copy: a first layer that works in place (Abs, x*2) on a Mat borrowing numpy's memory
        # segfaults in ncnn (its refcount is null), and the copy outlives the arrays.
        mats = [ncnn.Mat(a).clone() for a in held]
        with self._net.create_extractor() as ex:
            for spec, mat in zip(self.inputs, mats):
                ex.input(spec.name, mat)
            outs = []
            for spec in self.outputs:
                ret, mat = ex.extract(spec.name)
                if ret != 0:
                    raise InferenceError(f"ncnn could not compute output '{spec.name}' (error {ret}).")
                outs.append(self._shaped(np.array(mat), spec))
        return outs

    @staticmethod
    def _shaped(out: np.ndarray, spec: TensorSpec) -> np.ndarray:
        if out.size != int(np.prod(spec.shape)):
            raise InputError(f"ncnn's output '{spec.name}' has {out.size} values where {list(spec.shape)} holds "
                             f"{int(np.prod(spec.shape))}; the model and its .json do not agree. Re-convert it.")
        return out.astype(np.float32, copy=False).reshape(spec.shape)

    def close(self) -> None:
        self._net = None


class NCNNBackend(Backend):
    name = "ncnn"
    formats = ("ncnn",)
    suffixes = {".param": "ncnn"}
    modules = ("ncnn",)
    extra = "ncnn"
    precision_preference = ("int8", "fp16", "fp32")
    # What Ultralytics measures fastest on a Raspberry Pi 5 beside OpenVINO; behind ORT/OpenVINO on x86.
    device_rank = {"rpi": 1, "arm": 1, "android": 21, "x86": 32, "jetson": 32, "nvidia": 42}

    def installed(self) -> tuple[bool, str]:
        try:
            ncnn = _ncnn()
        except ImportError as exc:
            return False, f"'ncnn' is not installed ({exc}); pip install 'edgesdk[{self.extra}]'"
        return True, getattr(ncnn, "__version__", "?")

    def load(self, path: Path, threads: int | None = None, **options: Any) -> NCNNSession:
        with open(path, "rb") as f:
            head = f.read(16)
        if not head.startswith(PARAM_MAGIC.encode()):
            raise ModelLoadError(f"{path} is not an ncnn param file (it does not start with {PARAM_MAGIC}); it may "
                                 "be truncated or another format. Re-convert it.")
        return NCNNSession(path, threads, options["precision"])


BACKEND = NCNNBackend()
