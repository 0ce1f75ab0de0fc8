"""The driver of a study: plan -> claim -> execute -> store -> leaderboard.

:func:`run_study` is what ``stmbench run``, the tests and the benchmarks call.  The executor it picks
never imports the pipeline: it receives a :class:`Runner` (a picklable callable that runs one spec,
in this process or in a fresh one) and a :class:`WorkQueue` that hands out runs one at a time,
claiming each in the results folder right before it starts (:mod:`stmbench.run.claims`), so any number
of ``stmbench run`` processes on one grid share it with no run trained twice.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.util
import logging
import os
import tempfile
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench.plan.checks import preflight
from stmbench.run.claims import ClaimBook
from stmbench.common.errors import StmbenchError
from stmbench.store.result import RunResult
from stmbench.store.results import ResultStore
from stmbench.core.session import Session
from stmbench.common.settings import Settings
from stmbench.spec.grid_spec import GridSpec
from stmbench.spec.run import RunSpec

log = logging.getLogger(__name__)

Outcome = tuple[RunResult, "dict[str, Any] | None"]
TEMP_FILE_AGE = 600.0  # seconds after which a hidden .tmp file in the results folder is debris
# what a run imports anyway: a worker imports them before its run arrives (the pool's fork server
# imports them once for all its workers), so a run's time is not spent importing
RUN_MODULES = ("torch", "transformers", "peft", "datasets", "stmbench.run.pipeline")


def preload() -> None:
    """Import :data:`RUN_MODULES` (those that are installed)."""
    for name in RUN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional library; the run that needs it says so
            pass


def _portable(plugin: Any) -> str | None:
    """How another process can load ``plugin``: an importable module name or a ``.py`` path."""
    if isinstance(plugin, str):
        return plugin
    if isinstance(plugin, types.ModuleType):
        name = plugin.__name__
        try:
            if importlib.util.find_spec(name) is not None and not name.startswith("stmbench_local_plugin_"):
                return name
        except (ImportError, ValueError):
            pass
        return getattr(plugin, "__file__", None)
    return None


def _absolute(settings: Settings) -> Settings:
    """The settings with every path absolute, so a worker with another working folder finds them."""
    plugins = [str(Path(p).resolve()) if p.endswith(".py") or os.sep in p else p for p in settings.plugins]
    return dataclasses.replace(
        settings, results_dir=settings.results_dir.resolve(), cache_dir=settings.cache_dir.resolve(),
        data_dir=settings.data_dir.resolve() if settings.data_dir else None,
        task_dirs=[p.resolve() for p in settings.task_dirs], plugins=plugins,
        leaderboard_dir=settings.leaderboard_dir.resolve() if settings.leaderboard_dir else None)


class Runner:
    """Runs one spec: ``runner(spec) -> (result, predictions)``; never raises for the run's own failure.

    In the driver's process it uses the driver's session.  Pickled (to a subprocess or a Ray worker)
    it carries only plain settings, the plugins as module names or file paths, and the backbone
    descriptions the planner resolved; the session is rebuilt there once.
    """

    def __init__(self, session: Session, backbones: dict[str, Any] | None = None):
        self.settings = _absolute(session.settings)
        self.backbones = dict(backbones or {})
        portable = [(p, _portable(p)) for p in session.extra_plugins]
        self.plugins = [spec for _, spec in portable if spec]
        self.unportable = [repr(p) for p, spec in portable if not spec]
        self._session: Session | None = session

    def __getstate__(self) -> dict[str, Any]:
        if self.unportable:
            raise StmbenchError(
                f"plugin object(s) {', '.join(self.unportable)} were registered in this process only and "
                "cannot travel to worker processes; load them as modules (--plugin module.path or file.py)")
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def with_device(self, device: str | None) -> Runner:
        """A copy whose runs use ``device`` (a worker pinned to one GPU, say)."""
        copy = Runner.__new__(Runner)
        copy.__dict__.update(self.__getstate__())
        copy.settings = dataclasses.replace(self.settings, device=device)
        return copy

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.settings, extra_plugins=self.plugins)
        return self._session

    def warm(self) -> None:
        """Import what a run needs and build the session (a worker does this before its run arrives)."""
        preload()
        _ = self.session

    def __call__(self, spec: RunSpec) -> Outcome:
        from stmbench.run.distributed import launch, world
        from stmbench.run.pipeline import run_spec

        if self.settings.devices_per_run > 1 and world().size == 1 and self.session.get("strategy", spec.strategy).trains:
            return launch(self, spec)  # k processes under torchrun (a run that trains nothing needs one)
        return run_spec(spec, self.session, info=self.backbones.get(spec.backbone))

    def failed(self, spec: RunSpec, reason: str) -> RunResult:
        """The result of a run that died without reporting (its process was killed, say)."""
        from stmbench.run.pipeline import failed_result

        return failed_result(spec, reason, self.session)


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _timestamp(text: str | None) -> float | None:
    try:
        return _dt.datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


class WorkQueue:
    """The runs of one study, handed out one at a time to an executor.

    * :meth:`take` claims and returns the next run that no one has finished or holds (``None``: none
      right now); the store is read again before every run, not once at the start.
    * :meth:`done` stores a run's outcome (``failed`` for ``runner.failed(...)``) and releases it.
    * :meth:`finished` says when nothing is left here or held elsewhere; :meth:`wait` pauses while
      other workers finish the runs they hold (a stale claim is taken over on the next :meth:`take`).
    """

    def __init__(self, specs: list[RunSpec], store: ResultStore, claims: ClaimBook, *, rerun: bool = False,
                 poll: float = 2.0, progress: Callable[[str], None] | None = None,
                 on_result: Callable[[RunResult, dict[str, Any] | None], None] | None = None,
                 display: Callable[[str], str] | None = None):
        self.total = len(specs)
        self.display = display  #: backbone -> the name its lines show (``Session.backbone_display``)
        self.store = store
        self.claims = claims
        self.rerun = rerun
        self.poll = poll
        self.progress = progress or (lambda line: log.info("%s", line))
        self.on_result = on_result
        # results are stamped to the millisecond (before: to the second, which made a run that failed in
        # the second before this study started look like a failure of this study, not retried)
        self.since = time.time() - 0.001
        self._open = list(specs)
        self._running: dict[str, tuple[RunSpec, float]] = {}
        self._lock = threading.Lock()
        self._first_start: float | None = None
        self._waiting_said = False
        self.counts = {"ok": 0, "failed": 0, "elsewhere": 0}
        self.results: list[RunResult] = []

    def label(self, spec: RunSpec) -> str:
        return spec.label({"backbone": self.display(spec.backbone)} if self.display else None)

    # --- for executors -----------------------------------------------------------------------

    def take(self) -> RunSpec | None:
        with self._lock:
            for spec in list(self._open):
                if self._settled(spec.run_id):
                    self._open.remove(spec)
                    self.counts["elsewhere"] += 1
                    continue
                if not self.claims.acquire(spec.run_id):
                    continue  # a live worker holds it
                if self._settled(spec.run_id):  # finished by another worker between our check and claim
                    self.claims.release(spec.run_id)
                    self._open.remove(spec)
                    self.counts["elsewhere"] += 1
                    continue
                self._open.remove(spec)
                now = time.time()
                self._first_start = self._first_start or now
                self._running[spec.run_id] = (spec, now)
                self._waiting_said = False
                started = self.total - len(self._open)
                self.progress(f"  [{started}/{self.total}] started {self.label(spec)}")
                return spec
            return None

    def done(self, spec: RunSpec, result: RunResult, predictions: dict[str, Any] | None = None) -> Path:
        """Store one outcome, release its claim, say where the grid stands."""
        result = RunResult.from_dict(result, f"result of run {spec.run_id}")
        if result.status == "paused":  # a pruned sweep's trial waits for an earlier one: later, from its checkpoint
            with self._lock:
                self.claims.release(spec.run_id)
                self._running.pop(spec.run_id, None)
                self._open.append(spec)
            self.progress(f"  [paused] {self.label(spec)}: {result.error}")
            return self.store.folder
        try:
            path = self.store.write(result, predictions)
        except OSError as exc:  # a full disk, a folder gone read-only: say so, keep what can be kept, stop
            self._store_failed(spec, result, exc)
            raise
        with self._lock:
            self.claims.release(spec.run_id)
            self._running.pop(spec.run_id, None)
            self.counts["ok" if result.ok else "failed"] += 1
            self.results.append(result)
        value = result.score
        detail = f"{result.primary_metric.replace('_', ' ')} {100 * value:.1f}" if value is not None else result.error or ""
        if result.pruned_at_step is not None:
            dev = result.selection.get("dev_metric")
            detail = f"pruned at step {result.pruned_at_step}" + (f" (best dev {100 * dev:.1f})" if dev is not None else "")
        self.progress(f"  [{result.status}] {self.label(spec)}: {detail} -> {path}  ({self.status_line()})")
        if self.on_result is not None:
            self.on_result(result, predictions)
        return path

    def _store_failed(self, spec: RunSpec, result: RunResult, exc: OSError) -> None:
        """The run's result could not be written: its partial files are gone (``ResultStore.write``);
        store it as failed where a small record still fits, release its claim, and raise one line."""
        reason = f"its result could not be stored: {exc.strerror or exc}"
        stored = "stored as failed"
        try:
            self.store.write(dataclasses.replace(result, status="failed", error=reason, traceback=None,
                                                 metrics={}))
        except OSError:
            stored = "not stored"
        with self._lock:
            self.claims.release(spec.run_id)
            self._running.pop(spec.run_id, None)
            self.counts["failed"] += 1
        raise StmbenchError(f"run {spec.run_id} ({self.label(spec)}) finished, but {reason} in {self.store.folder} "
                            f"({stored}); the grid stops here: {self.status_line()}") from exc

    def finished(self) -> bool:
        with self._lock:
            return not self._open and not self._running

    def wait(self, seconds: float | None = None) -> None:
        """Pause before asking again (runs held by other workers are still going)."""
        with self._lock:
            if not self._running and self._open and not self._waiting_said:
                holders = sorted({f"{h.get('host')}:{h.get('pid')}" for s in self._open
                                  if (h := self.claims.holder(s.run_id))})
                self.progress(f"  waiting for {len(self._open)} run(s) held by other workers "
                              f"({', '.join(holders) or 'finishing'})")
                self._waiting_said = True
        time.sleep(self.poll if seconds is None else seconds)

    @property
    def open(self) -> int:
        """How many runs are neither taken by this process nor finished (some may be held elsewhere)."""
        with self._lock:
            return len(self._open)

    # --- bookkeeping -------------------------------------------------------------------------

    def _settled(self, run_id: str) -> bool:
        """Finished for this study: ok (and, with ``rerun``, since it started), or failed since it
        started (a run that failed in another worker of this study is not tried again)."""
        result = self.store.get(run_id)
        if not result:
            return False
        recent = (_timestamp(result.finished_at) or 0.0) >= self.since
        return recent if (self.rerun or not result.ok) else True

    def status_line(self) -> str:
        finished = sum(self.counts.values())
        left = self.total - finished
        text = f"{finished}/{self.total} finished, {self.counts['failed']} failed, {left} left"
        if self.counts["elsewhere"]:
            text += f", {self.counts['elsewhere']} by other workers"
        if left and finished and self._first_start:
            text += f", ETA {_fmt_seconds((time.time() - self._first_start) / finished * left)}"
        return text


@dataclass
class StudyReport:
    """What :func:`run_study` did."""

    plan: Any
    todo: list[RunSpec] = field(default_factory=list)
    skipped: int = 0  # stored as ok before the study started
    ok: int = 0
    failed: int = 0
    elsewhere: int = 0  # finished by other workers sharing the results folder
    results: list[RunResult] = field(default_factory=list)
    seconds: float = 0.0
    bill: Any = None  #: :class:`stmbench.run.bill.Bill` of the runs to do (``None``: not priced)


def clean_debris(results_dir: Path, *, age: float = TEMP_FILE_AGE, temp_dir: Path | None = None) -> list[Path]:
    """Remove what killed processes left: hidden ``.tmp`` files in the results folder older than
    ``age`` seconds (a live writer renames its file within milliseconds) and empty
    ``stmbench-trainer-*`` folders in the temporary folder."""
    removed = []
    now = time.time()
    if results_dir.is_dir():
        for path in results_dir.glob(".*.tmp"):
            try:
                if now - path.stat().st_mtime > age:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                pass
    for folder in Path(temp_dir or tempfile.gettempdir()).glob("stmbench-trainer-*"):
        try:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                removed.append(folder)
        except OSError:
            pass
    if removed:
        log.info("removed %d file(s) left by interrupted runs", len(removed))
    return removed


@dataclass
class BillOptions:
    """How :func:`run_study` prices a grid before it runs (:mod:`stmbench.run.bill`)."""

    budget_hours: float | None = None  #: refuse a grid estimated over this many device-hours
    device: str | None = None  #: price it on this datasheet device (``H100``) instead of this one
    mfu: float | None = None
    tokens_per_example: int | None = None


def _bill(todo: list[RunSpec], session: Session, options: BillOptions, say: Callable[[str], None],
          dry_run: bool) -> Any:
    """Say what the runs to do will cost; refuse them when over ``budget_hours`` (one line)."""
    from stmbench.run.bill import estimate

    try:
        bill = estimate(todo, session, device_name=options.device, mfu=options.mfu,
                        tokens_per_example=options.tokens_per_example)
    except StmbenchError as exc:
        if options.budget_hours is not None:
            raise StmbenchError(f"--budget-hours cannot be checked: {exc}") from None
        say(f"no cost estimate: {exc}")
        return None
    if not bill.runs:
        return bill
    for line in bill.lines():
        say(line)
    if options.budget_hours is not None and bill.expected_hours > options.budget_hours:
        raise StmbenchError(f"the grid is estimated at {bill.expected_hours:,.2f} device-hours, over --budget-hours "
                            f"{options.budget_hours:g}; narrow it, prune it (--pruner asha) or raise the budget")
    return bill


def run_study(grid: GridSpec, session: Session, *, rerun: bool = False, dry_run: bool = False,
              on_result: Callable[[RunResult, dict[str, Any] | None], None] | None = None,
              progress: Callable[[str], None] | None = None, max_runs: int | None = None,
              bill: BillOptions | None = None) -> StudyReport:
    """Plan ``grid``, run what is not done yet on its executor, store every outcome, and return the
    :class:`StudyReport` (the caller refreshes the leaderboard: :mod:`stmbench.report.refresh`).  ``progress`` receives one line per planned, started and finished run (default: the
    log); ``on_result(result, predictions)`` is called after each run is stored."""
    from stmbench.plan.grid import plan_grid

    say = progress or (lambda line: log.info("%s", line))
    start = time.perf_counter()
    from stmbench.plan.grid import MAX_RUNS

    plan = plan_grid(grid, session, max_runs=MAX_RUNS if max_runs is None else max_runs)
    executor = session.get("executor", grid.executor)
    options = executor.typed_options(grid.executor_options)  # bad executor options fail before anything runs
    if not plan.runs:
        reasons = sorted({reason for _, reason in plan.rejected})
        raise StmbenchError(f"nothing to run: every combination of the grid was rejected ({'; '.join(reasons)})"
                            if reasons else "nothing to run: the grid names no runs")
    store = ResultStore(session.settings.results_dir)
    if session.settings.results_dir.is_dir():
        todo = [s for s in plan.runs if rerun or not store.is_done(s.run_id)]
    else:
        todo = list(plan.runs)
    report = StudyReport(plan=plan, todo=todo, skipped=len(plan.runs) - len(todo))
    if grid.devices_per_run is not None:  # a grid file's devices_per_run (a flag overrides it in the grid)
        session.settings.devices_per_run = grid.devices_per_run
    # every setting, device and data split of the grid is checked, also when nothing is left to run
    problem = None
    try:
        checked = preflight(plan.runs, session, skip_bad_rows=grid.skip_bad_rows)  # raises before anything trains
    except StmbenchError as exc:
        if not dry_run:
            raise
        checked, problem = [], exc  # a dry run still shows its plan and bill, then the problem
    say(f"{len(plan.runs)} run(s) planned: {len(todo)} to do, {report.skipped} already done (skipped)"
        + (f", {len(plan.rejected)} combination(s) rejected" if plan.rejected else ""))
    by_reason: dict[str, list[RunSpec]] = {}
    for spec, reason in plan.rejected:
        by_reason.setdefault(reason, []).append(spec)
    for reason, specs in by_reason.items():  # one line per reason: its first run and how many more
        more = f" (and {len(specs) - 1} more like it)" if len(specs) > 1 else ""
        say(f"  rejected: {specs[0].label(_shown(specs[0], session))}{more}: {reason}")
    for line in checked if dry_run else []:
        say(f"  checked: {line}")
    report.bill = _bill(todo, session, bill or BillOptions(), say, dry_run) if todo else None
    if dry_run:
        costs = {c.spec.run_id: c for c in report.bill.runs} if report.bill is not None else {}
        for spec in todo:
            cost = costs.get(spec.run_id)
            price = "" if cost is None else f"  [{cost.flops:.3g} FLOPs, {cost.tokens:,.0f} tokens, {cost.steps:,} steps" + (
                f"; ~{100 * cost.pruned_share:.0f}% with pruning]" if spec.pruner else "]")
            say(f"  would run {spec.run_id}: {spec.label(_shown(spec, session))}{price}")
        if problem is not None:
            raise problem
        return report
    if todo:
        clean_debris(session.settings.results_dir)
        claims = ClaimBook(session.settings.results_dir, timeout=session.settings.claim_timeout)
        queue = WorkQueue(todo, store, claims, rerun=rerun, progress=say, on_result=on_result,
                          display=session.backbone_display)
        try:
            executor.execute(queue, run=Runner(session, plan.backbones), options=options)
        finally:
            claims.release_all()
        report.ok, report.failed, report.elsewhere = (queue.counts[k] for k in ("ok", "failed", "elsewhere"))
        report.results = queue.results
    report.seconds = time.perf_counter() - start
    say(f"done in {report.seconds:.1f} s: {report.ok} ok, {report.failed} failed, {report.skipped} skipped"
        + (f", {report.elsewhere} run by other workers" if report.elsewhere else ""))
    return report


def _shown(spec: RunSpec, session: Session) -> dict[str, str]:
    return {"backbone": session.backbone_display(spec.backbone)}
