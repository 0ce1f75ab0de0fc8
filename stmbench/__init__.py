"""stmbench: is this language model a good backbone for supervised fine-tuning on NLU tasks, and
which way of fine-tuning it works best?

A plugin imports from one place: ``from stmbench import hookimpl, Strategy, Prediction, ...`` (or
``from stmbench.api import ...``); :mod:`stmbench.api` lists every public name.  Names load on first
use, so ``import stmbench`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from stmbench.common.version import __version__


def __getattr__(name: str) -> Any:
    import importlib

    api = importlib.import_module("stmbench.api")  # not ``from stmbench import api``: that would ask us again
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'stmbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib

    api = importlib.import_module("stmbench.api")
    return sorted(["__version__", *api.__all__])
