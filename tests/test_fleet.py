"""Sweeps and fleet benchmarks on a real Ray cluster on this machine: a head and two worker nodes
with different device-class resources (one offers ONNX Runtime only, like a device without the other
runtimes), each test bounded in time and the cluster torn down after. The sweep is compared with the
same sweep run sequentially in this process, the reference."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from edgesdk.core.errors import UsageError
from edgesdk.fleet.cluster import CONVERTER, BenchSettings, fleet_bench, is_loopback, loopback_only
from edgesdk.fleet.sweep import load_spec, sweep
from tests.loopback import assert_loopback_only

TARGETS = ["onnx", "openvino", "tflite"]
PRECISIONS = ["fp32", "int8"]
CELL_BOUND_S = 900  # a test that runs longer than this fails instead of hanging CI


@pytest.fixture
def time_bound():
    """Fail the test (TimeoutError in the main thread) if it runs past CELL_BOUND_S."""
    def expire(*_):
        raise TimeoutError(f"test ran past {CELL_BOUND_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(CELL_BOUND_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def start_cluster(workers: dict[str, dict]) -> Cluster:
    """A head (one conversion slot, no device class) and one node per entry: {class: {converter, env}},
    every service on 127.0.0.1 (call inside loopback_only(), which must stay open while it runs)."""
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "resources": {CONVERTER: 1}})
    for cls, opts in workers.items():
        resources = {f"edgesdk/{cls}": 1, **({CONVERTER: 1} if opts.get("converter") else {})}
        opts["node"] = cluster.add_node(num_cpus=1, resources=resources, env_vars=opts.get("env", {}))
    cluster.wait_for_nodes()
    return cluster


@pytest.fixture(scope="module")
def cluster():
    with loopback_only():
        c = start_cluster({"lab-x86": {"converter": True}, "lab-ort": {"env": {"EDGESDK_BACKENDS": "onnxruntime"}}})
        yield c
        c.shutdown()


def test_test_clusters_listen_on_loopback_only(cluster):
    """Every socket of the head, its nodes and their workers is on 127.0.0.1, and none talks elsewhere."""
    assert is_loopback(cluster.address)
    assert_loopback_only()


def _broken_onnx(path: Path) -> Path:
    """An ONNX model with an operator no runtime has: its cell must fail and be recorded, not stop the sweep."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("MysteryOp", ["input"], ["output"], domain="com.example")
    graph = helper.make_graph([node], "broken", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                              ir_version=8)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory, image_folder: Path) -> dict:
    """Spec pieces: calibration images, a labelled CSV whose labels are the source's own answers on 14
    of 20 images and wrong on 6 (so the source scores 0.70), class names, and the broken model."""
    import torch

    from edgesdk.core.images import Preprocess, list_images, preprocess_image
    from tests.models import tiny_cnn

    root = tmp_path_factory.mktemp("sweep-inputs")
    pre = Preprocess(size=(32, 32), resize=36)
    files = list_images(image_folder)[:20]
    model = tiny_cnn()
    with torch.no_grad():
        answers = [int(model(torch.from_numpy(preprocess_image(f, pre))).argmax()) for f in files]
    labels = [a if i % 10 < 7 else (a + 1) % 10 for i, a in enumerate(answers)]
    (root / "labelled.csv").write_text("file,label\n" + "".join(f"{f},class{c}\n" for f, c in zip(files, labels)))
    (root / "classes.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    return {"calib": str(image_folder), "validate": str(root / "labelled.csv"), "labels": str(root / "classes.txt"),
            "broken": str(_broken_onnx(root / "broken.onnx")), "preprocess": {"size": [32, 32], "resize": 36}}


