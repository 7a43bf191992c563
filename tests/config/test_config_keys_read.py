"""Every config key is read somewhere in the package (a key nothing reads is a
defect: a setting users change with no effect).

A key `a.b.key` counts as read only where the syntax tree holds an attribute
load `.key` (or `getattr(obj, "key")`) whose object *is* the key's section:
  * an attribute named after the section, `<expr>.b.key` (`cfg.data.path`,
    `self.cfg.train.sft.learning_rate`), or `getattr(<expr>, "b")`;
  * a name bound to the section in an enclosing scope: assigned from a
    section expression (`p = cfg.inference_eval`, `for opt in (t.sft, t.ppm)`),
    a parameter annotated with the section's class (`opt: OptimConfig`) or
    named `<section>_cfg` / `<section>_config`;
  * an attribute declared with the section's class in a class body of the
    same module (`opt: OptimConfig` in a dataclass, then `run.opt.seq_len`).
Every enclosing section must itself be read as an attribute somewhere.
A mere `.key` anywhere in a file that also mentions the section does not
count: `data.split(b"\\n")` on a bytes value is not a read of `data.split`
(`test_a_planted_dead_key_is_found` proves the test catches such a key).
Keys named in comments, strings or keyword arguments that write them do not
count either.
"""

import ast
import dataclasses
import pathlib
from typing import Dict, FrozenSet, Iterable, List, Set, Tuple

import pytest

from rstar_jax.config import schema
from rstar_jax.config.schema import Config

PKG = pathlib.Path(__file__).resolve().parents[2] / "rstar_jax"
# The schema defines the keys and the loader handles every key alike.
NOT_READERS = {PKG / "config" / "schema.py", PKG / "config" / "loader.py"}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


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


def _shallow(node: ast.AST) -> Iterable[ast.AST]:
    """The nodes of one scope: `ast.walk` that does not enter nested scopes."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, _SCOPES):
            todo.extend(ast.iter_child_nodes(n))


def _getattr_const(node: ast.AST):
    """(object, name) of `getattr(obj, "name", ...)`, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "getattr" and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        return node.args[0], node.args[1].value
    return None


class _Section:
    """Decides whether an expression is the object of one config section."""

    def __init__(self, name: str, cls: str, class_attrs: FrozenSet[str]):
        self.name, self.cls = name, cls
        self.attrs = class_attrs | {name}
        self.conventional = {f"{name}_cfg", f"{name}_config"}

    def annotated(self, ann) -> bool:
        return ann is not None and self.cls in ast.unparse(ann)

    def is_section(self, e: ast.AST, aliases: Set[str]) -> bool:
        if isinstance(e, ast.Attribute):
            return e.attr in self.attrs
        if isinstance(e, ast.Name):
            return e.id in aliases or e.id in self.conventional
        got = _getattr_const(e)
        if got is not None:
            return got[1] in self.attrs
        if isinstance(e, ast.IfExp):
            return self.is_section(e.body, aliases) or self.is_section(e.orelse, aliases)
        if isinstance(e, ast.BoolOp):
            return any(self.is_section(v, aliases) for v in e.values)
        if isinstance(e, (ast.Tuple, ast.List)):  # `for opt in (t.sft, t.ppm)`
            return any(self.is_section(v, aliases) for v in e.elts)
        return False


def _bound_names(node: ast.AST) -> List[Tuple[ast.AST, ast.AST]]:
    """(target, value) pairs a statement binds (`a, b = x.p, x.q` pairwise)."""
    if isinstance(node, ast.Assign):
        out = []
        for t in node.targets:
            if (isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    and len(t.elts) == len(node.value.elts)):
                out += list(zip(t.elts, node.value.elts))
            else:
                out.append((t, node.value))
        return out
    if isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
        return [(node.target, node.value)]
    if isinstance(node, (ast.For, ast.comprehension)):
        return [(node.target, node.iter)]
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return [(node.optional_vars, node.context_expr)]
    return []


