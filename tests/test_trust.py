"""The parity gate, hostile bundles and files, leftovers, loaders and typed errors (issue: numbers you
can trust). Each test reproduces one way edgesdk used to accept garbage or crash, on real parts."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgesdk
from edgesdk.backends import get_backend, io_problems
from edgesdk.conversion.parity import Tolerance, compare
from edgesdk.conversion.pipeline import ParityCheck
from edgesdk.core.bundle import clean_stale_stages, load_bundle, staged_dir
from edgesdk.core.errors import ConversionError, InputError, ModelLoadError, UsageError
from edgesdk.core.records import ArtifactIO
from tests.conftest import smooth_batch
from tests.models import tiny_cnn
from tests.test_cli import cli

ROOT = Path(__file__).resolve().parent.parent


def exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


class BreaksWhenExported(nn.Module):
    """Right in eager mode; in the exported graph, output 0 turns NaN and output 1 changes shape."""

    def __init__(self, nan: bool = True, reshape: bool = True):
        super().__init__()
        self.net, self.nan, self.reshape = tiny_cnn(), nan, reshape

    def forward(self, x):
        y = self.net(x)
        z = y * 2
        if exporting():
            if self.nan:
                y = y * float("nan")
            if self.reshape:
                z = z.reshape(2, 5)
        return y, z


# -- the parity gate -----------------------------------------------------------------------------

def test_fp32_with_nan_and_wrong_shape_is_refused_with_every_problem(tmp_path):
    out = tmp_path / "broken"
    with pytest.raises(ConversionError) as err:
        edgesdk.convert(BreaksWhenExported(), torch.zeros(1, 3, 32, 32), targets=["onnx"], out=out)
    message = str(err.value)
    assert "NaN or infinite" in message and "shape [2, 5]" in message and "[1, 10]" in message, message
    assert not out.exists() and not list(tmp_path.glob(".broken.*"))  # nothing written, nothing left


def test_nan_alone_is_refused_although_max_drops_nan(tmp_path):
    with pytest.raises(ConversionError, match="NaN or infinite"):
        edgesdk.convert(BreaksWhenExported(reshape=False), torch.zeros(1, 3, 32, 32), targets=["onnx"],
                        out=tmp_path / "nan")


def test_compare_flags_count_shape_and_nonfinite():
    ref = [[np.ones((1, 4), np.float32), np.ones((1, 2), np.float32)]]
    assert compare(ref, [[np.ones((1, 4))]]).problems == ["1 output(s) where the source has 2"]
    bad = compare(ref, [[np.full((1, 4), np.nan), np.ones((1, 2))]], names=["a", "b"])
    assert bad.problems == ["output 'a' has 4 NaN or infinite values"]
    assert not Tolerance().accepts("fp32", bad)[0] and not Tolerance().accepts("int8", bad)[0]
    reshaped = compare(ref, [[np.ones((4, 1)), np.ones((1, 2))]], names=["a", "b"])
    assert reshaped.problems == ["output 'a' has shape [4, 1]; the source's is [1, 4]"]


def test_output_names_are_checked(tmp_path, tiny_bundle):
    """An artifact whose output is called something else than the source's (and than its converter
    declared) is a problem; a name the converter declared (onnx2tf's 'output_0') is not."""
    import onnx

    model = onnx.load(str(tiny_bundle / "model.onnx"))
    model.graph.output[0].name = "logits"
    model.graph.node[-1].output[0] = "logits"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    session = get_backend("onnxruntime").open(tmp_path / "renamed.onnx")
    bundle = load_bundle(tiny_bundle)
    problems = io_problems(session, bundle.inputs, bundle.outputs, ArtifactIO())
    assert problems and "output names ['logits']" in problems[0]
    assert io_problems(session, bundle.inputs, bundle.outputs, ArtifactIO(output_names=["logits"])) == []


def test_unmeasured_parity_is_marked_and_never_auto_picked(tmp_path, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    art = edgesdk.core.bundle.Artifact(file="model.rknn", format="rknn", precision="int8")  # no backend runs it
    check = ParityCheck(bundle_source(bundle), [], [], "none", None, None)
    assert check.check(art, tmp_path / "model.rknn", lambda m: None) == []
    assert art.parity.measured is False and "no backend" in art.parity.reason
    assert Tolerance().accepts("int8", art.parity) == (False, f"parity not measured ({art.parity.reason})")
    # A bundle whose INT8 artifact was never checked: auto passes it over, naming it explicitly runs it.
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "edgesdk.json").read_text())
    for a in m["artifacts"]:
        if a["precision"] == "int8":
            a["parity"] = {"measured": False, "reason": "no backend that runs onnx was installed at conversion"}
            a["latency_ms"] = {k: 0.001 for k in a["latency_ms"]}  # and recorded as the fastest by far
    (b / "edgesdk.json").write_text(json.dumps(m))
    with edgesdk.Runtime(b) as rt:
        assert rt.artifact.precision != "int8"
        assert any("onnx-int8: parity not measured" in s for s in rt.skipped)
    with edgesdk.Runtime(b, precision="int8") as rt:
        assert rt.artifact.id == "onnx-int8"


