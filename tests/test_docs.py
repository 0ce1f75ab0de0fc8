"""Every code block of the docs runs: Python blocks are executed (and, where they register plugin
objects, loaded into a real catalogue), TOML and YAML blocks parse.  (The README's shell commands are
what CI and the fresh-clone checks run.)"""

from __future__ import annotations

import re
import sys
import textwrap
import tomllib
import types

import pytest
import yaml

from stmbench.core.catalogue import Catalogue, get_plugin_manager
from tests.conftest import REPO

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


def blocks() -> list[tuple[str, int, str, str]]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            out.append((path.name, line, match["lang"], textwrap.dedent(match["body"])))
    return out


def test_the_docs_have_code_blocks():
    langs = {lang for _, _, lang, _ in blocks()}
    assert len(blocks()) >= 10 and langs <= {"python", "toml", "yaml", "sh", "text"}, langs


RUNNABLE = [b for b in blocks() if b[2] in ("python", "toml", "yaml")]


@pytest.mark.parametrize("name,line,lang,body", RUNNABLE, ids=[f"{b[0]}:{b[1]}" for b in RUNNABLE])
def test_code_block_runs(name, line, lang, body, tmp_path, monkeypatch):
    if lang == "toml":
        tomllib.loads(body)
        return
    if lang == "yaml":
        assert isinstance(yaml.safe_load(body), dict)
        return
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    module = types.ModuleType(f"docs_block_{line}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    exec(compile(body, f"{name}:{line}", "exec"), module.__dict__)  # noqa: S102 - our own docs
    if any(hasattr(v, "stmbench_impl") for v in vars(module).values()):
        catalogue = Catalogue(get_plugin_manager([module], entry_points=False))
        registered = {n for kind in catalogue.entries for n, e in catalogue.entries[kind].items()
                      if e.plugin == catalogue.pm.get_name(module)}
        names = re.findall(r"^\s+name = \"([^\"]+)\"", body, re.M)
        assert set(names) <= registered, f"{names} registered as {registered}"
