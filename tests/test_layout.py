"""The package's shape: no import cycles (counting imports inside functions, not TYPE_CHECKING blocks),
no converter importing another, and the shared graph walk."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgesdk"


def _modules() -> dict[str, Path]:
    found = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The edgesdk modules one module imports anywhere in its body, TYPE_CHECKING blocks aside."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            origin = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            for alias in node.names:
                target = f"{origin}.{alias.name}"
                deps.add(target if target in modules else origin)

        def visit_Import(self, node: ast.Import) -> None:
            deps.update(a.name for a in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return {d for d in deps if d in modules and d != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the edgesdk modules it imports (at the top or inside functions)."""
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as a path that returns to its start."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                cycle = path[path.index(dep):] + [dep]
                if frozenset(cycle) not in done:
                    done.add(frozenset(cycle))
                    found.append(cycle)
            elif dep not in seen:
                seen.add(dep)
                visit(dep, path + [dep])

    for start in sorted(graph):
        seen = {start}
        visit(start, [start])
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert "edgesdk.onnx_tools" in graph["edgesdk.converters.openvino"]  # the walk sees lazy imports too
    assert cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_converter_imports_another():
    """Shared plumbing lives in edgesdk.onnx_tools. One use stays: TensorRT's INT8 is the ONNX target's
    QDQ quantizer with symmetric activations."""
    graph = import_graph()
    converters = {m for m in graph if m.startswith("edgesdk.converters.")}
    allowed = {"edgesdk.converters.tensorrt": {"edgesdk.converters.onnx"}}
    for module in converters:
        assert graph[module] & converters <= allowed.get(module, set()), (module, graph[module] & converters)


def test_output_tail_walk():
    from edgesdk.onnx_tools import tail_nodes

    # conv -> add -> sigmoid -> out, and add -> gemm: only the sigmoid has no weighted op after it.
    names = ["conv", "add", "gemm", "sigmoid"]
    inputs = [["x"], ["c"], ["a"], ["a"]]
    outputs = [["c"], ["a"], ["g"], ["s"]]
    weighted = [True, False, True, False]
    assert [names[i] for i in tail_nodes(names, inputs, outputs, weighted)] == ["sigmoid"]


def _app_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} if node.module != "edgesdk" else {"edgesdk"}
            found |= {f"{node.module}.{a.name}" for a in node.names if node.module in ("edgesdk", "apps")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.split(".")[0] in ("edgesdk", "apps")}


def test_apps_use_only_the_public_api():
    """The apps are what users copy onto devices: whatever they import, users can rely on."""
    import edgesdk

    public = {"edgesdk", *edgesdk.PUBLIC_MODULES, *(f"edgesdk.{n}" for n in edgesdk.__all__)}
    apps = PACKAGE.parent / "apps"
    for path in apps.glob("*.py"):
        used = _app_imports(path)
        internal = {m for m in used if m.startswith("edgesdk") and m not in public}
        assert not internal, f"{path.name} imports internals {sorted(internal)}; use edgesdk.PUBLIC_MODULES"
        other_apps = {m for m in used if m.startswith("apps") and m not in ("apps", "apps.common")}
        assert not other_apps, f"{path.name} imports another app {sorted(other_apps)}; share code in apps/common.py"
    assert _app_imports(apps / "detect.py") >= {"apps.common", "edgesdk.yolo"}  # the check sees what is there


#: Public names that several modules define on purpose: one per format, or a CLI command named after
#: the function it calls.
SAME_NAME_ON_PURPOSE = {"quantize_int8": "each converter's INT8 recipe", "convert": "the CLI command of edgesdk.convert"}


def test_no_two_modules_define_the_same_public_name():
    """Two `detect`s (YOLO post-processing, hardware) once sent readers to the wrong file."""
    defined: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    twins = {name: where for name, where in defined.items() if len(where) > 1 and name not in SAME_NAME_ON_PURPOSE}
    assert not twins, twins


#: Where shared code may name a format, and why: not to branch on a target, but because ONNX is the
#: interchange every target builds from and a kind of source model.
FORMAT_NAMES_ALLOWED = {
    ("onnx_tools.py", "onnx"): "the ONNX plumbing reuses the ONNX target's FP32 file as the interchange",
    ("sources.py", "onnx"): "the kind of an ONNX source model, and the onnx library it is read with",
}


def test_shared_code_names_no_format_or_backend():
    """Formats and backends are declared in converters/ and runtimes/; shared code asks the table
    (formats, suffixes, device_rank, checks_formats, reference, options) instead of naming them."""
    from edgesdk.converters import converters
    from edgesdk.runtimes import backends

    names = {c.name for c in converters()} | {b.name for b in backends()} | {f for b in backends() for f in b.formats}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("converters", "runtimes"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        found += [(str(rel), node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                  and id(node) not in docstrings and (str(rel), node.value) not in FORMAT_NAMES_ALLOWED]
    assert not found, found
    assert "tflite" in names and "openvino" in names  # the check knows the table