def spec(inputs: dict, out: Path, factory: str = "tests.models:tiny_cnn", targets=TARGETS, broken: bool = True) -> dict:
    models = [{"name": "tiny", "factory": factory, "calib": inputs["calib"], "validate": inputs["validate"],
               "labels": inputs["labels"], "preprocess": inputs["preprocess"], "task": "classification"}]
    if broken:
        models.append({"name": "broken", "file": inputs["broken"], "targets": ["onnx"], "precisions": ["fp32"]})
    return {"out": str(out), "targets": list(targets), "precisions": PRECISIONS, "bench": {"runs": 5, "warmup": 1},
            "models": models}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sweep_inputs) -> dict:
    """The sweep run sequentially in this process (no Ray)."""
    return sweep(spec(sweep_inputs, tmp_path_factory.mktemp("seq") / "out"), sequential=True)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, sweep_inputs, cluster) -> dict:
    return sweep(spec(sweep_inputs, tmp_path_factory.mktemp("ray") / "out"), address=cluster.address)


def _cells(results: dict, model: str = "tiny") -> dict[str, dict]:
    return {c["key"]: c for c in results["models"][model]["cells"]}


def assert_same_cells(a: dict, b: dict, keys=None) -> None:
    """Same status and, per artifact, the same parity figures and size as the reference."""
    ca, cb = _cells(a), _cells(b)
    for key in keys or ca:
        assert ca[key]["status"] == cb[key]["status"] == "ok", (key, ca[key].get("error"), cb[key].get("error"))
        (x,), (y,) = ca[key]["artifacts"], cb[key]["artifacts"]
        assert x["id"] == y["id"] and x["size_bytes"] == pytest.approx(y["size_bytes"], rel=0.01)
        for metric in ("max_abs", "mean_abs", "cosine", "top1_agreement", "samples"):
            assert x["parity"].get(metric) == pytest.approx(y["parity"].get(metric), rel=1e-5, abs=1e-7), (key, metric)


def test_sweep_on_cluster_matches_sequential(time_bound, swept, reference):
    assert_same_cells(swept, reference)
    assert set(_cells(swept)) == {f"tiny/{t}-{p}" for t in TARGETS for p in PRECISIONS}
    nodes = {c["node"] for c in _cells(swept).values()}
    assert len(nodes) >= 2, f"conversions all ran on one node: {nodes}"
    # The failing cell is recorded with its cause; the sweep went on.
    (broken,) = swept["models"]["broken"]["cells"]
    assert broken["status"] == "failed" and "MysteryOp" in broken["error"], broken
    assert swept["models"]["broken"]["bundle"] is None
    # One bundle with every artifact.
    bundle = Path(swept["models"]["tiny"]["bundle"])
    manifest = json.loads((bundle / "edgesdk.json").read_text())
    assert sorted(a["id"] for a in manifest["artifacts"]) == sorted(f"{t}-{p}" for t in TARGETS for p in PRECISIONS)
    # Accuracy on labels: the source scores 14/20, the same in both runs.
    src, ref_src = swept["models"]["tiny"]["source_accuracy"], reference["models"]["tiny"]["source_accuracy"]
    assert src["top1"] == ref_src["top1"] == pytest.approx(0.7) and src["samples"] == 20


def test_fleet_rows_per_device_class(time_bound, swept, reference):
    bench = swept["models"]["tiny"]["bench"]
    assert [b["device_class"] for b in bench] == ["lab-ort", "lab-x86"]
    by_class = {b["device_class"]: {(r["artifact"], r["backend"]): r for r in b["rows"]} for b in bench}
    # lab-x86 runs every artifact; lab-ort (ONNX Runtime only) says 'not available' for the others.
    assert all(r["status"] == "ok" for r in by_class["lab-x86"].values())
    ort_rows = by_class["lab-ort"]
    assert {a for (a, _), r in ort_rows.items() if r["status"] == "ok"} == {"onnx-fp32", "onnx-int8"}
    unavailable = [r for r in ort_rows.values() if r["status"] == "not available"]
    assert {r["artifact"] for r in unavailable} == {"openvino-fp32", "openvino-int8", "tflite-fp32", "tflite-int8"}
    assert all("EDGESDK_BACKENDS" in r["error"] for r in unavailable)
    for rows in by_class.values():
        timed = [r for r in rows.values() if r["status"] == "ok"]
        assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["throughput_ips"] > 0 and r["peak_rss_mb"] > 0
                   for r in timed)
        assert sum(bool(r.get("auto_pick")) for r in timed) == 1
        for r in timed:  # labelled accuracy, its interval and its drop from the source
            acc = r["accuracy"]
            assert acc["samples"] == 20 and acc["top1_ci95"][0] <= acc["top1"] <= acc["top1_ci95"][1]
            assert acc["drop"] == pytest.approx(0.7 - acc["top1"])
            if r["precision"] == "fp32":
                assert acc["top1"] == pytest.approx(0.7)
    # The same artifacts score the same on the sequential reference's device.
    ref_rows = {(r["artifact"], r["backend"]): r for r in reference["models"]["tiny"]["bench"][0]["rows"]}
    for key, r in by_class["lab-x86"].items():
        assert r["accuracy"]["top1"] == pytest.approx(ref_rows[key]["accuracy"]["top1"]), key


