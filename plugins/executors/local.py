"""The ``local`` executor: runs every spec in this process, one after another."""

from __future__ import annotations

import logging
from typing import Any

from stmbench import hookimpl
from stmbench.pipeline import run_spec
from stmbench.types import Executor

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    name = "local"
    description = "runs the grid in this process, one run after another (the default)"

    def execute(self, specs, *, session, on_result, options: dict[str, Any]) -> None:
        if options:
            log.warning("the local executor takes no options; ignoring %s", ", ".join(sorted(options)))
        for i, spec in enumerate(specs, 1):
            log.info("[%d/%d] %s", i, len(specs), spec.label())
            result, predictions = run_spec(spec, session)
            on_result(result, predictions)


@hookimpl
def register_executors(register):
    register(LocalExecutor())
