"""The package imports downward: no module imports (even lazily) one that imports it back.

A circle such as checkpoint -> loading -> checkpoint works only while every
import in it stays inside a function, and breaks the first time one moves
to the top; the house rule (STYLE.md) is that modules import downward. The
graph is read from the source (every `import` / `from ... import` of
`rstar_jax`, at any depth in the module), so the check costs no imports.
"""

import ast
import subprocess
import sys

from testutil import REPO

PACKAGE = REPO / "rstar_jax"


def _modules():
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def import_graph():
    """Module name -> the `rstar_jax` modules it imports anywhere in its source."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in mods else node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def circles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_once_circular_modules_import_first_in_a_fresh_interpreter():
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n")
    for first in ("rstar_jax.models.checkpoint", "rstar_jax.models.loading",
                  "rstar_jax.models.convert", "rstar_jax.models.transfer",
                  "rstar_jax.evaluation.harness", "rstar_jax.evaluation.methods"):
        done = subprocess.run([sys.executable, "-c", code, first], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (first, done.stderr[-2000:])