def test_rerun_skips_unchanged_cells(time_bound, swept, sweep_inputs, cluster):
    again = sweep(spec(sweep_inputs, Path(swept["out"])), address=cluster.address, bench=False)
    cells = _cells(again)
    assert all(c["cached"] for c in cells.values())
    assert again["models"]["broken"]["cells"][0]["cached"]  # a failure is a result too: not re-run unless asked
    assert_same_cells(again, swept)
    # Changing the calibration data changes the hash of every cell of that model.
    changed = spec(sweep_inputs, Path(swept["out"]), targets=["onnx"], broken=False)
    changed["models"][0]["calib"] = sweep_inputs["validate"]  # now the labelled images calibrate
    redo = sweep(changed, address=cluster.address, bench=False)
    assert not any(c["cached"] for c in _cells(redo).values())
    # Back to the first spec: only the two cells whose inputs changed twice run again.
    back = sweep(spec(sweep_inputs, Path(swept["out"])), address=cluster.address, bench=False)
    assert sorted(k for k, c in _cells(back).items() if not c["cached"]) == ["tiny/onnx-fp32", "tiny/onnx-int8"]
    assert_same_cells(back, swept)


def test_fleet_bench_command(time_bound, swept, cluster, tmp_path):
    from edgesdk.cli import main

    out = tmp_path / "fleet.json"
    main(["bench", swept["models"]["tiny"]["bundle"], "--fleet", "--address", cluster.address, "--runs", "5",
          "--warmup", "1", "--json", str(out)])
    data = json.loads(out.read_text())
    (model,) = data["models"].values()
    assert [b["device_class"] for b in model["bench"]] == ["lab-ort", "lab-x86"]
    assert all(len(b["rows"]) >= 6 for b in model["bench"])
    with pytest.raises(UsageError, match="holds no labels"):
        from edgesdk.fleet.cli import bench_on_fleet

        bench_on_fleet(swept["models"]["tiny"]["bundle"], 5, 1, None, cluster.address, swept["models"]["tiny"]["bundle"], None)


def test_killed_worker_loses_nothing(time_bound, tmp_path, sweep_inputs, reference, monkeypatch):
    """A worker node killed (its raylet and workers) while it converts: Ray re-runs its task elsewhere and
    the sweep ends with every cell, equal to the sequential run."""
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"EDGESDK_TEST_MARKERS": str(markers)}
    nodes = {"lab-a": {"converter": True, "env": env}, "lab-b": {"converter": True, "env": env}}
    c = start_cluster(nodes)
    try:
        victim = nodes["lab-b"]["node"]
        killed = threading.Event()

        def kill_when_busy() -> None:  # as soon as a conversion has started on lab-b
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not any(m.read_text() == victim.node_id for m in markers.iterdir()):
                time.sleep(0.2)
            c.remove_node(victim, allow_graceful=False)
            killed.set()

        threading.Thread(target=kill_when_busy, daemon=True).start()
        results = sweep(spec(sweep_inputs, tmp_path / "out", factory="tests.models:tiny_cnn_marked",
                             targets=["onnx", "openvino"], broken=False), address=c.address)
        assert killed.is_set()
    finally:
        c.shutdown()
    cells = _cells(results)
    assert len(cells) == 4 and all(c["status"] == "ok" for c in cells.values()), {k: c.get("error") for k, c in cells.items()}
    started_on_victim = [m for m in markers.iterdir() if m.read_text() == victim.node_id]
    assert started_on_victim, "no conversion ever started on the killed node"
    assert all(c["node"] != victim.node_id[:12] for c in cells.values())  # its work finished elsewhere
    assert_same_cells(results, reference, keys=list(cells))
    assert [b["device_class"] for b in results["models"]["tiny"]["bench"]] == ["lab-a"]


