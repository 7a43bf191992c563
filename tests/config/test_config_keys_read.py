"""Every config key is read somewhere in the package (a key nothing reads is a
defect: a setting users change with no effect).

For each key of the schema, `section.sub.key`, the package's source (the
schema and the generic loader excluded) must hold, in one file, an attribute
read `.key` (or `getattr(obj, "key")`) together with a reference to the
key's own section in that file: the section's class name (e.g.
`OptimConfig`, the type of the argument read) or an identifier holding the
section's name (`cfg.mcts`, `mcts_cfg`); and every enclosing section must
itself be read as an attribute somewhere (`.train`).
Reads are found in the syntax tree (attribute loads), so a key named in a
comment, a string or a keyword argument that *writes* it does not count.
"""

import ast
import dataclasses
import pathlib
from typing import Dict, List, Set, Tuple

import pytest

from rstar_jax.config.schema import Config

PKG = pathlib.Path(__file__).resolve().parents[2] / "rstar_jax"
# The schema defines the keys and the loader handles every key alike.
NOT_READERS = {PKG / "config" / "schema.py", PKG / "config" / "loader.py"}


def schema_keys(cls=Config, prefix: Tuple[str, ...] = (), owners=()) -> List[tuple]:
    """(dotted path, owning dataclass names from the top) of every leaf key."""
    out = []
    for f in dataclasses.fields(cls):
        default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else f.default)
        if dataclasses.is_dataclass(default):
            out += schema_keys(type(default), prefix + (f.name,), owners + (type(default).__name__,))
        else:
            out.append((prefix + (f.name,), owners))
    return out


def _reads(tree: ast.AST) -> Tuple[Set[str], Set[str]]:
    """(attribute names read, identifiers) in one module."""
    attrs, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
            if isinstance(node.ctx, ast.Load):
                attrs.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.arg, ast.FunctionDef, ast.ClassDef)):
            names.add(node.arg if isinstance(node, ast.arg) else node.name)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "getattr" and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            attrs.add(node.args[1].value)
    return attrs, names


def _names_section(names: Set[str], path: Tuple[str, ...], owners: Tuple[str, ...]) -> bool:
    """Whether a module refers to the key's section: its class name, or an
    identifier holding the section's name (`cfg.mcts`, `mcts_cfg`, `Checkpointer`)."""
    section = path[-2].lower()
    return owners[-1] in names or any(section in n.lower() for n in names)


@pytest.fixture(scope="module")
def sources() -> Dict[str, Tuple[Set[str], Set[str]]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        if path not in NOT_READERS:
            out[str(path.relative_to(PKG.parent))] = _reads(ast.parse(path.read_text()))
    return out


def test_the_walk_finds_the_schema(sources):
    keys = {".".join(k) for k, _ in schema_keys()}
    assert {"mcts.rollouts", "train.sft.learning_rate", "mesh.distributed.enabled"} <= keys
    assert len(sources) > 50


def test_every_config_key_is_read_somewhere(sources):
    all_attrs = set().union(*(a for a, _ in sources.values()))
    dead = []
    for path, owners in schema_keys():
        key = ".".join(path)
        missing_section = [s for s in path[:-1] if s not in all_attrs]
        readers = [f for f, (attrs, names) in sources.items()
                   if path[-1] in attrs and (len(path) == 1 or _names_section(names, path, owners))]
        if missing_section or not readers:
            dead.append(key)
    assert not dead, ("config keys that nothing in rstar_jax/ reads (make them work or remove "
                      "them from config/schema.py and configs/): " + ", ".join(dead))
