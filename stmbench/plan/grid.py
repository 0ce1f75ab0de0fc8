"""GridSpec -> RunSpecs: expand the axes, validate names, reject what cannot work, resolve settings.

Planning happens before anything trains: unknown names are errors (listing the known ones), and a
combination that cannot work (``generative`` on an encoder, ``qlora`` without CUDA, ...) is
*rejected* with its reason while the rest of the grid goes on.  Axes a strategy ignores are cleared
(the prompt for an encoder classifier, shots for a trained strategy), so equal runs get one id.
"""

from __future__ import annotations

import itertools
import math
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.core.session import Session
from stmbench.plan.search import sweep_trials, trial_count
from stmbench.spec.grid_spec import GridSpec
from stmbench.spec.run import RunSpec
from stmbench.spec.training import TrainingSettings
from stmbench.core.types import BackboneInfo, Combination

log = logging.getLogger(__name__)

#: the training settings that matter to a strategy that does not train
EVAL_SETTINGS = ("per_device_eval_batch_size", "eval_batch_tokens", "max_seq_length", "bf16", "fp16")


def expand(grid: GridSpec) -> Iterator[RunSpec]:
    """Every combination of the axes, in a stable order, with the user's raw options (an axis entry's
    own options override the grid-wide ``adapter_options`` / ``strategy_options``)."""
    for backbone, task, (strategy, s_opts), (adapter, a_opts), prompt, size, shots, seed, (teacher, t_opts) in \
            itertools.product(grid.backbones, grid.tasks, grid.strategy_entries, grid.adapter_entries, grid.prompts,
                              grid.train_sizes, grid.shots, grid.seeds, grid.teacher_entries):
        yield RunSpec(backbone=backbone, task=task, strategy=strategy, adapter=adapter, prompt=prompt,
                      train_size=size, seed=seed, shots=shots, teacher=teacher, teacher_options=t_opts,
                      adapter_options={**grid.adapter_options.get(adapter, {}), **a_opts},
                      strategy_options={**grid.strategy_options.get(strategy, {}), **s_opts},
                      skip_bad_rows=grid.skip_bad_rows, limit=grid.limit)


@dataclass
class Plan:
    runs: list[RunSpec] = field(default_factory=list)
    rejected: list[tuple[RunSpec, str]] = field(default_factory=list)
    backbones: dict[str, BackboneInfo] = field(default_factory=dict)


def _check_names(grid: GridSpec, session: Session) -> None:
    strategies = [name for name, _ in grid.strategy_entries]
    adapters = [name for name, _ in grid.adapter_entries]
    for kind, names in (("task", grid.tasks), ("strategy", strategies), ("adapter", adapters)):
        for name in names:
            session.get(kind, name)  # raises UnknownNameError listing the known names
    session.get("executor", grid.executor)
    for name, _ in grid.teacher_entries:
        if name is not None:
            session.get("teacher", name)
    for name in grid.tasks:  # a task's metrics are registered and serve its kind
        session.metrics_for(session.get("task", name))
    prompts = {p for name in grid.tasks for p in session.get("task", name).prompts}
    for prompt in grid.prompts if prompts else []:  # tasks without prompts (a tag per token) ignore the axis
        if prompt not in prompts:
            raise StmbenchError(f"unknown prompt {prompt!r}; the task(s) {', '.join(grid.tasks)} have: "
                                f"{', '.join(sorted(prompts))}")
    for kind, given, axis in (("adapter", grid.adapter_options, adapters),
                              ("strategy", grid.strategy_options, strategies)):
        for name in given:
            if name not in axis:
                session.get(kind, name)
                log.warning("options given for %s %r, which is not in this grid", kind, name)


MAX_RUNS = 10_000  #: the largest grid ``stmbench run`` plans unless ``--max-runs`` says otherwise


def grid_size(grid: GridSpec) -> int:
    """How many combinations (trials included) ``grid`` expands to, counted without expanding it."""
    axes = (grid.backbones, grid.tasks, grid.strategies, grid.adapters, grid.prompts, grid.train_sizes, grid.shots,
            grid.seeds, grid.teacher_entries)
    return math.prod(len(values) for values in axes) * trial_count(grid)


