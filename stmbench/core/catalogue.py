"""The plugin manager and the catalogue of registered objects.

Plugins come from three places, registered the same way (``pm.register``):

1. the built-ins in :data:`DEFAULT_PLUGINS` (also declared under the entry-point group
   ``stmbench`` in ``pyproject.toml``, with the same names, so they are never loaded twice);
2. every installed distribution's entry points in the group ``stmbench``
   (``STMBENCH_LOAD_PLUGINS=dist-a,dist-b`` limits which distributions load; empty loads none);
3. ``--plugin module.path`` (or a path to a ``.py`` file) for a module that is not installed.

Nothing is loaded at import time: call :func:`get_plugin_manager`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from stmbench.core import hookspecs
from stmbench.common.errors import StmbenchError, UnknownNameError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "stmbench"
LOAD_PLUGINS_ENV = "STMBENCH_LOAD_PLUGINS"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "stmbench_plugins.backbones.hf",
    "stmbench_plugins.backbones.tiny",
    "stmbench_plugins.backbones.gguf",
    "stmbench_plugins.adapters.basic",
    "stmbench_plugins.adapters.peft_methods",
    "stmbench_plugins.strategies.generative",
    "stmbench_plugins.strategies.discriminative",
    "stmbench_plugins.strategies.label_supervised",
    "stmbench_plugins.strategies.cot",
    "stmbench_plugins.strategies.in_context",
    "stmbench_plugins.executors.local",
    "stmbench_plugins.executors.pool",
    "stmbench_plugins.executors.ray_executor",
    "stmbench_plugins.tasks.builtin",
    "stmbench_plugins.metrics.builtin",
    "stmbench_plugins.teachers.hf",
    "stmbench_plugins.teachers.openai_api",
    "stmbench_plugins.teachers.folder",
)

REGISTRATION_HOOKS = {
    "backbone": "register_backbones",
    "adapter": "register_adapters",
    "strategy": "register_strategies",
    "task": "register_tasks",
    "executor": "register_executors",
    "generator": "register_generators",
    "metric": "register_metrics",
    "teacher": "register_teachers",
}


def kinds() -> dict[str, type]:
    """The base class of each catalogue kind (a registered object must be an instance of it)."""
    from stmbench.core.metrics import Metric
    from stmbench.core.teacher import Teacher
    from stmbench.core.types import Adapter, Backbone, Executor, Strategy
    from stmbench.tasks.generators import Generator
    from stmbench.tasks.task import Task

    return {"backbone": Backbone, "adapter": Adapter, "strategy": Strategy, "task": Task, "executor": Executor,
            "generator": Generator, "metric": Metric, "teacher": Teacher}


def _import_plugin(spec: str) -> Any:
    """Import ``module.path`` or a ``.py`` file path."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise StmbenchError(f"--plugin {spec}: no such file")
        name = f"stmbench_local_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's input: say where
            sys.modules.pop(name, None)
            raise StmbenchError(f"--plugin {spec}: loading it failed: {_where(exc)}") from exc
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.split(".")[0] == exc.name.split(".")[0] and spec.startswith(exc.name):
            raise StmbenchError(f"--plugin {spec}: no such module ({exc})") from exc
        raise StmbenchError(f"--plugin {spec}: loading it failed: {_where(exc)}") from exc
    except Exception as exc:  # noqa: BLE001
        raise StmbenchError(f"--plugin {spec}: loading it failed: {_where(exc)}") from exc


