"""Stored results -> a :class:`Board`: rows (one per backbone x adapter x strategy x prompt x train size
x settings), a cell per task with the mean and std over seeds, the value a tuned cell chose on dev,
health flags, and significance marks (McNemar's exact test against the best row of a task).  Pure data:
:mod:`stmbench.report.leaderboard` renders it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from stmbench.core.metrics import Metric
from stmbench.report.significance import compare
from stmbench.store.result import RunResult, shown_backbones
from stmbench.store.results import ResultStore

log = logging.getLogger(__name__)

ALPHA = 0.05
#: the board's name for each task's ranking metric (its first ``metrics:``, ``Task.primary_metric``):
#: accuracy unless a task's header names another (entity F1 for a tag per token)
PRIMARY = "accuracy"
DEV_MARK = "†"
FLAG_MARK = "⚠"
OTHER_DATA = "other data"  #: the flag of rows whose cell has results from different data
UNVERIFIED = "unverified"  #: the flag of a run whose metrics could not be recomputed (no predictions)


def _config_id(result: RunResult) -> str:
    """A short id of the settings that are not row keys (training settings, options)."""
    spec = result.spec
    training = {k: v for k, v in dataclasses.asdict(spec.training).items() if k not in spec.sweep}
    parts = [training, spec.adapter_options, spec.strategy_options, spec.skip_bad_rows]
    if spec.limit:
        parts.append({"limit": spec.limit})
    if spec.pruner:  # a pruned sweep's cell is not an unpruned one's
        parts.append({"pruner": spec.pruner})
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sample_std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class Cell:
    """One task of one row: a run per seed."""

    primary: dict[int, float] = field(default_factory=dict)  #: seed -> the task's ranking metric
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)  #: metric -> seed -> value
    run_ids: dict[int, str] = field(default_factory=dict)
    mark: str = ""  #: "best", "tied" or ""
    p_value: float | None = None
    flags: dict[int, list[str]] = field(default_factory=dict)  #: seed -> health flags of its run
    sweep: str = ""  #: the value chosen on dev and the number of trials, for a tuned cell
    aggregators: dict[str, Metric] = field(default_factory=dict)  #: metric -> the object that aggregates it

    def flag_text(self) -> str:
        """``⚠ diverged, degenerate`` when any seed's run is flagged, else ``""``."""
        names = sorted({f for flags in self.flags.values() for f in flags})
        return f"{FLAG_MARK} {', '.join(names)}" if names else ""

    @property
    def n(self) -> int:
        return len(self.primary)

    def values(self, metric: str = PRIMARY) -> list[float]:
        data = self.primary if metric == PRIMARY else self.metrics.get(metric, {})
        return [data[s] for s in sorted(data)]

    def mean(self, metric: str = PRIMARY) -> float | None:
        """The seeds' values aggregated as the metric says (:meth:`Metric.aggregate`: the mean)."""
        values = self.values(metric)
        if not values:
            return None
        metric_object = self.aggregators.get(metric)
        return float(metric_object.aggregate(values)) if metric_object is not None else _mean(values)

    def text(self, metric: str = PRIMARY) -> str:
        values = self.values(metric)
        if not values:
            return ""
        out = f"{100 * self.mean(metric):.1f}"
        std = sample_std(values)
        if std is not None:
            out += f" ± {100 * std:.1f}"
        return out + f" ({len(values)})"


