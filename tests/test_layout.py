"""The package's shape: folders that import only downward, no import cycles (counting imports inside
functions and TYPE_CHECKING blocks), no converter importing another, old import paths that still work, a
README layout that lists every module, and the shared graph walk."""

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
    """The edgesdk modules one module imports anywhere in its body, TYPE_CHECKING blocks included."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps: set[str] = set()

    class Visitor(ast.NodeVisitor):
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
    """Module -> the edgesdk modules it imports (at the top, inside functions or for type hints only)."""
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
    assert "edgesdk.conversion.int8" in graph["edgesdk.conversion.formats.openvino"]  # the walk sees lazy imports too
    assert cycles(graph) == []


#: The folders from the bottom up: each imports only from its own layer and those below it.
LAYERS = {
    "core": 0,  # the bundle contract: errors, specs, records, bundle, schema, options, hardware
    "tasks": 1,  # pre/post-processing per task (YOLO, text, audio, classes)
    "backends": 2,  # one module per backend, their registry and ranking
    "running": 3,  # the Runtime, pool, autotune, child processes, timing
    "measuring": 4, "stream": 4,  # benchmarks, latency logs, accuracy, report; pipelined streams
    "conversion": 5,  # convert(), sources, calibration, ONNX tools, parity, one module per format
    "models": 6, "optimize": 6,  # the bundled models (sources for convert); model-side optimizations
    "fleet": 7,  # sweeps and fleet benchmarks on Ray, their CLI
    "cli": 8,
    "__init__": 9, "_moved": 9,  # the public facade; old import paths
}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, d) for m, deps in graph.items() for d in deps if _layer(d) > _layer(m))


def test_folders_import_only_downward():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if "." in m} <= set(LAYERS), "a new folder needs its place in LAYERS"
    assert upward_imports(graph) == []
    assert upward_imports({"edgesdk.core.bundle": {"edgesdk.running.runtime"}, "edgesdk.running.runtime": set()})


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_converter_imports_another():
    """Shared plumbing lives in edgesdk.conversion.onnx_tools. One use stays: TensorRT's INT8 is the ONNX target's
    QDQ quantizer with symmetric activations."""
    graph = import_graph()
    converters = {m for m in graph if m.startswith("edgesdk.conversion.formats.")}
    allowed = {"edgesdk.conversion.formats.tensorrt": {"edgesdk.conversion.formats.onnx"}}
    for module in converters:
        assert graph[module] & converters <= allowed.get(module, set()), (module, graph[module] & converters)


def test_output_tail_walk():
    from edgesdk.conversion.int8 import tail_nodes

    # conv -> add -> sigmoid -> out, and add -> gemm: only the sigmoid has no weighted op after it.
    names = ["conv", "add", "gemm", "sigmoid"]
    inputs = [["x"], ["c"], ["a"], ["a"]]
    outputs = [["c"], ["a"], ["g"], ["s"]]
    weighted = [True, False, True, False]
    assert [names[i] for i in tail_nodes(names, inputs, outputs, weighted)] == ["sigmoid"]


def _app_imports(path: Path) -> set[str]:
    """The edgesdk and apps modules (or edgesdk's top-level names) a file imports."""
    modules = _modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            named = {f"{node.module}.{a.name}" for a in node.names}
            submodules = {n for n in named if n in modules}  # from edgesdk.models import zoo
            found |= submodules or {node.module}
            found |= named if node.module in ("edgesdk", "apps") else set()
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
    assert _app_imports(apps / "detect.py") >= {"apps.common", "edgesdk.tasks.yolo"}  # the check sees what is there


#: Public names that several modules define on purpose: one per format, or a CLI command named after
#: the function it calls.
SAME_NAME_ON_PURPOSE = {"quantize_int8": "each converter's INT8 recipe", "convert": "the CLI command of edgesdk.conversion.pipeline"}


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
    ("conversion/onnx_tools.py", "onnx"): "the ONNX plumbing reuses the ONNX target's FP32 file as the interchange",
    ("conversion/sources.py", "onnx"): "the kind of an ONNX source model, and the onnx library it is read with",
}


