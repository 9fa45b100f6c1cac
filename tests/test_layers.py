"""Layers that only point down: no import cycle among the suite's modules, read from the source (no execution).

Every import statement counts, at module level or inside a function (a cycle dodged by a deferred
import is still a cycle). ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
``a.b``; the implicit import of a parent package by Python is not an edge of ours.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmarks", "methods", "clip_lung")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else resolve(base) for a in node.names]
            graph[m] |= {t for t in targets if t and t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle or a knot of them."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_cycle_through_a_deferred_import():
    """The check can fail: two modules importing each other, one of them inside a function."""
    graph = {"a": set(), "b": set()}
    src = {"a": "import b\n", "b": "def f():\n    from a import x\n"}
    for m, text in src.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[m].add(node.names[0].name if isinstance(node, ast.Import) else node.module)
    assert cycles(graph) == [["a", "b"]]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 60 and "benchmarks.lifecycle" in graph["benchmarks.pack"]  # the walker reads the real tree
    assert "benchmarks.plugins" in graph["benchmarks.lifecycle"] and "methods" in graph["benchmarks.selection"]
    assert cycles(graph) == []


def test_lower_layers_never_import_commands_or_the_registry():
    """The bottom (records, train, metrics, data, io, paths, config) imports neither the registry nor a command,
    the registry and methods no command, lifecycle/selection/plugins no command."""
    graph = import_graph()
    commands = {"benchmarks.run", "benchmarks.sweep", "benchmarks.tables", "benchmarks.figures", "benchmarks.report",
                "benchmarks.prepare", "benchmarks.speed", "benchmarks.device_check", "benchmarks.cli"}

    def reaches(m, targets):
        seen, todo = set(), [m]
        while todo:
            x = todo.pop()
            for y in graph[x]:
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        return {t for t in seen if any(t == c or t.startswith(c + ".") for c in targets)}

    bottom = ["benchmarks.records", "benchmarks.train", "benchmarks.metrics", "benchmarks.io", "benchmarks.paths", "benchmarks.config",
              "benchmarks.errors", "benchmarks.grid", "benchmarks.data.dataset", "benchmarks.data.lidc", "benchmarks.stats"]
    for m in bottom:
        assert not reaches(m, {"methods", "benchmarks.plugins", "benchmarks.lifecycle", *commands}), m
    for m in ("methods", "methods.registry", "methods.backbones", "benchmarks.lifecycle", "benchmarks.selection", "benchmarks.plugins",
              "benchmarks.pack"):
        assert not reaches(m, commands), (m, reaches(m, commands))


def test_importing_the_registry_loads_no_plugin(tmp_path):
    """``import methods`` gives the built-ins only: a plugin named in $CLIPLUNG_PLUGINS (one that would
    register a method) is loaded by the commands, not by the import."""
    plugin = tmp_path / "would_register.py"
    plugin.write_text("import methods\nfrom methods.ce import CrossEntropy\nmethods.register('from_env_plugin')(type('X', (CrossEntropy,), {}))\n")
    code = ("import methods, sys; from benchmarks import plugins\n"
            "assert 'from_env_plugin' not in methods.REGISTRY and not plugins.LOADED, 'loaded on import'\n"
            "plugins.load_plugins(); assert 'from_env_plugin' in methods.REGISTRY, 'not loaded by the commands'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "CLIPLUNG_PLUGINS": str(plugin)})
    assert p.returncode == 0, p.stderr[-2000:]


def test_no_module_of_the_harness_is_over_450_lines():
    """A newcomer reads a module top to bottom: one concern each, none over ~450 lines."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "benchmarks").rglob("*.py") if (n := len(p.read_text().splitlines())) > 460}
    assert not long, long
