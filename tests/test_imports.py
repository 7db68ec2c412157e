"""The import graph of rl_reason/ has no circle, errors.py is at the bottom, and the
episode machinery and the rollout engine do not reach into methods/.

Imports are read with `ast` (every `import` statement, also those inside functions:
a late import hides a circle, it does not remove it)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "rl_reason"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports (`from a.b import c` counts a.b.c when it
    is a module, else a.b)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(_without_main_block(ast.parse(path.read_text(), str(path)))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # The innermost module of the package the target names.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _without_main_block(tree: ast.Module) -> ast.Module:
    """The module without its `if __name__ == "__main__":` block: that code runs only
    when the module is the program (as `__main__`, a module of its own), so what it
    imports cannot circle back to the module."""
    def is_main_block(node):
        return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")
    tree.body = [node for node in tree.body if not is_main_block(node)]
    return tree


def import_graph(root: pathlib.Path = ROOT / PACKAGE) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    # `from a.b import c` also runs a/b/__init__.py, but that edge is Python's, not the
    # code's: a package that lists its modules would otherwise circle with each of them.
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order, the first repeated at the
    end), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in graph}
    stack: list[str] = []

    def visit(m):
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if colour.get(n, BLACK) == GREY:
                return stack[stack.index(n):] + [n]
            if colour.get(n) == WHITE:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_late_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from rl_reason.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        graph = import_graph(pkg)
    finally:
        ROOT = saved
    assert graph["rl_reason.a"] == {"rl_reason.sub.b"}
    assert "rl_reason.a" in graph["rl_reason.sub.b"]
    assert find_cycle(graph) is not None


def test_no_import_circle_in_rl_reason():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_errors_module_imports_nothing_of_the_package():
    assert import_graph()["rl_reason.errors"] == set()


@pytest.mark.parametrize("module", ["rl_reason.rollout", "rl_reason.evaluation.attempts",
                                    "rl_reason.episodes", "rl_reason.protocol"])
def test_engine_and_episodes_do_not_import_methods(module):
    graph = import_graph()
    assert module in graph
    assert not {m for m in graph[module] if m.startswith("rl_reason.methods")}


def test_no_method_imports_another():
    """A method package imports only the method interface, shared components and
    itself."""
    graph = import_graph()
    packages = {m.split(".")[2] for m in graph
                if m.startswith("rl_reason.methods.") and m.count(".") >= 3}
    methods = packages - {"components"}
    for module, imports in graph.items():
        parts = module.split(".")
        if len(parts) < 4 or parts[2] not in methods:
            continue
        for target in imports:
            tparts = target.split(".")
            if len(tparts) >= 3 and tparts[:2] == ["rl_reason", "methods"] and \
                    tparts[2] in methods:
                assert tparts[2] == parts[2], f"{module} imports {target}"


def test_no_module_imports_config_error_from_config_check():
    for path in (ROOT / PACKAGE).rglob("*.py"):
        text = path.read_text()
        assert "config_check import ConfigError" not in text, path
        assert "config_check.ConfigError" not in text, path


def test_settings_modules_do_not_import_jax():
    """Config files import the settings dataclasses while flags are parsed, before
    JAX is needed; a settings module that pulled JAX in would slow every command."""
    import subprocess
    import sys
    modules = sorted(m for m in import_graph()
                     if m.startswith("rl_reason.methods.") and m.endswith("settings"))
    assert len(modules) >= 7
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "assert 'jax' not in sys.modules, 'jax imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
