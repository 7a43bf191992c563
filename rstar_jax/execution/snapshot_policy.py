"""Which programs may become prefix snapshots (issue 18, finding 4c).

A snapshot is a process that ran a program and then runs the pool's own
code (receive a command, fork, compile the extension) before the extension
starts. In a from-scratch run none of that code runs between the two parts,
so a prefix that rewrites it (`observation._compile = ...`, a patched
`json.loads`, a changed class) makes the resumed run differ: one step can
poison a later one. Python offers no boundary inside a process, so the only
sound rule is to keep as snapshots only programs that cannot reach the
interpreter's machinery at all.

`may_snapshot(code)` is a conservative static check on the program's syntax
tree. It admits a program only when:
- every import is of a plain math module (`ALLOWED_MODULES`);
- it assigns or deletes no attribute, and declares nothing `global` or
  `nonlocal`;
- no name, attribute, keyword or string contains a double underscore;
- no name or attribute is one of the reflective or evaluating builtins and
  library entry points (`DENIED_NAMES`: getattr, setattr, vars, eval,
  exec, open, sympify, lambdify, ...), through which a string becomes code
  or an attribute write.
A rejected program still runs and is still correct; it just is not kept,
so its extensions run from scratch.
"""

from __future__ import annotations

import ast

ALLOWED_MODULES = frozenset({
    "math", "cmath", "fractions", "decimal", "itertools", "collections", "statistics", "random",
    "numpy", "sympy", "scipy", "re", "string", "operator", "heapq", "bisect", "datetime",
    "calendar", "numbers", "typing", "copy", "pprint", "textwrap", "time",
})
DENIED_NAMES = frozenset({
    "getattr", "setattr", "delattr", "hasattr", "vars", "globals", "locals", "dir", "eval", "exec",
    "compile", "open", "breakpoint", "input", "type", "object", "super", "memoryview", "classmethod",
    "staticmethod", "property", "sympify", "parse_expr", "lambdify", "S", "sys", "os", "builtins",
    "gc", "ctypes", "inspect", "importlib", "update_wrapper", "wraps", "modules", "load", "loads",
    "attrgetter", "methodcaller",
})


def _identifiers(node: ast.AST):
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.keyword) and node.arg:
        yield node.arg
    elif isinstance(node, ast.alias):
        yield node.name
        if node.asname:
            yield node.asname
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, ast.arg):
        yield node.arg


def may_snapshot(code: str) -> bool:
    """Whether a snapshot of this program cannot change how a later step runs."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            return False
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            return False
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] not in ALLOWED_MODULES
                                                for a in node.names):
            return False
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0]
                                                 not in ALLOWED_MODULES or any(a.name == "*" for a in node.names)):
            return False
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if (b"__" if isinstance(node.value, bytes) else "__") in node.value:
                return False
        for ident in _identifiers(node):
            if "__" in ident or ident in DENIED_NAMES:
                return False
    return True