def bundle_source(bundle):
    class Spec:  # the source's I/O specs are all ParityCheck reads before it finds no runner
        inputs, outputs = bundle.inputs, bundle.outputs
    return Spec()


def _yolo_output(rng, boxes, classes, num_classes=3, anchors=200):
    """A raw YOLOv8 output [1, 4+nc, N]: pixel boxes (cx, cy, w, h) everywhere, class scores high only
    on the anchors of real objects."""
    out = np.zeros((1, 4 + num_classes, anchors), np.float32)
    out[0, :4] = rng.uniform(20, 600, (4, anchors))
    out[0, 4:] = rng.uniform(0, 0.05, (num_classes, anchors))
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        out[0, :4, i] = box
        out[0, 4 + cls, i] = 0.9
    return out


def test_detector_tolerance_is_judged_on_detections_not_cosine():
    rng = np.random.default_rng(0)
    boxes = [(100, 100, 50, 60), (300, 200, 80, 40), (500, 400, 60, 60)]
    reference = [[_yolo_output(rng, boxes, [0, 1, 2])] for _ in range(4)]
    zeroed = [[r[0].copy()] for r in reference]
    for z in zeroed:
        z[0][0, 4:] = 0.0  # every class score gone: no detections at all
    blind = compare(reference, zeroed)  # no task: the old cosine judgement
    assert blind.cosine > 0.999 and Tolerance().accepts("int8", blind)[0]
    judged = compare(reference, zeroed, task="detection", num_classes=3)
    assert judged.detection.recall == 0.0 and judged.detection.reference_detections == 12
    ok, why = Tolerance().accepts("int8", judged)
    assert not ok and "recall 0.0%" in why
    shifted = [[r[0].copy()] for r in reference]
    for c in shifted:
        c[0][0, :4] += 0.5  # half a pixel off everywhere: the same detections
    same = compare(reference, shifted, task="detection", num_classes=3)
    assert (same.detection.recall, same.detection.precision) == (1.0, 1.0)
    assert Tolerance().accepts("int8", same)[0]


def test_other_outputs_are_judged_per_output():
    ref = [[np.ones((1, 100), np.float32) * np.arange(100), np.ones((1, 3), np.float32)]]
    cand = [[ref[0][0].copy(), -ref[0][1]]]  # the big output is perfect, the small one is reversed
    parity = compare(ref, cand, task="other")
    assert [o.cosine for o in parity.outputs] == pytest.approx([1.0, -1.0])
    assert not Tolerance().accepts("int8", parity)[0]


# -- hostile bundles -----------------------------------------------------------------------------

def _hostile(tmp_path, tiny_bundle, change):
    b = tmp_path / "hostile"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "edgesdk.json").read_text())
    m = change(m, b)
    (b / "edgesdk.json").write_text(m if isinstance(m, str) else json.dumps(m))
    return b


def _first_fp32(m):
    return next(a for a in m["artifacts"] if a["id"] == "onnx-fp32")


def _set(fn):
    def change(m, b):
        fn(m, b)
        return m
    return change