def test_shared_code_names_no_format_or_backend():
    """Formats and backends are declared in conversion/formats/ and backends/; shared code asks the table
    (formats, suffixes, device_rank, checks_formats, reference, options) instead of naming them."""
    from edgesdk.backends import backends
    from edgesdk.conversion.formats import converters

    names = {c.name for c in converters()} | {b.name for b in backends()} | {f for b in backends() for f in b.formats}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "backends" and rel.name != "__init__.py" or rel.parts[:2] == ("conversion", "formats"):
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


def readme_layout() -> set[str]:
    """The files the README's Layout lists under edgesdk/, as paths ('core/errors.py'), read from the
    indentation of its tree."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed, folders = set(), []  # folders: (indent, name) of the open folders
    for line in block.splitlines():
        if not line.startswith("  ") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        folders = [f for f in folders if f[0] < indent]
        first = line.split()[0]
        if first.endswith("/") and not first.startswith(("edgesdk", "apps", "tools", "benchmarks")):
            folders.append((indent, first))
            continue
        names = []  # the file names that start the line ("onnx.py  openvino.py  tflite.py"), not a description's
        for word in line.split():
            if not word.endswith((".py", ".json")):
                break
            names.append(word)
        listed |= {"".join(f for _, f in folders) + n for n in names}
    return listed


def test_readme_layout_lists_every_module():
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.suffix in (".py", ".json")
               and p.name != "__init__.py" or p.relative_to(PACKAGE) == Path("__init__.py")}
    listed = readme_layout()
    assert "core/errors.py" in listed and "conversion/formats/tflite.py" in listed  # the parser reads the tree
    assert sorted(modules - listed) == [], "add these to the README's Layout"
    assert sorted(listed - modules) == [], "the README's Layout lists files that are gone"


def test_old_import_paths_still_work_with_a_warning():
    """0.1's flat paths: the module at its new path, one DeprecationWarning naming it; edgesdk.convert and
    edgesdk.sweep stay the functions after their old modules are imported by name."""
    import subprocess
    import sys

    code = """
import warnings
warnings.simplefilter("error", DeprecationWarning)
import edgesdk
from edgesdk.running.runtime import Runtime
warnings.simplefilter("always", DeprecationWarning)
with warnings.catch_warnings(record=True) as caught:
    import edgesdk.runtime as old
    from edgesdk.runtimes.tflite import find_interpreter
    from edgesdk.zoo import efficientnet_lite0
    from edgesdk.fleet import fleet_bench
    import edgesdk.convert, edgesdk.sweep
assert old.Runtime is Runtime and old.__name__ == "edgesdk.running.runtime"
assert callable(edgesdk.convert) and callable(edgesdk.sweep), (edgesdk.convert, edgesdk.sweep)
print("\\n".join(str(w.message) for w in caught if w.category is DeprecationWarning))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    for old, new in [("edgesdk.runtime", "edgesdk.running.runtime"), ("edgesdk.runtimes.tflite", "edgesdk.backends.tflite"),
                     ("edgesdk.zoo", "edgesdk.models.zoo"), ("edgesdk.fleet.fleet_bench", "edgesdk.fleet.cluster"),
                     ("edgesdk.convert", "edgesdk.conversion.pipeline"), ("edgesdk.sweep", "edgesdk.fleet.sweep")]:
        assert f"{old} moved to {new}" in out.stdout, (old, out.stdout)


def test_no_function_is_longer_than_60_lines():
    """Functions short enough to read top to bottom: none over 60 lines outside tests and benchmark main()s."""
    long = []
    for folder in ("edgesdk", "apps", "tools", "examples", "benchmarks"):
        for path in sorted((PACKAGE.parent / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    if not (folder == "benchmarks" and node.name == "main"):
                        long.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == []
