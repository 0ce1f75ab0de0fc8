"""The shape of the house: no plugin name tested in code, no import circle, no oversized module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stmbench.plugins import Catalogue, get_plugin_manager
from tests.conftest import REPO

PACKAGES = {"stmbench": REPO / "stmbench", "stmbench_plugins": REPO / "plugins"}
#: attributes and variables that hold a plugin's name (or an object whose name a comparison reads)
NAME_HOLDERS = {"name", "adapter", "strategy", "backbone", "executor", "task"}
MAX_LINES = 420  # "no module over about 400 lines"


def modules() -> dict[str, Path]:
    out = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _holds_name(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in NAME_HOLDERS) or (
        isinstance(node, ast.Name) and node.id in NAME_HOLDERS)


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for elt in node.elts for s in _literals(elt)]
    return []


def name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, plugin name)`` of every comparison of a name-holding expression with a plugin's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_holds_name(o) for o in operands):
                found += [(node.lineno, s) for o in operands for s in _literals(o) if s in names]
    return found


def test_the_name_check_finds_what_it_should():
    names = {"full", "hf", "none"}
    assert name_comparisons('if adapter.name == "full": pass', names) == [(1, "full")]
    assert name_comparisons('if info.backbone != "hf": pass', names) == [(1, "hf")]
    assert name_comparisons('x = spec.adapter in ("none", "x")', names) == [(1, "none")]
    assert name_comparisons('if self.bias not in ("none", "all"): pass', names) == []  # not a plugin name holder


def test_no_code_tests_a_plugin_by_name():
    """Capabilities, not names: a third-party ``full_bf16`` adapter must get what ``full`` gets."""
    catalogue = Catalogue(get_plugin_manager(entry_points=False))
    names = {n for kind in catalogue.entries for n in catalogue.names(kind)}
    found = [f"{path.relative_to(REPO)}:{line}: compares with {name!r}"
             for path in modules().values() for line, name in name_comparisons(path.read_text(encoding="utf-8"), names)]
    assert not found, "\n".join(found)


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports at module level (``if TYPE_CHECKING:`` blocks included:
    a circle there is one for type checkers and readers; imports inside functions are deferred on
    purpose and left out)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                found.update(sub for sub in subs if sub in known)  # ``from stmbench import hookspecs``
                if not all(sub in known for sub in subs):
                    found.add(node.module)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in found if m in known and m != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_circle():
    known = modules()
    graph = {module: _imports(module, path, known) for module, path in known.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_is_oversized(module):
    lines = len(modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it into modules that do one thing each"
