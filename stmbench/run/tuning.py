"""Pruned sweeps: each trial of a swept cell reports its dev score at every evaluation to an Optuna
study, and Optuna's pruner (``SuccessiveHalvingPruner``: ASHA) says whether it goes on.

The studies live in the results folder (Optuna's journal storage, ``<results>/tuning/journal.log``),
so every ``stmbench run`` process, pool worker or Ray task on that folder shares them.  A decision
at a trial's evaluation *e* is made only once every earlier trial of its cell (in the planned
order) has made its own at *e* or has ended, so the decisions are those of one process running the
trials one after another, however many workers share the grid.  A trial that would wait for an
earlier one no live worker holds (not taken yet, or its worker died) *pauses*: its checkpoint at *e*
is kept, its claim released, and it goes back into the queue; resumed, it makes its decision at *e*
and goes on from that checkpoint exactly as if it had never stopped.  Each decision is stored, so a
trial that is resumed after a crash repeats none.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmbench.common.errors import StmbenchError

if TYPE_CHECKING:  # pragma: no cover
    from stmbench.spec.run import RunSpec

log = logging.getLogger(__name__)

POLL = 0.5  #: seconds between looks at earlier trials while waiting for their decisions
ENDED = ("COMPLETE", "PRUNED", "FAIL")


class Paused(StmbenchError):
    """The trial waits for an earlier trial no live worker holds: it goes back into the queue."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise StmbenchError("--pruner needs optuna: pip install 'stmbench[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_pruner(text: str) -> Any:
    """The Optuna pruner of a canonical pruner entry (``asha[bootstrap_count=0,...]``)."""
    from stmbench.spec.search import parse_pruner

    spec = parse_pruner(text)
    assert spec is not None
    optuna = _optuna()
    if spec.name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(**spec.settings)
    raise StmbenchError(f"unknown pruner {spec.name!r}")  # pragma: no cover - parse_pruner refuses it first


class TuningBook:
    """The tuning studies of one results folder."""

    def __init__(self, results_dir: str | Path, *, claim_timeout: float = 300.0, poll: float = POLL):
        self.folder = Path(results_dir) / "tuning"
        self.results_dir = Path(results_dir)
        self.claim_timeout = claim_timeout
        self.poll = poll
        self._storage: Any = None

    @property
    def storage(self) -> Any:
        if self._storage is None:
            _optuna()
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            self.folder.mkdir(parents=True, exist_ok=True)
            self._storage = JournalStorage(JournalFileBackend(str(self.folder / "journal.log")))
        return self._storage

    @contextlib.contextmanager
    def locked(self, study: str) -> Iterator[None]:
        """One process at a time reads and changes ``study`` (a file lock beside the journal)."""
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / f"{study}.lock")):
            yield

    def study(self, spec: RunSpec) -> Any:
        optuna = _optuna()
        return optuna.create_study(study_name=spec.tuning["study"], storage=self.storage, direction="maximize",
                                   pruner=make_pruner(spec.pruner or ""), load_if_exists=True,
                                   sampler=optuna.samplers.RandomSampler(seed=0))

    def trial(self, spec: RunSpec) -> TrialReporter:
        """The reporter of ``spec``'s trial (created in its study the first time)."""
        with self.locked(spec.tuning["study"]):
            study = self.study(spec)
            found = {t.user_attrs.get("run_id"): t for t in study.get_trials(deepcopy=False)}
            if spec.run_id in found:
                number = found[spec.run_id].number
            else:
                trial = study.ask()
                trial.set_user_attr("run_id", spec.run_id)
                trial.set_user_attr("order", spec.tuning["trials"].index(spec.run_id))
                trial.set_user_attr("params", {name: getattr(spec.training, name) for name in spec.sweep})
                number = trial.number
        return TrialReporter(self, spec, number)


def _decisions(trial: Any) -> dict[int, str]:
    return {int(k.split("_", 1)[1]): v for k, v in trial.user_attrs.items() if k.startswith("decision_")}


