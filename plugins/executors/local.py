"""The ``local`` executor: runs every spec in this process, one after another."""

from __future__ import annotations

from typing import Any

from stmbench import Executor, hookimpl


class LocalExecutor(Executor):
    name = "local"
    description = "runs the grid in this process, one run after another (the default)"

    def execute(self, work, *, run, options: dict[str, Any]) -> None:
        while not work.finished():
            spec = work.take()
            if spec is None:  # the rest is held by other workers sharing the results folder
                work.wait()
                continue
            work.done(spec, *run(spec))


@hookimpl
def register_executors(register):
    register(LocalExecutor())
