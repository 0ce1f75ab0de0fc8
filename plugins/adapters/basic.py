"""Adapters that need no peft: ``full`` fine-tuning, ``frozen`` (a linear probe) and ``none``."""

from __future__ import annotations

import logging
from typing import Any

from stmbench import HEAD_MODULES, Adapter, BackboneInfo, head_modules, hookimpl, StmbenchError

log = logging.getLogger(__name__)


class FullAdapter(Adapter):
    name = "full"
    description = "full fine-tuning: every parameter trains"
    default_learning_rate = 2e-5
    trains_all = True

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: Any) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        return model


class FrozenAdapter(Adapter):
    name = "frozen"
    description = "linear probe: the backbone is frozen, only the head (or answer layer) trains"
    default_learning_rate = 1e-3

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: Any) -> Any:
        names = head_modules(model)
        if not names:
            raise StmbenchError(f"frozen: found no head module ({', '.join(HEAD_MODULES)}, or a custom "
                                "head's trainable_head_modules()) to train")
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
    trains = False  # the planner gives it to strategies that do not train, and to no other

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: Any) -> Any:
        for p in model.parameters():
            p.requires_grad_(False)
        return model


@hookimpl
def register_adapters(register):
    register(FullAdapter())
    register(FrozenAdapter())
    register(NoAdapter())
