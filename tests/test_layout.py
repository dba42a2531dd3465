"""The package layout's rules (docs/architecture.md), read from the source with ``ast``:
imports point down the layers, no import cycles, one source of defaults, one script list."""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from live.app.factory import DOMAINS
from live.app.services import FOUNDATION_SCRIPTS, script_names
from live.core.settings import Settings
from tests.support import ROOT

LIVE = ROOT / "live"

# Layers, lowest first; a module may import (at run time) its own package and lower layers only.
# live.app.services and live.app.appkeys are the services container and its app key: the seam the
# transport reads and domains name in ``install(svc: Services)`` (a type-only import).
LAYERS: list[tuple[str, set[str]]] = [
    ("core", {"live.core", "live.ops.embedded", "live.ops.migrations"}),
    ("domains", {"live.commerce", "live.community", "live.media", "live.fans", "live.integrations",
                 "live.governance"}),
    ("container", {"live.app.services", "live.app.appkeys"}),
    ("transport", {"live.transport"}),
    ("app", {"live.app.factory", "live.app.worker", "live.app.ready", "live.app.heap"}),
    ("entry points", {"live.app.main", "live.ops.cli", "live.__main__"}),
]
# The load tester is a client: it talks HTTP and Socket.IO to a server and imports nothing of it.
SEPARATE = {"live.loadtest"}
# Type-only imports (under ``if TYPE_CHECKING``) may also name the container.
TYPE_ONLY_ALLOWED = {"live.app.services"}
# Module cycles known and allowed, each with why: none. (The helpers flash-buy, orders and the
# after-payment modules share live in live.commerce.views, which imports no other commerce module.)
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> list[Import]:
    src = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, type_only)
                continue
            visit_stmt(child, type_only)

    def visit_stmt(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(src, a.name, node.lineno, type_only) for a in node.names if a.name.startswith("live"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("live"):
            # ``from live.core import keys`` imports the module live.core.keys when there is one.
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                target = sub if (LIVE.parent / (sub.replace(".", "/") + ".py")).exists() else node.module
                found.append(Import(src, target, node.lineno, type_only))
        else:
            visit(node, type_only)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    out: list[Import] = []
    for path in sorted(LIVE.rglob("*.py")):
        if "migrations/versions" not in path.as_posix():
            out.extend(imports_of(path))
    return out


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer) — the longest prefix wins
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), i)
    return None if best is None else best[1]


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_has_a_layer() -> None:
    for path in LIVE.rglob("*.py"):
        name = module_name(path)
        if name in ("live", "live.app", "live.ops"):  # docstring-only package files
            assert not imports_of(path), f"{name} should import nothing"
            continue
        if not any(name == s or name.startswith(s + ".") for s in SEPARATE):
            assert layer_of(name) is not None, f"{name} is in no layer of tests/test_layout.py (docs/architecture.md)"


def test_imports_point_down_the_layers() -> None:
    sideways = {"core", "domains", "entry points"}  # layers whose packages may import each other
    bad: list[str] = []
    for imp in all_imports():
        if imp.target == "live":
            continue
        same_package = package_of(imp.source) == package_of(imp.target)
        if any(imp.source.startswith(s) or imp.target.startswith(s) for s in SEPARATE):
            if not same_package:
                bad.append(f"{imp.source}:{imp.line} imports {imp.target} (the load tester stays separate)")
            continue
        if imp.type_only and imp.target in TYPE_ONLY_ALLOWED:
            continue
        src, dst = layer_of(imp.source), layer_of(imp.target)
        assert src is not None and dst is not None, imp
        if dst < src or (dst == src and (same_package or LAYERS[src][0] in sideways)):
            continue
        bad.append(f"{imp.source}:{imp.line} imports {imp.target} "
                   f"({LAYERS[src][0]} may not import {LAYERS[dst][0]})")
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(bad)


def test_core_imports_nothing_above_it() -> None:
    above = [i for i in all_imports() if i.source.startswith("live.core") and not i.target.startswith("live.core")]
    assert not above, above


