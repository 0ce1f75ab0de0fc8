"""Paired significance.  Between two leaderboard rows on the same task: McNemar's exact test on
per-example correctness, pooled over the seeds both rows have (each seed's predictions are paired
with the other row's predictions of the same seed on the same examples).  Between two values of an
axis over many cells (:mod:`stmbench.report.findings`): a stratified bootstrap interval, rliable's
probability of improvement, Wilcoxon signed-rank with Holm's correction, the Bayesian signed-rank
test, and Dodge et al.'s expected maximum of k trials (sources in each function)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SEED = 20240611  #: the bootstrap's and the Bayesian test's random seed (deterministic output)
RESAMPLES = 2000
ROPE = 0.5  #: points: differences smaller than this make no practical difference
BAYES_SAMPLES = 20000


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


# --- paired effects over cells (stmbench.report.findings) --------------------------------------------------------------------------------

def stratified_bootstrap(groups: Sequence[Sequence[Sequence[float]]], *, resamples: int = RESAMPLES,
                         seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of the mean over cells of each cell's seed mean, resampling tasks,
    then cells within a task, then seeds within a cell (``groups[task][cell][seed]``).  One task
    with one seed per cell is a plain bootstrap of a vector: ``scipy.stats.bootstrap`` does it."""
    import numpy as np

    if len(groups) == 1 and all(len(c) == 1 for c in groups[0]):
        from scipy.stats import bootstrap

        vector = np.array([c[0] for c in groups[0]], dtype=float)
        if np.ptp(vector) == 0:
            return float(vector[0]), float(vector[0])
        res = bootstrap((vector,), np.mean, n_resamples=resamples, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)
    rng = np.random.default_rng(seed)
    task_draws = rng.integers(0, len(groups), (resamples, len(groups)))
    total, count = np.zeros(resamples), np.zeros(resamples)
    for t, cells in enumerate(groups):  # vectorised over resamples and over the draws of this task
        times = (task_draws == t).sum(axis=1)
        most = int(times.max())
        if most == 0:
            continue
        lens = np.array([len(c) for c in cells])
        values = np.zeros((len(cells), lens.max()))
        for j, c in enumerate(cells):
            values[j, :len(c)] = c
        picked = rng.integers(0, len(cells), (resamples, most, len(cells)))  # cells within the task
        n = lens[picked]
        seeds = (rng.random((*picked.shape, lens.max())) * n[..., None]).astype(int)  # seeds within a cell
        used = np.arange(lens.max()) < n[..., None]
        cell_means = (values[picked[..., None], seeds] * used).sum(axis=-1) / n
        drawn = np.arange(most)[None, :] < times[:, None]
        total += (cell_means.sum(axis=-1) * drawn).sum(axis=-1)
        count += drawn.sum(axis=-1) * len(cells)
    stats = total / count
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def probability_of_improvement(by_task: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
    """rliable's P(X > Y): per task the Mann-Whitney U statistic of X against Y over ``len(x) *
    len(y)`` (ties count a half), averaged over tasks."""
    from scipy.stats import mannwhitneyu

    per_task = [mannwhitneyu(x, y, alternative="two-sided").statistic / (len(x) * len(y)) for x, y in by_task]
    return float(sum(per_task) / len(per_task))


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Wilcoxon signed-rank p-value (two-sided) of the differences; 1.0 when all are zero."""
    from scipy.stats import wilcoxon

    if all(abs(d) < 1e-12 for d in diffs):
        return 1.0
    return float(wilcoxon(diffs).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down correction (scipy has none): the i-th smallest of m p-values times
    ``m - i``, made monotone, capped at 1."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def bayesian_signed_rank(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``baycomp.SignedRankTest`` with a ROPE of :data:`ROPE` points, seeded."""
    import numpy as np
    from baycomp import SignedRankTest

    left, rope, right = SignedRankTest.probs(np.asarray(a, float), np.asarray(b, float), rope=ROPE,
                                             nsamples=BAYES_SAMPLES, random_state=SEED)
    return {"a_better": float(left), "equivalent": float(rope), "b_better": float(right)}


def expected_max(values: Sequence[float], k: int) -> float:
    """Dodge et al. (2019): the expected best of ``k`` trials drawn (with replacement) from
    ``values``: sum_i v_(i) ((i/N)^k - ((i-1)/N)^k) over the sorted values."""
    v = sorted(values)
    n = len(v)
    return sum(x * ((i / n) ** k - ((i - 1) / n) ** k) for i, x in enumerate(v, start=1))
