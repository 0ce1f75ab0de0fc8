"""Scoring a run: accuracy (and macro-F1) against the gold labels, and the health flags of a run
that finished but should not be trusted."""

from __future__ import annotations

from typing import Any

from stmbench.errors import StmbenchError


def score(task: Any, gold: list[int], predicted: list[int]) -> dict[str, float]:
    if len(gold) != len(predicted):
        raise StmbenchError(f"{len(predicted)} predictions for {len(gold)} examples")
    labels = list(range(len(task.labels)))
    # the share of exact matches (sklearn's accuracy_score), without importing sklearn for it
    metrics = {"accuracy": sum(int(g) == int(p) for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0}
    if "macro_f1" in task.metrics:
        from sklearn.metrics import f1_score

        metrics["macro_f1"] = float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))
    return metrics



# a run whose logged training loss rises to this many times its first is flagged ``diverged``
DIVERGED_RATIO = 2.0



def health(training: dict[str, Any] | None, gold: list[int], predicted: list[int]) -> dict[str, Any]:
    """Flags of a run that finished but should not be trusted: ``diverged`` (the training loss rose
    far above where it started) and ``degenerate`` (one class predicted where the gold has several)."""
    flags: list[str] = []
    out: dict[str, Any] = {}
    curve = (training or {}).get("loss_curve") or []
    if len(curve) >= 2:
        first, last = curve[0][1], curve[-1][1]
        peak_step, peak = max(curve[1:], key=lambda point: point[1])
        out.update(initial_loss=first, final_loss=last, peak_loss=peak, peak_step=int(peak_step))
        if first > 0 and peak > DIVERGED_RATIO * first:
            flags.append("diverged")
    gold_classes, predicted_classes = len(set(gold)), len(set(predicted))
    out.update(gold_classes=gold_classes, predicted_classes=predicted_classes)
    if gold_classes > 1 and predicted_classes <= 1:
        flags.append("degenerate")
    notes = []
    if "diverged" in flags:
        notes.append(f"the training loss rose to {out['peak_loss']:.4g} at step {out['peak_step']}, over "
                     f"{DIVERGED_RATIO:g}x the initial {out['initial_loss']:.4g} (final {out['final_loss']:.4g})")
    if "degenerate" in flags:
        notes.append(f"every prediction is one class ({predicted_classes} predicted, {gold_classes} in the gold)")
    return {"flags": flags, "notes": notes, **out}
