"""The built-in sentence metrics computed without sklearn give sklearn's values."""

from __future__ import annotations

import random

import pytest

from stmbench_plugins.metrics.builtin import Accuracy, MacroF1


def _cases():
    rng = random.Random(0)
    for _ in range(100):
        k = rng.randint(2, 6)
        n = rng.randint(1, 40)
        gold = [rng.randrange(k) for _ in range(n)]
        skew = rng.random()  # some runs predict one class, some miss labels, some answer nothing (-1)
        predicted = [rng.choice([-1, 0]) if rng.random() < skew / 3 else rng.randrange(k) for _ in range(n)]
        yield gold, predicted, [f"label{i}" for i in range(k)]
    yield [0, 0, 0], [0, 0, 0], ["a", "b"]  # a label neither in the gold nor predicted
    yield [1, 1], [-1, -1], ["a", "b", "c"]  # nothing answered


@pytest.mark.parametrize("gold,predicted,labels", list(_cases()))
def test_macro_f1_and_accuracy_are_sklearns(gold, predicted, labels):
    from sklearn.metrics import accuracy_score, f1_score

    expected = f1_score(gold, predicted, labels=list(range(len(labels))), average="macro", zero_division=0)
    assert MacroF1().compute(gold, predicted, labels=labels) == pytest.approx(expected, abs=1e-12)
    assert Accuracy().compute(gold, predicted, labels=labels) == pytest.approx(accuracy_score(gold, predicted))


def test_no_rows_score_zero():
    assert MacroF1().compute([], [], labels=["a", "b"]) == 0.0
