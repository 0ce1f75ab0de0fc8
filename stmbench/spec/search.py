"""The text forms of a tuned study: sampled search spaces (``loguniform:1e-5:1e-3``, ``uniform:LO:HI``,
``int:LO:HI``, ``choice:A,B,C``) and pruners (``asha[reduction_factor=3,min_resource=1]``), parsed
and checked here; drawing trials and deciding prunes is Optuna's (:mod:`stmbench.plan.search`,
:mod:`stmbench.run.tuning`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.spec.axes import parse_axis_entry

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SAMPLERS = ("random", "qmc")  #: both draw the same trials for the same seed, whatever the runs score
#: the pruners and their options with defaults (Optuna's ``SuccessiveHalvingPruner``: ASHA)
PRUNERS: dict[str, dict[str, int]] = {
    "asha": {"reduction_factor": 3, "min_resource": 1, "min_early_stopping_rate": 0, "bootstrap_count": 0},
}


@dataclass(frozen=True)
class Distribution:
    """One swept setting's search space: ``kind`` is one of :data:`DISTRIBUTIONS`."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(map(str, self.choices))
        return f"{self.kind}:{_num(self.low)}:{_num(self.high)}"


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)


def is_distribution(value: Any) -> bool:
    """``"loguniform:1e-5:1e-3"`` and friends (a value list is not)."""
    return isinstance(value, str) and value.strip().split(":", 1)[0] in DISTRIBUTIONS and ":" in value


def parse_distribution(name: str, text: str) -> Distribution:
    """``"loguniform:1e-5:1e-3"`` -> :class:`Distribution`; a malformed one is a one-line error."""
    from stmbench.spec.axes import _split_top_level

    kind, _, rest = text.strip().partition(":")
    usage = (f"sweep {name}={text!r}: expected loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or "
             "choice:V1,V2,... (or a list of values)")
    if kind not in DISTRIBUTIONS or not rest.strip():
        raise StmbenchError(usage)
    if kind == "choice":
        from stmbench.common.untrusted import parse_yaml

        choices = tuple(parse_yaml(v, usage) for v in _split_top_level(rest))
        if not choices:
            raise StmbenchError(usage)
        return Distribution(kind, choices=choices)
    parts = rest.split(":")
    if len(parts) != 2:
        raise StmbenchError(usage)
    try:
        low, high = (int(p) for p in parts) if kind == "int" else (float(p) for p in parts)
    except ValueError:
        raise StmbenchError(usage) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise StmbenchError(f"sweep {name}={text!r}: LOW must be below HIGH (both finite)")
    if kind == "loguniform" and low <= 0:
        raise StmbenchError(f"sweep {name}={text!r}: a log-uniform range must be above 0")
    return Distribution(kind, low=low, high=high)


def parse_sweep_values(name: str, values: Any) -> list[Any] | Distribution:
    """A sweep entry: a list of values (or a comma string), or one distribution string."""
    from stmbench.spec.axes import _as_list

    if isinstance(values, Distribution):
        return values
    if isinstance(values, str) and is_distribution(values):
        return parse_distribution(name, values)
    items = _as_list(values)
    if len(items) == 1 and is_distribution(items[0]):
        return parse_distribution(name, items[0])
    if any(is_distribution(v) for v in items):
        raise StmbenchError(f"sweep {name}: a distribution ({', '.join(DISTRIBUTIONS)}) is the whole entry, "
                            "not one value of a list")
    return items


@dataclass(frozen=True)
class PrunerSpec:
    """A pruner entry: its name and every option (defaults filled in)."""

    name: str
    options: tuple[tuple[str, int], ...]

    def text(self) -> str:
        """The canonical form, part of a pruned trial's run id: ``asha[bootstrap_count=0,...]``."""
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.options)}]"

    @property
    def settings(self) -> dict[str, int]:
        return dict(self.options)


def parse_pruner(entry: Any) -> PrunerSpec | None:
    """``"asha"`` / ``"asha[reduction_factor=2]"`` / ``none`` -> :class:`PrunerSpec` (``None``: off)."""
    if entry is None or str(entry).strip().lower() in ("", "none", "off"):
        return None
    name, given = parse_axis_entry(entry)
    if name not in PRUNERS:
        raise StmbenchError(f"unknown pruner {name!r}; known: {', '.join(PRUNERS)} (or none)")
    defaults = PRUNERS[name]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise StmbenchError(f"pruner {name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    options = {**defaults, **given}
    for key, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < (2 if key == "reduction_factor" else
                                                                               1 if key == "min_resource" else 0):
            raise StmbenchError(f"pruner {name}: {key}={value!r} must be an integer "
                                f"{'>= 2' if key == 'reduction_factor' else '>= 1' if key == 'min_resource' else '>= 0'}")
    return PrunerSpec(name, tuple(sorted(options.items())))
