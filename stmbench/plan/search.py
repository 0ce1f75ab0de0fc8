"""The trials of a swept cell: every combination of the value lists, crossed with ``trials`` draws
from the sampled search spaces by Optuna's seeded sampler (``RandomSampler`` or ``QMCSampler``), so
the same grid file draws the same trials, each a stored run with its own id."""

from __future__ import annotations

import itertools
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.spec.grid_spec import GridSpec
from stmbench.spec.search import Distribution

SIGNIFICANT = 4  #: a drawn float keeps this many significant digits (short ids, labels that read)


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT - 1}e}")


def _sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "qmc":
        import warnings

        with warnings.catch_warnings():  # "experimental": its draws are what the seed says all the same
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                              warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def draw(spaces: dict[str, Distribution], trials: int, sampler: str = "random", seed: int = 0) -> list[dict[str, Any]]:
    """``trials`` settings drawn from ``spaces`` (name -> :class:`Distribution`), in draw order; the
    same arguments draw the same values (an in-memory Optuna study, asked ``trials`` times)."""
    try:
        import optuna
    except ImportError:
        raise StmbenchError("a sampled search space needs optuna: pip install 'stmbench[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=_sampler(sampler, seed), direction="maximize")
    out, seen = [], set()
    for _ in range(trials * 20):  # rounding can make two draws equal: draw on until `trials` differ
        trial = study.ask()
        values: dict[str, Any] = {}
        for name in sorted(spaces):
            d = spaces[name]
            if d.kind == "choice":
                values[name] = d.choices[trial.suggest_int(name, 0, len(d.choices) - 1)]
            elif d.kind == "int":
                values[name] = trial.suggest_int(name, int(d.low), int(d.high))
            else:
                values[name] = _round(trial.suggest_float(name, d.low, d.high, log=d.kind == "loguniform"))
        study.tell(trial, 0.0)
        key = tuple(sorted(values.items(), key=lambda kv: kv[0]))
        if key in seen:
            continue
        seen.add(key)
        out.append(values)
        if len(out) == trials:
            return out
    raise StmbenchError(f"the sampled search space has fewer than {trials} different trials; draw fewer "
                        "(--trials) or widen it")


def sweep_trials(grid: GridSpec) -> list[dict[str, Any]]:
    """The training settings of each trial of a cell, in the order they run: every combination of
    the swept value lists, crossed with the draws of the sampled spaces (``[{}]`` without a sweep)."""
    lists = {n: v for n, v in grid.sweep.items() if not isinstance(v, Distribution)}
    spaces = {n: v for n, v in grid.sweep.items() if isinstance(v, Distribution)}
    names = sorted(lists)
    fixed = [dict(zip(names, values)) for values in itertools.product(*(lists[n] for n in names))]
    if not spaces:
        return fixed
    drawn = draw(spaces, grid.trials or 1, grid.sampler, grid.sweep_seed)
    return [{**f, **d} for d in drawn for f in fixed]


def trial_count(grid: GridSpec) -> int:
    """How many trials each cell has, counted without drawing them."""
    count = 1
    for values in grid.sweep.values():
        count *= 1 if isinstance(values, Distribution) else len(values)
    sampled = any(isinstance(v, Distribution) for v in grid.sweep.values())
    return count * ((grid.trials or 1) if sampled else 1)
