"""Adapters that need no peft: ``full`` fine-tuning, ``frozen`` (a linear probe) and ``none``."""

from __future__ import annotations

import logging
from typing import Any

from stmbench import hookimpl
from stmbench.errors import StmbenchError
from stmbench.types import Adapter, BackboneInfo

log = logging.getLogger(__name__)

#: module names of the parts a strategy trains on top of the body (classification or answer layer)
HEAD_MODULES = ("score", "classifier", "lm_head", "head")


def head_module_names(model: Any) -> list[str]:
    """Names of the top-level head modules present in ``model``."""
    children = dict(model.named_children())
    return [name for name in HEAD_MODULES if name in children]


class FullAdapter(Adapter):
    name = "full"
    description = "full fine-tuning: every parameter trains"
    default_learning_rate = 2e-5

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: dict[str, Any]) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        return model


class FrozenAdapter(Adapter):
    name = "frozen"
    description = "linear probe: the backbone is frozen, only the head (or answer layer) trains"
    default_learning_rate = 1e-3

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: dict[str, Any]) -> Any:
        names = head_module_names(model)
        if not names:
            raise StmbenchError(f"frozen: found no head module ({', '.join(HEAD_MODULES)}) to train")
        for p in model.parameters():
            p.requires_grad_(False)
        for name in names:
            for p in getattr(model, name).parameters():
                p.requires_grad_(True)
        log.info("frozen: training only %s", ", ".join(names))
        return model


class NoAdapter(Adapter):
    name = "none"
    description = "no training (for strategies that only evaluate, such as in_context)"
    trains = False  # the planner rejects it for strategies that train

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: dict[str, Any]) -> Any:
        for p in model.parameters():
            p.requires_grad_(False)
        return model


@hookimpl
def register_adapters(register):
    register(FullAdapter())
    register(FrozenAdapter())
    register(NoAdapter())