def test_report_in_a_real_browser(time_bound, swept, tmp_path):
    """The HTML report opened by headless chromium: the chart and the tables are there, the tables sort."""
    from PIL import Image

    from edgesdk.measuring.report import pareto_front, report

    page = report(swept, tmp_path / "report.html")  # the results in hand: later tests re-run into the same folder
    assert (tmp_path / "tiny.png").is_file()
    url = f"file://{page}#sort=p50_ms"
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,2200"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert '<img class="chart"' in dom and "data:image/png;base64," in dom
    assert dom.count('<table class="sortable bench"') == 1 and 'data-sorted="p50_ms asc"' in dom
    bench_rows = sum(len(b["rows"]) for b in swept["models"]["tiny"]["bench"])
    body = dom.split('<table class="sortable bench"')[1].split("</table>")[0]
    assert body.count("<tr>") == bench_rows + 1  # + the header row
    p50 = [re.findall(r'data-v="([^"]*)"', row)[6] for row in re.findall(r"<tr>(.*?)</tr>", body)[1:]]
    timed = [float(v) for v in p50 if v]
    assert len(timed) >= 10 and timed == sorted(timed) and p50[:len(timed)] == [v for v in p50 if v]
    assert "MysteryOp" in dom  # the failed cell, with its error
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (2200, 1400) and pixels.std() > 10  # not a blank page
    assert pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.93), (0.5, 0.5)]) == [3, 0, 1]


