"""Evidence behind stored results: a :class:`ResultSet` of several folders reads every file as
untrusted, checks it (:mod:`stmbench.store.verify`), and re-derives each result's metrics from its
predictions with the catalogue's metrics (and its gold labels from the task's data, where the
maintainer has it).  A result whose numbers do not follow from its evidence is refused."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stmbench.common.untrusted import UntrustedFileError, term_text
from stmbench.core.metrics import SENTENCE_KINDS, Metric
from stmbench.store.result import RunResult
from stmbench.store.results import ResultStore, _reason, results_frame
from stmbench.store.verify import Refused, Verdict, _need, check_predictions, label_values

log = logging.getLogger(__name__)

TOLERANCE = 1e-9  #: how far a stored metric may be from the recomputed one


def recompute(result: RunResult, gold: list[Any], predicted: list[Any], metrics: list[Metric]) -> dict[str, float]:
    """The stored metrics of ``result`` that a catalogue metric computes from its predictions, computed
    again."""
    values = label_values(result)
    tokens = bool(gold) and isinstance(gold[0], list)
    if values is None:  # results before schema 3 do not record their labels: accuracy alone
        if tokens:
            return {}
        return {"accuracy": sum(int(g == p) for g, p in zip(gold, predicted)) / len(gold)}
    n = len(values)
    flat = [t for g in gold for t in g] if tokens else gold
    _need(all(0 <= t < n for t in flat), f"its gold labels are not among its {n} labels")
    kinds = ("tokens",) if tokens else SENTENCE_KINDS
    out = {}
    for metric in metrics:
        if metric.name in result.metrics and any(metric.serves(kind) for kind in kinds):
            try:
                out[metric.name] = float(metric.compute(gold, predicted, labels=values))
            except Exception as exc:  # noqa: BLE001 - evidence a metric cannot read proves nothing
                raise Refused(f"metrics.{metric.name} cannot be recomputed from its predictions "
                              f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return out


def compare_metrics(result: RunResult, recomputed: dict[str, float]) -> None:
    """Refuse a result whose stored metrics differ from the recomputed ones (naming both numbers)."""
    for name in sorted(recomputed):
        if name in result.metrics:
            stored, again = result.metrics[name], recomputed[name]
            _need(abs(stored - again) <= TOLERANCE,
                  f"metrics.{name} says {100 * stored:.1f} but its predictions give {100 * again:.1f}")


#: gold labels of a task's evaluation data as the maintainer has it: (task, fingerprint) -> labels or None
GoldSource = Callable[[str, str], "list[Any] | None"]


def check_against_data(result: RunResult, gold: list[Any], gold_source: GoldSource | None) -> bool:
    """Compare the stored gold with the task data the maintainer has (same fingerprint); True when
    it was compared."""
    if gold_source is None or result.partial is not None:
        return False
    fingerprint = ((result.data or {}).get("eval") or {}).get("fingerprint")
    if not isinstance(fingerprint, str):
        return False
    truth = gold_source(result.spec.task, fingerprint)
    if truth is None:
        return False
    _need(list(truth) == list(gold), f"its gold labels differ from task {result.spec.task}'s data "
                                     f"(fingerprint {fingerprint})")
    return True


def session_gold_source(session: Any) -> GoldSource:
    """Gold labels from the tasks' data a session has at hand (generated, or local files under
    ``--data-dir``; never the hub), for the evaluation split whose fingerprint a result names."""
    from stmbench.common.errors import StmbenchError
    from stmbench.run.splits import gold
    from stmbench.tasks.catalogue import at_hand

    memo: dict[tuple[str, str], Any] = {}

    def source(task_name: str, fingerprint: str) -> list[Any] | None:
        entry = session.catalogue.entries["task"].get(task_name)
        if entry is None or not at_hand(entry.obj, session):
            return None
        key = (task_name, entry.obj.eval_split)
        if key not in memo:
            try:
                data = session.task_data(entry.obj, entry.obj.eval_split)
                memo[key] = (data.fingerprint, gold(entry.obj, data.dataset))
            except StmbenchError:
                memo[key] = None
        found = memo[key]
        return found[1] if found is not None and found[0] == fingerprint else None

    return source



class ResultSet:
    """The results of several folders, merged by run id, each checked before it counts
    (:attr:`verdicts`, one per file): its identity and fields (:func:`stmbench.store.verify.check_result`),
    its predictions, and its metrics recomputed from them (and from the task's data where
    ``gold_source`` has it).  A refused result is never shown or copied; one without predictions is
    ``unverified`` (:attr:`unverified`).  A run stored in two folders with the same contents (result
    and predictions) is one run; with different contents it is a conflict (both paths kept in
    :attr:`conflicts`), and the folder given first wins."""

    def __init__(self, folders: list[Path], *, gold_source: GoldSource | None = None, log_refusals: bool = True,
                 metrics: list[Metric] | None = None):
        if metrics is None:
            from stmbench.core.catalogue import default_metrics

            metrics = default_metrics()
        self.metrics = list(metrics)
        self.folders = list(folders)
        self._log_refusals = log_refusals
        self.where: dict[str, Path] = {}
        self.conflicts: list[tuple[str, Path, Path]] = []
        self.verdicts: list[Verdict] = []
        self.unverified: set[str] = set()
        self._results: dict[str, RunResult] = {}
        self._evidence: dict[str, list[tuple[str, bytes]]] = {}  #: run id -> (file name, bytes as read)
        self._predictions: dict[str, dict[str, Any]] = {}
        for folder in self.folders:
            store = ResultStore(folder)
            for path, result, raw, reason in store.scan():
                if result is None:
                    self._refuse(path, reason)
                    continue
                try:
                    predictions, status, note = self._check(store, result, gold_source, self.metrics)
                except (Refused, UntrustedFileError) as exc:
                    self._refuse(path, _reason(exc))
                    continue
                evidence = [(path.name, raw)] + ([(store.predictions_path(result.run_id).name, predictions[1])]
                                                 if predictions is not None else [])
                self.verdicts.append(Verdict(str(path), status, note))
                seen = self._results.get(result.run_id)
                if seen is None:
                    self._results[result.run_id], self.where[result.run_id] = result, folder
                    self._evidence[result.run_id] = evidence
                    if predictions is not None:
                        self._predictions[result.run_id] = predictions[0]
                    if status == "unverified":
                        self.unverified.add(result.run_id)
                elif seen.to_dict() != result.to_dict() or self._predictions.get(result.run_id) != (
                        predictions[0] if predictions is not None else None):
                    self.conflicts.append((result.run_id, ResultStore(self.where[result.run_id]).path(result.run_id),
                                           path))
                    log.warning("run %s differs between %s and %s; the first is used", result.run_id,
                                *(term_text(p) for p in self.conflicts[-1][1:]))

    def _refuse(self, path: Path, reason: str) -> None:
        if self._log_refusals:
            log.warning("refused %s: %s", term_text(path), reason)
        self.verdicts.append(Verdict(str(path), "refused", reason))

    @staticmethod
    def _check(store: ResultStore, result: RunResult, gold_source: GoldSource | None,
               metrics: list[Metric]) -> tuple[tuple[dict[str, Any], bytes] | None, str, str]:
        """``(predictions and their bytes, verdict, note)`` of one result that passed its own checks."""
        try:
            record = store.predictions_record(result.run_id)
        except UntrustedFileError as exc:
            raise Refused(f"its predictions file {store.predictions_path(result.run_id).name} {exc.reason}") from None
        if not result.ok:
            return record if record is not None and isinstance(record[0], dict) else None, "verified", \
                "a failed run (no metrics to check)"
        if result.pruned_at_step is not None and record is None:
            return None, "verified", f"a pruned trial (stopped at step {result.pruned_at_step}; no test metrics)"
        if record is None:
            return None, "unverified", "no predictions file: its metrics cannot be recomputed"
        gold, predicted = check_predictions(record[0], result)
        recomputed = recompute(result, gold, predicted, metrics)
        compare_metrics(result, recomputed)
        against = check_against_data(result, gold, gold_source)
        names = ", ".join(sorted(set(recomputed) & set(result.metrics))) or "nothing"
        return record, "verified", f"{names} recomputed from its predictions" + (
            ", gold labels equal to the task's data" if against else "")

    @property
    def refused(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "refused"]

    def load_all(self) -> list[RunResult]:
        return [self._results[run_id] for run_id in sorted(self._results)]

    def predictions(self, run_id: str) -> dict[str, Any] | None:
        return self._predictions.get(run_id)

    def files(self, run_id: str) -> list[Path]:
        """The result file of ``run_id`` and its predictions file, where they were read."""
        return [self.where[run_id] / name for name, _ in self._evidence.get(run_id, [])]

    def evidence(self, run_id: str) -> list[tuple[str, bytes]]:
        """``(file name, bytes)`` of the result and predictions of ``run_id`` exactly as they were
        read and checked (what a leaderboard copies: never re-read, never a link's target)."""
        return list(self._evidence.get(run_id, []))

    def frame(self) -> Any:
        return results_frame(self.load_all())