HOSTILE = {
    "parent path": _set(lambda m, b: _first_fp32(m).update(file="../../../etc/passwd")),
    "absolute path": _set(lambda m, b: _first_fp32(m).update(file=str(b / "model.onnx"))),
    "companion outside": _set(lambda m, b: _first_fp32(m).update(companions={"../model.bin": "0" * 64})),
    "empty sha256": _set(lambda m, b: _first_fp32(m).update(sha256="")),
    "no sha256": _set(lambda m, b: _first_fp32(m).pop("sha256")),
    "list": lambda m, b: [],
    "null": lambda m, b: None,
    "string": lambda m, b: "a manifest",
    "artifact as string": _set(lambda m, b: m.update(artifacts=["model.onnx"])),
    "artifacts as dict": _set(lambda m, b: m.update(artifacts={"onnx-fp32": _first_fp32(m)})),
    "deep nesting": lambda m, b: "[" * 100000 + "]" * 100000,
    "dtype float99": _set(lambda m, b: m["inputs"][0].update(dtype="float99")),
    "bad permutation": _set(lambda m, b: _first_fp32(m).update(io={"inputs": [[0, 5, 2, 1]]})),
    "not json": lambda m, b: "{\"schema_version\": 1,",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_is_a_model_load_error(tmp_path, tiny_bundle, case, capsys):
    b = _hostile(tmp_path, tiny_bundle, HOSTILE[case])
    with pytest.raises(ModelLoadError):
        edgesdk.Runtime(b, artifact="onnx-fp32")
    code, out, err = cli(capsys, "run", str(b), str(b / "edgesdk.json"))
    assert code == 1 and "error:" in err and "unexpected" not in err, err


def test_symlink_out_of_the_bundle_is_refused(tmp_path, tiny_bundle):
    """A model outside the bundle with the matching sha256, reached through a link: refused."""
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(tiny_bundle / "model.onnx", outside)
    b = tmp_path / "linked"
    shutil.copytree(tiny_bundle, b)
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to(outside)
    with pytest.raises(ModelLoadError, match="leads outside the bundle"):
        edgesdk.Runtime(b, artifact="onnx-fp32")


def test_bit_flip_with_an_emptied_hash_never_runs(tmp_path, tiny_bundle):
    b = _hostile(tmp_path, tiny_bundle, HOSTILE["empty sha256"])
    data = bytearray((b / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x40
    (b / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        edgesdk.Runtime(b, artifact="onnx-fp32")


# -- bare files: nothing to verify against, so say so --------------------------------------------

def _nan_weights(tiny_bundle, dest: Path) -> Path:
    """model.onnx with its largest weight tensor overwritten by NaN bit patterns (0xFF bytes)."""
    import onnx

    model = onnx.load(str(tiny_bundle / "model.onnx"))
    raw = max((t.raw_data for t in model.graph.initializer), key=len)
    data = (tiny_bundle / "model.onnx").read_bytes()
    at = data.index(raw)
    dest.write_bytes(data[:at] + b"\xff" * len(raw) + data[at + len(raw):])
    return dest


def test_bare_file_with_corrupt_weights_is_reported(tmp_path, tiny_bundle, caplog, capsys):
    bad = _nan_weights(tiny_bundle, tmp_path / "model.onnx")
    x = smooth_batch(1, (3, 32, 32), seed=3)
    with caplog.at_level("WARNING"), edgesdk.Runtime(bad) as rt:
        assert not rt.verified
        rt.run(x)
        rt.run(x)
    assert "bare model file" in caplog.text and caplog.text.count("NaN or infinite outputs") == 1
    assert rt.nonfinite_outputs == 2
    caplog.clear()
    with caplog.at_level("WARNING"), edgesdk.Runtime(bad):  # the same file again: announced once per process
        pass
    assert "bare model file" not in caplog.text
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(capsys, "run", str(bad), str(tmp_path / "x.npy"), "--json")
    assert code == 0 and json.loads(out)[0]["warning"].startswith("outputs hold NaN")
    code, out, err = cli(capsys, "bench", str(bad), "--runs", "3", "--warmup", "1", "--json", str(tmp_path / "r.json"))
    assert code == 0 and "returned NaN or infinite outputs" in err
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["nonfinite_outputs"] is True


# -- inputs and arguments ------------------------------------------------------------------------

def test_nonfinite_inputs_are_refused_unless_allowed(tiny_bundle):
    x = smooth_batch(1, (3, 32, 32), seed=4)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 0, 0] = np.inf
    for precision in ("fp32", "int8"):
        with edgesdk.Runtime(tiny_bundle, precision=precision) as rt:
            with pytest.raises(InputError, match="2 NaN or infinite values"):
                rt.run(x)
    with edgesdk.Runtime(tiny_bundle, precision="fp32", allow_nonfinite=True) as rt:
        assert rt.run(x).shape == (1, 10)


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path):
    from PIL import Image

    from edgesdk.core.images import preprocess_image

    gray = np.full((40, 40), 30000, np.uint16)  # 46% grey in 16 bits
    Image.fromarray(gray).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    x = preprocess_image(tmp_path / "g16.png", edgesdk.Preprocess(size=(32, 32), resize=None, mean=(0, 0, 0),
                                                                   std=(1, 1, 1)))
    assert x.shape == (1, 3, 32, 32) and np.allclose(x, 30000 / 65535, atol=1 / 255)


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "fast"}, "mode must be"), ({"threads": 10**6}, "threads must be"), ({"threads": 0}, "threads must be"),
])
def test_bad_runtime_arguments_are_typed_errors(tiny_bundle, kwargs, match):
    with pytest.raises(UsageError, match=match):
        edgesdk.Runtime(tiny_bundle, **kwargs)
    with pytest.raises(ValueError):  # still a ValueError for code that caught that
        edgesdk.Runtime(tiny_bundle, **kwargs)


