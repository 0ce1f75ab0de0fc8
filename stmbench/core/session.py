"""A session: one process's plugins and caches, built from the invocation's settings.

:class:`~stmbench.common.settings.Settings` is plain data (it travels to remote workers); :class:`Session`
is built from it in each process and holds the plugin manager, the catalogue, loaded task data and
tokenised features.  It is the core's object: plugins get its :attr:`Session.context`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmbench.core.hookspecs import hookimpl
from stmbench.core.context import Context
from stmbench.core.catalogue import Catalogue, get_plugin_manager
from stmbench.common.settings import Settings, default_cache_dir  # noqa: F401 - re-exported
from stmbench.tasks.task import load_task_dir

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    import datasets

    from stmbench.tasks.task import Task, TaskData

log = logging.getLogger(__name__)


class TaskDirPlugin:
    """Registers the task YAML files of ``--task-dir`` folders, through the same hook as any plugin."""

    def __init__(self, folders: list[Path]):
        self.folders = folders

    @hookimpl
    def register_tasks(self, register: Callable[[Task], None]) -> None:
        for folder in self.folders:
            for task in load_task_dir(folder):
                register(task)


class Session:
    """Plugins, catalogue and caches for one process."""

    def __init__(self, settings: Settings, extra_plugins: list[Any] | None = None):
        self.settings = settings
        extras: list[Any] = list(settings.plugins) + list(extra_plugins or [])
        if settings.task_dirs:
            extras.append(TaskDirPlugin(settings.task_dirs))
        self.extra_plugins = list(extra_plugins or [])
        self.pm = get_plugin_manager(extras)
        self.catalogue = Catalogue(self.pm)
        self._task_data: dict[tuple[Any, ...], TaskData] = {}
        self._features: dict[str, datasets.Dataset] = {}
        self._overlap: dict[tuple[str, str], int] = {}
        self.cache_stats = {"hits": 0, "misses": 0}
        #: what plugins receive: settings, data, cache folder, hooks, logger (not the session itself)
        self.context = Context(settings=settings, task_data=self.task_data, hook=self.pm.hook,
                               names=self.catalogue.names, device=lambda: self.device,
                               eval_budget=self.eval_budget, backbone_for=self.catalogue.backbone_for)

    def eval_budget(self, model: Any, spec: Any, *, full_logits: bool = False) -> Any:
        """The :class:`stmbench.core.budget.TokenBudget` of ``model``'s prediction batches in run ``spec``
        (planned now, from the memory free now)."""
        from stmbench.core.memory import plan_budget
        from stmbench.spec.training import TrainingSettings

        training = spec.training if spec is not None else TrainingSettings()
        budget = plan_budget(model, device=self.device, max_batch=training.per_device_eval_batch_size,
                             tokens=training.eval_batch_tokens, full_logits=full_logits,
                             cache_dir=self.settings.cache_dir)
        return budget

    def metrics_for(self, task: Task) -> list[Any]:
        """The metrics a run of ``task`` computes and stores: the task's ``metrics:`` (the first ranks
        it), then every other registered metric that serves the task's kind and is ``recorded``.
        A listed metric that is not registered, or does not serve the task's kind, is an error."""
        from stmbench.common.errors import StmbenchError

        listed = [self.catalogue.get("metric", name) for name in task.metrics]  # unknown: lists the known
        for metric in listed:
            if not metric.serves(task.task_kind):
                raise StmbenchError(f"task {task.name!r} lists metric {metric.name!r}, which does not score "
                                    f"{task.task_kind} tasks (it serves {', '.join(metric.task_kinds)})")
        names = {m.name for m in listed}
        recorded = [e.obj for name, e in sorted(self.catalogue.entries["metric"].items())
                    if name not in names and e.obj.recorded and e.obj.serves(task.task_kind)]
        return listed + recorded

    @property
    def hook(self) -> Any:
        return self.pm.hook

    @property
    def device(self) -> str:
        from stmbench.core.modeling import pick_device

        return pick_device(self.settings.device)

    @property
    def show_progress(self) -> bool:
        if self.settings.progress is not None:
            return self.settings.progress
        import sys

        return sys.stderr.isatty()

    def checkpoint_dir(self, run_id: str) -> Path:
        """Where the Trainer of ``run_id`` keeps its checkpoints, so a killed run can resume: in the
        cache, keyed by the run id and the results folder (two studies of the same spec never share)."""
        import hashlib

        where = hashlib.sha256(str(self.settings.results_dir.resolve()).encode("utf-8")).hexdigest()[:8]
        return self.settings.cache_dir / "checkpoints" / f"{run_id}-{where}"

    def overlap(self, train: TaskData, evaluation: TaskData) -> int:
        """How many evaluation pairs also occur in the training data (in either order)."""
        key = (train.fingerprint, evaluation.fingerprint)
        if key not in self._overlap and "tokens" in train.dataset.column_names:  # a tag per token: sentences
            seen_sentences = {tuple(t) for t in train.dataset["tokens"][:]}
            self._overlap[key] = sum(tuple(t) in seen_sentences for t in evaluation.dataset["tokens"][:])
        if key not in self._overlap:
            seen = set(zip(train.dataset["text_a"][:], train.dataset["text_b"][:]))  # [:]: columns at once
            self._overlap[key] = sum((a, b) in seen or (b, a) in seen
                                     for a, b in zip(evaluation.dataset["text_a"][:], evaluation.dataset["text_b"][:]))
        return self._overlap[key]

    def get(self, kind: str, name: str) -> Any:
        return self.catalogue.get(kind, name)

    def run_label(self, spec: Any) -> str:
        """``spec.label()`` with the backbone's display name: what log lines about a run say."""
        return spec.label({"backbone": self.backbone_display(spec.backbone)})

    def backbone_display(self, name: str) -> str:
        """The name shown for backbone ``name``: ``--backbone-name``'s, else its backbone plugin's
        :meth:`~stmbench.core.types.Backbone.display_name`."""
        given = self.settings.backbone_names.get(name)
        if given:
            return given
        try:
            return self.catalogue.backbone_for(name).display_name(name) or name
        except Exception:  # noqa: BLE001 - an unknown or broken backbone keeps its full name
            return name

    def task_data(self, task: Task, split: str, *, skip_bad_rows: bool = False) -> TaskData:
        """A task split, loaded and validated once per session."""
        key = (task.name, split, str(self.settings.data_dir), skip_bad_rows)
        if key not in self._task_data:
            generators = [e.obj for e in self.catalogue.entries["generator"].values()]
            self._task_data[key] = task.load(split, data_dir=self.settings.data_dir, skip_bad_rows=skip_bad_rows,
                                             generators=generators)
        return self._task_data[key]

    def cached_features(self, key_parts: dict[str, Any], data: datasets.Dataset,
                        encode: Callable[[dict[str, list[Any]]], dict[str, list[Any]]]) -> tuple[datasets.Dataset, bool]:
        """``data.map(encode, batched=True)``, cached in memory and on disk under the cache folder.

        ``key_parts`` must name everything the features depend on (task data fingerprint, split,
        tokenizer, prompt, strategy and its settings).  Returns the features and whether they came
        from the cache.
        """
        from datasets.fingerprint import Hasher

        key = Hasher.hash(key_parts)
        if key in self._features:
            self.cache_stats["hits"] += 1
            return self._features[key], True
        folder = self.settings.cache_dir / "features"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key}.arrow"
        hit = path.exists()
        features = data.map(encode, batched=True, remove_columns=data.column_names,
                            cache_file_name=str(path), load_from_cache_file=True,
                            new_fingerprint=key, desc="tokenizing")
        self.cache_stats["hits" if hit else "misses"] += 1
        self._features[key] = features
        return features, hit


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable hash of a tokenizer's behaviour (its vocabulary, rules and special tokens)."""
    from datasets.fingerprint import Hasher

    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return Hasher.hash([type(tokenizer).__name__, state, tokenizer.special_tokens_map,
                        getattr(tokenizer, "padding_side", None), getattr(tokenizer, "truncation_side", None)])
