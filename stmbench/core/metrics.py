"""The metric kind: :class:`Metric`, one number computed from a run's predictions and gold labels.

A metric is a catalogue kind like a strategy (``register_metrics``; lm-eval's metric registry is the
model).  The pipeline scores every run with the metrics that serve its task (:meth:`Metric.serves`)
and that it records (:attr:`Metric.recorded`, or listed in the task's ``metrics:``); the leaderboard
computes any metric from the stored predictions, so one added later, or by another package, shows up
on a leaderboard of results stored before it existed.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

from stmbench.core.types import Plugin

#: the task kinds of a label per example
SENTENCE_KINDS = ("pair", "nli", "single")


class Metric(Plugin):
    """A number from predictions against gold labels: what it is called, which way is better, how to
    compute it for one run and how to aggregate it over runs (seeds)."""

    kind = "metric"
    capability_names = ("title", "higher_is_better", "task_kinds", "recorded")
    #: the name on the page and in the README (``macro-F1``); the metric's name when empty
    title: ClassVar[str] = ""
    #: a short id for the page's toggle and data attributes (``f1``); the metric's name when empty
    key: ClassVar[str] = ""
    #: larger values are better (accuracy); ``False`` for an error rate: the best row is the smallest
    higher_is_better: ClassVar[bool] = True
    #: the task kinds (``Task.task_kind``) whose predictions this metric can score
    task_kinds: ClassVar[tuple[str, ...]] = SENTENCE_KINDS
    #: computed and stored with every run of a task kind it serves, whether or not the task lists it
    #: (the built-ins that runs always stored); other metrics are stored when the task lists them
    recorded: ClassVar[bool] = False

    @property
    def display(self) -> str:
        return self.title or self.name

    @property
    def short(self) -> str:
        return self.key or self.name

    def serves(self, task_kind: str) -> bool:
        return task_kind in self.task_kinds

    @abc.abstractmethod
    def compute(self, gold: Sequence[Any], predicted: Sequence[Any], *, labels: Sequence[str]) -> float:
        """The metric of one run: ``gold`` and ``predicted`` are label indices (``-1``: no answer)
        into ``labels`` (the task's label values, in order), or for a ``tokens`` task one list of tag
        indices per example.  The two have the same length."""

    def aggregate(self, values: Sequence[float]) -> float:
        """One number from the values of several runs (the seeds of a cell): their mean."""
        return sum(values) / len(values)


def metric_values(metrics: Sequence[Metric], gold: Sequence[Any], predicted: Sequence[Any], *,
                  labels: Sequence[str]) -> dict[str, float]:
    """``{name: value}`` of each metric, in the order given."""
    return {m.name: float(m.compute(gold, predicted, labels=labels)) for m in metrics}
