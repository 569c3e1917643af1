"""Imports run down, never back up, between the rooms of service/ and training/.

A room is a subpackage one level down (``service.http``, ``training.lab``...); a package's
top-level modules (``service/settings.py``, ``service/metrics.py``...) are its shared level,
below every room. The shared level imports no room, a room imports another only along an edge
of ``ALLOWED`` (which has no cycle), and only the composers (``COMPOSERS``), which wire rooms
together, import rooms freely: nothing in the packages imports them. So a piece two rooms
share moves down to the shared level instead of one room reaching into the other. Which
package may import which (model/ neither service/ nor training/; service/ never training/)
is tests/test_serving_imports.py's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "model", "training")

# (importing room, imported room): why the first may use the second.
ALLOWED: dict[tuple[str, str], str] = {
    ("service.http", "service.feedback"): "/predict keeps answers and POST /feedback stores "
    "corrections through the feedback service",
    ("service.telegram_bot", "service.feedback"): "the bot's buttons store corrections through "
    "the same feedback service",
    ("service.front", "service.http"): "the front's refusals answer in the API's error shape",
    ("service.front", "service.telegram_bot"): "the front routes the webhook path to the bot, "
    "which answers on the front's event loop",
    ("training.release", "training.lab"): "a release is built from a lab run: its data, "
    "evaluation and open-set calibration",
    ("training.reports", "training.lab"): "the pages report the lab's runs, data and evaluation",
    ("training.release", "training.reports"): "a release step writes its report page (open "
    "set, prior) with the reports' formatters",
}

# Shared-level modules that wire rooms together (entry points): they may import any room.
COMPOSERS: dict[str, str] = {
    "service.factory": "create_app: the HTTP app, feedback and the bot in one app",
    "training.train": "one experiment end to end: the lab's fit, then the release's export",
    "training.feedback": "the lab command that pulls the service's stored corrections into the "
    "lab's data",
}

Imports = Mapping[str, list[tuple[int, str]]]  # module -> (line, imported project module)


def project_modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its own name)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_in(
    tree: ast.AST,
    module: str,
    is_package: bool,
    known: Iterable[str],
    packages: Iterable[str] = PACKAGES,
) -> list[tuple[int, str]]:
    """(line, project module) of every import in ``tree`` (also inside functions and
    ``TYPE_CHECKING``); ``from a import b`` names ``a.b`` when that is a module."""
    known, packages = set(known), set(packages)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package up
                package = module.split(".")[: None if is_package else -1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if name in known else base))
    # One entry per imported module and line: ``from a import b, c`` names ``a`` once.
    return list(dict.fromkeys(f for f in found if f[1].split(".")[0] in packages))


def project_imports(root: Path = REPO_ROOT) -> dict[str, list[tuple[int, str]]]:
    modules = project_modules(root)
    return {
        module: imports_in(
            ast.parse(path.read_text(), filename=str(path)),
            module,
            path.name == "__init__.py",
            modules,
        )
        for module, path in modules.items()
    }


def room_of(module: str, rooms: set[str]) -> str | None:
    """The room ``module`` is in; None on a package's shared level."""
    room = ".".join(module.split(".")[:2])
    return room if room in rooms else None


def project_rooms(root: Path = REPO_ROOT) -> set[str]:
    """The subpackages one level down of each package."""
    return {
        f"{package}.{folder.name}"
        for package in PACKAGES
        for folder in (root / package).iterdir()
        if (folder / "__init__.py").is_file()
    }


def layer_offences(
    imports: Imports,
    rooms: set[str],
    allowed: Iterable[tuple[str, str]] = ALLOWED,
    composers: Iterable[str] = COMPOSERS,
) -> list[str]:
    """What breaks the layering, one line per import: module, line, what it imports, why."""
    allowed, composers = set(allowed), set(composers)
    offences = []
    for module, found in sorted(imports.items()):
        room = room_of(module, rooms)
        for line, name in found:
            target = room_of(name, rooms)
            where = f"{module} (line {line}) imports {name}"
            if name in composers:
                offences.append(f"{where}: a composer, which nothing may import")
            elif target is None or target == room or module in composers:
                continue
            elif room is None:
                offences.append(
                    f"{where}: the shared level imports no room (move the piece it needs down "
                    "to the shared level, or name a module that wires rooms in COMPOSERS)"
                )
            elif (room, target) not in allowed:
                offences.append(
                    f"{where}: {room} -> {target} is not an allowed room edge (move the shared "
                    "piece down to the shared level, or add the edge to ALLOWED with its reason)"
                )
    return offences


