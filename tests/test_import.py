import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_needs_only_numpy():
    code = ("import sys, edgesdk; heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'PIL', 'click', 'rich') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_extra_names_the_pip_extra(tmp_path, tiny_bundle):
    """With no backend for ONNX importable, loading an ONNX bundle says which extras to install."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None; sys.modules['openvino'] = None\n"
        "import edgesdk\n"
        "try:\n"
        f"    edgesdk.Runtime({str(tiny_bundle)!r})\n"
        "except edgesdk.BackendUnavailable as e:\n"
        "    print('BackendUnavailable:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "BackendUnavailable:" in out and "edgesdk[onnx]" in out and "edgesdk[openvino]" in out


def test_a_missing_required_dependency_fails_the_run(tmp_path):
    """The CI guard: with onnx2tf made unimportable (a real ImportError, from an import hook the child
    Python loads at start-up), pytest exits non-zero before any test and names the module; no skip."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'onnx2tf' or name.startswith('onnx2tf.'):\n"
        "            raise ImportError('onnx2tf removed for this test')\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_import.py::test_import_needs_only_numpy"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "onnx2tf" in output and "Required test dependencies are missing" in output
    assert " passed" not in output and "skipped" not in output
