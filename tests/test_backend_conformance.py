"""The backend conformance suite: every registered backend, on the tiny CNN's artifacts, must
  - give the source model's outputs (fp32 artifact, 1e-4),
  - raise InputError for a wrong input name, shape or dtype,
  - survive close() twice, and raise an EdgeSDKError (not crash) when run after close,
  - raise ModelLoadError for a truncated and for a garbage file,
  - give each of several threads its own results, identical to sequential runs,
  - on an artifact converted with dynamic_batch=True: run batches of 1, 3 and 5 with the source's
    outputs where it claims `dynamic_batch`, else refuse a batch other than the artifact's with InputError,
  - on a model that returns (tensor, {dict with a list}) converted with outputs= picking three of them:
    return exactly those, by name and in the order asked, with the source's values.
A new backend passes these, or lists the cases it cannot pass in `Backend.conformance_skips` with the
reason. And every converter: each precision it declares yields an artifact that a backend (or its
declared proxy) measured, with no parity problem."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.backends import adapt, backends
from edgesdk.conversion.formats import converters
from edgesdk.core.bundle import load_bundle
from edgesdk.core.errors import EdgeSDKError, InputError, ModelLoadError
from tests.conftest import smooth_batch
from tests.models import tiny_cnn

CASES = ("outputs", "bad_inputs", "close", "corrupt_files", "threads", "dynamic_batch", "structured_outputs")
PICKED = ["feats.1", "output0", "scores"]  # outputs= for the structured model: out of forward's order


def _fp32_artifact(bundle, backend):
    """The backend's own fp32 artifact in the every-format bundle (its first format that has one)."""
    for fmt in backend.formats:
        for art in bundle.artifacts:
            if art.format == fmt and art.precision in ("fp32", "fp16"):
                return art
    return None


@pytest.fixture(params=[b.name for b in backends()])
def backend(request):
    b = next(b for b in backends() if b.name == request.param)
    ok, why = b.available()
    if not ok:
        if b.needs_hardware:  # hardware this machine lacks: a skip that names it
            pytest.skip(f"{b.name} needs {b.needs_hardware}: {why[:120]}")
        pytest.fail(f"backend {b.name} is not available: {why}")
    return b


def _case(backend, case):
    if case in backend.conformance_skips:
        pytest.skip(f"{backend.name} skips '{case}': {backend.conformance_skips[case]}")


def _open(backend, bundle, art, path=None):
    return backend.open(path or bundle.path / art.file, precision=art.precision)


@pytest.fixture(scope="session")
def dynamic_bundle(tmp_path_factory) -> Path:
    """The tiny CNN, converted with a dynamic batch to every format a registered backend runs."""
    on_hardware = {f for b in backends() if b.needs_hardware for f in b.formats}
    targets = sorted({f for b in backends() for f in b.formats} & {c.name for c in converters()} - on_hardware)
    out = tmp_path_factory.mktemp("dynamic") / "tiny"
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=targets, precisions=["fp32"], out=out,
                    dynamic_batch=True)
    return out


