"""The apps' fast paths keep their numbers: preprocessing against a plain reference implementation,
the letterbox written into the tensor, reduced JPEG decoding, inputs in the artifact's own layout, and
pipelined streams (order, errors, overlap, stopping)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgesdk
from edgesdk import Preprocess
from edgesdk.core.images import decode_size, load_image, preprocess_image
from edgesdk.stream import Frame, run_stream
from edgesdk.tasks.yolo import letterbox, letterbox_tensor
from tests.stats import below_noise

ONE_LEVEL = 1 / 255 + 1e-6  # one step of an 8-bit pixel, in [0, 1] units


def reference_preprocess(path: Path, pre: Preprocess, crop: str = "c") -> np.ndarray:
    """The preprocessing written the plain way: full decode, resize the short side, crop, then float
    arithmetic step by step (what edgesdk did before its one-resize, fused version)."""
    im = Image.open(path)
    im = im.convert("L" if pre.color == "GRAY" else "RGB")
    out_h, out_w = pre.size
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[pre.interpolation]
    if pre.resize:
        w, h = im.size
        scale = pre.resize / min(w, h)
        im = im.resize((max(out_w, round(w * scale)), max(out_h, round(h * scale))), resample)
        w, h = im.size
        left = {"c": (w - out_w) // 2, "tl": 0, "br": w - out_w}[crop]
        top = {"c": (h - out_h) // 2, "tl": 0, "br": h - out_h}[crop]
        im = im.crop((left, top, left + out_w, top + out_h))
    else:
        im = im.resize((out_w, out_h), resample)
    arr = np.asarray(im, dtype=np.float64) / 255.0
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    arr = arr[:, :, ::-1] if pre.color == "BGR" else arr
    arr = (arr - np.asarray(pre.mean)) / np.asarray(pre.std)
    arr = arr.transpose(2, 0, 1) if pre.layout == "NCHW" else arr
    return arr[None].astype(np.float32)


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos) -> list[Path]:
    """Two real photos (JPEG 512x512) and odd-sized PNG and JPEG scenes."""
    folder = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(3)
    odd = []
    for i, (h, w) in enumerate([(301, 457), (97, 64)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 3 + yy) % 256, (yy * 5) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        odd.append(folder / f"odd{i}.png")
        Image.fromarray(img).save(odd[-1])
        odd.append(folder / f"odd{i}.jpg")
        Image.fromarray(img).save(odd[-1], quality=90)
    return [photos[1] / "55.jpg", photos[1] / "57.jpg", *odd]


PREPROCESS = [
    Preprocess(size=(224, 224), resize=256),
    Preprocess(size=(224, 224), resize=256, layout="NHWC", color="BGR", interpolation="bicubic"),
    Preprocess(size=(100, 120), resize=None, layout="NHWC"),
    Preprocess(size=(64, 64), resize=80, color="GRAY", mean=(0.5,), std=(0.25,)),
    Preprocess(size=(32, 48), resize=40, interpolation="nearest", mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7)),
]


@pytest.mark.parametrize("pre", PREPROCESS, ids=lambda p: f"{p.layout}-{p.color}-{p.interpolation}-{p.resize}")
def test_preprocessing_matches_the_reference(images, pre):
    """One resize of the crop window and the fused normalisation give the step-by-step tensor, within
    one 8-bit level, in every layout, colour order and crop."""
    for path in images:
        for crop in ("c", "tl", "br") if pre.resize else ("c",):
            got = preprocess_image(path, pre, crop=crop)
            want = reference_preprocess(path, pre, crop)
            assert got.shape == want.shape and got.dtype == np.float32 and got.flags.c_contiguous
            levels = np.abs(got - want) * np.asarray(pre.std).min()
            assert levels.max() <= ONE_LEVEL, (path.name, crop, float(levels.max()))


def test_reduced_decode_keeps_the_size_it_needs(images):
    """A JPEG decodes at reduced scale but never below what the resize needs; a PNG decodes whole."""
    pre = Preprocess(size=(224, 224), resize=256)
    photo = load_image(images[0], "RGB", reduce_to=lambda w, h: decode_size(pre, w, h))
    assert photo.size == (256, 256)  # 512x512 at half scale
    small = Preprocess(size=(32, 32), resize=36)
    sizes = {}
    for path in images[2:]:
        full = Image.open(path).size
        sizes[path.name] = got = load_image(path, "RGB", reduce_to=lambda w, h: decode_size(small, w, h)).size
        need = decode_size(small, *full)
        assert got[0] >= need[0] and got[1] >= need[1]
        if path.suffix == ".png":
            assert got == full
    assert sizes["odd0.jpg"] == (58, 38)  # 457x301 at 1/8 still covers the 55x36 the resize needs
    x = preprocess_image(images[0], pre, reduced_decode=True)
    assert x.shape == (1, 3, 224, 224) and np.isfinite(x).all()


@pytest.mark.integration
def test_reduced_decode_keeps_the_classifier_answers(effnet_bundle, photos):
    """What the apps' reduced JPEG decode changes, measured: EfficientNet-Lite0's top-1 on the n=50 held-out
    photos against the exact decode (0.96-0.97 agreement here, every answer inside the exact top-5). The
    bars sit under the 95% Wilson intervals of those figures (tests/stats.py): 0.80 under 0.96's [0.87,
    0.99], 0.90 under 1.0's [0.93, 1]."""
    files = sorted(photos[1].glob("*.jpg"))
    with edgesdk.Runtime(effnet_bundle, artifact="onnx-fp32", backend="onnxruntime") as rt:
        exact = np.concatenate([rt.run(preprocess_image(f, rt.preprocess)) for f in files])
        reduced = np.concatenate([rt.run(preprocess_image(f, rt.preprocess, reduced_decode=True)) for f in files])
    agreement = float((exact.argmax(1) == reduced.argmax(1)).mean())
    in_top5 = np.mean([r in row for r, row in zip(reduced.argmax(1), np.argsort(-exact, 1)[:, :5])])
    assert len(files) == 50
    assert agreement >= below_noise(0.80, 0.96, 50) and in_top5 >= below_noise(0.90, 1.0, 50), (agreement, in_top5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_letterbox_tensor_is_letterbox_over_255(layout):
    rng = np.random.default_rng(0)
    for shape in [(256, 256), (480, 640), (300, 200), (17, 500)]:
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        for size in [(256, 256), (320, 320), (640, 480)]:
            canvas, lb = letterbox(img, size)
            want = canvas.astype(np.float32) / 255.0
            want = want.transpose(2, 0, 1)[None] if layout == "NCHW" else want[None]
            for image in (img, Image.fromarray(img)):
                got, lb2 = letterbox_tensor(image, size, layout)
                assert lb2 == lb and got.shape == want.shape and got.flags.c_contiguous
                assert np.abs(got - want).max() < 1e-6
    with pytest.raises(edgesdk.InputError, match="HxWx3"):
        letterbox_tensor(np.zeros((10, 10), np.uint8), (32, 32))


def test_inputs_in_the_artifacts_own_layout(every_format):
    """A TFLite artifact computes in NHWC: run() takes NCHW (the contract) or NHWC (no transpose), same
    answer; a shape in neither layout is still an InputError."""
    with edgesdk.Runtime(every_format, artifact="tflite-fp32") as rt:
        assert rt.inputs[0].layout == "NCHW" and rt.native_inputs[0].layout == "NHWC"
        assert rt.native_inputs[0].shape == (1, 32, 32, 3)
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        np.testing.assert_allclose(rt.run(nhwc), rt.run(x), rtol=0, atol=1e-6)
        feeds = rt._session._inner_feeds({rt.inputs[0].name: nhwc})  # noqa: SLF001 - no copy is the point
        assert next(iter(feeds.values())) is nhwc
        with pytest.raises(edgesdk.InputError, match="expects"):
            rt.run(np.zeros((1, 32, 3, 32), np.float32))
    with edgesdk.Runtime(every_format, artifact="onnx-fp32") as rt:
        assert rt.native_inputs == rt.inputs


# -- streams ------------------------------------------------------------------------------------------

def _steps(log: list[tuple[str, int, float, float]], fail_at: int | None = None, bad: set[int] = frozenset(),
           delay: float = 0.0, error: type[Exception] = RuntimeError):
    rng = np.random.default_rng(0)
    jitter = rng.uniform(0, delay, 1000)

    def timed(name, fn):
        def step(f: Frame) -> None:
            t0 = time.perf_counter()
            time.sleep(jitter[(f.index * 7 + len(name)) % 1000])
            fn(f)
            log.append((name, f.index, t0, time.perf_counter()))
        return step

    def decode(f):
        if f.index in bad:
            raise edgesdk.InputError(f"frame {f.index} is unreadable")
        f.value = f.source * 10

    def infer(f):
        if f.index == fail_at:
            raise error("the backend broke")
        f.value += 1

    def post(f):
        f.result = f.value

    return [[("decode", timed("decode", decode))], [("infer", timed("infer", infer))], [("post", timed("post", post))]]


def test_stream_results_in_order_with_errors_in_place():
    items = [(f"item{i}", i) for i in range(40)]
    with edgesdk.LatencyLog(inference_stages=("infer",)) as latency:
        frames = list(run_stream(items, _steps([], bad={3, 17}, delay=0.004), latency))
    assert [f.index for f in frames] == list(range(40))
    assert [f.result for f in frames if not f.error] == [i * 10 + 1 for i in range(40) if i not in (3, 17)]
    assert [f.index for f in frames if f.error] == [3, 17] and "unreadable" in frames[3].error
    assert "infer" not in frames[3].stages_ms  # later stages skipped for a bad frame
    summary = latency.summary()
    assert summary["samples"] == 40 and summary["stages"]["infer"]["count"] == 38
    assert summary["per_second"] > 0 and 0 <= summary["share_outside_infer"] < 1
    assert all(f.latency_ms >= sum(f.stages_ms.values()) - 1e-6 for f in frames)


def test_pipelined_and_sequential_streams_agree_and_the_stages_overlap():
    items = [(f"item{i}", i) for i in range(12)]
    timeline: list[tuple[str, int, float, float]] = []
    pipelined = [(f.name, f.result) for f in run_stream(items, _steps(timeline, delay=0.02))]
    sequential = [(f.name, f.result) for f in run_stream(items, _steps([], delay=0.02), pipelined=False)]
    assert pipelined == sequential
    spans = {(name, i): (t0, t1) for name, i, t0, t1 in timeline}
    # Frame N+1 decodes while frame N is in inference: the point of the pipeline.
    overlapping = [i for i in range(11) if spans[("decode", i + 1)][0] < spans[("infer", i)][1]
                   and spans[("infer", i)][0] < spans[("decode", i + 1)][1]]
    assert overlapping, "no decode ever ran beside an inference"


@pytest.mark.parametrize("pipelined", [True, False])
@pytest.mark.parametrize("error", [RuntimeError, edgesdk.InputError])
def test_a_failing_stage_stops_the_stream_and_its_threads(error, pipelined):
    """Past the first group, even an InputError is the stream's (a model whose output post-processing
    cannot read fails every frame), not one item's: the stream stops and raises it."""
    before = threading.active_count()
    got = []
    with pytest.raises(error, match="the backend broke"):
        for frame in run_stream([(str(i), i) for i in range(30)], _steps([], fail_at=5, error=error),
                                pipelined=pipelined):
            got.append(frame.index)
    assert got == [0, 1, 2, 3, 4]
    _threads_settle(before)


def test_leaving_a_stream_early_stops_its_threads():
    before = threading.active_count()
    stream = run_stream(((str(i), i) for i in range(10_000)), _steps([]))
    assert [next(stream).index for _ in range(3)] == [0, 1, 2]
    stream.close()
    _threads_settle(before)


def _threads_settle(before: int) -> None:
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