def plan_grid(grid: GridSpec, session: Session, *, max_runs: int = MAX_RUNS) -> Plan:
    """Expand, validate and normalise a grid into the runs to do and the rejected combinations; a
    grid of more than ``max_runs`` combinations is refused up front, with its count."""
    size = grid_size(grid)
    if size > max_runs:
        raise StmbenchError(f"the grid has {size:,} combinations, over the cap of {max_runs:,} runs; narrow its "
                            "axes or raise the cap with --max-runs N")
    _check_names(grid, session)
    plan = Plan()
    for name in grid.backbones:
        plan.backbones[name] = session.catalogue.backbone_for(name).resolve(name, session.context)
    seen: set[str] = set()
    rejected_seen: set[tuple[str, str]] = set()
    trials = sweep_trials(grid)
    if grid.sweep and "eval_strategy" not in grid.training:
        log.info("sweeping %s: each trial is evaluated on dev every epoch (--eval-strategy epoch) and each "
                 "cell keeps the value with the best dev accuracy", ", ".join(grid.sweep))
    for raw, trial in ((r, t) for r in expand(grid) for t in trials):
        if trial:
            raw = raw.replace(sweep=tuple(sorted(trial)),
                              pruner=grid.pruner_spec.text() if grid.pruner_spec else None)
            trial = {"eval_strategy": "epoch", **trial} if "eval_strategy" not in grid.training else trial
        spec, reason = _prepare(raw, plan.backbones[raw.backbone], session, {**grid.training, **trial})
        if reason is not None:
            key = (spec.run_id, reason)
            if key not in rejected_seen:
                rejected_seen.add(key)
                plan.rejected.append((spec, reason))
            continue
        if spec.run_id not in seen:
            seen.add(spec.run_id)
            plan.runs.append(spec)
    if grid.pruner_spec is not None:
        plan.runs = place_trials(plan.runs)
    return plan


def cell_of(spec: RunSpec) -> str:
    """What the trials of one swept cell share: the spec without its swept settings (seed included:
    each seed's trials are tuned, and pruned, on their own)."""
    data = spec.to_dict()
    data["training"] = {k: v for k, v in spec.training.identity().items() if k not in spec.sweep}
    for name in ("teacher_runtime", "tuning"):
        data.pop(name, None)
    return json_text(data)


def place_trials(runs: list[RunSpec]) -> list[RunSpec]:
    """Each pruned trial with its cell's tuning study (named by the cell and its trials, so two grids
    with other trials of one cell never share decisions) and the cell's trials in the order they run."""
    import hashlib

    cells: dict[str, list[RunSpec]] = {}
    for spec in runs:
        if spec.pruner and spec.sweep:
            cells.setdefault(cell_of(spec), []).append(spec)
    placed: dict[str, RunSpec] = {}
    for key, trials in cells.items():
        ids = [t.run_id for t in trials]
        study = hashlib.sha256(json_text([key, ids]).encode("utf-8")).hexdigest()[:16]
        for t in trials:
            placed[t.run_id] = t.replace(tuning={"study": study, "trials": ids})
    return [placed.get(s.run_id, s) for s in runs]


