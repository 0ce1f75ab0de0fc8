"""Scoring a run: its metrics (the catalogue's, :class:`~stmbench.core.metrics.Metric`) against the
gold labels, and the health flags of a run that finished but should not be trusted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.core.metrics import Metric


def score(task: Any, gold: list[Any], predicted: list[Any], metrics: Sequence[Metric]) -> dict[str, float]:
    """``{name: value}`` of each of ``metrics`` (:meth:`stmbench.core.session.Session.metrics_for` the
    task) for label indices, or for a task with a tag per token, tag index sequences."""
    if len(gold) != len(predicted):
        raise StmbenchError(f"{len(predicted)} predictions for {len(gold)} examples")
    labels = [lab.value for lab in task.labels]
    return {m.name: float(m.compute(gold, predicted, labels=labels)) for m in metrics}


# a run whose logged training loss rises to this many times its first is flagged ``diverged``
DIVERGED_RATIO = 2.0
# a run that puts more than this share of the examples in one class, where the gold puts less than
# NEAR_GOLD_SHARE there, is flagged ``near_degenerate``: a model that answers one class almost always
# (a zero-shot prompt it does not follow, a collapsed fine-tune) scores about the class's gold share
# while a few stray predictions keep it off ``degenerate``
NEAR_SHARE = 0.95
NEAR_GOLD_SHARE = 0.60


def health(training: dict[str, Any] | None, gold: list[Any], predicted: list[Any]) -> dict[str, Any]:
    """Flags of a run that finished but should not be trusted: ``diverged`` (the training loss rose
    far above where it started), ``degenerate`` (one class predicted where the gold has several) and
    ``near_degenerate`` (over :data:`NEAR_SHARE` of the predictions in one class that holds under
    :data:`NEAR_GOLD_SHARE` of the gold)."""
    flags: list[str] = []
    out: dict[str, Any] = {}
    curve = (training or {}).get("loss_curve") or []
    if len(curve) >= 2:
        first, last = curve[0][1], curve[-1][1]
        peak_step, peak = max(curve[1:], key=lambda point: point[1])
        out.update(initial_loss=first, final_loss=last, peak_loss=peak, peak_step=int(peak_step))
        if first > 0 and peak > DIVERGED_RATIO * first:
            flags.append("diverged")
    if gold and isinstance(gold[0], list):  # a tag per token: the classes of every token
        gold, predicted = [t for g in gold for t in g], [t for p in predicted for t in p]
    gold_classes, predicted_classes = len(set(gold)), len(set(predicted))
    out.update(gold_classes=gold_classes, predicted_classes=predicted_classes)
    if gold_classes > 1 and predicted_classes <= 1:
        flags.append("degenerate")
    elif gold_classes > 1 and predicted:
        top, count = Counter(predicted).most_common(1)[0]
        share, gold_share = count / len(predicted), sum(1 for g in gold if g == top) / len(gold)
        out.update(top_predicted_share=round(share, 4), top_gold_share=round(gold_share, 4))
        if share > NEAR_SHARE and gold_share < NEAR_GOLD_SHARE:
            flags.append("near_degenerate")
    notes = []
    if "diverged" in flags:
        notes.append(f"the training loss rose to {out['peak_loss']:.4g} at step {out['peak_step']}, over "
                     f"{DIVERGED_RATIO:g}x the initial {out['initial_loss']:.4g} (final {out['final_loss']:.4g})")
    if "degenerate" in flags:
        notes.append(f"every prediction is one class ({predicted_classes} predicted, {gold_classes} in the gold)")
    if "near_degenerate" in flags:
        notes.append(f"{out['top_predicted_share']:.1%} of the predictions are one class, which holds "
                     f"{out['top_gold_share']:.1%} of the gold (flagged over {NEAR_SHARE:.0%} against under "
                     f"{NEAR_GOLD_SHARE:.0%}): the model answers almost only that class")
    return {"flags": flags, "notes": notes, **out}
