"""The layering of the runtime packages, read from their source with ``ast``.

Every ``.py`` file of the runtime packages is parsed, and every import in it counts:
module level, inside functions, under ``if TYPE_CHECKING``, in ``try`` blocks, relative
imports, and ``importlib.import_module("...")`` / ``__import__("...")`` with a literal.

Rules:

a. A runtime package (``protocol``, ``gateway``, ``backend``, ``vehicle_sim``,
   ``paysim``) never imports the dev tooling (``launcher``, ``bench``, ``loadtest``,
   ``tests``). The tooling may import the runtime packages, not the other way round.
b. A runtime package imports no other runtime package except ``protocol``.
c. ``protocol`` imports no other first-party package.
d. No import cycles between the parts of ``backend``: its sub-packages
   (``backend.domain``, ``.store``, ``.workers``, ``.adapters``, ``.services``,
   ``.audit``, ``.http``) and top-level modules (``backend.config``, ``.errors``,
   ``.logs``, ``.metrics``, ``.service``, ``.cli``); a part is ``backend.<first name>``.
e. ``backend.domain`` imports no I/O framework (SQLAlchemy, FastAPI/Starlette, httpx,
   Redis, ...) and no other part of the backend except ``backend.errors``.

A failure lists every offending import as ``file:line: module imports target``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("protocol", "gateway", "backend", "vehicle_sim", "paysim")
DEV_TOOLING = ("launcher", "bench", "loadtest", "tests")
FIRST_PARTY = RUNTIME + DEV_TOOLING
BACKEND_PARTS = (
    "backend.domain",
    "backend.store",
    "backend.workers",
    "backend.adapters",
    "backend.services",
    "backend.audit",
    "backend.http",
    "backend.config",
    "backend.errors",
    "backend.logs",
    "backend.metrics",
    "backend.service",
    "backend.cli",
)
EDGE_IMPORTS_SHOWN = 6  # per edge of a cycle in the failure message
DOMAIN = "backend.domain"
DOMAIN_MAY_IMPORT = (DOMAIN, "backend.errors")
DOMAIN_FORBIDDEN = (
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "redis",
)


@dataclass(frozen=True)
class Import:
    path: Path  # relative to the repository root
    line: int
    importer: str  # dotted module name of the file
    target: str  # dotted module name imported

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.target}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str, root: Path = ROOT) -> bool:
    """Whether ``dotted`` is a module or package in the tree under ``root``."""
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def resolve_from(
    importer: str, is_package: bool, node: ast.ImportFrom, root: Path
) -> Iterator[str]:
    """The modules a ``from X import a, b`` imports: ``X.a`` when that is a module
    (``from backend.services import catalog``), else ``X``."""
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    for alias in node.names:
        candidate = f"{module}.{alias.name}"
        yield candidate if alias.name != "*" and is_module(candidate, root) else module


def dynamic_target(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import of the file, once per (line, module imported)."""
    importer = module_name(path, root)
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root)
    found: dict[tuple[int, str], Import] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = list(resolve_from(importer, is_package, node, root))
        elif isinstance(node, ast.Call) and (target := dynamic_target(node)):
            targets = [target]
        for target in targets:
            found.setdefault((node.lineno, target), Import(rel, node.lineno, importer, target))
    return sorted(found.values(), key=lambda i: (i.line, i.target))


@cache
def runtime_imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for package in RUNTIME:
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"no Python files in {package}/"
        for path in files:
            found.extend(imports_of(path))
    return tuple(found)


def top(dotted: str) -> str:
    return dotted.split(".")[0]


def within(dotted: str, package: str) -> bool:
    return dotted == package or dotted.startswith(package + ".")


def report(rule: str, offending: list[Import]) -> str:
    return f"{rule}: {len(offending)} offending import(s)\n" + "\n".join(map(str, offending))


def test_runtime_packages_never_import_dev_tooling() -> None:
    """(a) protocol, gateway, backend, vehicle_sim, paysim never import launcher, bench,
    loadtest or tests."""
    offending = [i for i in runtime_imports() if top(i.target) in DEV_TOOLING]
    assert not offending, report("runtime package imports dev tooling", offending)


