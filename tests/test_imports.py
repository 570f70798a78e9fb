"""No import circle among asgiws' modules, and the process layer imports only downward.

Every import counts, wherever it is written (STYLE.md, habit 10): at the top of a module, inside a
function, under `if TYPE_CHECKING:`, in a module `__getattr__`, and `importlib.import_module(...)`
or `__import__(...)` with a literal name. The modules are read with `ast`, never imported. The
Cython modules (`.pyx`) are read line by line for their `import` / `cimport` statements.

Importing `asgiws.a.b` also runs `asgiws/__init__.py` and `asgiws/a/__init__.py`; those implicit
edges are not counted (every module would then "import" the package facade, which imports the top
layer). A module that names a package explicitly (`from asgiws import __version__`) does depend
on its `__init__`, and that edge counts.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "asgiws"

# The process layer, bottom to top (docs/architecture.md, "What lives where"). A module may
# import modules of its own rank or below, never above, directly or through others.
RANKS = {
    "asgiws.config": 0,
    "asgiws.state": 0,
    "asgiws.metrics": 0,
    "asgiws.http.protocol": 1,
    "asgiws.asgi.websocket": 1,
    "asgiws.server": 2,
    "asgiws.supervisors.multiprocess": 3,
    "asgiws.supervisors.reload": 3,
    "asgiws.supervisors.watch": 3,
    "asgiws.workers": 3,
    "asgiws.runner": 4,
    "asgiws.cli": 5,
    "asgiws.__main__": 5,
    "asgiws": 5,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    return {module_name(path): path for ext in ("py", "pyx") for path in sorted(PACKAGE.rglob(f"*.{ext}"))}


def _resolve(importer: str, is_package: bool, level: int, module: Optional[str]) -> str:
    """The absolute name of `from <level dots><module> import ...` written in `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import(node: ast.Call) -> Optional[str]:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("import_module", "__import__") and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def imported_names(name: str, path: Path, known: Set[str]) -> Set[str]:
    """Every asgiws module `name` imports, anywhere in its text."""
    is_package = path.stem == "__init__"
    found: List[str] = []
    if path.suffix == ".pyx":
        statement = re.compile(r"^\s*(?:from\s+(\.*)([\w.]*)\s+c?import\s+([\w, ]+)|c?import\s+([\w.]+))", re.M)
        for dots, module, names, plain in statement.findall(path.read_text()):
            if plain:
                found.append(plain)
            else:
                base = _resolve(name, is_package, len(dots), module or None)
                found += [base] + [f"{base}.{n.strip()}" for n in names.split(",")]
    else:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                # `from asgiws.http import protocol` imports the submodule; `from asgiws import
                # __version__` imports the package itself.
                found += [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Call):
                literal = _literal_import(node)
                if literal is not None:
                    found.append(literal)
    # `from asgiws.http import protocol` lists both asgiws.http and asgiws.http.protocol here;
    # import_graph() drops the package when only submodules were taken from it.
    return {target for target in found if target in known and target != name}


def import_graph() -> Dict[str, Set[str]]:
    modules = all_modules()
    known = set(modules)
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        edges = imported_names(name, path, known)
        # Drop a package edge that only came from `from package import submodule`.
        for target in list(edges):
            if target in modules and modules[target].stem == "__init__" and _only_submodules(name, path, target, known):
                edges.discard(target)
        graph[name] = edges
    return graph


def _only_submodules(name: str, path: Path, package: str, known: Set[str]) -> bool:
    """True when every `from <package> import x` in the module names a submodule x."""
    if path.suffix == ".pyx":
        statement = re.compile(r"^\s*from\s+(\.*)([\w.]*)\s+c?import\s+([\w, ]+)", re.M)
        froms = [(len(d), m or None, [n.strip() for n in ns.split(",")]) for d, m, ns in statement.findall(path.read_text())]
        plain = re.findall(r"^\s*c?import\s+([\w.]+)", path.read_text(), re.M)
    else:
        tree = ast.parse(path.read_text())
        froms = [(n.level, n.module, [a.name for a in n.names]) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        plain = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    if package in plain:
        return False
    is_package = path.stem == "__init__"
    for level, module, names in froms:
        if _resolve(name, is_package, level, module) == package and not all(f"{package}.{n}" in known for n in names):
            return False
    return True


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {name: WHITE for name in graph}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        colour[node] = GREY
        stack.append(node)
        for target in sorted(graph[node]):
            if colour[target] == GREY:
                return stack[stack.index(target):] + [target]
            if colour[target] == WHITE:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for name in sorted(graph):
        if colour[name] == WHITE:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen: Set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


# -- the walker finds what it must ------------------------------------------------------------


def _graph_of(tmp_path: Path, files: Dict[str, str]) -> Dict[str, Set[str]]:
    global ROOT, PACKAGE
    saved = ROOT, PACKAGE
    for relative, text in files.items():
        target = tmp_path / "asgiws" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    ROOT, PACKAGE = tmp_path, tmp_path / "asgiws"
    try:
        return import_graph()
    finally:
        ROOT, PACKAGE = saved


def test_the_walker_sees_hidden_imports(tmp_path):
    graph = _graph_of(tmp_path, {
        "__init__.py": "",
        "a.py": "def f():\n    from asgiws import b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from asgiws.c import C\n",
        "c.py": "def __getattr__(name):\n    import importlib\n    return importlib.import_module('asgiws.d')\n",
        "d.py": "from .sub import thing\n",
        "sub/__init__.py": "thing = 1\n",
        "sub/leaf.py": "from .. import a\n",
        "e.pyx": "from asgiws.sub cimport leaf\nimport asgiws.a\n",
    })  # fmt: skip
    assert graph["asgiws.a"] == {"asgiws.b"}  # `from asgiws import b`: the submodule, not the package
    assert graph["asgiws.b"] == {"asgiws.c"}
    assert graph["asgiws.c"] == {"asgiws.d"}
    assert graph["asgiws.d"] == {"asgiws.sub"}  # `thing` is no submodule: the package's __init__
    assert graph["asgiws.sub.leaf"] == {"asgiws.a"}
    assert graph["asgiws.e"] == {"asgiws.sub.leaf", "asgiws.a"}
    assert find_cycle(graph) is None
    graph["asgiws.d"].add("asgiws.a")
    assert find_cycle(graph) == ["asgiws.a", "asgiws.b", "asgiws.c", "asgiws.d", "asgiws.a"]


# -- asgiws itself ----------------------------------------------------------------------------


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_process_layer_imports_only_downward():
    graph = import_graph()
    assert set(RANKS) <= set(graph), set(RANKS) - set(graph)
    upward = [
        f"{module} (rank {RANKS[module]}) reaches {target} (rank {RANKS[target]})"
        for module in graph
        for target in reachable(graph, module)
        if module in RANKS and target in RANKS and RANKS[target] > RANKS[module]
    ]
    assert not upward, "\n".join(upward)


def test_every_module_is_in_the_layer_map_of_the_docs():
    """docs/architecture.md's "What lives where" names every module of the process layer."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## What lives where", 1)[1].split("\n## ", 1)[0]
    for module in RANKS:
        if module == "asgiws":
            continue
        path = "asgiws/" + module.removeprefix("asgiws.").replace(".", "/") + ".py"
        assert f"`{path}`" in section, path