def test_spec_errors(tmp_path: Path, sweep_inputs):
    with pytest.raises(UsageError, match="non-empty 'models'"):
        load_spec({"models": []})
    with pytest.raises(UsageError, match="Unknown keys in models\\[0\\]"):
        load_spec({"models": [{"name": "a", "factory": "x:y", "weigths": "w.pt"}]})
    with pytest.raises(UsageError, match="exactly one of factory"):
        load_spec({"models": [{"name": "a"}]})
    with pytest.raises(UsageError, match="does not exist"):
        load_spec({"models": [{"name": "a", "file": "missing.onnx"}]}, base=tmp_path)
    with pytest.raises(UsageError, match="unique"):
        load_spec({"models": [{"name": "a", "factory": "x:y"}, {"name": "a", "factory": "x:z"}]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_spec(bad)
    good = tmp_path / "sweep.yaml"
    good.write_text(f"out: out\nmodels:\n  - name: m\n    file: {Path(sweep_inputs['broken']).name}\n")
    (tmp_path / Path(sweep_inputs["broken"]).name).write_bytes(Path(sweep_inputs["broken"]).read_bytes())
    parsed = load_spec(good)
    assert parsed.out == tmp_path / "out" and parsed.models[0].file == str(tmp_path / "broken.onnx")
    assert [c.key for c in parsed.cells()] == ["m/onnx-fp32"]
    with pytest.raises(UsageError, match="runs >= 1"):
        BenchSettings(runs=0).check()


def test_fleet_bench_needs_a_device_class(time_bound, swept):
    """A cluster whose nodes name no device class is a clear error, not a hang."""
    with loopback_only():
        c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        with pytest.raises(UsageError, match="names a device class"):
            fleet_bench(swept["models"]["tiny"]["bundle"], BenchSettings(runs=2, warmup=0), address=c.address)
    finally:
        c.shutdown()


def test_device_classes_and_worker_line():
    """The class a device advertises comes from its HardwareProfile; `edgesdk worker` prints the ray start line."""
    from click.testing import CliRunner

    from edgesdk.core.hardware import read_profile
    from edgesdk.fleet.cli import worker_command
    from edgesdk.fleet.cluster import check_class_name, device_class, ray_start_line

    hw = Path(__file__).parent / "hwroots"
    assert device_class(read_profile(hw / "pi5")) == "rpi5"
    assert device_class(read_profile(hw / "jetson_orin")) == "jetson-orin"
    assert device_class(read_profile(hw / "intel_x86")) == "x86"
    assert device_class(read_profile(hw / "android")) == "android"
    assert ray_start_line("head:6379", "rpi5", converter_slots=2) == [
        "ray", "start", "--address", "head:6379", "--resources", '{"edgesdk/rpi5": 1, "edgesdk/converter": 2}', "--block"]
    with pytest.raises(UsageError, match="Device class"):
        check_class_name("Pi 5!")
    out = CliRunner().invoke(worker_command, ["--address", "head:6379", "--device-class", "rpi5", "--backends", "tflite",
                                      "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == ("EDGESDK_BACKENDS=tflite ray start --address head:6379 --resources "
                                  "'{\"edgesdk/rpi5\": 1}' --block")


@pytest.mark.parametrize("with_filter", [True, False], ids=["tarfile-filter", "python-3.11.2"])
def test_shipped_bundle_unpacks_whole_and_inside(tmp_path: Path, tiny_bundle: Path, monkeypatch, with_filter):
    """A bundle shipped to a device unpacks to the same files; a tar with a member outside the folder or a
    link is refused and leaves nothing. Without tarfile's filters (Debian bookworm's Python 3.11.2, Raspberry
    Pi OS) edgesdk checks the members itself."""
    import io
    import tarfile

    from edgesdk.core.bundle import load_bundle
    from edgesdk.fleet.cluster import pack_bundle, unpack_bundle

    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    copy = unpack_bundle(pack_bundle(tiny_bundle), tmp_path / "copy")
    assert [a.sha256 for a in load_bundle(copy).artifacts] == [a.sha256 for a in load_bundle(tiny_bundle).artifacts]
    for name, kind in (("../escape.txt", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            member = tarfile.TarInfo(name)
            member.type, member.linkname, member.size = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else "", 0
            tar.addfile(member, io.BytesIO(b""))
        with pytest.raises(UsageError, match="Could not unpack"):
            unpack_bundle(buf.getvalue(), tmp_path / "hostile")
        assert not (tmp_path / "hostile").exists() and not (tmp_path / "escape.txt").exists()


def test_device_class_that_leaves_is_recorded(time_bound, tiny_bundle: Path):
    """A benchmark waiting for a device class whose only node dies is cancelled and recorded, not waited
    for; the other classes' results still come back."""
    nodes: dict[str, dict] = {"lab-a": {}, "lab-z": {}}
    with loopback_only():
        c = start_cluster(nodes)
    try:
        with loopback_only():
            ray.init(address=c.address, log_to_driver=False)

        @ray.remote(resources={"edgesdk/lab-z": 1}, max_retries=0)
        def hold() -> None:  # keeps lab-z busy, so its benchmark waits in the queue
            time.sleep(120)

        hold.remote()
        time.sleep(2)
        threading.Timer(6, lambda: c.remove_node(nodes["lab-z"]["node"], allow_graceful=False)).start()
        results = fleet_bench(tiny_bundle, BenchSettings(runs=2, warmup=0), address=c.address)
    finally:
        ray.shutdown()
        c.shutdown()
    bench = {b["device_class"]: b for b in next(iter(results["models"].values()))["bench"]}
    assert bench["lab-z"]["status"] == "failed" and "left the cluster" in bench["lab-z"]["error"]
    assert bench["lab-a"]["rows"] and all(r["status"] == "ok" for r in bench["lab-a"]["rows"])