def test_runtime_packages_share_only_protocol() -> None:
    """(b) A runtime package imports no other runtime package except protocol."""
    offending = [
        i
        for i in runtime_imports()
        if top(i.target) in RUNTIME and top(i.target) not in (top(i.importer), "protocol")
    ]
    assert not offending, report("runtime package imports another one", offending)


def test_protocol_imports_no_other_first_party_package() -> None:
    """(c) protocol is the bottom layer: no first-party import but its own modules."""
    others = set(FIRST_PARTY) - {"protocol"}
    offending = [
        i for i in runtime_imports() if top(i.importer) == "protocol" and top(i.target) in others
    ]
    assert not offending, report("protocol imports another first-party package", offending)


def backend_part(dotted: str) -> str:
    """``backend.store.db`` → ``backend.store``; ``backend.cli`` → itself."""
    return ".".join(dotted.split(".")[:2])


def backend_graph() -> dict[str, dict[str, list[Import]]]:
    """part → imported part → the imports that make the edge (no self edges)."""
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for i in runtime_imports():
        if within(i.importer, "backend") and within(i.target, "backend"):
            source, dest = backend_part(i.importer), backend_part(i.target)
            if source != dest and dest != "backend":
                graph[source][dest].append(i)
    return graph


def simple_cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Every elementary cycle, each once, starting at its smallest part."""
    cycles: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, {})):
            if nxt == start:
                cycles.append([*path])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return sorted(cycles, key=lambda c: (len(c), c))


def describe_cycle(graph: dict[str, dict[str, list[Import]]], cycle: list[str]) -> str:
    edges = zip(cycle, [*cycle[1:], cycle[0]], strict=True)
    lines = [" -> ".join([*cycle, cycle[0]])]
    for source, dest in edges:
        made_by = graph[source][dest]
        shown = made_by if len(made_by) <= EDGE_IMPORTS_SHOWN + 1 else made_by[:EDGE_IMPORTS_SHOWN]
        lines += [f"    {i}" for i in shown]
        if len(shown) < len(made_by):
            lines.append(f"    ... and {len(made_by) - len(shown)} more {source} -> {dest}")
    return "\n".join(lines)


def test_backend_parts_that_are_listed_exist() -> None:
    """The parts rule (d) is about are the backend's actual layout."""
    missing = [part for part in BACKEND_PARTS if not is_module(part)]
    assert not missing, f"backend parts not found: {missing}"


def test_backend_parts_have_no_import_cycles() -> None:
    """(d) The import graph between backend's parts has no cycle."""
    graph = backend_graph()
    cycles = simple_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s) between backend's parts:\n" + "\n".join(
        describe_cycle(graph, c) for c in cycles
    )


def outside_domain(target: str) -> bool:
    """An I/O framework, or a backend part that backend.domain may not depend on."""
    if top(target) in DOMAIN_FORBIDDEN:
        return True
    return within(target, "backend") and not any(within(target, p) for p in DOMAIN_MAY_IMPORT)


def test_backend_domain_is_free_of_io_and_outer_layers() -> None:
    """(e) backend.domain imports no I/O framework and no backend part but
    backend.errors."""
    offending = [
        i for i in runtime_imports() if within(i.importer, DOMAIN) and outside_domain(i.target)
    ]
    assert not offending, report("backend.domain imports outside its layer", offending)


def test_the_collector_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-local, TYPE_CHECKING, relative and importlib imports are all found, and
    ``from package import module`` counts as importing the module."""
    for module in ("backend", "backend/services", "backend/store"):
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text("")
    (tmp_path / "backend/store/db.py").write_text("")
    (tmp_path / "backend/services/seed.py").write_text("")
    source = tmp_path / "backend/services/probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from launcher.stack import LocalStack\n"
        "def f():\n"
        "    import bench.probe\n"
        "    from ..store import db\n"
        "    from . import seed\n"
        "    importlib.import_module('vehicle_sim.fleet')\n"
        "from backend.store import db, Thing\n"
    )
    found = {(i.line, i.target) for i in imports_of(source, tmp_path)}
    assert {
        (4, "launcher.stack"),
        (6, "bench.probe"),
        (7, "backend.store.db"),
        (8, "backend.services.seed"),
        (9, "vehicle_sim.fleet"),
        (10, "backend.store.db"),
        (10, "backend.store"),
    } <= found
