"""The bill before the run: each planned run's training FLOPs, the grid's total, and its device-hours,
with and without pruning.

A run's FLOPs are :func:`stmbench.core.modeling.training_flops`'s (6 per trainable and 4 per frozen
non-embedding parameter per real token, the figure each result records as ``hardware.train_flops``)
times the tokens it will train on: its train rows tokenised as it will tokenise them (the same
feature cache), times its epochs.  The parameter counts come from an earlier result of the same
backbone, strategy and adapter in the store, else from the model itself (built without weights on
PyTorch's meta device where the backbone can, loaded otherwise).  Where a task's data is not at
hand, its task file's ``sizes`` and ``--tokens-per-example`` stand in, and the line says so.

Device-hours = FLOPs / (peak FLOP/s x MFU): the peak is the datasheet's (``--estimate-device
H100``) or this device's measured one; the MFU is the median of earlier results of the same
backbone on the same kind of device in the store, else a stated default.  Pruned sweeps are also
priced as successive halving would run them if each rung kept 1/reduction_factor of its trials
(the order trials arrive in moves the real figure either way).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.core.session import Session
from stmbench.spec.run import RunSpec

log = logging.getLogger(__name__)

DEFAULT_MFU = {"gpu": 0.30, "cpu": 0.10}  #: stated defaults where the store has no measured MFU
DEFAULT_TOKENS_PER_EXAMPLE = 64


@dataclass
class RunCost:
    spec: RunSpec
    flops: float
    tokens: float  #: real tokens trained on, over every epoch
    steps: int  #: optimizer steps of the full budget
    pruned_share: float = 1.0  #: the share of ``flops`` a pruned sweep is expected to spend
    how: list[str] = field(default_factory=list)


@dataclass
class Bill:
    runs: list[RunCost]
    peak: float
    peak_source: str
    mfu: float
    mfu_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(r.flops for r in self.runs)

    @property
    def pruned_flops(self) -> float:
        return sum(r.flops * r.pruned_share for r in self.runs)

    @property
    def pruned(self) -> bool:
        return any(r.spec.pruner for r in self.runs)

    def hours(self, flops: float | None = None) -> float:
        return (self.flops if flops is None else flops) / (self.peak * self.mfu) / 3600.0

    @property
    def expected_hours(self) -> float:
        """What the grid is expected to cost: with pruning where it prunes."""
        return self.hours(self.pruned_flops)

    def lines(self) -> list[str]:
        out = [f"estimated training compute: {self.flops:.3g} FLOPs over {len(self.runs)} trained run(s) = "
               f"{_hours(self.hours())} at {100 * self.mfu:.0f}% MFU ({self.mfu_source}) of {self.peak:.3g} FLOP/s "
               f"({self.peak_source})"]
        if self.pruned:
            out.append(f"  with pruning: about {self.pruned_flops:.3g} FLOPs = {_hours(self.expected_hours)} "
                       f"({100 * self.pruned_flops / self.flops:.0f}% of the full grid; successive halving keeping "
                       "1/reduction_factor of each rung's trials)")
        out += [f"  {note}" for note in self.notes]
        return out


def _hours(hours: float) -> str:
    return f"{hours * 60:.1f} device-minutes" if hours < 1 else f"{hours:,.1f} device-hours"


def successive_halving_share(trials: int, evaluations: int, reduction_factor: int, min_resource: int,
                             min_early_stopping_rate: int = 0) -> float:
    """The share of ``trials`` full budgets (``evaluations`` each) spent when each rung (at
    ``min_resource * reduction_factor ** (min_early_stopping_rate + k)`` evaluations) keeps
    ``max(1, n // reduction_factor)`` of the ``n`` trials that reached it."""
    if trials < 1 or evaluations < 1:
        return 1.0
    spent, alive, reached, rung = 0.0, trials, 0, 0
    while True:
        at = min(evaluations, min_resource * reduction_factor ** (min_early_stopping_rate + rung))
        spent += alive * (at - reached)
        reached = at
        if at >= evaluations:
            break
        alive = max(1, alive // reduction_factor)
        rung += 1
    return spent / (trials * evaluations)


def _coefficient_from_store(spec: RunSpec, stored: list[Any]) -> float | None:
    """FLOPs per real token of an earlier ok run with the same backbone, task, strategy and adapter."""
    for r in stored:
        s = r.spec
        if not r.ok or (s.backbone, s.task, s.strategy, s.adapter, s.adapter_options) != \
                (spec.backbone, spec.task, spec.strategy, spec.adapter, spec.adapter_options):
            continue
        flops = (r.hardware or {}).get("train_flops")
        real = ((r.padding or {}).get("train") or {}).get("real_tokens")
        if isinstance(flops, (int, float)) and isinstance(real, (int, float)) and real > 0 and flops > 0:
            return float(flops) / float(real)
    return None


class Estimator:
    """Prices the runs of one plan; models and token counts are computed once per combination."""

    def __init__(self, session: Session, *, tokens_per_example: int | None = None):
        from stmbench.store.results import ResultStore

        self.session = session
        store = ResultStore(session.settings.results_dir)
        self.stored = store.load_all() if store.folder.is_dir() else []  #: read once for every lookup
        self.tokens_per_example = tokens_per_example
        self._coefficients: dict[tuple[Any, ...], tuple[float, Any, str]] = {}
        self._tokens: dict[tuple[Any, ...], tuple[list[int], str]] = {}

    def _model(self, spec: RunSpec, parts: Any) -> tuple[float, Any, str]:
        """``(FLOPs per real token, tokenizer or None, where the count came from)``."""
        key = (spec.backbone, spec.task, spec.strategy, spec.adapter, repr(sorted(spec.adapter_options.items())))
        if key not in self._coefficients:
            from stmbench.core.modeling import training_flops

            stored = _coefficient_from_store(spec, self.stored)
            head = parts.strategy.head_for(parts.task)
            try:
                empty, tokenizer = parts.backbone.empty_model(spec.backbone, head=head, task=parts.task,
                                                              context=self.session.context)
            except NotImplementedError:
                empty, tokenizer = None, None
            if stored is not None and empty is not None:
                self._coefficients[key] = (stored, tokenizer, "parameters of an earlier result in the store")
            elif empty is not None:
                model = parts.adapter.wrap(empty, head=head, info=parts.info, options=parts.adapter_options)
                self._coefficients[key] = (training_flops(model, 1.0), tokenizer, "parameters of the model's config")
            else:
                from stmbench.run.pipeline import build_model

                loaded = build_model(parts, self.session)
                tokenizer = loaded.tokenizer
                value = stored if stored is not None else training_flops(loaded.model, 1.0)
                self._coefficients[key] = (value, tokenizer, "parameters of the model"
                                           if stored is None else "parameters of an earlier result in the store")
        return self._coefficients[key]

    def _lengths(self, spec: RunSpec, parts: Any, tokenizer: Any) -> tuple[list[int] | None, str]:
        """The token count of each train row the run trains on, or ``None`` (not at hand)."""
        from stmbench.run.pipeline import RunData, train_feature_key, train_rows
        from stmbench.run.splits import sequence_lengths
        from stmbench.tasks.catalogue import at_hand

        if tokenizer is None or parts.strategy.uses_rationales or not at_hand(parts.task, self.session):
            return None, ""
        train = self.session.task_data(parts.task, "train", skip_bad_rows=spec.skip_bad_rows)
        encode = parts.strategy.feature_encoder(task=parts.task, tokenizer=tokenizer, spec=spec, context=self.session.context)
        features, _ = self.session.cached_features(train_feature_key(parts, train, tokenizer, self.session),
                                                   train.dataset, encode)
        rows = train_rows(parts, RunData(eval=train, train=train, used={}, counts={}, partial=None), self.session)
        if rows.indices is not None:
            features = features.select(rows.indices)
        return sequence_lengths(features), "its train rows tokenised"

    def _rows_stated(self, spec: RunSpec, parts: Any) -> tuple[int, str]:
        from stmbench.spec.axes import FULL
        from stmbench.tasks.catalogue import at_hand

        if at_hand(parts.task, self.session):
            rows = len(self.session.task_data(parts.task, "train", skip_bad_rows=spec.skip_bad_rows).dataset)
            where = "rows of its data"
        else:
            sizes = getattr(parts.task, "sizes", None) or {}
            if not sizes.get("train"):
                raise StmbenchError(f"no estimate for task {parts.task.name!r}: its data is not at hand (offline) and "
                                    "its task file states no sizes: (train: ROWS)")
            rows, where = int(sizes["train"]), "train rows its task file states (data not at hand)"
        if spec.train_size != FULL:
            rows = min(rows, int(spec.train_size))
        return rows, where

    def price(self, spec: RunSpec) -> RunCost:
        from stmbench.run.pipeline import RunParts

        parts = RunParts.of(spec, self.session)
        coefficient, tokenizer, params_from = self._model(spec, parts)
        lengths, tokens_from = self._lengths(spec, parts, tokenizer)
        t = spec.training
        if lengths is None:
            rows, where = self._rows_stated(spec, parts)
            per = self.tokens_per_example or DEFAULT_TOKENS_PER_EXAMPLE
            lengths_total, n = float(rows * per), rows
            tokens_from = (f"{rows:,} {where} x {per} tokens per example ("
                           + ("--tokens-per-example" if self.tokens_per_example else "a stated default; set "
                              "--tokens-per-example") + ")")
        else:
            lengths_total, n = float(sum(lengths)), len(lengths)
        batch = t.per_device_train_batch_size * t.gradient_accumulation_steps
        per_epoch = max(1, math.ceil(n / batch))
        if t.max_steps and t.max_steps > 0:
            steps = int(t.max_steps)
            tokens = lengths_total * steps / per_epoch
        else:
            steps = math.ceil(per_epoch * t.num_train_epochs)
            tokens = lengths_total * t.num_train_epochs
        return RunCost(spec=spec, flops=coefficient * tokens, tokens=tokens, steps=steps,
                       how=[params_from, tokens_from])


def _evaluations(cost: RunCost) -> int:
    t = cost.spec.training
    if t.eval_strategy == "steps":
        return max(1, math.ceil(cost.steps / t.eval_steps))
    return max(1, math.ceil(t.num_train_epochs)) if not (t.max_steps and t.max_steps > 0) else 1


def _measured_mfu(stored: list[Any], specs: list[RunSpec], kind: str) -> float | None:
    backbones = {s.backbone for s in specs}
    values = [r.hardware.get("mfu") for r in stored
              if r.ok and r.spec.backbone in backbones and r.hardware and (r.device or {}).get("type", "cpu")
              .startswith("cuda" if kind == "gpu" else "cpu")]
    values = [v for v in values if isinstance(v, (int, float)) and v > 0]
    return statistics.median(values) if values else None


def estimate(specs: list[RunSpec], session: Session, *, device_name: str | None = None, mfu: float | None = None,
             tokens_per_example: int | None = None) -> Bill:
    """The :class:`Bill` of the trained runs among ``specs`` on ``device_name`` (a datasheet name
    such as ``H100``) or this session's device."""
    from stmbench.core.modeling import DATASHEET_BF16_PEAK, peak_flops
    from stmbench.run.training import precision

    trained = [s for s in specs if session.get("strategy", s.strategy).trains]
    estimator = Estimator(session, tokens_per_example=tokens_per_example)
    costs = [estimator.price(s) for s in trained]
    if device_name:
        match = [(n, f) for n, f in DATASHEET_BF16_PEAK if n.lower() == device_name.lower()] or \
                [(n, f) for n, f in DATASHEET_BF16_PEAK if device_name.lower() in n.lower()]
        if not match:
            raise StmbenchError(f"--estimate-device {device_name!r}: known: "
                                f"{', '.join(n for n, _ in DATASHEET_BF16_PEAK)}")
        peak, peak_source, kind = match[0][1], f"datasheet dense bf16 peak of {match[0][0]}", "gpu"
    else:
        device = session.device
        dtype = precision(trained[0], device)["dtype"] if trained else "float32"
        peak, peak_source = peak_flops(device, dtype, session.settings.cache_dir)
        kind = "gpu" if device.startswith("cuda") else "cpu"
    if mfu is not None:
        mfu_source = "--mfu"
    else:
        mfu = _measured_mfu(estimator.stored, trained, kind)
        mfu_source = "the median of earlier results of these backbones in the store" if mfu else \
            f"a stated default for a {kind.upper()}; set --mfu"
        mfu = mfu or DEFAULT_MFU[kind]
    # a pruned sweep's cells: priced as successive halving would run them
    from stmbench.spec.search import parse_pruner

    cells: dict[str, list[RunCost]] = {}
    for cost in costs:
        if cost.spec.pruner and cost.spec.tuning:
            cells.setdefault(cost.spec.tuning["study"], []).append(cost)
    for members in cells.values():
        pruner = parse_pruner(members[0].spec.pruner)
        assert pruner is not None
        o = pruner.settings
        share = successive_halving_share(len(members[0].spec.tuning["trials"]), _evaluations(members[0]),
                                         o["reduction_factor"], o["min_resource"], o["min_early_stopping_rate"])
        for cost in members:
            cost.pruned_share = share
    notes = sorted({f"{session.backbone_display(c.spec.backbone)}: {c.how[0]}; {c.spec.task}: {c.how[1]}"
                    for c in costs})
    return Bill(runs=costs, peak=peak, peak_source=peak_source, mfu=float(mfu), mfu_source=mfu_source, notes=notes)