def _scopes(scope: ast.AST, sec: _Section, inherited: FrozenSet[str]):
    """(scope, names bound to the section there) of `scope` and every nested scope."""
    aliases = set(inherited)
    args = getattr(scope, "args", None)
    if isinstance(args, ast.arguments):
        for a in args.posonlyargs + args.args + args.kwonlyargs:
            if sec.annotated(a.annotation) or a.arg in sec.conventional:
                aliases.add(a.arg)
            else:
                aliases.discard(a.arg)
    nodes = list(_shallow(scope))
    changed = True
    while changed:  # aliases of aliases (`p = cfg.mcts; q = p`)
        changed = False
        for n in nodes:
            for target, value in _bound_names(n):
                if (isinstance(target, ast.Name) and target.id not in aliases
                        and sec.is_section(value, aliases)):
                    aliases.add(target.id)
                    changed = True
    yield scope, nodes, aliases
    inner = frozenset(aliases if not isinstance(scope, ast.ClassDef) else inherited)
    for n in nodes:
        if isinstance(n, _SCOPES):
            yield from _scopes(n, sec, inner)


def _is_replace(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Name) and f.id == "replace") or (
        isinstance(f, ast.Attribute) and f.attr == "replace")


def _carriers(tree: ast.AST, sec: _Section) -> Tuple[Set[str], Set[str]]:
    """Attributes the module stores the section in (`self.cfg = cfg` with
    `cfg: ExecutorConfig`), and config fields it copies the section into
    (`replace(cfg.train, sft=cfg.evolve.pretrain)`)."""
    attrs, fields = set(), set()
    for _, nodes, aliases in _scopes(tree, sec, frozenset()):
        for n in nodes:
            for target, value in _bound_names(n):
                if isinstance(target, ast.Attribute) and sec.is_section(value, aliases):
                    attrs.add(target.attr)
            if isinstance(n, ast.Call) and _is_replace(n):
                fields.update(k.arg for k in n.keywords
                              if k.arg and sec.is_section(k.value, aliases))
    return attrs, fields


def _reads_off(tree: ast.AST, sec: _Section) -> Set[str]:
    """The attribute names the module reads off the section object."""
    out = set()
    for _, nodes, aliases in _scopes(tree, sec, frozenset()):
        for n in nodes:
            if (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)
                    and sec.is_section(n.value, aliases)):
                out.add(n.attr)
            got = _getattr_const(n)
            if got is not None and sec.is_section(got[0], aliases):
                out.add(got[1])
    return out


def _section(tree: ast.AST, path: Tuple[str, ...], owners: Tuple[str, ...],
             extra: FrozenSet[str] = frozenset()) -> _Section:
    if len(path) == 1:  # a top-level key: read off the whole config
        return _Section("cfg", "Config", frozenset({"cfg", "config"}) | extra)
    sec = _Section(path[-2], owners[-1], _class_attrs(tree, owners[-1]) | extra)
    while True:  # attributes that hold the section, until no new one
        attrs, _ = _carriers(tree, sec)
        if attrs <= sec.attrs:
            return sec
        sec = _Section(sec.name, sec.cls, frozenset(sec.attrs | attrs))


def reads_key(tree: ast.AST, path: Tuple[str, ...], owners: Tuple[str, ...],
              extra: FrozenSet[str] = frozenset()) -> bool:
    """Whether module `tree` reads the leaf key `path` off its own section
    (`extra`: further attribute names that hold the section)."""
    return path[-1] in _reads_off(tree, _section(tree, path, owners, extra))


