"""The shape of the house: no plugin name tested in code, no import circle at any level, rooms that
import only the rooms below them, plugins that import only the public API, a module that says its job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stmbench.core.catalogue import Catalogue, get_plugin_manager
from tests.conftest import REPO

PACKAGES = {"stmbench": REPO / "stmbench", "stmbench_plugins": REPO / "plugins"}
#: attributes and variables that hold a plugin's name (or an object whose name a comparison reads)
NAME_HOLDERS = {"name", "adapter", "strategy", "backbone", "executor", "task"}
#: the rooms of ``stmbench``, lowest first: a room imports only itself and the rooms before it
#: (``stmbench.api`` re-exports from every room and nothing imports it; plugins sit above all)
ROOMS = ("common", "tasks", "spec", "store", "core", "plan", "run", "report", "cli")


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
    """The package modules ``module`` imports anywhere: at module level, under ``if TYPE_CHECKING:``
    and inside functions (a deferred import is still a dependency; a circle through one is a circle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(sub for sub in subs if sub in known)  # ``from stmbench.core import hookspecs``
            if not all(sub in known for sub in subs):
                found.add(node.module)
    return {m for m in found if m in known and m != module}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {module: _imports(module, path, known) for module, path in known.items()}


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


def test_the_import_reader_sees_deferred_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from stmbench.report import board\n", encoding="utf-8")
    assert _imports("stmbench.x", path, {"stmbench.report.board": path}) == {"stmbench.report.board"}


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def room(module: str) -> str:
    """``stmbench.run.pipeline`` -> ``run``; ``stmbench`` and ``stmbench.api`` are their own."""
    parts = module.split(".")
    return parts[1] if parts[0] == "stmbench" and len(parts) > 1 else parts[0]


def room_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, deps in sorted(graph.items()):
        if room(module) not in ROOMS:
            continue
        for dep in sorted(deps):
            if dep == "stmbench.api" or (room(dep) in ROOMS and ROOMS.index(room(dep)) > ROOMS.index(room(module))):
                out.append(f"{module} ({room(module)}) imports {dep} ({room(dep)}), a room above it")
    return out


def test_the_room_check_finds_an_import_from_above():
    assert room_violations({"stmbench.run.study": {"stmbench.report.leaderboard", "stmbench.store.results"}}) == [
        "stmbench.run.study (run) imports stmbench.report.leaderboard (report), a room above it"]


def test_each_room_imports_only_the_rooms_below_it():
    """The flow has one direction (common < tasks < spec < store < core < plan < run < report < cli):
    the driver never writes the report, the store never plans, no room reaches back up."""
    assert sorted(p.name for p in (REPO / "stmbench").iterdir() if p.is_dir() and (p / "__init__.py").exists()) == \
        sorted(ROOMS)
    graph = import_graph()
    assert all(room(m) in ROOMS or m in ("stmbench", "stmbench.api") for m in graph if m.startswith("stmbench."))
    assert room_violations(graph) == []
    rooms: dict[str, set[str]] = {}
    for module, deps in graph.items():
        rooms.setdefault(room(module), set()).update(room(d) for d in deps if room(d) != room(module))
    assert find_cycle(rooms) is None


def non_api_imports(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` of every import of ``stmbench`` that is not a public name of :mod:`stmbench.api`."""
    import stmbench.api

    public = set(stmbench.api.__all__)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] == "stmbench"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stmbench":
            if node.module not in ("stmbench", "stmbench.api"):
                found.append((node.lineno, f"from {node.module} import ..."))
            else:
                found += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names
                          if a.name not in public]
    return found


def test_the_api_check_finds_what_it_should():
    assert non_api_imports("from stmbench import Strategy, hookimpl\nfrom stmbench.api import Metric") == []
    assert non_api_imports("from stmbench.core.modeling import head_modules") == [
        (1, "from stmbench.core.modeling import ...")]
    assert non_api_imports("def f():\n    import stmbench.run.study") == [(2, "import stmbench.run.study")]
    assert non_api_imports("from stmbench import leaderboard") == [(1, "from stmbench import leaderboard")]


def test_plugins_and_examples_import_only_the_public_api():
    """A plugin author reads one module, :mod:`stmbench.api`: built-in plugins and the examples use
    nothing else of stmbench (their own helper modules are theirs)."""
    files = sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "examples").rglob("*.py")])
    found = [f"{path.relative_to(REPO)}:{line}: {what} (not in stmbench.api)"
             for path in files for line, what in non_api_imports(path.read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)


def test_every_public_name_resolves():
    import stmbench
    import stmbench.api

    for name in stmbench.api.__all__:
        assert getattr(stmbench, name) is getattr(stmbench.api, name), name


@pytest.mark.parametrize("module", sorted(modules()))
def test_each_module_says_its_one_job(module):
    """Size is not the rule, a job is: every module opens with a docstring saying what it does."""
    doc = ast.get_docstring(ast.parse(modules()[module].read_text(encoding="utf-8")))
    assert doc and len(doc.split("\n\n")[0]) >= 10, f"{module} does not say its job in an opening docstring"


def test_the_architecture_names_only_what_exists():
    """docs/architecture.md: every module, room and plugin file it names exists, and it names every room."""
    import re

    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    known = set(modules()) | {f"stmbench.{r}" for r in ROOMS}
    named = set(re.findall(r"\bstmbench(?:\.[a-z_]+)+", text))
    missing = sorted(n for n in named if n not in known and n.rsplit(".", 1)[0] not in known)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    paths = set(re.findall(r"\b(?:plugins|stmbench|tests|examples)/[\w/.-]+\.(?:py|md|yaml)\b", text))
    assert not sorted(p for p in paths if not (REPO / p).exists())
    assert all(f"stmbench.{r}" in text for r in ROOMS)


#: grids whose run ids (computed by the code before the contract refactor) are pinned in
#: tests/pinned_run_ids.json: stored results keep their ids, so finished runs are never redone
PINNED_GRIDS = {
    "default": {},
    "in_context": {"strategies": ["in_context"], "adapters": ["lora", "full"], "shots": [0, 5],
                   "train_sizes": [200, "full"]},
    "encoder": {"backbones": ["tiny-bert"], "strategies": ["discriminative", "label_supervised", "generative"],
                "adapters": ["full", "lora", "frozen"], "prompts": ["concise", "complex"]},
    "ls": {"strategies": ["label_supervised[unmask=true]", "cot"],
           "adapters": ["lora[r=4]", "ia3", "prompt_tuning", "prefix_tuning", "qlora"], "train_sizes": [100],
           "seeds": [1, 2]},
    "sweep": {"strategies": ["generative"], "adapters": ["lora"], "sweep": {"learning_rate": [1e-3, 1e-4]}},
}


@pytest.mark.parametrize("grid", sorted(PINNED_GRIDS))
def test_run_ids_are_pinned(grid, session):
    import json

    from stmbench.plan.grid import plan_grid
    from stmbench.spec.grid_spec import GridSpec

    pinned = json.loads((REPO / "tests" / "pinned_run_ids.json").read_text(encoding="utf-8"))[grid]
    plan = plan_grid(GridSpec(**PINNED_GRIDS[grid]), session)
    assert sorted(r.run_id for r in plan.runs) == pinned["runs"]
    assert sorted(f"{r.run_id}: {why}" for r, why in plan.rejected) == pinned["rejected"]


def test_the_committed_leaderboard_is_the_default_grid(session):
    """The README's run command made leaderboard/results: the same ids as the embedded default (the
    default grid with its second train size) plans now."""
    from stmbench.plan.grid import plan_grid
    from stmbench.store.results import ResultStore
    from stmbench.spec.grid_spec import EMBEDDED_DEFAULT, GridSpec

    stored = sorted(r.run_id for r in ResultStore(REPO / "leaderboard" / "results").load_all())
    assert sorted(r.run_id for r in plan_grid(GridSpec(**EMBEDDED_DEFAULT), session).runs) == stored


def test_the_committed_leaderboard_regenerates_byte_identically(tmp_path, session):
    """The pages are a function of the stored results: rebuilt from leaderboard/results as
    ``stmbench leaderboard`` builds them, they are the committed files byte for byte."""
    from stmbench.report import leaderboard
    from stmbench.report.evidence import session_gold_source

    committed = REPO / "leaderboard"
    leaderboard.generate(committed / "results", tmp_path / "board", references=leaderboard.task_references(session),
                         gold_source=session_gold_source(session))  # the built-in metrics
    names = ["README.md", "index.html", *sorted(p.name for p in committed.glob("*.svg"))]
    assert len(names) > 2
    for name in names:
        assert (tmp_path / "board" / name).read_bytes() == (committed / name).read_bytes(), name


def test_capabilities_decide_what_names_used_to(settings):
    """A third-party adapter that declares ``trains_all`` gets what the built-in ``full`` gets; a
    strategy that does not train gets the adapter that trains nothing whatever the grid asked."""
    from stmbench import Adapter, hookimpl
    from stmbench.plan.grid import plan_grid
    from stmbench.core.session import Session
    from stmbench.spec.grid_spec import GridSpec

    class FullBf16(Adapter):
        name = "full_bf16"
        trains_all = True

        def wrap(self, model, *, head, info, options):
            return model

    class Plugin:
        @hookimpl
        def register_adapters(self, register):
            register(FullBf16())

    session = Session(settings, extra_plugins=[Plugin()])
    plan = plan_grid(GridSpec(strategies=["generative", "discriminative", "in_context"],
                              adapters=["full", "full_bf16", "lora"]), session)
    lr = {(r.strategy, r.adapter): r.training.learning_rate for r in plan.runs}
    assert lr[("generative", "full_bf16")] == lr[("generative", "full")] == 2e-3  # tiny's full fine-tuning rate
    assert lr[("discriminative", "full_bf16")] == lr[("discriminative", "full")] == 1e-3
    assert lr[("generative", "lora")] == 5e-3
    assert {r.adapter for r in plan.runs if r.strategy == "in_context"} == {"none"}
    assert all(r.train_size == 0 for r in plan.runs if r.strategy == "in_context")


def test_a_custom_head_declares_its_modules(session):
    """Adapters find a strategy's own head through ``trainable_head_modules()``, not its attribute name."""
    from stmbench.core.modeling import head_modules, transformers_model

    task = session.get("task", "sample")
    base, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="base", task=task,
                                                                  context=session.context, load_kwargs={})
    strategy = session.get("strategy", "label_supervised")
    model = strategy.prepare_model(base, tokenizer=tok, task=task,
                                   options=strategy.typed_options({"pooling": "last", "unmask": False}))
    assert head_modules(model) == ["head"] and transformers_model(model) is base
    frozen = session.get("adapter", "frozen").wrap(model, head="base", info=None, options=None)
    assert {n.split(".")[0] for n, p in frozen.named_parameters() if p.requires_grad} == {"head"}