def _where(exc: BaseException) -> str:
    """``SyntaxError: invalid syntax (plugin.py:3)``: the error and the file:line it happened at."""
    import traceback

    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in frames if "importlib" not in f.filename] or frames
    place = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Load the ``stmbench`` entry points, limited by ``STMBENCH_LOAD_PLUGINS`` when it is set."""
    allowed = os.environ.get(LOAD_PLUGINS_ENV)
    if allowed is not None:
        keep = {n.strip().lower().replace("_", "-") for n in allowed.split(",") if n.strip()}
        for dist in importlib.metadata.distributions():
            dist_name = (dist.metadata["Name"] or "").lower().replace("_", "-")
            for ep in dist.entry_points:
                if ep.group == ENTRY_POINT_GROUP and dist_name not in keep and not pm.get_plugin(ep.name):
                    pm.set_blocked(ep.name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)


def get_plugin_manager(extra_plugins: Iterable[Any] = (), *, entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-ins, the installed plugins and ``extra_plugins``
    (module paths, ``.py`` paths, or already-imported objects)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.hook.register_hookspecs.call_historic(kwargs={"plugin_manager": pm})  # for each plugin registered below
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if entry_points:
        try:
            _load_entry_points(pm)
        except Exception as exc:  # a broken third-party plugin must say who it is
            raise StmbenchError(f"loading plugins from entry point group {ENTRY_POINT_GROUP!r} failed: {exc}") from exc
    for extra in extra_plugins:
        plugin = _import_plugin(extra) if isinstance(extra, str) else extra
        name = extra if isinstance(extra, str) else None
        if pm.is_registered(plugin):
            continue
        pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise StmbenchError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    return pm


@dataclass
class Entry:
    """A registered object and the plugin that registered it."""

    obj: Any
    kind: str
    plugin: str

    @property
    def name(self) -> str:
        return self.obj.name


class Catalogue:
    """Everything the plugins registered, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in REGISTRATION_HOOKS}
        for kind, hook_name in REGISTRATION_HOOKS.items():
            base = kinds()[kind]
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.hookwrapper or impl.wrapper:
                    continue
                plugin_name = impl.plugin_name

                def register(obj: Any, _kind: str = kind, _base: type = base, _plugin: str = plugin_name) -> None:
                    self._add(_kind, _base, obj, _plugin)

                impl.function(*[{"register": register}[arg] for arg in impl.argnames])

    def _add(self, kind: str, base: type, obj: Any, plugin: str) -> None:
        if not isinstance(obj, base):
            raise StmbenchError(
                f"plugin {plugin!r} registered {obj!r} as a {kind}, but it is not a {base.__module__}.{base.__name__}"
            )
        name = getattr(obj, "name", "")
        if not name or not isinstance(name, str):
            raise StmbenchError(f"plugin {plugin!r} registered a {kind} without a name: {obj!r}")
        missing = obj.contract_errors() if hasattr(obj, "contract_errors") else []
        if missing:
            raise StmbenchError(f"plugin {plugin!r} registered {kind} {name!r}, but {'; '.join(missing)}")
        if name in self.entries[kind]:
            other = self.entries[kind][name].plugin
            raise StmbenchError(f"{kind} {name!r} is registered twice: by {other!r} and by {plugin!r}")
        self.entries[kind][name] = Entry(obj, kind, plugin)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.entries[kind][name].obj
        except KeyError:
            raise UnknownNameError(kind, name, self.entries[kind]) from None

    def backbone_for(self, name: str) -> Any:
        """The backbone that serves ``name``: one that claims it, else the catch-all (``hf``)."""
        fallback = None
        for entry in self.entries["backbone"].values():
            if entry.obj.catch_all:
                fallback = fallback or entry.obj
            elif entry.obj.claims(name):
                return entry.obj
        if fallback is None:
            raise UnknownNameError("backbone", name, self.entries["backbone"])
        return fallback

    def describe(self) -> list[dict[str, Any]]:
        """One dict per registered object: name, kind, plugin, module, description, version."""
        versions = _plugin_versions(self.pm)
        out = []
        for kind in REGISTRATION_HOOKS:
            for name in sorted(self.entries[kind]):
                entry = self.entries[kind][name]
                plugin = self.pm.get_plugin(entry.plugin)
                out.append({
                    "name": name,
                    "kind": kind,
                    "plugin": entry.plugin,
                    "module": getattr(plugin, "__name__", type(plugin).__module__),
                    "description": getattr(entry.obj, "description", ""),
                    "version": versions.get(entry.plugin, ""),
                    "builtin": entry.plugin in DEFAULT_PLUGINS,
                })
        return out


    def describe_one(self, name: str) -> list[dict[str, Any]]:
        """Everything registered as ``name`` (one entry per kind): :meth:`describe`'s fields plus the
        declared capabilities and the options with their defaults and help."""
        from stmbench.core.types import options_help

        found = [row for row in self.describe() if row["name"] == name]
        if not found:
            known = {n for kind in self.entries for n in self.entries[kind]}
            raise UnknownNameError("plugin object", name, known)
        for row in found:
            obj = self.entries[row["kind"]][name].obj
            if row["kind"] == "task":
                summary = obj.summary()
                row["capabilities"] = {k: summary[k] for k in ("kind", "synthetic", "eval_split", "metrics",
                                                               "prompts", "sources")}
                row["capabilities"]["labels"] = [f"{lab['value']}={lab['name']} ({lab['word']})"
                                                 for lab in summary["labels"]]
                row["options"] = []
            else:
                row["capabilities"] = obj.capabilities()
                row["options"] = options_help(obj.options_class)
        return found


def _plugin_versions(pm: pluggy.PluginManager) -> dict[str, str]:
    from stmbench.common.version import __version__

    versions = {name: __version__ for name in DEFAULT_PLUGINS}
    for plugin, dist in pm.list_plugin_distinfo():
        versions[pm.get_name(plugin) or ""] = dist.version
    return versions


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """One dict per loaded plugin module: name, hooks, version, whether built in."""
    versions = _plugin_versions(pm)
    out = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({
            "plugin": name,
            "module": getattr(plugin, "__name__", type(plugin).__module__),
            "hooks": hooks,
            "version": versions.get(name, ""),
            "builtin": name in DEFAULT_PLUGINS,
        })
    return out


def default_metrics() -> list[Any]:
    """The built-in metrics (what a board without a session computes): those the built-in plugins
    register, entry points left out (collected once per process: building a catalogue reads every
    built-in task file)."""
    return list(_builtin_metrics())


@functools.cache
def _builtin_metrics() -> tuple[Any, ...]:
    return tuple(e.obj for e in Catalogue(get_plugin_manager(entry_points=False)).entries["metric"].values())
