"""The axes of a study: :class:`GridSpec`, from the CLI or a grid YAML file, validated once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.spec.axes import FULL, _as_list, parse_axis_entry, parse_train_size
from stmbench.spec.search import SAMPLERS, Distribution, PrunerSpec, parse_pruner, parse_sweep_values
from stmbench.spec.training import TrainingSettings

AXES = ("backbones", "tasks", "strategies", "adapters", "prompts", "train_sizes", "seeds", "shots")
#: ``stmbench run`` with no grid file and no axis flag: the embedded default study, which adds a
#: second train size to the axes' defaults so that its findings have paired cells to compare
#: (four of each axis: a verdict with an interval, not "too few paired cells"), in minutes on a CPU
EMBEDDED_DEFAULT: dict[str, list[int | str]] = {"train_sizes": [1000, "full"]}


@dataclass
class GridSpec:
    """The axes of a study.  ``training`` holds only what the user set; the rest is resolved per
    run (user > backbone recommendation > adapter default > TrainingSettings default)."""

    backbones: list[str] = field(default_factory=lambda: ["tiny-llama"])
    tasks: list[str] = field(default_factory=lambda: ["sample"])
    strategies: list[str] = field(default_factory=lambda: ["generative", "discriminative"])
    adapters: list[str] = field(default_factory=lambda: ["full", "lora"])
    prompts: list[str] = field(default_factory=lambda: ["concise"])
    train_sizes: list[int | str] = field(default_factory=lambda: [FULL])
    seeds: list[int] = field(default_factory=lambda: [42])
    shots: list[int] = field(default_factory=lambda: [0])
    training: dict[str, Any] = field(default_factory=dict)
    adapter_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip_bad_rows: bool = False
    limit: int | None = None
    #: processes (devices) each run trains on (``--devices-per-run``; :mod:`stmbench.run.distributed`);
    #: ``None``: the session's setting (1 unless given).  Not part of any run's identity
    devices_per_run: int | None = None
    #: training setting -> the values tried per cell, or a sampled search space (``loguniform:1e-5:1e-3``)
    sweep: dict[str, Any] = field(default_factory=dict)
    trials: int | None = None  #: how many trials a sampled search space draws (crossed with value lists)
    sampler: str = "random"  #: who draws them: ``random`` or ``qmc`` (Sobol), seeded by ``sweep_seed``
    sweep_seed: int = 0
    #: stop a swept cell's losing trials early on dev (``asha[reduction_factor=3,min_resource=1]``); off by default
    pruner: Any = None
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    #: who writes the rationales of strategies that train on them (``cot``): teacher entries
    #: (``hf[model=...]``, ``openai[model=...,base_url=...]``; a list makes it an axis of those runs;
    #: ``none``: the data's own rationale column)
    teacher: Any = None
    rationales: str | None = None  #: a folder of rationales a user brings: the ``folder`` teacher
    strategy_entries: list[tuple[str, dict[str, Any]]] = field(init=False, repr=False, compare=False)
    adapter_entries: list[tuple[str, dict[str, Any]]] = field(init=False, repr=False, compare=False)
    #: ``(name, options)`` per teacher entry; ``[(None, {})]`` without one
    teacher_entries: list[tuple[str | None, dict[str, Any]]] = field(init=False, repr=False, compare=False)
    pruner_spec: PrunerSpec | None = field(init=False, repr=False, compare=False)  #: ``pruner`` parsed

    def __post_init__(self) -> None:
        for name in ("training", "adapter_options", "strategy_options", "executor_options", "sweep"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
            elif not isinstance(value, dict):
                raise StmbenchError(f"{name} must be a mapping of names to values, not {value!r}")
        for name in ("adapter_options", "strategy_options"):
            for key, value in getattr(self, name).items():
                if not isinstance(value, dict):
                    raise StmbenchError(f"{name}.{key} must be a mapping of option names to values, not {value!r}")
        for axis in AXES:
            values = _as_list(getattr(self, axis))
            if not values:
                raise StmbenchError(f"the {axis} axis is empty")
            setattr(self, axis, values)
        self.train_sizes = [parse_train_size(v) for v in self.train_sizes]
        try:
            self.seeds = [int(s) for s in self.seeds]
            self.shots = [int(s) for s in self.shots]
        except ValueError as exc:
            raise StmbenchError(f"seeds and shots must be integers: {exc}") from None
        if any(s < 0 for s in self.shots):
            raise StmbenchError("shots must not be negative")
        for seed in self.seeds:
            if not 0 <= seed <= 2**32 - 1:
                raise StmbenchError(f"seed {seed} is outside 0..{2**32 - 1} (numpy's and torch's seed range)")
        if self.limit is not None:
            try:
                self.limit = int(self.limit)
            except (TypeError, ValueError):
                raise StmbenchError(f"limit {self.limit!r} is not a number of examples") from None
            if self.limit < 1:
                raise StmbenchError(f"limit {self.limit}: evaluate on at least 1 example")
        if self.devices_per_run is not None:
            if isinstance(self.devices_per_run, bool) or not isinstance(self.devices_per_run, int) \
                    or self.devices_per_run < 1:
                raise StmbenchError(f"devices_per_run {str(self.devices_per_run)[:40]!r}: expected a whole number, 1 or more")
        for size in self.train_sizes:
            if size != FULL and size < 1:
                raise StmbenchError(f"train size {size}: a train size is a positive number of examples or 'full'")
        for axis in ("backbones", "tasks", "prompts"):
            setattr(self, axis, [str(v) for v in getattr(self, axis)])
        #: the strategy and adapter axes parsed once: ``(name, the entry's own options)`` per entry
        self.strategy_entries = [parse_axis_entry(entry) for entry in self.strategies]
        self.adapter_entries = [parse_axis_entry(entry) for entry in self.adapters]
        teachers: list[tuple[str | None, dict[str, Any]]] = [
            (None, {}) if str(e).strip() == "none" else parse_axis_entry(e) for e in _as_list(self.teacher)]
        if self.rationales is not None:
            if not isinstance(self.rationales, str) or not self.rationales.strip():
                raise StmbenchError(f"rationales must be the path of a folder, not {self.rationales!r}")
            teachers.append(("folder", {"path": self.rationales}))
        self.teacher_entries = teachers or [(None, {})]
        TrainingSettings.resolve(self.training)  # validate names and types early
        sweep: dict[str, Any] = {}
        for name, values in self.sweep.items():
            if name not in TrainingSettings.field_names():
                raise StmbenchError(f"sweep: unknown training setting {name!r}; known: "
                                    f"{', '.join(TrainingSettings.field_names())}")
            values = parse_sweep_values(name, values)
            if isinstance(values, Distribution):
                probes = list(values.choices) if values.kind == "choice" else [values.low, values.high]
            elif not values:
                raise StmbenchError(f"sweep: no values for {name}")
            else:
                probes = values
            for value in probes:
                TrainingSettings.resolve(self.training, {name: value})  # each trial must be valid
            sweep[name] = values
        self.sweep = sweep
        sampled = [n for n, v in sweep.items() if isinstance(v, Distribution)]
        if self.trials is not None:
            if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
                raise StmbenchError(f"trials {self.trials!r}: a positive number of trials to draw")
            if not sampled:
                raise StmbenchError("trials: only a sampled search space draws trials (--sweep "
                                    "learning_rate=loguniform:1e-5:1e-3); value lists try every value")
        elif sampled:
            raise StmbenchError(f"sweep {', '.join(sampled)}: a sampled search space needs the number of trials "
                                "to draw (--trials N, or trials: N in a grid file)")
        if self.sampler not in SAMPLERS:
            raise StmbenchError(f"sampler {self.sampler!r}: known: {', '.join(SAMPLERS)}")
        if not isinstance(self.sweep_seed, int) or isinstance(self.sweep_seed, bool):
            raise StmbenchError(f"sweep_seed {self.sweep_seed!r} must be an integer")
        self.pruner_spec = parse_pruner(self.pruner)
        if self.pruner_spec is not None and not sweep:
            raise StmbenchError("pruner: only the trials of a swept cell are pruned; add --sweep (or sweep: in "
                                "the grid file)")
        if self.pruner_spec is not None and self.training.get("eval_strategy") == "no":
            raise StmbenchError("pruner: trials are pruned on their dev scores; eval_strategy no evaluates none")

    def with_overrides(self, **overrides: Any) -> GridSpec:
        """A copy with the non-``None`` overrides applied (``training`` is merged, not replaced)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("training", "sweep"):
                values[key] = {**getattr(self, key), **value}
            elif key in ("adapter_options", "strategy_options"):
                merged = {k: dict(v) for k, v in values[key].items()}
                for name, opts in value.items():
                    merged.setdefault(name, {}).update(opts)
                values[key] = merged
            else:
                values[key] = value
        return GridSpec(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GridSpec:
        """Read a grid YAML: the axes as lists (or comma strings), ``training:`` settings,
        ``adapter_options: {lora: {r: 16}}``, ``strategy_options: {...}``, ``executor``."""
        from stmbench.common.untrusted import UntrustedFileError, read_yaml
        try:  # read as untrusted: size, nesting and nodes bounded, no aliases
            data, path = read_yaml(path) or {}, Path(path)
        except UntrustedFileError as exc:
            raise StmbenchError(f"cannot read grid config {exc}") from None
        if not isinstance(data, dict):
            raise StmbenchError(f"{path}: a grid config must be a YAML mapping")
        known = {f.name for f in dataclasses.fields(cls) if f.init} | {"description"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StmbenchError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        data.pop("description", None)
        try:
            return cls(**data)
        except (StmbenchError, TypeError, ValueError) as exc:
            raise StmbenchError(f"{path}: {exc}") from None
