"""Scoring a run: accuracy (and macro-F1) against the gold labels, and the health flags of a run
that finished but should not be trusted."""

from __future__ import annotations

from typing import Any

from stmbench.errors import StmbenchError


def score(task: Any, gold: list[Any], predicted: list[Any]) -> dict[str, float]:
    """Accuracy (and macro-F1) of label indices; for a task with a tag per token, seqeval's
    entity-level precision, recall and F1 and the token accuracy of tag sequences."""
    if len(gold) != len(predicted):
        raise StmbenchError(f"{len(predicted)} predictions for {len(gold)} examples")
    if task.is_tokens:
        return token_scores(task, gold, predicted)
    labels = list(range(len(task.labels)))
    # the share of exact matches (sklearn's accuracy_score), without importing sklearn for it
    metrics = {"accuracy": sum(int(g) == int(p) for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0}
    if "macro_f1" in task.metrics:
        from sklearn.metrics import f1_score

        metrics["macro_f1"] = float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))
    return metrics


def token_scores(task: Any, gold: list[list[int]], predicted: list[list[int]]) -> dict[str, float]:
    """seqeval's entity-level precision / recall / F1 (CoNLL's definition: an entity counts when its
    type and both ends match) over tag index sequences, and the share of tokens tagged right."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    names = [lab.value for lab in task.labels]
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise StmbenchError(f"example {i}: {len(p)} predicted tags for {len(g)} tokens")
    y_true = [[names[t] for t in g] for g in gold]
    y_pred = [[names[t] if 0 <= t < len(names) else "O" for t in p] for p in predicted]
    tokens = sum(len(g) for g in gold)
    return {"entity_f1": float(f1_score(y_true, y_pred, zero_division=0)),
            "entity_precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "entity_recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "token_accuracy": sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p)) / tokens if tokens else 0.0}


# a run whose logged training loss rises to this many times its first is flagged ``diverged``
DIVERGED_RATIO = 2.0


def health(training: dict[str, Any] | None, gold: list[Any], predicted: list[Any]) -> dict[str, Any]:
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
    if gold and isinstance(gold[0], list):  # a tag per token: the classes of every token
        gold, predicted = [t for g in gold for t in g], [t for p in predicted for t in p]
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
