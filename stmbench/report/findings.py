"""Findings: the study's questions answered from the stored results, with effect sizes and how sure
we are.  Pure data (no rendering): :func:`analyse` turns results into :class:`Findings`.

**Paired effects per axis.**  For every axis with two or more values (strategy, adapter, prompt,
shots, train size, backbone, and every plugin option that varies, e.g. ``label_supervised.unmask``)
each pair of values is compared on the cells that differ only in that axis: same backbone, task,
other axes and tuning trial, seed by seed.  Per comparison: paired cells (and unpaired ones), the
mean difference in points (the mean over cells of each cell's mean over its seeds), a 95% percentile
interval from a stratified bootstrap (resample tasks, then cells within a task, then seeds within a
cell; seeded, so the output is deterministic; Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice", for stratified bootstrap intervals), wins / ties / losses over cells, the
probability of improvement P(A > B) as rliable computes it (the Mann-Whitney U statistic over
``len(a) * len(b)`` per task, averaged over tasks; Agarwal et al. 2021), a Wilcoxon signed-rank
p-value over the cell differences (``scipy.stats.wilcoxon``; Demšar 2006, "Statistical comparisons
of classifiers over multiple data sets") with Holm's correction over all comparisons on the page
(Holm 1979), and, from 5 paired cells, the Bayesian signed-rank test (``baycomp.SignedRankTest``;
Benavoli et al. 2017, "Time for a change: a tutorial for comparing multiple classifiers through
Bayesian analysis") with a region of practical equivalence of 0.5 points: P(A better),
P(equivalent), P(B better).

**Train size as a curve**: the mean score per train size of each strategy (and adapter), with a
bootstrap band over tasks and seeds, and the smallest train size from which one series stays ahead.

**Tuning budget**: where a cell was swept (several trials), the expected best dev score after k
trials (Dodge et al. 2019, "Show your work"): with the N trial scores sorted, E[max of k] =
sum_i v_(i) ((i/N)^k - ((i-1)/N)^k); with fewer than 5 trials the raw trials instead.

Runs that failed, partial (``--limit``) runs, diverged runs and reference rows never enter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from stmbench.store.result import RunResult, shown_backbones
from stmbench.report.significance import (ROPE, bayesian_signed_rank, expected_max, holm,  # noqa: F401 - re-exported
                                   probability_of_improvement, stratified_bootstrap, wilcoxon_p)

BAYES_MIN_CELLS = 5
MIN_CELLS = 3  #: fewer paired cells than this: "too few paired cells"
ALPHA, DODGE_MIN_TRIALS = 0.05, 5
PLAIN_AXES = ("backbone", "strategy", "adapter", "prompt", "shots", "train_size")
AXIS_NAMES = {"train_size": "train size"}


@dataclass
class Comparison:
    axis: str
    a: str
    b: str
    cells: int  #: paired cells (at least one seed run on both sides)
    unpaired: int  #: cells with runs on one side only
    pairs: int  #: paired (cell, seed) runs
    mean: float | None = None  #: mean difference A - B in points
    ci: tuple[float, float] | None = None  #: 95% stratified bootstrap interval
    wins: int = 0
    ties: int = 0
    losses: int = 0
    p_improvement: float | None = None  #: P(A > B), rliable's probability of improvement
    p_value: float | None = None  #: Wilcoxon signed-rank over the cell differences
    p_holm: float | None = None  #: Holm-corrected over all comparisons
    bayes: dict[str, float] | None = None  #: ``a_better``, ``equivalent``, ``b_better``
    verdict: str = "too few paired cells"

    def sentence(self) -> str:
        """One sentence written from the numbers."""
        head = f"{AXIS_NAMES.get(self.axis, self.axis)} {self.a} vs {self.b}"
        if self.mean is None:
            return f"{head}: too few paired cells ({self.cells} paired, {self.unpaired} unpaired)."
        parts = [f"{self.mean:+.1f} points [{self.ci[0]:+.1f}, {self.ci[1]:+.1f}] over {self.cells} cells "
                 f"({self.wins} wins, {self.ties} ties, {self.losses} losses)"]
        parts.append(f"P(better) {self.p_improvement:.2f}")
        if self.p_holm is not None:
            parts.append(f"Holm p = {self.p_holm:.3g}")
        if self.bayes:
            parts.append(f"Bayesian P(A better / equivalent / B better) {self.bayes['a_better']:.2f} / "
                         f"{self.bayes['equivalent']:.2f} / {self.bayes['b_better']:.2f}")
        wording = {"better": f"{self.a} is better", "worse": f"{self.b} is better",
                   "practically equivalent": f"practically equivalent (within {ROPE} points)",
                   "no evidence of a difference": "no evidence of a difference",
                   "too few paired cells": "too few paired cells for a verdict"}[self.verdict]
        return f"{head}: {wording}: " + ", ".join(parts) + "."


@dataclass
class CurvePoint:
    size: str
    mean: float
    band: tuple[float, float]
    runs: int


@dataclass
class Findings:
    comparisons: list[Comparison] = field(default_factory=list)
    curves: dict[str, list[CurvePoint]] = field(default_factory=dict)  #: series -> points by size
    ahead: list[dict[str, Any]] = field(default_factory=list)  #: ``a``, ``b``, ``from_size``
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)  #: strategy -> trials / expected max
    excluded: dict[str, int] = field(default_factory=dict)  #: why runs were left out, counted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- which runs, which cells ------------------------------------------------------------------

def eligible(results: Iterable[RunResult]) -> tuple[list[RunResult], dict[str, int]]:
    """The results a comparison may use, and how many were left out why (a pruned trial has no test
    score: it counts only in its cell's tuning budget, :func:`pruned_trials`)."""
    kept, excluded = [], {"failed": 0, "partial": 0, "diverged": 0}
    for r in results:
        if r.ok and r.pruned_at_step is not None:
            continue
        if not r.ok or r.score is None:
            excluded["failed"] += 1
        elif r.partial:
            excluded["partial"] += 1
        elif "diverged" in r.flags:
            excluded["diverged"] += 1
        else:
            kept.append(r)
    return kept, {k: v for k, v in excluded.items() if v}


def describe_run(r: RunResult, shown: dict[str, str] | None = None) -> dict[str, Any]:
    """The run's coordinates: every axis, every option (``strategy.KEY`` / ``adapter.KEY``) and its
    trial of a sweep (the swept settings' values); the backbone by the name ``shown`` gives it
    (:func:`~stmbench.store.result.shown_backbones`), else by its full name."""
    spec = r.spec
    out: dict[str, Any] = {"backbone": (shown or {}).get(spec.backbone, spec.backbone), "task": spec.task,
                           "strategy": r.labels.get("strategy", spec.strategy), "strategy_name": spec.strategy,
                           "adapter": spec.names(r.labels)["adapter"], "adapter_name": spec.adapter,
                           "prompt": str(spec.prompt), "shots": str(spec.shots or 0),
                           "train_size": str(spec.train_size),
                           "trial": tuple((s, getattr(spec.training, s)) for s in spec.sweep)}
    for kind in ("strategy", "adapter"):
        for key, value in sorted(getattr(spec, f"{kind}_options").items()):
            out[f"{getattr(spec, kind)}.{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def axes_of(runs: list[dict[str, Any]]) -> list[str]:
    """Axes with two or more values, options included (an option axis is named ``plugin.KEY``)."""
    names = list(PLAIN_AXES) + sorted({k for d in runs for k in d if "." in k})
    return [a for a in names if len({d[a] for d in runs if a in d}) >= 2]


def _key(d: dict[str, Any], axis: str) -> tuple[Any, ...]:
    """What must be equal for two runs to pair on ``axis``."""
    drop = {axis}
    if axis == "strategy":
        drop |= {"strategy_name"} | {k for k in d if k.startswith(f"{d['strategy_name']}.")}
    elif axis == "adapter":
        drop |= {"adapter_name"} | {k for k in d if k.startswith(f"{d['adapter_name']}.")}
    elif "." in axis:  # an option: the label that shows it changes with it
        plugin = axis.split(".", 1)[0]
        drop |= {kind for kind in ("strategy", "adapter") if d[f"{kind}_name"] == plugin}
    return tuple(sorted((k, v) for k, v in d.items() if k not in drop))


def _ordered(values: set[str], axis: str) -> list[str]:
    numeric = axis in ("train_size", "shots")
    return sorted(values, key=lambda v: (0, math.inf if v == "full" else float(v), v)
                  if numeric and (v.replace(".", "").isdigit() or v == "full") else (1, 0.0, v))


def _verdict(c: Comparison) -> str:
    if c.cells < MIN_CELLS or c.mean is None:
        return "too few paired cells"
    if c.bayes and c.bayes["equivalent"] >= 0.95:
        return "practically equivalent"
    significant = c.p_holm is not None and c.p_holm < ALPHA
    if significant and c.ci[0] > 0:
        return "better"
    if significant and c.ci[1] < 0:
        return "worse"
    return "no evidence of a difference"


# --- the analysis -------------------------------------------------------------------------------

def compare(runs: list[tuple[dict[str, Any], RunResult]], axis: str, a: str, b: str) -> Comparison:
    """Value ``a`` against value ``b`` of ``axis`` on the cells that differ only there."""
    # only the plugins where both values occur (trained runs have no shots axis, in_context no train size)
    own = {"strategy": ("adapter_name",), "adapter": ("strategy_name",)}.get(axis, ("strategy_name", "adapter_name"))
    scopes = [{tuple(d[k] for k in own) for d, _ in runs if d.get(axis) == v} for v in (a, b)]
    sides: dict[tuple[Any, ...], dict[str, dict[int, float]]] = {}
    for d, r in runs:
        if d.get(axis) in (a, b) and tuple(d[k] for k in own) in scopes[0] & scopes[1]:
            cell = sides.setdefault(_key(d, axis), {a: {}, b: {}})
            cell[d[axis]][r.seed if r.seed is not None else r.spec.seed] = 100.0 * r.score
    paired: dict[str, list[tuple[list[float], list[float]]]] = {}  # task -> cells: (a seeds, b seeds)
    unpaired = 0
    for key, cell in sorted(sides.items(), key=lambda kv: repr(kv[0])):
        seeds = sorted(set(cell[a]) & set(cell[b]))
        if not seeds:
            unpaired += 1
            continue
        task = dict(key)["task"]
        paired.setdefault(task, []).append(([cell[a][s] for s in seeds], [cell[b][s] for s in seeds]))
    cells = [c for task in sorted(paired) for c in paired[task]]
    out = Comparison(axis=axis, a=a, b=b, cells=len(cells), unpaired=unpaired,
                     pairs=sum(len(x) for x, _ in cells))
    if len(cells) < MIN_CELLS:
        return out
    diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in cells]
    out.mean = sum(diffs) / len(diffs)
    out.ci = stratified_bootstrap([[[xa - xb for xa, xb in zip(x, y)] for x, y in paired[t]] for t in sorted(paired)])
    out.wins = sum(d > 1e-9 for d in diffs)
    out.losses = sum(d < -1e-9 for d in diffs)
    out.ties = len(diffs) - out.wins - out.losses
    out.p_improvement = probability_of_improvement(
        [([s for x, _ in paired[t] for s in x], [s for _, y in paired[t] for s in y]) for t in sorted(paired)])
    out.p_value = wilcoxon_p(diffs)
    if len(cells) >= BAYES_MIN_CELLS:
        out.bayes = bayesian_signed_rank([sum(x) / len(x) for x, _ in cells], [sum(y) / len(y) for _, y in cells])
    return out


def curves(runs: list[tuple[dict[str, Any], RunResult]]) -> tuple[dict[str, list[CurvePoint]], list[dict[str, Any]]]:
    """Mean score per train size for each strategy + adapter (trained runs, two sizes or more), a
    bootstrap band over tasks and seeds, and where one series stays ahead of another."""
    series: dict[str, dict[str, dict[str, list[float]]]] = {}
    for d, r in runs:
        if d["train_size"] not in ("0", "None"):
            name = f"{d['strategy']} + {d['adapter']}"
            series.setdefault(name, {}).setdefault(d["train_size"], {}).setdefault(d["task"], []).append(100 * r.score)
    out: dict[str, list[CurvePoint]] = {}
    for name, sizes in sorted(series.items()):
        if len(sizes) < 2:
            continue
        points = []
        for size in _ordered(set(sizes), "train_size"):
            by_task = {t: sorted(v) for t, v in sizes[size].items()}  # the input's order changes nothing
            values = [v for t in sorted(by_task) for v in by_task[t]]
            band = stratified_bootstrap([[[v] for v in by_task[t]] for t in sorted(by_task)]) \
                if len(values) > 1 else (values[0], values[0])
            points.append(CurvePoint(size=size, mean=sum(values) / len(values), band=band, runs=len(values)))
        out[name] = points
    ahead = []
    for x, y in itertools.permutations(sorted(out), 2):
        mx, my = ({p.size: p.mean for p in out[n]} for n in (x, y))
        common = _ordered(set(mx) & set(my), "train_size")
        start = None
        for size in reversed(common):
            if mx[size] > my[size]:
                start = size
            else:
                break
        if start is not None and len(common) >= 2:
            ahead.append({"a": x, "b": y, "from_size": start, "sizes": common})
    return out, ahead


def pruned_trials(results: Iterable[RunResult]) -> list[RunResult]:
    """The trials a pruner stopped (stored ``ok`` with ``pruned_at_step``, full runs only)."""
    return [r for r in results if r.ok and r.pruned_at_step is not None and not r.partial]


def budgets(runs: list[tuple[dict[str, Any], RunResult]]) -> dict[str, dict[str, Any]]:
    """Per strategy: the trials of each swept cell (dev score where selected on dev, else the
    score; a pruned trial at the best dev score it reached), the expected best after k trials
    (Dodge et al. 2019) averaged over cells, and for pruned sweeps the training steps their trials
    took against the steps of their full budgets (``steps``, ``planned_steps``)."""
    cells: dict[tuple[Any, ...], dict[str, Any]] = {}
    for d, r in runs:
        if not d["trial"]:
            continue
        key = (r.seed, *sorted((k, v) for k, v in d.items() if k != "trial"))  # a cell's trials at one seed
        dev = r.selection.get("dev_metric")
        if dev is None and r.score is None:
            continue
        cell = cells.setdefault(key, {"strategy": d["strategy"], "scores": [], "pruned": 0, "steps": 0,
                                      "planned_steps": 0, "tuned": False})
        cell["scores"].append(100.0 * (dev if dev is not None else r.score))
        training = r.training or {}
        if r.spec.pruner:
            cell["tuned"] = True
            cell["pruned"] += r.pruned_at_step is not None
            steps = int(training.get("train_steps") or 0)
            cell["steps"] += steps
            cell["planned_steps"] += int(training.get("planned_steps") or steps)
    out: dict[str, dict[str, Any]] = {}
    for cell in cells.values():
        entry = out.setdefault(cell["strategy"], {"cells": 0, "trials": [], "expected_max": None, "pruned": 0,
                                                  "pruned_cells": 0, "steps": 0, "planned_steps": 0})
        entry["cells"] += 1
        entry["trials"].append(sorted(cell["scores"]))
        if cell["tuned"]:
            entry["pruned_cells"] += 1
            for name in ("pruned", "steps", "planned_steps"):
                entry[name] += cell[name]
    for entry in out.values():
        n = min(len(t) for t in entry["trials"])
        if n >= DODGE_MIN_TRIALS:
            entry["expected_max"] = [sum(expected_max(t, k) for t in entry["trials"]) / len(entry["trials"])
                                     for k in range(1, n + 1)]
    return dict(sorted(out.items()))


def analyse(results: Iterable[RunResult], *, tasks: Sequence[str] = (), backbones: Sequence[str] = (),
            only: tuple[str, str, str] | None = None) -> Findings:
    """Every finding of ``results`` (filtered to ``tasks`` / ``backbones`` when given); ``only``:
    ``(axis, a, b)`` to ask one question."""
    results = list(results)
    kept, excluded = eligible(results)
    shown = shown_backbones(results)
    runs = [(describe_run(r, shown), r) for r in kept]
    runs = [(d, r) for d, r in runs if _wanted(d, r, tasks, backbones)]
    findings = Findings(excluded=excluded)
    descs = [d for d, _ in runs]
    if only is not None:
        questions = [only]
    else:
        questions = []
        for axis in axes_of(descs):
            values = _ordered({d[axis] for d in descs if axis in d}, axis)
            plugin = {d[axis]: d.get(f"{axis}_name") for d in descs if axis in d}
            # two settings of one strategy (adapter) are its option's axis, not this one's
            questions += [(axis, x, y) for x, y in itertools.combinations(values, 2)
                          if axis not in ("strategy", "adapter") or plugin[x] != plugin[y]]
    comparisons = [compare(runs, *q) for q in questions]
    if only is None:  # a pair that never shares a cell is no finding; order each pair by its mean
        comparisons = [c for c in comparisons if c.cells]
        comparisons = [_flip(c) if c.mean is not None and c.mean < 0 else c for c in comparisons]
    for c, p in zip(comparisons, holm([c.p_value for c in comparisons])):
        c.p_holm = p
        c.verdict = _verdict(c)
    findings.comparisons = comparisons
    findings.curves, findings.ahead = curves(runs)
    pruned = [(describe_run(r, shown), r) for r in pruned_trials(results)]
    pruned = [(d, r) for d, r in pruned if _wanted(d, r, tasks, backbones)]
    findings.budgets = budgets(runs + pruned)
    return findings


def _wanted(d: dict[str, Any], r: RunResult, tasks: Sequence[str], backbones: Sequence[str]) -> bool:
    """A run of the asked tasks and backbones (a backbone asked by its shown or its full name)."""
    return (not tasks or d["task"] in tasks) and (not backbones or bool({d["backbone"], r.spec.backbone} & set(backbones)))


def _flip(c: Comparison) -> Comparison:  # the same comparison read the other way round (B vs A)
    bayes = None if c.bayes is None else {"a_better": c.bayes["b_better"], "equivalent": c.bayes["equivalent"],
                                          "b_better": c.bayes["a_better"]}
    return Comparison(axis=c.axis, a=c.b, b=c.a, cells=c.cells, unpaired=c.unpaired, pairs=c.pairs, mean=-c.mean,
                      ci=(-c.ci[1], -c.ci[0]), wins=c.losses, ties=c.ties, losses=c.wins,
                      p_improvement=None if c.p_improvement is None else 1.0 - c.p_improvement,
                      p_value=c.p_value, bayes=bayes)
