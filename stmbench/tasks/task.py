"""Tasks as data: a task YAML file becomes a :class:`Task` (its schema, :class:`TaskConfig`, plus
loading through the readers of :mod:`stmbench.tasks.readers`)."""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Iterable
from typing import Any, ClassVar

from stmbench.tasks import readers as task_readers
from stmbench.common.errors import StmbenchError
from stmbench.tasks.config import DEFAULT_METRICS, KINDS, PLACEHOLDERS, SPLITS, Label, TaskConfig, TaskData

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_METRICS", "KINDS", "PLACEHOLDERS", "SPLITS", "Label", "Task", "TaskConfig", "TaskData",
           "load_task_dir", "load_task_file"]


class Task(TaskConfig):
    """A task as the catalogue holds it: its :class:`TaskConfig` fields, the mapping it was built from
    (``config``), and :meth:`load`.  Usually built from YAML by :func:`load_task_file`; a plugin may
    also subclass it and override :meth:`load`."""

    kind: ClassVar[str] = "task"  # the catalogue kind (the task's own kind is ``task_kind``)

    def __init__(self, config: dict[str, Any], path: str | None = None):
        super().__init__(**TaskConfig.parse(config, path))
        self.path = path
        self.config = config

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.task_kind,
            "description": self.description,
            "synthetic": self.synthetic,
            "labels": [{"value": lab.value, "name": lab.name, "word": lab.word} for lab in self.labels],
            "prompts": sorted(self.prompts),
            "metrics": self.metrics,
            "eval_split": self.eval_split,
            "eval_note": self.eval_note,
            "sources": self.sources(),
            "path": self.path,
        }

    def load(self, split: str, *, data_dir: Path | None = None, skip_bad_rows: bool = False,
             generators: Iterable[Any] | None = None) -> TaskData:
        """Load one split, from the generator, ``data_dir/<name>/``, or the hub (in that order).
        ``generators``: the registered :class:`~stmbench.core.types.Generator` objects (a session's
        catalogue: ``session.task_data`` passes them); without them a generated task cannot load."""
        if split not in SPLITS:
            raise StmbenchError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        if self.generator:
            return task_readers.load_generated(self, split, generators or ())
        if data_dir is not None and self.local:
            folder = Path(data_dir) / self.name
            if folder.is_dir():
                return task_readers.load_local(self, folder, split, skip_bad_rows)
            if not self.hub:
                raise StmbenchError(f"task {self.name!r}: no folder {folder}")
            log.info("task %s: no folder %s, trying the hub", self.name, folder)
        if self.hub:
            return task_readers.load_hub(self, split, skip_bad_rows)
        raise StmbenchError(
            f"task {self.name!r} is loaded from local files: pass --data-dir DIR with DIR/{self.name}/ "
            f"holding {self.file_names(split)}"
        )


def load_task_file(path: str | Path, root: str | Path | None = None) -> Task:
    """Read one task YAML file into a :class:`Task` (errors name the file): read as untrusted
    (:func:`stmbench.common.untrusted.read_yaml`: size, nesting and nodes bounded, no aliases)."""
    from stmbench.common.untrusted import UntrustedFileError, read_yaml

    path = Path(path)
    try:
        config = read_yaml(path, root=root)
    except UntrustedFileError as exc:
        raise StmbenchError(f"cannot read task file {exc}") from None
    if not isinstance(config, dict):
        raise StmbenchError(f"{path}: a task file must be a YAML mapping")
    config.setdefault("name", path.stem)
    return Task(config, str(path))


def load_task_dir(folder: str | Path) -> list[Task]:
    """Every ``*.yaml`` / ``*.yml`` task file in ``folder``, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StmbenchError(f"task folder {folder} does not exist")
    return [load_task_file(p, root=folder) for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml")]
