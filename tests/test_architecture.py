"""The package's layering, read from the code: the static import graph (imports inside functions
included) has no cycle and no import from a lower layer to a higher one; the op set loads no file
format and no application; `import litetrain` loads no heavy optional dependency; files and
functions stay small."""
from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "litetrain"
# each layer imports only the layers before it (ARCHITECTURE.md); the package's own __init__ is the
# public face over all of them, and nothing inside imports it
LAYERS = ["core", "ops", "tflite", "runtime", "frontend", "models", "importers", "apps", "cli"]
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(modules, name) -> bool:
    return modules[name].name == "__init__.py"


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in its code. `from X import name` counts as
    an import of X.name when that is a module, else of X (whose __init__ runs)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if _is_package(modules, name) else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _layer(name: str):
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else len(LAYERS)  # the root face is above every layer


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    assert not [m for m in _modules() if m.count(".") >= 1 and m.split(".")[1] not in LAYERS]


def test_import_graph_has_no_cycle():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = [f"{m} ({LAYERS[_layer(m)] if _layer(m) < len(LAYERS) else 'face'}) imports {t} "
           f"({LAYERS[_layer(t)] if _layer(t) < len(LAYERS) else 'the package face'})"
           for m, targets in import_graph().items() for t in sorted(targets)
           if _layer(t) > _layer(m) or t == "litetrain"]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """The two checks above on graphs made to break them (so they cannot pass by reading nothing)."""
    graph = import_graph()
    assert len(graph) > 50 and sum(len(t) for t in graph.values()) > 150
    assert "litetrain.ops.api" in graph["litetrain.ops.elementwise"]  # a module-level import
    assert "litetrain.importers.tflite" in graph["litetrain.apps.personalize.base"]  # one inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _layer("litetrain.core.ir") < _layer("litetrain.ops.api") < _layer("litetrain.cli")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_op_set_loads_no_file_format_and_no_application():
    loaded = _loaded_after("import litetrain.ops")
    assert "litetrain.ops.control" in loaded and "litetrain.ops.conv" in loaded
    wrong = sorted(m for m in loaded if m.startswith(("litetrain.tflite", "litetrain.runtime", "litetrain.frontend",
                                                      "litetrain.importers", "litetrain.apps", "litetrain.cli",
                                                      "litetrain.models")))
    assert not wrong, wrong


@pytest.mark.parametrize("code", [
    "import litetrain",
    "import litetrain as lt\nfor name in lt.__all__: getattr(lt, name)",  # every public name, used
])
def test_litetrain_loads_no_torch_onnx_or_pil(code):
    loaded = _loaded_after(code)
    assert "litetrain" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "onnx", "onnxruntime", "PIL", "tensorflow",
                                                           "ai_edge_litert"))
    assert not heavy, heavy


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_files_and_functions_stay_small():
    long_files = [f"{p.relative_to(ROOT)}: {n} lines" for p in sorted(PACKAGE.rglob("*.py"))
                  if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long_files, long_files
    long_functions = []
    for folder in ("litetrain", "tools", "scripts", "benchmarks", "examples", "fixtures"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for fn in _functions(ast.parse(path.read_text(), str(path))):
                if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} "
                                          f"({fn.end_lineno - fn.lineno + 1} lines)")
    assert not long_functions, long_functions