def test_runtime_of_nothing_and_top_k(tiny_bundle):
    with pytest.raises(UsageError, match="path of a bundle"):
        edgesdk.Runtime(None)
    with pytest.raises(UsageError, match="at least 1"):
        edgesdk.top_k(np.arange(10.0), -3)
    with pytest.raises(UsageError, match="threads"):
        edgesdk.benchmark(tiny_bundle, threads=10**6)


def test_cli_empty_folder_and_negative_top_k(tmp_path, tiny_bundle, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, "run", str(tiny_bundle), str(tmp_path / "empty"))
    assert code == 1 and "holds no images" in err
    from apps import classify

    assert classify.main([str(tmp_path / "empty"), "--model", str(tiny_bundle)]) == 1
    np.save(tmp_path / "x.npy", smooth_batch(1, (3, 32, 32)))
    code, out, err = cli(capsys, "run", str(tiny_bundle), str(tmp_path / "x.npy"), "--top-k", "-3")
    assert code == 2 and "-3" in err
    code, out, err = cli(capsys, "run", str(tiny_bundle), str(tmp_path / "x.npy"), "--threads", str(10**6))
    assert code == 2


def test_output_location_is_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    # The source does not even exist: the output problem must be found first.
    with pytest.raises(ConversionError, match="is a file, not a folder"):
        edgesdk.convert(tmp_path / "missing.onnx", out=tmp_path / "file" / "bundle")
    code, out, err = cli(capsys, "convert", "--factory", "tests.models:tiny_cnn", "-o", str(tmp_path / "file" / "b"))
    assert code == 1 and "Cannot write" in err and "unexpected" not in err
    code, out, err = cli(capsys, "bench", str(tmp_path), "--json", str(tmp_path / "file" / "r.json"))
    assert code == 1 and "Cannot write" in err


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only filesystem (a tmpfs mounted ro): root, whom permission bits do not stop, meets the
    same refusal a user meets on a read-only card or a folder of someone else's."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"mounting a read-only tmpfs failed: {mounted.stderr}"
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_folder_fails_fast(read_only_folder, tmp_path, capsys):
    with pytest.raises(ConversionError, match="not writable"):
        edgesdk.convert(tmp_path / "missing.onnx", out=read_only_folder / "b")  # before the missing source
    code, out, err = cli(capsys, "convert", "--factory", "tests.models:tiny_cnn", "-o", str(read_only_folder / "b"))
    assert code == 1 and "Read-only file system" in err and "unexpected" not in err


# -- leftovers -----------------------------------------------------------------------------------

def test_killed_conversion_leaves_nothing_for_long(tmp_path):
    out = tmp_path / "b"
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom edgesdk.core.bundle import staged_dir\n"
            f"with staged_dir(Path({str(out)!r}), False) as stage:\n"
            "    (stage / 'model.onnx').write_bytes(b'0' * 100000)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120)
    assert result.returncode == -9
    left = list(tmp_path.glob(".b.partial-*"))
    assert len(left) == 1 and not out.exists()
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), out=out)
    assert out.is_dir() and not list(tmp_path.glob(".b.*"))


def test_a_live_conversions_stage_is_left_alone(tmp_path):
    out = tmp_path / "b"
    with staged_dir(out, False) as stage:
        assert clean_stale_stages(out) == [] and stage.exists()
        (stage / "edgesdk.json").write_text("{}")
    assert out.is_dir()


def test_a_crash_mid_replacement_restores_the_old_bundle(tmp_path, tiny_bundle):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    code = ("import os, signal, tempfile\nfrom pathlib import Path\n"
            f"out = Path({str(out)!r})\n"
            "old = Path(tempfile.mkdtemp(prefix=f'.b.old-{os.getpid()}-', dir=out.parent))\n"
            "os.replace(out, old / out.name)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == -9
    assert not out.exists()
    removed = clean_stale_stages(out)
    assert len(removed) == 1 and (out / "edgesdk.json").is_file() and load_bundle(out).artifacts


def test_force_swaps_the_bundle_in_one_step(tmp_path, tiny_bundle):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    (out / "stale.txt").write_text("from the old bundle")
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), out=out, force=True)
    assert not (out / "stale.txt").exists() and not list(tmp_path.glob(".b.*"))


# -- NMS ---------------------------------------------------------------------------------------

def test_nms_classes_never_suppress_each_other_across_the_image_edge():
    from edgesdk.tasks.yolo import nms

    # Boxes that cross the left/top edge (negative coordinates). With a per-class offset of max()+1 (=6
    # here), the class-1 box landed exactly on the class-0 box and suppressed it.
    boxes = np.array([[-100, -100, -10, -10], [-106, -106, -16, -16], [-30, -30, 5, 5]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]), iou_threshold=0.45)
    assert sorted(keep.tolist()) == [0, 1, 2]
    same_class = nms(boxes[:2], np.array([0.9, 0.8]), np.array([0, 0]), iou_threshold=0.45)
    assert same_class.tolist() == [0]  # same class, overlapping: one survives


# -- loaders: payloads never run ----------------------------------------------------------------

class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_export_with_payload(path: Path, marker: Path) -> Path:
    """A real torch.export archive whose pickled parts are replaced by a payload."""
    import zipfile

    program = torch.export.export(tiny_cnn(), (torch.zeros(1, 3, 32, 32),))
    clean = path.with_suffix(".clean.pt2")
    torch.export.save(program, str(clean))
    import pickle

    payload = pickle.dumps(Payload(marker), protocol=2)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith((".pt", ".pkl")) or "/data/constants" in item.filename \
                    or item.filename.endswith("data.pkl"):
                data = payload
            dst.writestr(item, data)
    return path


@pytest.mark.parametrize("kind", ["torchscript .pt", "whole-model .pth", "weights", "torch.export .pt2"])
def test_pickle_payloads_never_run(tmp_path, kind):
    from edgesdk.conversion.sources import load_source

    marker = tmp_path / "PWNED"
    if kind == "torchscript .pt":
        torch.save(Payload(marker), tmp_path / "m.pt")
        call = lambda: load_source(tmp_path / "m.pt", input_shape=(1, 3, 32, 32))  # noqa: E731
    elif kind == "whole-model .pth":
        torch.save({"model": Payload(marker)}, tmp_path / "m.pth")
        call = lambda: load_source(tmp_path / "m.pth", input_shape=(1, 3, 32, 32))  # noqa: E731
    elif kind == "weights":
        torch.save({"state_dict": Payload(marker)}, tmp_path / "w.pth")
        call = lambda: load_source(factory="tests.models:tiny_cnn", weights=tmp_path / "w.pth")  # noqa: E731
    else:
        _torch_export_with_payload(tmp_path / "m.pt2", marker)
        call = lambda: load_source(tmp_path / "m.pt2")  # noqa: E731
    with pytest.raises(ModelLoadError):
        call()
    assert not marker.exists()


def test_h5_lambda_layer_is_refused_and_never_runs(tmp_path):
    import keras

    from edgesdk.conversion.sources import load_source

    marker = tmp_path / "LAMBDA_RAN"
    where = str(marker)
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x * 2 + float(bool(open(where, "w"))) * 0)(inp)
    model = keras.Model(inp, out)
    marker.unlink()  # building the model called it once, here, on purpose
    model.save(tmp_path / "lambda.h5")
    with pytest.raises(ModelLoadError, match="Lambda"):
        load_source(tmp_path / "lambda.h5")
    assert not marker.exists()


def test_saved_model_with_file_writes_needs_trust(tmp_path, capsys):
    import tensorflow as tf

    from edgesdk.conversion.sources import load_source, saved_model_unsafe_ops

    marker = tmp_path / "WRITTEN"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def serve(self, x):
            tf.io.write_file(str(marker), tf.strings.as_string(tf.reduce_sum(x)))
            return {"y": x * 2.0}

    module = Writer()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    assert saved_model_unsafe_ops(tmp_path / "sm") == ["WriteFile"]
    with pytest.raises(ModelLoadError, match="WriteFile.*trust_source=True"):
        load_source(tmp_path / "sm")
    code, out, err = cli(capsys, "convert", str(tmp_path / "sm"), "-o", str(tmp_path / "b"))
    assert code == 1 and "--trust-source" in err and not marker.exists()
    source = load_source(tmp_path / "sm", trust_source=True)  # the user vouches for it: it runs
    assert source.outputs[0].shape == (1, 4) and marker.exists()
