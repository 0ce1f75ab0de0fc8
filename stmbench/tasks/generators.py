"""The generators of synthetic tasks' data: code that a plugin registers
(``register_generators``) and a task file names by name, so that task files stay data."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any, ClassVar



class Generator(abc.ABC):
    """The data of a synthetic task, made by code a plugin registered: a task file names it
    (``generator: {name: sample, seed: 0, ...}``, or by its :attr:`function` as
    ``generator: {function: module:attr}``) and never imports code itself.  :meth:`generate` gets
    the task file's other ``generator`` keys as keyword arguments."""

    kind: ClassVar[str] = "generator"
    name: str = ""  #: what a task file's ``generator: {name: ...}`` says
    description: str = ""  #: one line for ``stmbench plugins``
    #: the ``module:attr`` name a task file may give as ``generator.function``
    function: str = ""
    options_class: ClassVar[type | None] = None  #: a generator's options are the task file's keys

    def capabilities(self) -> dict[str, Any]:
        """What ``stmbench plugins NAME`` shows: the function a task file may name."""
        return {"function": self.function}

    @abc.abstractmethod
    def generate(self, *, split: str, labels: list[Any], **options: Any) -> Iterable[dict[str, Any]]:
        """The raw rows of ``split`` (``text_a``, ``text_b``, ``label`` value; or ``tokens``, ``tags``)."""


class FunctionGenerator(Generator):
    """A :class:`Generator` around a plain function ``fn(split=, labels=, **options)``."""

    def __init__(self, name: str, fn: Callable[..., Iterable[dict[str, Any]]], description: str = ""):
        self.name, self.fn = name, fn
        self.function = f"{fn.__module__}:{fn.__qualname__}"
        self.description = description or (fn.__doc__ or "").strip().split("\n")[0]

    def generate(self, *, split: str, labels: list[Any], **options: Any) -> Iterable[dict[str, Any]]:
        return self.fn(split=split, labels=labels, **options)