@dataclass
class Row:
    key: dict[str, str]
    config: str
    cells: dict[str, Cell] = field(default_factory=dict)
    results: list[RunResult] = field(default_factory=list)
    train_examples: int = 0  #: for sorting "full" among numbers
    provenance: str = ""  #: :attr:`RunResult.provenance` of its results
    #: task -> swept values -> seed -> result: the trials of a tuned cell, before one value is chosen
    trials: dict[str, dict[tuple[Any, ...], dict[int, RunResult]]] = field(default_factory=dict)
    all_trials: list[RunResult] = field(default_factory=list)  #: every trial (chosen or not)

    def average(self, tasks: list[str], metric: str = PRIMARY) -> float | None:
        means = [self.cells[t].mean(metric) if t in self.cells else None for t in tasks]
        if not tasks or any(m is None for m in means):
            return None
        return sum(means) / len(means)  # type: ignore[arg-type]

    def cost(self) -> dict[str, Any]:
        params = sorted(r.parameters.get("trainable") or 0 for r in self.results)
        totals = sorted(r.parameters.get("total") or 0 for r in self.results)
        times = [r.times.get("train_seconds") for r in self.results]
        speeds = [r.times.get("tokens_per_second") for r in self.results]
        memory = [r.peak_memory_mb for r in self.results]
        mfu = [(r.hardware or {}).get("mfu") for r in self.results]
        padding = {part: [(r.padding.get(part) or {}).get("efficiency") for r in self.results]
                   for part in ("train", "predict")}
        trainable = params[len(params) // 2] if params else 0
        total = totals[len(totals) // 2] if totals else 0
        return {
            "trainable": trainable,
            "trainable_percent": 100.0 * trainable / total if total else None,
            "train_seconds": _mean([t for t in times if t is not None]),
            "tokens_per_second": _mean([s for s in speeds if s]),
            "peak_memory_mb": max((m for m in memory if m is not None), default=None),
            "mfu": _mean([m for m in mfu if m is not None]),
            "padding_train": _mean([e for e in padding["train"] if e is not None]),
            "padding_predict": _mean([e for e in padding["predict"] if e is not None]),
        }


@dataclass
class Board:
    tasks: list[str]
    rows: list[Row]
    failed: list[RunResult]
    meta: dict[str, Any]
    show_config: bool = False
    figures: dict[str, str] = field(default_factory=dict)  #: file name -> SVG text
    partial: Board | None = None  #: runs evaluated on a --limit sample, shown apart and never ranked
    #: task -> published results from its definition (``references:``): shown apart, never ranked or marked
    references: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    findings: Any = None  #: :class:`stmbench.report.findings.Findings` of the ranked results
    #: the metrics besides each task's ranking one that some cell has (the page's toggle, ``--metric``)
    metrics: list[Metric] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)  #: metric name -> its title (``macro-F1``)

    def title(self, metric: str) -> str:
        return self.titles.get(metric, metric)


def _predictions(store: ResultStore | None, run_id: str) -> tuple[list[int], list[int]] | None:
    if store is None:
        return None
    data = store.predictions(run_id)
    if not data or "gold" not in data or "predicted" not in data:
        return None
    return data["gold"], data["predicted"]


def _mark_significance(rows: list[Row], tasks: list[str], store: ResultStore | None, *, trust: bool = False,
                       lower_is_better: set[str] = frozenset()) -> None:
    """Mark the best row of each task (the largest mean, the smallest for a ranking metric that is
    not ``higher_is_better``), and the rows not significantly worse than it as tied (cells with an
    unverified run take no part unless ``trust``)."""
    for task in tasks:
        candidates = [r for r in rows if task in r.cells
                      and (trust or not any(UNVERIFIED in f for f in r.cells[task].flags.values()))]
        if not candidates:
            continue
        sign = -1.0 if task in lower_is_better else 1.0
        best = max(candidates, key=lambda r: (sign * r.cells[task].mean(), -rows.index(r)))
        best.cells[task].mark = "best"
        best_preds = {s: _predictions(store, rid) for s, rid in best.cells[task].run_ids.items()}
        best_preds = {s: p for s, p in best_preds.items() if p is not None}
        for row in candidates:
            if row is best:
                continue
            preds = {s: _predictions(store, rid) for s, rid in row.cells[task].run_ids.items()}
            preds = {s: p for s, p in preds.items() if p is not None}
            result = compare(best_preds, preds)
            if result is None:
                continue
            row.cells[task].p_value = result.p_value
            if result.p_value >= ALPHA:
                row.cells[task].mark = "tied"


def _group(ok: list[RunResult], unverified: set[str] = frozenset(), scores: _Scores | None = None,
           ) -> tuple[list[Row], list[str], set[str], bool]:
    """Rows (one per backbone x adapter x strategy x prompt x train size x config, a cell per task,
    sorted best first), the tasks, the tasks evaluated on dev, and whether configs need a column.
    Results of one cell whose data, prompt text or labels differ (:attr:`RunResult.provenance`) are
    never pooled: each gets a row of its own, flagged ``other data``."""
    groups: dict[tuple[str, ...], Row] = {}
    configs: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    tasks: set[str] = set()
    dev_tasks: set[str] = set()
    shown = shown_backbones(ok)
    for r in ok:
        spec = r.spec
        names = spec.names({**r.labels, "backbone": shown[spec.backbone]})
        key = {name: names[name] for name in ("backbone", "adapter", "strategy", "prompt", "train_size")}
        cfg = _config_id(r)
        configs.setdefault(tuple(key.values()) + (spec.task,), set()).add((cfg, r.provenance))
        row = groups.setdefault(tuple(key.values()) + (cfg, r.provenance), Row(key=key, config=cfg))
        row.provenance = r.provenance
        row.train_examples = max(row.train_examples, r.counts.get("train_examples") or 0)
        task = spec.task
        tasks.add(task)
        if r.task_info.get("eval_split") not in (None, "test"):
            dev_tasks.add(task)
        if spec.sweep:
            values = tuple((name, getattr(spec.training, name)) for name in spec.sweep)
            row.trials.setdefault(task, {}).setdefault(values, {})[spec.seed] = r
            row.all_trials.append(r)
            continue
        _fill(row, task, r, unverified, scores)
    for row in groups.values():
        for task, trials in row.trials.items():
            if any(r.spec.pruner for seeds in trials.values() for r in seeds.values()):
                _choose_pruned(row, task, trials, unverified, scores)
                continue
            chosen = max(sorted(trials, key=repr), key=lambda values: _dev_score(trials[values]))
            for r in trials[chosen].values():
                _fill(row, task, r, unverified, scores)
            row.cells[task].sweep = f"{_trial_text(chosen)}; {len(trials)} trials"
    for key, variants in configs.items():
        if len({prov for _, prov in variants}) > 1:  # one cell, results from different data
            for row in groups.values():
                if tuple(row.key.values()) == key[:-1] and key[-1] in row.cells:
                    mark = f" data {row.provenance or 'unrecorded'}"
                    row.config += "" if row.config.endswith(mark) else mark
                    for seed in row.cells[key[-1]].primary:
                        row.cells[key[-1]].flags.setdefault(seed, []).append(OTHER_DATA)
    task_list = sorted(tasks)

    def order(row: Row) -> tuple[Any, ...]:
        avg = row.average(task_list)
        return (-(avg if avg is not None else -1.0), tuple(row.key.values()), row.config)

    rows = sorted(groups.values(), key=order)
    return rows, task_list, dev_tasks, any(len(c) > 1 for c in configs.values())


def _fill(row: Row, task: str, r: RunResult, unverified: set[str] = frozenset(), scores: _Scores | None = None) -> None:
    """Put one run's test metrics into its row's cell for ``task``."""
    row.results.append(r)
    cell = row.cells.setdefault(task, Cell())
    seed = r.spec.seed
    cell.primary[seed] = float(r.score)  # the task's primary metric: accuracy, or entity F1 for NER
    for name, value in (scores.of(r) if scores else {}).items():
        cell.metrics.setdefault(name, {})[seed] = value
    if scores is not None:
        cell.aggregators.update(scores.by_name)
    cell.run_ids[seed] = r.run_id
    flags = list(dict.fromkeys(r.flags + (scores.class_flags(r) if scores else [])))
    flags += [UNVERIFIED] if r.run_id in unverified else []
    if flags:
        cell.flags[seed] = flags


def _trial_text(values: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{_short_name(n)} {_short_value(v)}" for n, v in values)


def _choose_pruned(row: Row, task: str, trials: dict[Any, dict[int, RunResult]], unverified: set[str],
                   scores: _Scores | None) -> None:
    """A pruned sweep's cell: each seed's trials were tuned (and pruned) on their own, so each seed
    keeps its completed trial with the best dev score; a pruned trial is never chosen."""
    by_seed: dict[int, dict[Any, RunResult]] = {}
    for values, seeds in trials.items():
        for seed, r in seeds.items():
            by_seed.setdefault(seed, {})[values] = r
    chosen = []
    for seed, options in sorted(by_seed.items()):
        done = {values: r for values, r in options.items() if r.pruned_at_step is None and r.score is not None}
        if done:
            values = max(sorted(done, key=repr), key=lambda v: _dev_score({seed: done[v]}))
            _fill(row, task, done[values], unverified, scores)
            chosen.append(values)
    pruned = sum(1 for options in by_seed.values() for r in options.values() if r.pruned_at_step is not None)
    total = sum(len(options) for options in by_seed.values())
    counts = (f"{len(trials)} trials, {pruned} pruned" if len(by_seed) == 1 else
              f"{len(trials)} trials x {len(by_seed)} seeds, {pruned} of {total} pruned")
    if task in row.cells:
        row.cells[task].sweep = f"{' / '.join(dict.fromkeys(_trial_text(v) for v in chosen))}; {counts}"


def _dev_score(runs: dict[int, RunResult]) -> float:
    """The mean dev accuracy of one trial's seeds (the test split never chooses)."""
    values = [r.selection.get("dev_metric") for r in runs.values()]
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else float("-inf")


def _short_name(name: str) -> str:
    return {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch",
            "weight_decay": "wd", "warmup_steps": "warmup"}.get(name, name)


def _short_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Scores:
    """Each run's value of every metric: the stored one, else computed from its stored predictions
    (so a metric registered after the runs, or by another package, still fills the board)."""

    def __init__(self, metrics: list[Metric], store: ResultStore | None):
        self.by_name = {m.name: m for m in metrics}
        self.store = store

    def of(self, r: RunResult) -> dict[str, float]:
        out: dict[str, float] = {}
        evidence = None
        for name, metric in self.by_name.items():
            value = r.metrics.get(name)
            if value is None:
                evidence = self._evidence(r) if evidence is None else evidence
                value = _compute(metric, *evidence) if evidence else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = float(value)
        return out

    def class_flags(self, r: RunResult) -> list[str]:
        """The health flags that the stored predictions show (``degenerate``, ``near_degenerate``),
        recomputed from them whatever the result claims."""
        from stmbench.run.scoring import health

        data = self.store.predictions(r.run_id) if self.store is not None else None
        gold, predicted = (data.get("gold"), data.get("predicted")) if isinstance(data, dict) else (None, None)
        if not isinstance(gold, list) or not isinstance(predicted, list) or not gold or len(predicted) != len(gold):
            return []
        try:
            return health(None, gold, predicted)["flags"]
        except TypeError:  # unhashable labels in a malformed file: verification refuses it elsewhere
            return []

    def _evidence(self, r: RunResult) -> tuple[list[Any], list[Any], list[str], str] | tuple[()]:
        data = self.store.predictions(r.run_id) if self.store is not None else None
        labels = [str(v).partition(":")[0] for v in (r.data or {}).get("labels") or []]
        if not data or not labels or not isinstance(data.get("gold"), list) or not data["gold"]:
            return ()
        kind = "tokens" if isinstance(data["gold"][0], list) else "sentence"
        return data["gold"], data["predicted"], labels, kind


def _compute(metric: Metric, gold: list[Any], predicted: list[Any], labels: list[str], kind: str) -> float | None:
    from stmbench.core.metrics import SENTENCE_KINDS

    serves = metric.serves("tokens") if kind == "tokens" else any(metric.serves(k) for k in SENTENCE_KINDS)
    if not serves:
        return None
    try:
        value = float(metric.compute(gold, predicted, labels=labels))
    except Exception as exc:  # noqa: BLE001 - a broken metric plugin costs its column, not the board
        log.warning("metric %s could not be computed: %s: %s", metric.name, type(exc).__name__, exc)
        return None
    return value if math.isfinite(value) else None


def aggregate(results: list[RunResult], store: ResultStore | None = None, *, unverified: set[str] = frozenset(),
              trust_unverified: bool = False, metrics: list[Metric] | None = None) -> Board:
    """Aggregate stored results into rows (mean and std over seeds), with significance marks; the
    runs in ``unverified`` are flagged and (unless ``trust_unverified``) left out of the marks.
    ``metrics`` (default: the built-ins) are the catalogue's: each one besides the ranking metric
    that some cell has becomes a view of the board."""
    from stmbench.common.version import __version__

    results = [RunResult.from_dict(r) for r in results]

    ok = sorted((r for r in results if r.ok and (r.score is not None or r.pruned_at_step is not None)),
                key=lambda r: r.run_id)  # a pruned trial only counts in its cell's sweep tag
    failed = sorted((r for r in results if not r.ok), key=lambda r: r.run_id)
    partial = [r for r in ok if r.partial]  # evaluated on a --limit sample: never ranked
    ok = [r for r in ok if not r.partial]
    if metrics is None:
        from stmbench.core.catalogue import default_metrics

        metrics = default_metrics()
    by_name = {m.name: m for m in metrics}
    scores = _Scores([m for m in metrics if m.name != PRIMARY], store)
    rows, task_list, dev_tasks, show_config = _group(ok, unverified, scores)
    lower = {r.spec.task for r in ok if r.primary_metric in by_name and not by_name[r.primary_metric].higher_is_better}
    _mark_significance(rows, task_list, store, trust=trust_unverified, lower_is_better=lower)
    partial_rows, partial_tasks, _, partial_config = _group(partial, unverified, scores)
    synthetic = sorted({r.spec.task for r in results if r.task_info.get("synthetic")})
    devices = sorted({_device_text(r.device) for r in ok})
    newest = max((r.finished_at or "" for r in results), default="")
    versions = sorted({r.versions.get("stmbench", "?") for r in ok})
    meta = {"version": __version__, "result_versions": versions, "generated_from": newest,
            "results": len(results), "ok": len(ok) + len(partial), "failed": len(failed), "devices": devices,
            "synthetic_tasks": synthetic, "dev_tasks": sorted(dev_tasks), "partial": len(partial),
            "unverified": sum(r.run_id in unverified for r in ok + partial), "trust_unverified": trust_unverified,
            "task_metrics": {r.spec.task: r.primary_metric for r in ok + partial if r.primary_metric != "accuracy"}}
    present = {name for row in rows + partial_rows for c in row.cells.values() for name in c.metrics}
    shown = [m for m in sorted(metrics, key=lambda m: m.name) if m.name in present]
    titles = {PRIMARY: PRIMARY, **{name: m.display for name, m in by_name.items()}}
    board = Board(task_list, rows, failed, meta, show_config, metrics=shown, titles=titles)
    board.partial = Board(partial_tasks, partial_rows, [], meta, partial_config, metrics=shown,
                          titles=titles) if partial_rows else None
    return board


def _device_text(device: dict[str, Any]) -> str:
    kind = device.get("type", "?")
    name = device.get("name", "?")
    if kind == "cpu":
        return f"CPU ({name}, {device.get('cpus', '?')} cores)"
    return f"{kind.upper()} ({name})"