class TrialReporter:
    """One trial's side of its study: :meth:`decide` at each evaluation, :meth:`finish` at the end."""

    def __init__(self, book: TuningBook, spec: RunSpec, number: int):
        self.book, self.spec, self.number = book, spec, number
        self.study_name = spec.tuning["study"]
        self.earlier = spec.tuning["trials"][:spec.tuning["trials"].index(spec.run_id)]

    def _frozen(self, study: Any) -> Any:
        return next(t for t in study.get_trials(deepcopy=False) if t.number == self.number)

    def pending(self) -> tuple[int, int] | None:
        """``(evaluation, step)`` of a reported evaluation still waiting for its decision (the trial
        paused or was killed there), or ``None``."""
        with self.book.locked(self.study_name):
            frozen = self._frozen(self.book.study(self.spec))
            done = _decisions(frozen)
            waiting = [e for e in frozen.intermediate_values if e not in done]
            if not waiting:
                return None
            e = max(waiting)
            return e, int(frozen.user_attrs.get(f"step_{e}", 0))

    def _blocker(self, study: Any, evaluation: int) -> str | None:
        """The first earlier trial that has neither decided at ``evaluation`` nor ended."""
        from stmbench.store.results import ResultStore

        trials = {t.user_attrs.get("run_id"): t for t in study.get_trials(deepcopy=False)}
        store = ResultStore(self.book.results_dir)
        for run_id in self.earlier:
            t = trials.get(run_id)
            if t is not None and (t.state.name in ENDED or evaluation in _decisions(t)):
                continue
            if store.get(run_id) is not None:  # stored (it failed before it could say so, say)
                continue
            return run_id
        return None

    def _held(self, run_id: str) -> bool:
        from stmbench.run.claims import ClaimBook

        claims = ClaimBook(self.book.results_dir, timeout=self.book.claim_timeout)
        info = claims.holder(run_id)
        return info is not None and claims.stale_reason(run_id, info) is None

    def decide(self, evaluation: int, step: int, value: float | None) -> str:
        """Report the dev ``value`` of ``evaluation`` (at training ``step``) and return ``continue`` or
        ``prune``: Optuna's pruner decides once every earlier trial has decided here or ended; raises
        :class:`Paused` when one of them is held by no live worker."""
        optuna = _optuna()
        said = False
        while True:
            with self.book.locked(self.study_name):
                study = self.book.study(self.spec)
                frozen = self._frozen(study)
                known = _decisions(frozen).get(evaluation)
                if known is not None:
                    return known
                trial = optuna.trial.Trial(study, frozen._trial_id)
                if evaluation not in frozen.intermediate_values:
                    if value is None:
                        raise StmbenchError(f"evaluation {evaluation} of trial {self.spec.run_id} was never reported")
                    trial.report(float(value), evaluation)
                    trial.set_user_attr(f"step_{evaluation}", int(step))
                blocker = self._blocker(study, evaluation)
                if blocker is None:
                    verdict = "prune" if trial.should_prune() else "continue"
                    trial.set_user_attr(f"decision_{evaluation}", verdict)
                    if verdict == "prune":
                        study.tell(frozen.number, state=optuna.trial.TrialState.PRUNED)
                    return verdict
            if not self._held(blocker):
                raise Paused(f"paused at evaluation {evaluation} (step {step}): earlier trial {blocker} of its "
                             "cell has not reached it and no live worker holds it")
            if not said:
                log.info("trial %s waits at evaluation %d for earlier trial %s", self.spec.run_id, evaluation, blocker)
                said = True
            time.sleep(self.book.poll)

    def finish(self, value: float | None) -> None:
        """The trial trained to its end: ``COMPLETE`` with its best dev score."""
        optuna = _optuna()
        with self.book.locked(self.study_name):
            study = self.book.study(self.spec)
            frozen = self._frozen(study)
            if frozen.state.name == "RUNNING":
                study.tell(frozen.number, None if value is None else float(value),
                           state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL)


def pruning_callback(reporter: TrialReporter) -> Any:
    """A ``TrainerCallback`` that hands every dev evaluation to ``reporter`` and stops training where
    the pruner says so (``pruned``) or where the trial must pause (``paused``); the checkpoint of that
    evaluation is saved either way."""
    from transformers import TrainerCallback

    class PruningCallback(TrainerCallback):
        def __init__(self) -> None:
            self.pruned_at: int | None = None
            self.paused: Paused | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            value = (metrics or {}).get("eval_accuracy")
            if value is None:
                return control
            evaluation = sum(1 for entry in state.log_history if "eval_accuracy" in entry)
            try:
                verdict = reporter.decide(evaluation, state.global_step, float(value))
            except Paused as exc:
                self.paused = exc
                control.should_training_stop = True
                control.should_save = True  # resumed from this very evaluation
                return control
            if verdict == "prune":
                self.pruned_at = state.global_step
                control.should_training_stop = True
            return control

    return PruningCallback()
