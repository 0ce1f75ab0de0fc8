"""Plugin loading: built-ins, entry points (real dist-info metadata), --plugin, validation, docs."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from stmbench import hookimpl
from stmbench.core import hookspecs
from stmbench.common.errors import StmbenchError
from stmbench.core.catalogue import DEFAULT_PLUGINS, Catalogue, get_plugin_manager
from stmbench.core.types import Adapter, Prediction, Strategy
from tests.conftest import REPO, TESTS

HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, "stmbench_spec"))


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Install tests/plugins/fake_plugin.py as the distribution ``stmbench-fake`` 0.3, the way pip
    would: a module plus a dist-info folder with METADATA and entry_points.txt on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(TESTS / "plugins" / "fake_plugin.py", site / "stmbench_fake_plugin.py")
    info = site / "stmbench_fake-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stmbench-fake\nVersion: 0.3\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[stmbench]\nfake = stmbench_fake_plugin\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("STMBENCH_LOAD_PLUGINS", raising=False)
    yield site
    sys.modules.pop("stmbench_fake_plugin", None)


def test_hooks_are_the_documented_contract():
    assert HOOKS == ["register_adapters", "register_backbones", "register_executors", "register_generators",
                     "register_hookspecs", "register_metrics",
                     "register_strategies", "register_tasks", "register_teachers", "run_finished", "run_started", "trainer_callbacks"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_docs_and_a_test_plugin(hook):
    assert len((getattr(hookspecs, hook).__doc__ or "").strip()) > 40
    docs = (REPO / "docs" / "plugin_hooks.md").read_text(encoding="utf-8")
    assert f"## {hook}" in docs, f"docs/plugin_hooks.md has no section for {hook}"
    fake = (TESTS / "plugins" / "fake_plugin.py").read_text(encoding="utf-8")
    assert f"def {hook}(" in fake, f"tests/plugins/fake_plugin.py does not implement {hook}"


def test_builtins_are_declared_as_entry_points_too():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["entry-points"]["stmbench"]
    assert sorted(declared) == sorted(DEFAULT_PLUGINS)
    assert all(declared[name] == name for name in declared)


def test_builtins_load_and_register_by_kind():
    pm = get_plugin_manager(entry_points=False)
    cat = Catalogue(pm)
    assert {"tiny-llama", "tiny-bert", "hf"} <= set(cat.names("backbone"))
    assert {"full", "lora"} <= set(cat.names("adapter"))
    assert {"generative", "discriminative"} <= set(cat.names("strategy"))
    assert {"sample", "lcqmc", "bq"} <= set(cat.names("task"))
    assert "local" in cat.names("executor")
    assert cat.backbone_for("Qwen/Qwen2.5-0.5B").name == "hf"  # unclaimed names go to hf
    assert cat.backbone_for("tiny-bert").name == "tiny-bert"


def test_entry_point_plugin_is_loaded_with_its_version(fake_dist):
    pm = get_plugin_manager()
    assert pm.get_plugin("fake") is not None
    cat = Catalogue(pm)
    assert cat.get("adapter", "fake_head_only").name == "fake_head_only"
    rows = {(o["kind"], o["name"]): o for o in cat.describe()}
    row = rows[("adapter", "fake_head_only")]
    assert row["module"] == "stmbench_fake_plugin" and row["version"] == "0.3" and not row["builtin"]
    assert rows[("adapter", "lora")]["builtin"]


def test_load_plugins_env_limits_installed_plugins(fake_dist, monkeypatch):
    monkeypatch.setenv("STMBENCH_LOAD_PLUGINS", "")
    pm = get_plugin_manager()
    assert pm.get_plugin("fake") is None
    assert "lora" in Catalogue(pm).names("adapter")  # built-ins always load
    monkeypatch.setenv("STMBENCH_LOAD_PLUGINS", "stmbench-fake")
    assert get_plugin_manager().get_plugin("fake") is not None


def test_plugins_json_cli_shows_the_entry_point_plugin(fake_dist):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake_dist), str(REPO)]))
    out = subprocess.run([sys.executable, "-m", "stmbench.cli.main", "plugins", "--json"], env=env,
                         capture_output=True, text=True, check=True, cwd=fake_dist).stdout
    objects = json.loads(out)
    assert {"name", "kind", "module"} <= set(objects[0])
    found = {(o["kind"], o["name"], o["module"]) for o in objects}
    assert ("adapter", "fake_head_only", "stmbench_fake_plugin") in found
    assert ("strategy", "fake_discriminative", "stmbench_fake_plugin") in found
    assert ("backbone", "tiny-llama", "stmbench_plugins.backbones.tiny") in found
    assert {o["kind"] for o in objects} == {"backbone", "adapter", "strategy", "task", "executor", "generator", "metric", "teacher"}
    assert ("generator", "fake-pairs", "stmbench_fake_plugin") in found


def test_entry_point_plugin_adapter_strategy_and_hooks_run(fake_dist, cli, tmp_path):
    code, out, err = cli("run", "--backbones", "fake-micro-llama", "--tasks", "fake_sample_small",
                         "--strategies", "fake_discriminative", "--adapters", "fake_head_only",
                         "--executor", "fake_serial", "--num-train-epochs", "1",
                         "--results-dir", str(tmp_path / "r"), "--leaderboard-dir", str(tmp_path / "lb"))
    assert code == 0, err
    fake = sys.modules["stmbench_fake_plugin"]
    kinds = [e[0] for e in fake.EVENTS]
    assert kinds == ["run_started", "trainer_callbacks", "trainer_step", "run_finished"]
    assert fake.EVENTS[-1] == ("run_finished", "ok")
    stored = json.loads(next((tmp_path / "r").glob("*[0-9a-f].json")).read_text(encoding="utf-8"))
    params = stored["parameters"]
    assert 0 < params["trainable"] < params["total"]  # the third-party adapter decided what trains
    assert stored["spec"]["strategy"] == "fake_discriminative"


def test_plugin_option_loads_a_module_file(tmp_path, cli):
    code, out, _ = cli("plugins", "--json", "--plugin", str(TESTS / "plugins" / "fake_plugin.py"))
    assert code == 0
    assert "fake_head_only" in {o["name"] for o in json.loads(out)}


def test_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def register_adaptors(self, register):  # not a hook
            pass

    with pytest.raises(StmbenchError, match="unknown hook"):
        get_plugin_manager([Typo()], entry_points=False)


def test_duplicate_and_wrong_registrations_are_errors():
    class Dup:
        @hookimpl
        def register_adapters(self, register):
            class Lora(Adapter):
                name = "lora"

                def wrap(self, model, *, head, info, options):
                    return model

            register(Lora())

    with pytest.raises(StmbenchError, match="adapter 'lora' is registered twice"):
        Catalogue(get_plugin_manager([Dup()], entry_points=False))

    class Wrong:
        @hookimpl
        def register_adapters(self, register):
            register("lora2")

    with pytest.raises(StmbenchError, match="not a stmbench.core.types.Adapter"):
        Catalogue(get_plugin_manager([Wrong()], entry_points=False))


def test_the_contract_says_what_a_plugin_must_implement():
    class NoWrap(Adapter):
        name = "nowrap"

    with pytest.raises(TypeError, match="abstract method wrap"):
        NoWrap()

    class PredictOnly(Strategy):  # trains (the default) but cannot make features
        name = "predict_only"

        def predict(self, model, *, data, task, tokenizer, spec, context):
            return Prediction([0] * len(data))

    class Half:
        @hookimpl
        def register_strategies(self, register):
            register(PredictOnly())

    with pytest.raises(StmbenchError, match="strategy 'predict_only', but it trains but does not implement "
                                            "feature_encoder; it trains but does not implement data_collator"):
        Catalogue(get_plugin_manager([Half()], entry_points=False))

    class EvalOnly(PredictOnly):  # a strategy that does not train needs predict alone
        name = "eval_only"
        trains = False

    class Fine:
        @hookimpl
        def register_strategies(self, register):
            register(EvalOnly())

    assert Catalogue(get_plugin_manager([Fine()], entry_points=False)).get("strategy", "eval_only").trains is False


def test_unknown_plugin_module_is_a_clear_error(cli):
    code, _, err = cli("plugins", "--plugin", "no_such_module_xyz")
    assert code == 2 and "no such module" in err and "Traceback" not in err