def room_edges(imports: Imports, rooms: set[str], composers: Iterable[str]) -> set[tuple[str, str]]:
    """(room, room) for every import between two rooms, composers left out."""
    edges = set()
    for module, found in imports.items():
        room = room_of(module, rooms)
        if room is None or module in set(composers):
            continue
        for _, name in found:
            target = room_of(name, rooms)
            if target is not None and target != room:
                edges.add((room, target))
    return edges


def find_cycle(edges: Iterable[tuple[str, str]]) -> list[str]:
    """One cycle of the graph as [a, b, ..., a]; [] when it has none."""
    graph: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        graph.setdefault(source, []).append(target)
    acyclic: set[str] = set()  # explored: no cycle runs through them

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node not in acyclic:
            for target in graph.get(node, []):
                if cycle := visit(target, [*path, node]):
                    return cycle
            acyclic.add(node)
        return []

    for node in sorted(graph):
        if cycle := visit(node, []):
            return cycle
    return []


@pytest.fixture(scope="module")
def imports() -> dict[str, list[tuple[int, str]]]:
    return project_imports()


@pytest.fixture(scope="module")
def rooms() -> set[str]:
    return project_rooms()


def test_no_import_runs_back_up_between_rooms(imports: Imports, rooms: set[str]) -> None:
    offences = layer_offences(imports, rooms)
    assert not offences, "\n".join(offences)


def test_the_rooms_import_each_other_without_a_cycle(imports: Imports, rooms: set[str]) -> None:
    cycle = find_cycle(room_edges(imports, rooms, COMPOSERS) | set(ALLOWED))
    assert not cycle, "rooms import each other in a cycle: " + " -> ".join(cycle)


def test_every_allowed_edge_and_composer_is_still_needed(imports: Imports, rooms: set[str]) -> None:
    """A stale entry would let an import back in unseen: each must name a real use."""
    used = room_edges(imports, rooms, COMPOSERS)
    stale = [f"ALLOWED {a} -> {b}: no import uses it" for a, b in ALLOWED if (a, b) not in used]
    stale += [
        f"COMPOSERS {name}: not a shared-level module that imports a room"
        for name in COMPOSERS
        if name not in imports
        or room_of(name, rooms) is not None
        or not any(room_of(target, rooms) for _, target in imports[name])
    ]
    assert not stale, "\n".join(stale)


def test_the_rooms_are_the_subpackages_one_level_down(rooms: set[str]) -> None:
    assert {"service.http", "service.feedback", "service.telegram_bot", "service.front"} <= rooms
    assert {"training.lab", "training.release", "training.reports"} <= rooms


def test_the_check_names_the_module_and_the_import() -> None:
    rooms = {"pkg.a", "pkg.b"}
    imports = {
        "pkg.shared": [(3, "pkg.a.x")],
        "pkg.a.x": [(5, "pkg.b.y"), (6, "pkg.shared")],
        "pkg.b.y": [(7, "pkg.main")],
        "pkg.main": [(1, "pkg.a.x"), (2, "pkg.b.y")],
    }
    offences = layer_offences(imports, rooms, allowed=(), composers=("pkg.main",))
    assert offences[0].startswith("pkg.a.x (line 5) imports pkg.b.y: pkg.a -> pkg.b is not")
    assert offences[1].startswith("pkg.b.y (line 7) imports pkg.main: a composer")
    assert offences[2].startswith("pkg.shared (line 3) imports pkg.a.x: the shared level")
    assert len(offences) == 3
    assert layer_offences(imports, rooms, [("pkg.a", "pkg.b")], ("pkg.main",))[0].startswith(
        "pkg.b.y"
    )


def test_the_scan_resolves_relative_imports_and_submodules() -> None:
    tree = ast.parse(
        "from . import c\nfrom ..b import y\nfrom pkg.a import helper\n"
        "def f():\n    import pkg.b.y\n"
    )
    found = imports_in(tree, "pkg.a.x", False, {"pkg.a.c", "pkg.b.y", "pkg.a"}, ("pkg",))
    assert sorted(found) == [(1, "pkg.a.c"), (2, "pkg.b.y"), (3, "pkg.a"), (5, "pkg.b.y")]


def test_a_cycle_is_found_and_named() -> None:
    assert find_cycle([("a", "b"), ("b", "c")]) == []
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