def json_text(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def idle_adapter(requested: str, session: Session) -> str:
    """The adapter of a run whose strategy does not train: the requested one when it trains nothing,
    else the registered adapter that trains nothing (``Adapter.trains = False``; the built-in
    ``none``), the first by name if several do."""
    if not session.get("adapter", requested).trains:
        return requested
    idle = [name for name in session.catalogue.names("adapter") if not session.get("adapter", name).trains]
    if not idle:
        raise StmbenchError("no registered adapter trains nothing (Adapter.trains = False), which strategies "
                            "that do not train need")
    return idle[0]


def _prepare(raw: RunSpec, info: BackboneInfo, session: Session,
             user_training: dict[str, Any]) -> tuple[RunSpec, str | None]:
    """The run ``raw`` (the grid's axes and the user's options) names: the strategy normalises it (a
    hook), the planner settles the rest in one step (no prompt axis for a task without prompts, the
    idle adapter and no data for a strategy that does not train, options completed with their
    defaults), the plugins check it, and its training settings are resolved (user > backbone >
    adapter > defaults).  Returns the spec and ``None``, or the rejected spec and why."""
    task = session.get("task", raw.task)
    strategy = session.get("strategy", raw.strategy)
    backbone = session.catalogue.backbone_for(raw.backbone)
    normal = strategy.normalize(raw, info)
    trains = strategy.trains
    adapter = session.get("adapter", normal.adapter if trains else idle_adapter(normal.adapter, session))
    teacher = session.get("teacher", normal.teacher) if normal.teacher and strategy.uses_rationales else None
    identity, runtime = teacher.split_options(teacher.options(normal.teacher_settings)) if teacher else ({}, {})
    spec = normal.replace(prompt=normal.prompt if task.prompts else None,  # a tag per token: no prompt axis
                          teacher=teacher.name if teacher else None,  # only where rationales are trained on
                          teacher_options=identity, teacher_runtime=runtime,
                          adapter=adapter.name, train_size=normal.train_size if trains else 0,
                          adapter_options=adapter.options(normal.adapter_options if trains else {}),
                          strategy_options=strategy.options(normal.strategy_options))
    combo = Combination(info=info, backbone=backbone, task=task, strategy=strategy, adapter=adapter,
                        strategy_options=strategy.typed_options(spec.strategy_options),
                        adapter_options=adapter.typed_options(spec.adapter_options), spec=spec, context=session.context)
    reason = (backbone.check(combo) or strategy.check(combo) or adapter.check(combo)
              or _check_axes(spec, strategy, adapter, task) or _rationale_problem(spec, strategy, task, session))
    if reason is not None:
        return spec, reason
    layers = [{"learning_rate": adapter.default_learning_rate}, backbone.default_training(adapter, strategy),
              user_training]
    if not trains:  # only what evaluation uses is part of the run's identity, and nothing to tune
        layers = [{k: v for k, v in layer.items() if k in EVAL_SETTINGS} for layer in layers]
    try:
        training = TrainingSettings.resolve(*layers)
    except StmbenchError as exc:
        return spec, str(exc)
    return spec.replace(training=training, sweep=spec.sweep if trains else (),
                        pruner=spec.pruner if trains else None), None


def _rationale_problem(spec: RunSpec, strategy: Any, task: Any, session: Session) -> str | None:
    """Why a strategy that trains on rationales (``cot``) has none for ``task``: no teacher named, no
    ``rationale`` column in its train split and no plugin that implements ``generate_rationales``."""
    if not strategy.uses_rationales or spec.teacher is not None:
        return None
    hook = getattr(session.hook, "generate_rationales", None)
    if hook is not None and hook.get_hookimpls():
        return None
    try:
        columns = session.task_data(task, "train", skip_bad_rows=spec.skip_bad_rows).dataset.column_names
    except StmbenchError:  # data that cannot load is the pre-flight checks' to report, once
        return None
    if "rationale" in columns:
        return None
    return (f"strategy {strategy.name!r} trains on rationales, and task {task.name!r} has no source of them (its "
            "data has no 'rationale' column): name a teacher (--teacher 'hf[model=PATH_OR_ID]' or "
            "'openai[model=NAME,base_url=URL]'), bring a folder (--rationales DIR), or leave it out")


def _check_axes(spec: RunSpec, strategy: Any, adapter: Any, task: Any) -> str | None:
    if spec.prompt is not None and spec.prompt not in task.prompts:
        return f"task {task.name!r} has no prompt {spec.prompt!r} (it has: {', '.join(sorted(task.prompts))})"
    if strategy.trains and spec.train_size == 0:
        return f"strategy {strategy.name!r} trains, so train size 0 makes no sense"
    if strategy.trains and not adapter.trains:
        return (f"adapter {adapter.name!r} trains nothing, but strategy {strategy.name!r} trains "
                "(for a linear probe use 'frozen')")
    return None
