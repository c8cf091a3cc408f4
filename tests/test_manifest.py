"""The manifest as a versioned contract: typed records round-trip, older schema versions load through
their migration, newer or unknown ones are refused naming both versions."""

import json
import shutil

import numpy as np
import pytest

import edgesdk
from edgesdk.core.bundle import load_bundle
from edgesdk.core.errors import ModelLoadError
from edgesdk.core.migrations import SCHEMA_VERSION
from edgesdk.core.records import ArtifactIO, Parity, Quantization


def _copy(tmp_path, tiny_bundle):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return b, json.loads((b / "edgesdk.json").read_text())


def _as_version_1(m):
    """What edgesdk wrote before the records were typed: quantization flat, parity without `measured`
    on early bundles, one latency number."""
    m["schema_version"] = 1
    for a in m["artifacts"]:
        q = a.get("quantization") or {}
        a["quantization"] = {**{k: v for k, v in q.items() if k not in ("details", "float_nodes")},
                             **q.get("details", {}), **({"mode": "legacy key", "float_layers": ["conv"]} if q else {})}
        a["parity"].pop("measured", None)
        a["parity"].pop("arch", None)
    m["artifacts"][0]["latency_ms"] = 1.5
    return m


def test_records_round_trip_through_the_manifest(tiny_bundle):
    for art in load_bundle(tiny_bundle).artifacts:
        assert isinstance(art.parity, Parity) and isinstance(art.quantization, Quantization)
        assert isinstance(art.io, ArtifactIO)
        assert Parity.from_dict(art.parity.to_dict()) == art.parity
        assert Quantization.from_dict(art.quantization.to_dict()) == art.quantization
        assert art.parity.measured and art.parity.samples > 0 and art.parity.outputs[0].name == "output"
    int8 = load_bundle(tiny_bundle).artifact("onnx-int8")
    assert int8.quantization.method == "static QDQ" and int8.quantization.calibration_samples == 40


def test_parity_says_where_it_was_measured_and_the_ranking_says_so_elsewhere(tmp_path, tiny_bundle):
    import platform

    from edgesdk.backends import rank
    from edgesdk.conversion.parity import Tolerance
    from edgesdk.core.hardware import HardwareProfile

    bundle = load_bundle(tiny_bundle)
    assert {a.parity.arch for a in bundle.artifacts} == {platform.machine()}
    here = HardwareProfile(arch=platform.machine(), system="Linux", cpu_model="host", cores=2, device="x86")
    assert not any("measured on" in c.why for c in rank(bundle, Tolerance(), profile=here).candidates)
    pi = HardwareProfile(arch="aarch64", system="Linux", cpu_model="Cortex-A76", cores=4, device="rpi")
    ranking = rank(bundle, Tolerance(), profile=pi)
    whys = [c.why for c in ranking.candidates]
    assert whys and all(f"parity was measured on {platform.machine()}, not here (aarch64)" in w for w in whys)
    # Elsewhere, an INT8 artifact's parity speaks only for the backend that measured it (ONNX Runtime).
    pairs = {(c.artifact.id, c.backend.name) for c in ranking.candidates}
    assert ("onnx-int8", "onnxruntime") in pairs and ("onnx-int8", "openvino") not in pairs
    assert ("onnx-fp32", "openvino") in pairs  # FP32 is checked to 1e-4 on every arch: not filtered
    assert any(s.startswith("onnx-int8 on openvino: its int8 parity was measured on onnxruntime") for s in ranking.skipped)
    assert ("onnx-int8", "openvino") in {(c.artifact.id, c.backend.name) for c in rank(bundle, Tolerance(), profile=here).candidates}
    named = rank(bundle, Tolerance(), precision="int8", profile=pi)  # the user asked: nothing filtered
    assert ("onnx-int8", "openvino") in {(c.artifact.id, c.backend.name) for c in named.candidates}


def test_a_version_2_manifest_loads_with_its_parity_architecture_unknown(tmp_path, tiny_bundle):
    b, m = _copy(tmp_path, tiny_bundle)
    m["schema_version"] = 2
    for a in m["artifacts"]:
        a["parity"].pop("arch")
    (b / "edgesdk.json").write_text(json.dumps(m))
    assert all(a.parity.arch is None and a.parity.measured for a in load_bundle(b).artifacts)


def test_a_version_1_manifest_loads_through_its_migration(tmp_path, tiny_bundle):
    b, m = _copy(tmp_path, tiny_bundle)
    (b / "edgesdk.json").write_text(json.dumps(_as_version_1(m)))
    bundle = load_bundle(b)
    first, int8 = bundle.artifacts[0], bundle.artifact("onnx-int8")
    assert first.latency_ms == {} and first.measured_on is None  # one number, backend unknown: dropped
    assert int8.quantization.method == "static QDQ" and int8.quantization.details["mode"] == "legacy key"
    assert int8.quantization.float_nodes == ["conv"] and "float_layers" not in int8.quantization.details  # v1's name
    assert all(a.parity.measured for a in bundle.artifacts)
    assert json.loads((b / "edgesdk.json").read_text())["schema_version"] == 1  # read, not rewritten
    with edgesdk.Runtime(b) as rt:
        assert rt.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


@pytest.mark.parametrize("version, says", [
    (SCHEMA_VERSION + 1, "Upgrade edgesdk"),
    (0, "Re-convert the model"),
    ("3", "Re-convert the model"),
    (None, "Re-convert the model"),
])
def test_an_unreadable_schema_version_is_refused_naming_both(tmp_path, tiny_bundle, version, says):
    b, m = _copy(tmp_path, tiny_bundle)
    m["schema_version"] = version
    (b / "edgesdk.json").write_text(json.dumps(m))
    with pytest.raises(ModelLoadError) as err:
        load_bundle(b)
    assert f"schema version {version!r}" in str(err.value) and f"reads version {SCHEMA_VERSION}" in str(err.value)
    assert says in str(err.value)


@pytest.mark.parametrize("record, key", [("parity", "max_abss"), ("quantization", "calibraton"), ("io", "input")])
def test_a_misspelled_record_key_is_refused(tmp_path, tiny_bundle, record, key):
    b, m = _copy(tmp_path, tiny_bundle)
    m["artifacts"][0][record] = {**m["artifacts"][0][record], key: 1}
    (b / "edgesdk.json").write_text(json.dumps(m))
    with pytest.raises(ModelLoadError, match=f"artifacts/0/{record}.*{key}"):
        load_bundle(b)
