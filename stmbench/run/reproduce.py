"""``stmbench run --check-reproducible RUN_ID``: run one stored run again and say whether it repeats.

The run is rerun from its stored spec (the same id) into a temporary results folder, on this machine,
and compared with what was stored: its loss curve step by step, its predictions example by example,
its metrics, and the environment (library versions, CPU or GPU, thread count) both ran in.  On the
same machine with the same thread count and libraries a run repeats exactly (the Trainer seeds every
generator; batches, initialisation and dropout follow the seed); on another CPU, another thread count
or another library build, floating-point sums are taken in another order, the curves agree to about
six digits and then drift, and a long run of a small random model amplifies that into different
predictions: the seed spread of a cell is the scale such a difference has.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError

#: a logged loss counts as repeated within this relative difference (float32 sums in another order
#: differ from the 7th digit on)
LOSS_TOLERANCE = 1e-6
ENVIRONMENT = (("versions", "torch"), ("versions", "transformers"), ("versions", "peft"), ("versions", "stmbench"),
               ("device", "type"), ("device", "name"), ("device", "cpu_threads"), ("device", "platform"))


@dataclass
class Reproduction:
    """What a rerun of a stored run showed."""

    run_id: str
    label: str
    steps: int = 0  #: logged losses compared
    first_drift: int | None = None  #: the first step whose loss differs beyond :data:`LOSS_TOLERANCE`
    max_relative: float = 0.0  #: the largest relative loss difference
    identical_curve: bool = True  #: every logged loss bit for bit the same
    examples: int = 0
    differing: int = 0  #: predictions that differ
    metrics: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  #: stored, rerun
    environment: list[tuple[str, Any, Any]] = field(default_factory=list)  #: (what, stored, now) that differ
    status: str = ""  #: the rerun's status (``ok`` or ``failed: reason``)

    @property
    def reproduced(self) -> bool:
        return self.status == "ok" and self.first_drift is None and self.differing == 0 and \
            all(a == b for a, b in self.metrics.values())

    def lines(self) -> list[str]:
        out = [f"rerun of {self.run_id} ({self.label}): " + ("REPRODUCED" if self.reproduced else "NOT REPRODUCED")]
        if self.status != "ok":
            return out + [f"  the rerun {self.status}"]
        if self.steps:
            curve = ("identical at every logged step" if self.identical_curve else
                     f"within {LOSS_TOLERANCE:g} relative at every logged step (largest {self.max_relative:.2g})"
                     if self.first_drift is None else
                     f"drifts from step {self.first_drift} (largest relative difference {self.max_relative:.2g})")
            out.append(f"  loss curve: {self.steps} logged steps, {curve}")
        out.append(f"  predictions: {self.differing} of {self.examples} differ")
        for name, (stored, now) in self.metrics.items():
            out.append(f"  {name}: stored {_pct(stored)}, rerun {_pct(now)}")
        if self.environment:
            out.append("  environment that differs (stored -> now): "
                       + "; ".join(f"{what} {a} -> {b}" for what, a, b in self.environment))
        else:
            out.append("  environment: the same library versions, device and thread count as the stored run")
        if not self.reproduced:
            out.append("  (on another CPU, thread count or library build floating-point sums differ; the cell's seed "
                       "spread is the scale of such a difference)" if self.environment else
                       "  (same environment, different outcome: something in the run is not seeded; please report it)")
        return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def compare_curves(stored: list[list[float]], now: list[list[float]], report: Reproduction) -> None:
    a, b = dict((int(s), v) for s, v in stored), dict((int(s), v) for s, v in now)
    steps = sorted(set(a) & set(b))
    report.steps = len(steps)
    if set(a) != set(b):
        report.identical_curve = False
        report.first_drift = min(set(a) ^ set(b))
    for step in steps:
        x, y = a[step], b[step]
        if x != y:
            report.identical_curve = False
        rel = abs(x - y) / max(abs(x), 1e-12) if math.isfinite(x) and math.isfinite(y) else math.inf
        report.max_relative = max(report.max_relative, rel)
        if rel > LOSS_TOLERANCE and (report.first_drift is None or step < report.first_drift):
            report.first_drift = step


def check_reproducible(run_id: str, session: Any) -> Reproduction:
    """Rerun stored run ``run_id`` of the session's results folder and compare (see the module)."""
    from stmbench.core.session import Session
    from stmbench.run.pipeline import run_spec
    from stmbench.store.results import ResultStore

    store = ResultStore(session.settings.results_dir)
    stored = store.get(run_id)
    if stored is None:
        raise StmbenchError(f"--check-reproducible {run_id}: no stored result of that run in {store.folder}")
    if not stored.ok:
        raise StmbenchError(f"--check-reproducible {run_id}: the stored run is {stored.status}, nothing to compare")
    spec = stored.spec
    if spec.pruner:
        raise StmbenchError(f"--check-reproducible {run_id}: a pruned sweep's trial depends on its cell's shared "
                            "study; rerun the cell instead")
    shown = {"backbone": session.backbone_display(spec.backbone)}
    report = Reproduction(run_id=run_id, label=spec.label(shown))
    with tempfile.TemporaryDirectory(prefix="stmbench-reproduce-") as tmp:
        settings = dataclasses.replace(session.settings, results_dir=Path(tmp), leaderboard_dir=None,
                                       save_models="none", report_to=[])
        rerun, predictions = run_spec(spec, Session(settings, extra_plugins=session.extra_plugins))
    report.status = "ok" if rerun.ok else f"{rerun.status}: {rerun.error}"
    if not rerun.ok:
        return report
    compare_curves((stored.training or {}).get("loss_curve") or [], (rerun.training or {}).get("loss_curve") or [],
                   report)
    old = store.predictions(run_id) or {}
    before, after = old.get("predicted") or [], (predictions or {}).get("predicted") or []
    report.examples = max(len(before), len(after))
    report.differing = sum(1 for x, y in zip(before, after) if x != y) + abs(len(before) - len(after))
    for name in sorted(set(stored.metrics) | set(rerun.metrics)):
        report.metrics[name] = (stored.metrics.get(name), rerun.metrics.get(name))
    for section, key in ENVIRONMENT:
        a = (getattr(stored, section) or {}).get(key)
        b = (getattr(rerun, section) or {}).get(key)
        if a != b:
            report.environment.append((f"{section}.{key}", a, b))
    return report