def _class_attrs(tree: ast.AST, cls: str) -> FrozenSet[str]:
    """Attributes declared with the section's class in a class body of the module."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for st in node.body:
                if (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                        and cls in ast.unparse(st.annotation)):
                    out.add(st.target.id)
    return frozenset(out)


def _attribute_loads(tree: ast.AST) -> Set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            out.add(node.attr)
        got = _getattr_const(node)
        if got is not None:
            out.add(got[1])
    return out


def dead_keys(keys: List[tuple], trees: Dict[str, ast.AST]) -> List[str]:
    """The keys of `keys` that no module of `trees` reads off their section."""
    all_attrs = set().union(*(_attribute_loads(t) for t in trees.values()))
    read: Dict[tuple, Set[str]] = {}
    for path, owners in keys:
        where = (path[:-1], owners[-1] if owners else "Config")
        if where in read:
            continue
        # Config fields the section is copied into anywhere (`replace(...,
        # sft=cfg.evolve.pretrain)`) hold it in every module.
        fields = set()
        for t in trees.values():
            fields |= _carriers(t, _section(t, path, owners))[1]
        read[where] = set().union(*(_reads_off(t, _section(t, path, owners, frozenset(fields)))
                                    for t in trees.values()))
    dead = []
    for path, owners in keys:
        missing_section = [s for s in path[:-1] if s not in all_attrs]
        if missing_section or path[-1] not in read[(path[:-1], owners[-1] if owners else "Config")]:
            dead.append(".".join(path))
    return dead


@pytest.fixture(scope="module")
def sources() -> Dict[str, ast.AST]:
    return {str(p.relative_to(PKG.parent)): ast.parse(p.read_text())
            for p in sorted(PKG.rglob("*.py")) if p not in NOT_READERS}


def test_the_walk_finds_the_schema(sources):
    keys = {".".join(k) for k, _ in schema_keys()}
    assert {"mcts.rollouts", "train.sft.learning_rate", "mesh.distributed.enabled"} <= keys
    assert len(sources) > 50


def test_every_config_key_is_read_somewhere(sources):
    dead = dead_keys(schema_keys(), sources)
    assert not dead, ("config keys that nothing in rstar_jax/ reads (make them work or remove "
                      "them from config/schema.py and configs/): " + ", ".join(dead))


@dataclasses.dataclass(frozen=True)
class _PlantedData(schema.DataConfig):
    split: str = "train"  # nothing reads it; the package calls `.split(` on strings
    planted_limit: int = 3  # nothing reads it either


@dataclasses.dataclass(frozen=True)
class _PlantedConfig(Config):
    data: _PlantedData = dataclasses.field(default_factory=_PlantedData)


def test_a_planted_dead_key_is_found(sources):
    """The package splits strings (`data.split(b"\\n")` in search/treefile.py,
    a bytes value named `data`): a key `data.split` must still be dead."""
    text_splits = [f for f, t in sources.items() if any(
        isinstance(n, ast.Attribute) and n.attr == "split" for n in ast.walk(t))]
    assert "rstar_jax/search/treefile.py" in text_splits
    keys = [(path, ("DataConfig",)) for path, _ in schema_keys(_PlantedConfig)
            if path[0] == "data"]
    assert len(keys) > 10  # the real data keys stay read: the control
    assert dead_keys(keys, sources) == ["data.split", "data.planted_limit"]


@pytest.mark.parametrize("code,read", [
    ("def f(cfg):\n    return cfg.data.split", True),
    ("def f(cfg):\n    d = cfg.data\n    return d.split", True),
    ("def f(data_cfg):\n    return data_cfg.split", True),
    ("def f(c):\n    return getattr(c.data, 'split')", True),
    ("def f(d: 'DataConfig'):\n    return d.split", True),
    ("def f(data):\n    return data.split(b'x')", False),
    ("def f(cfg, text):\n    d = cfg.data\n    return text.split()", False),
    ("def f(cfg):\n    d = cfg.data\n\ndef g(d):\n    return d.split", False),
    ("def f(cfg):\n    return cfg.data.path.split('/')", False),
    ("def f(cfg):\n    cfg.mcts.split", False),
])
def test_reads_key_needs_the_section_object(code, read):
    assert reads_key(ast.parse(code), ("data", "split"), ("DataConfig",)) is read
