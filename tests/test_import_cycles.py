"""The package's modules import each other without cycles (issue 20 item 5).

The graph is read from the source (every ``import`` statement, those inside functions too, since
a function-level import only hides a cycle until the function runs). An edge goes from a module
to each package module it names: ``from a.b import c`` names ``a.b.c`` when that is a module,
else ``a.b``; a package's ``__init__`` that an import merely passes through is no edge (every
absolute import passes through ``torchprune_flows/__init__``).
"""
import ast
import importlib
import os

import torchprune_flows

PACKAGE = "torchprune_flows"
ROOT = os.path.dirname(os.path.abspath(torchprune_flows.__file__))


def package_modules():
    """``{module name: file path}`` of every module of the package."""
    modules = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            parts = [PACKAGE] + os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def _imported(module, path, modules):
    """The package modules that ``module`` (at ``path``) imports anywhere in its source."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {name for name in found if name in modules and name != module}


def import_graph():
    modules = package_modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # module -> "open" while on the path, "done" after

    def visit(module, path):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path)
                if cycle:
                    return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "torchprune_flows.runner.cli" in graph
    assert "torchprune_flows.runner.runs" in graph["torchprune_flows.runner.cli"]  # from .runs import ...
    assert "torchprune_flows.registry.core" in graph["torchprune_flows.registry"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports():
    for module in package_modules():
        if module.endswith("__main__"):
            continue
        importlib.import_module(module)


def test_no_import_cycle_among_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
