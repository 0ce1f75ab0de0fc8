"""Registers the task YAML files shipped in ``stmbench_tasks`` (the repository's ``tasks/``)."""

from stmbench import hookimpl
from stmbench.tasks import load_task_dir


@hookimpl
def register_tasks(register):
    from stmbench_tasks import TASK_DIR

    for task in load_task_dir(TASK_DIR):
        register(task)