class Structured(torch.nn.Module):
    """Ultralytics' eval layout in small: (predictions, {"boxes", "scores", "feats": [two maps]})."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> tuple:
        f = torch.relu(self.conv(x))
        p = self.head(f).flatten(2)
        return p, {"boxes": p[:, :4], "scores": torch.sigmoid(p[:, 4:]),
                   "feats": [f, torch.nn.functional.avg_pool2d(f, 2)]}


@pytest.fixture(scope="session")
def structured_bundle(tmp_path_factory) -> Path:
    """Structured, converted to every format a registered backend runs, keeping three outputs by name."""
    on_hardware = {f for b in backends() if b.needs_hardware for f in b.formats}
    targets = sorted({f for b in backends() for f in b.formats} & {c.name for c in converters()} - on_hardware)
    out = tmp_path_factory.mktemp("structured") / "det"
    edgesdk.convert(Structured().eval(), torch.zeros(1, 3, 16, 16), targets=targets, precisions=["fp32"], out=out,
                    outputs=PICKED, strict=True)
    return out


@pytest.mark.parametrize("case", CASES)
def test_backend_conforms(backend, every_format, case, tmp_path, request):
    _case(backend, case)
    if case in ("dynamic_batch", "structured_outputs"):
        every_format = request.getfixturevalue({"dynamic_batch": "dynamic_bundle",
                                                "structured_outputs": "structured_bundle"}[case])
    bundle = load_bundle(every_format)
    art = _fp32_artifact(bundle, backend)
    assert art is not None, f"the every-format bundle has no artifact {backend.name} runs"
    globals()[f"_check_{case}"](backend, bundle, art, tmp_path)


def _check_outputs(backend, bundle, art, tmp_path):
    x = smooth_batch(2, (3, 32, 32), seed=7)
    session = adapt(_open(backend, bundle, art), bundle.inputs, bundle.outputs, art.io)
    with torch.no_grad():
        ref = tiny_cnn()(torch.from_numpy(x)).numpy()
    for i in range(2):
        out = session.run({"input": x[i:i + 1]})
        assert len(out) == 1 and out[0].dtype == np.float32
        np.testing.assert_allclose(out[0], ref[i:i + 1], atol=1e-4)
    session.close()


def _check_bad_inputs(backend, bundle, art, tmp_path):
    session = _open(backend, bundle, art)
    spec = session.inputs[0]
    x = np.zeros(spec.concrete_shape(), np.float32)
    with pytest.raises(InputError):
        session.run({"not_an_input": x})
    with pytest.raises(InputError):
        session.run({spec.name: x[..., :-1]})  # one column short
    with pytest.raises(InputError):
        session.run({spec.name: x.astype(np.float64)})
    assert session.run({spec.name: x})[0].shape[-1] == 10  # and it still works after them
    session.close()


def _check_close(backend, bundle, art, tmp_path):
    session = _open(backend, bundle, art)
    spec = session.inputs[0]
    session.close()
    session.close()
    with pytest.raises(EdgeSDKError):
        session.run({spec.name: np.zeros(spec.concrete_shape(), np.float32)})


def _check_corrupt_files(backend, bundle, art, tmp_path):
    src = bundle.path / art.file
    data = src.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "header only": data[:64], "tail cut": data[:-16],
               "garbage": np.random.default_rng(0).bytes(len(data))}
    for kind, content in damaged.items():  # MNN once raised a raw TypeError on a truncated file
        folder = tmp_path / kind.replace(" ", "-")
        folder.mkdir()
        dst = folder / src.name
        for companion in art.companions:  # e.g. OpenVINO's .bin beside the .xml
            shutil.copy(bundle.path / companion, folder / Path(companion).name)
        dst.write_bytes(content)
        try:
            session = backend.open(dst, precision=art.precision)
        except ModelLoadError:
            continue
        # A cut that leaves a loadable model (a tail of padding) must still run or fail as an EdgeSDKError.
        try:
            session.run({s.name: np.zeros(s.concrete_shape(), np.float32) for s in session.inputs})
        except EdgeSDKError:
            pass
        finally:
            session.close()
        assert kind == "tail cut", f"{backend.name} loaded a {kind} file"


def _check_threads(backend, bundle, art, tmp_path):
    session = adapt(_open(backend, bundle, art), bundle.inputs, bundle.outputs, art.io)
    inputs = [smooth_batch(1, (3, 32, 32), seed=300 + i) for i in range(4)]
    expected = [session.run({"input": x})[0] for x in inputs]

    def worker(i: int) -> bool:
        return all(np.array_equal(session.run({"input": inputs[i]})[0], expected[i]) for _ in range(15))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(worker, range(4)))
    session.close()


def _check_dynamic_batch(backend, bundle, art, tmp_path):
    assert not isinstance(bundle.inputs[0].shape[0], int), bundle.inputs  # the manifest declares the batch dynamic
    session = adapt(_open(backend, bundle, art), bundle.inputs, bundle.outputs, art.io)
    try:
        for n in (1, 3, 5):
            x = smooth_batch(n, (3, 32, 32), seed=40 + n)
            if n > 1 and not backend.dynamic_batch:
                with pytest.raises(InputError, match="shape"):
                    session.run({"input": x})
                continue
            with torch.no_grad():
                ref = tiny_cnn()(torch.from_numpy(x)).numpy()
            out = session.run({"input": x})[0]
            assert out.shape == (n, 10)
            np.testing.assert_allclose(out, ref, atol=1e-4)
    finally:
        session.close()


def _check_structured_outputs(backend, bundle, art, tmp_path):
    assert [o.name for o in bundle.outputs] == PICKED
    x = smooth_batch(1, (3, 16, 16), seed=5)
    with torch.no_grad():
        pred, extra = Structured().eval()(torch.from_numpy(x))
    want = {"feats.1": extra["feats"][1], "output0": pred, "scores": extra["scores"]}
    with edgesdk.Runtime(bundle.path, backend=backend.name, artifact=art.id) as rt:
        got = rt.run_dict(x)
        assert list(got) == PICKED
        for name in PICKED:
            np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-4, err_msg=name)
        assert list(rt.run_dict(x, outputs=["scores", "output0"])) == ["scores", "output0"]


@pytest.mark.parametrize("converter", [c.name for c in converters()])
def test_every_declared_precision_is_made_and_checked(converter, tmp_path, image_folder, tiny_preprocess):
    conv = next(c for c in converters() if c.name == converter)
    wanted = list(conv.precisions)
    if converter == "ncnn" and not _have_ncnn_tools():  # tools, not hardware: their absence is its own test
        wanted.remove("int8")  # (test_mobile: NCNN INT8 without them is a clear error)
    bundle = edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=[converter],
                             precisions={converter: wanted}, calib=image_folder,
                             preprocess=tiny_preprocess, out=tmp_path / converter, options={"onnx_float_nodes": []})
    made = {a.precision for a in bundle.artifacts if a.format == converter}
    assert made == set(wanted)
    for art in bundle.artifacts:
        assert art.parity.measured is True and not art.parity.problems, (art.id, art.parity)
        assert art.parity.samples > 0


def _have_ncnn_tools() -> bool:
    from edgesdk.conversion.formats.ncnn import int8_tools
    from edgesdk.core.errors import BackendUnavailable

    try:
        return bool(int8_tools())
    except BackendUnavailable:
        return False


def test_a_closed_runtime_lets_its_session_go(every_format):
    """After close(), nothing holds the backend's session (and its model): OpenVINO's request pool kept its
    compiled model through a bound factory, and the Runtime through its bound run method, so a closed
    Runtime stayed 40 MB large until it was garbage (benchmarks/memory_cycles.py has the RSS figures)."""
    import gc
    import weakref

    import edgesdk
    from edgesdk.backends import inner_session

    bundle = edgesdk.load_bundle(every_format)
    checked = set()
    for art in bundle.artifacts:
        for backend in backends():
            if art.format not in backend.formats or not backend.available()[0]:
                continue
            rt = edgesdk.Runtime(every_format, artifact=art.id, backend=backend.name)
            session = weakref.ref(inner_session(rt._session))
            rt.close()
            gc.collect()
            assert session() is None, (art.id, backend.name, gc.get_referrers(session()))
            with pytest.raises(EdgeSDKError, match="closed"):
                rt.run(np.zeros((1, 3, 32, 32), np.float32))
            checked.add(backend.name)
    assert {"onnxruntime", "openvino", "tflite"} <= checked


def test_memory_is_handed_back_without_glibc(monkeypatch):
    """malloc_trim is glibc's: on musl or Android (no such symbol, or no libc.so.6) closing skips it quietly."""
    import ctypes

    from edgesdk.running import runtime

    class NoTrim:
        def __init__(self, name):
            if name == "libc.so.6":
                raise OSError("libc.so.6: cannot open shared object file")

    for fake in (NoTrim, lambda name: object()):  # no libc.so.6; a libc without malloc_trim
        monkeypatch.setattr(ctypes, "CDLL", fake)
        monkeypatch.setattr(runtime, "_malloc_trim", None)
        runtime.release_freed_memory()
        assert runtime._malloc_trim is False
