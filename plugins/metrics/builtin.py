"""The built-in metrics: accuracy and macro-F1 (a label per example), and seqeval's entity-level F1,
precision and recall with the token accuracy (a tag per token), registered as any plugin's are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from stmbench import Metric, StmbenchError, hookimpl


class Accuracy(Metric):
    name = "accuracy"
    description = "share of examples whose predicted label is the gold one (no answer counts wrong)"
    key = "acc"
    recorded = True

    def compute(self, gold: Sequence[Any], predicted: Sequence[Any], *, labels: Sequence[str]) -> float:
        # sklearn's accuracy_score, without importing sklearn for it
        return sum(int(g) == int(p) for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0


class MacroF1(Metric):
    name = "macro_f1"
    title = "macro-F1"
    description = "F1 of each label, averaged with equal weight (sklearn's f1_score, average='macro')"
    key = "f1"

    def compute(self, gold: Sequence[Any], predicted: Sequence[Any], *, labels: Sequence[str]) -> float:
        # sklearn's f1_score(labels=range(len(labels)), average="macro", zero_division=0): per label
        # 2 TP / (2 TP + FP + FN), 0 where that is 0 / 0, averaged over every label; a prediction
        # outside the labels (-1: no answer) is a miss of its gold label.  Computed here, without
        # importing sklearn (about 0.4 s per process) for it; tests/test_metrics.py compares with sklearn.
        if not gold:
            return 0.0
        hits, guessed, true = Counter(), Counter(), Counter()
        for g, p in zip(gold, predicted):
            g, p = int(g), int(p)
            true[g] += 1
            guessed[p] += 1
            hits[g] += g == p
        scores = [2 * hits[k] / (true[k] + guessed[k]) if true[k] + guessed[k] else 0.0 for k in range(len(labels))]
        return sum(scores) / len(scores) if scores else 0.0


def _tags(gold: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]],
          labels: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise StmbenchError(f"example {i}: {len(p)} predicted tags for {len(g)} tokens")
    names = list(labels)
    return ([[names[t] for t in g] for g in gold],
            [[names[t] if 0 <= t < len(names) else "O" for t in p] for p in predicted])


class _Seqeval(Metric):
    """seqeval's entity-level score (CoNLL's definition: an entity counts when its type and both ends match)."""

    task_kinds = ("tokens",)
    recorded = True
    function = ""

    def compute(self, gold: Sequence[Any], predicted: Sequence[Any], *, labels: Sequence[str]) -> float:
        import seqeval.metrics

        y_true, y_pred = _tags(gold, predicted, labels)
        return float(getattr(seqeval.metrics, self.function)(y_true, y_pred, zero_division=0))


class EntityF1(_Seqeval):
    name = "entity_f1"
    title = "entity F1"
    description = "seqeval's entity-level F1 (an entity counts when its type and both ends match)"
    function = "f1_score"


class EntityPrecision(_Seqeval):
    name = "entity_precision"
    title = "entity precision"
    description = "seqeval's entity-level precision"
    function = "precision_score"


class EntityRecall(_Seqeval):
    name = "entity_recall"
    title = "entity recall"
    description = "seqeval's entity-level recall"
    function = "recall_score"


class TokenAccuracy(Metric):
    name = "token_accuracy"
    title = "token accuracy"
    description = "share of tokens tagged right"
    task_kinds = ("tokens",)
    recorded = True

    def compute(self, gold: Sequence[Any], predicted: Sequence[Any], *, labels: Sequence[str]) -> float:
        _tags(gold, predicted, labels)
        tokens = sum(len(g) for g in gold)
        return sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p)) / tokens if tokens else 0.0


@hookimpl
def register_metrics(register):
    for metric in (Accuracy(), MacroF1(), EntityF1(), EntityPrecision(), EntityRecall(), TokenAccuracy()):
        register(metric)
