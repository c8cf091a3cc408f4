import subprocess
import sys


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