def test_domains_know_nothing_of_http_socketio_or_the_app() -> None:
    domains = ("live.commerce", "live.community", "live.media", "live.fans")
    bad = [i for i in all_imports() if i.source.startswith(domains)
           and i.target.startswith(("live.transport", "live.app", "live.ops", "live.loadtest"))
           and not (i.type_only and i.target in TYPE_ONLY_ALLOWED)]
    assert not bad, bad
    # Nor of aiohttp / python-socketio themselves.
    for pkg in domains:
        for path in (LIVE / pkg.split(".")[1]).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for n in names:
                    assert not n.startswith(("aiohttp", "socketio", "engineio")), f"{path.name} imports {n}"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles() -> None:
    modules: dict[str, set[str]] = defaultdict(set)
    packages: dict[str, set[str]] = defaultdict(set)
    for imp in all_imports():
        if imp.type_only or imp.target == imp.source:
            continue
        modules[imp.source].add(imp.target)
        a, b = package_of(imp.source), package_of(imp.target)
        # The app and ops packages span layers (container / factory / entry points): their modules
        # are checked individually above, not as one node.
        if a != b and not {a, b} & {"live.app", "live.ops"}:
            packages[a].add(b)
    found = [c for c in cycles(modules) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, f"module import cycles: {found}"
    assert not cycles(packages), f"package import cycles: {cycles(packages)}"


def test_the_layout_test_sees_a_violation() -> None:
    """The rule above is not vacuous: a core module importing a domain is caught."""
    bad = Import("live.core.keys", "live.commerce.orders", 1, False)
    assert layer_of(bad.target) > layer_of(bad.source)  # type: ignore[operator]
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]


# --- one source of defaults -------------------------------------------------------------------
def test_default_toml_documents_exactly_the_model_defaults() -> None:
    """``Settings`` is the source of defaults; config/default.toml shows the same values, and
    every setting a file may set is documented there."""
    documented = tomllib.loads((ROOT / "config" / "default.toml").read_text(encoding="utf-8"))
    model = Settings()
    file_settable = {name for name in Settings.model_fields if name != "workers"}  # workers: --workers only
    assert set(documented) == file_settable, (
        f"undocumented: {sorted(file_settable - set(documented))}, unknown: {sorted(set(documented) - file_settable)}")
    for name, value in documented.items():
        parsed = getattr(Settings.model_validate({name: value}), name)
        expected = getattr(model, name)
        if isinstance(expected, Decimal):
            parsed, expected = Decimal(parsed), Decimal(expected)
        assert parsed == expected, f"{name}: config/default.toml says {value!r}, Settings says {expected!r}"


def declared_scripts() -> set[str]:
    """Every name in a module-level ``SCRIPTS = [...]`` list of any module of ``live``."""
    names: set[str] = set()
    for path in LIVE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and any(
                    isinstance(t, ast.Name) and t.id == "SCRIPTS" for t in node.targets):
                names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return names


def test_scripts_are_listed_once_and_all_exist() -> None:
    names = script_names(DOMAINS)
    assert len(names) == len(set(names)) and names[: len(FOUNDATION_SCRIPTS)] == FOUNDATION_SCRIPTS
    on_disk = {p.stem for p in (LIVE / "lua").glob("*.lua")}
    assert set(names) <= on_disk, set(names) - on_disk
    # Every Lua file is run by someone: a domain's SCRIPTS (registered once at start), or a
    # ``*_lib`` prepended to the scripts of its module.
    unused = {n for n in on_disk - set(names) - declared_scripts() if not n.endswith("_lib")}
    assert not unused, f"Lua files no module lists in SCRIPTS: {unused}"


@pytest.mark.parametrize("path", ["pyproject.toml"])
def test_no_top_level_module_in_the_wheel(path: str) -> None:
    """setup.py ships only ``live*`` packages; the server's entry is in the package."""
    text = (ROOT / path).read_text()
    assert "py-modules" not in text and 'live-server = "live.app.main:main"' in text
    assert (ROOT / "web" / "__init__.py").is_file() and (ROOT / "config" / "__init__.py").is_file()
