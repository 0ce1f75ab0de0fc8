"""Paired significance between two leaderboard rows on the same task: McNemar's exact test on
per-example correctness, pooled over the seeds both rows have (each seed's predictions are paired
with the other row's predictions of the same seed on the same examples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    p_value: float
    only_a: int  #: examples only row A got right
    only_b: int  #: examples only row B got right
    pairs: int  #: paired examples compared (examples x common seeds)
    seeds: int


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (a binomial test at 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(only_a, only_b), n, 0.5, alternative="two-sided").pvalue)


def compare(a: dict[int, tuple[Sequence[int], Sequence[int]]],
            b: dict[int, tuple[Sequence[int], Sequence[int]]]) -> Comparison | None:
    """Compare two rows given ``{seed: (gold, predicted)}`` each; ``None`` when they share no seed
    with the same evaluation examples."""
    only_a = only_b = pairs = seeds = 0
    for seed in sorted(set(a) & set(b)):
        gold_a, pred_a = a[seed]
        gold_b, pred_b = b[seed]
        if list(gold_a) != list(gold_b):
            continue  # not the same examples: no pairing
        seeds += 1
        for g, x, y in zip(gold_a, pred_a, pred_b):
            ok_a, ok_b = x == g, y == g
            only_a += ok_a and not ok_b
            only_b += ok_b and not ok_a
            pairs += 1
    if not seeds:
        return None
    return Comparison(mcnemar_exact(only_a, only_b), only_a, only_b, pairs, seeds)
