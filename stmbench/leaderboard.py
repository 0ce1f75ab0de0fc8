"""Results -> a leaderboard: ``README.md`` (GitHub pipe tables and SVG curves), ``index.html`` (one
self-contained page from a Jinja2 template: sortable, filterable, escaped), the figures, and a copy of
the result files it was built from (``results/``), so every row links to its evidence and anyone can
regenerate the page: ``stmbench leaderboard --results-dir leaderboard/results --out leaderboard``.

Everything shown is computed from the stored results.  The same results give byte-identical files:
the only date is the newest result's finish time.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench.errors import StmbenchError
from stmbench.results import PREDICTIONS_SUFFIX, ResultStore, atomic_write_bytes, atomic_write_text
from stmbench.significance import compare

ALPHA = 0.05
METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
DEV_MARK = "†"
FLAG_MARK = "⚠"


# --- aggregation ------------------------------------------------------------------------------

def _config_id(result: dict[str, Any]) -> str:
    """A short id of the settings that are not row keys (training settings, options)."""
    spec = result["spec"]
    training = {k: v for k, v in (spec.get("training") or {}).items() if k not in (spec.get("sweep") or ())}
    parts = [training, spec.get("adapter_options"), spec.get("strategy_options"), spec.get("skip_bad_rows")]
    if spec.get("limit"):
        parts.append({"limit": spec["limit"]})
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def strategy_label(result: dict[str, Any]) -> str:
    spec = result["spec"]
    name = (result.get("labels") or {}).get("strategy") or spec["strategy"]
    shots = spec.get("shots")
    return f"{name} ({shots}-shot)" if shots is not None else name


def adapter_label(result: dict[str, Any]) -> str:
    return (result.get("labels") or {}).get("adapter") or result["spec"]["adapter"]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class Cell:
    """One task of one row: a run per seed."""

    accuracy: dict[int, float] = field(default_factory=dict)
    macro_f1: dict[int, float] = field(default_factory=dict)
    run_ids: dict[int, str] = field(default_factory=dict)
    mark: str = ""  #: "best", "tied" or ""
    p_value: float | None = None
    flags: dict[int, list[str]] = field(default_factory=dict)  #: seed -> health flags of its run
    sweep: str = ""  #: the value chosen on dev and the number of trials, for a tuned cell

    def flag_text(self) -> str:
        """``⚠ diverged, degenerate`` when any seed's run is flagged, else ``""``."""
        names = sorted({f for flags in self.flags.values() for f in flags})
        return f"{FLAG_MARK} {', '.join(names)}" if names else ""

    @property
    def n(self) -> int:
        return len(self.accuracy)

    def values(self, metric: str) -> list[float]:
        data = self.accuracy if metric == "accuracy" else self.macro_f1
        return [data[s] for s in sorted(data)]

    def mean(self, metric: str = "accuracy") -> float | None:
        return _mean(self.values(metric))

    def text(self, metric: str = "accuracy") -> str:
        values = self.values(metric)
        if not values:
            return ""
        out = f"{100 * _mean(values):.1f}"
        std = _std(values)
        if std is not None:
            out += f" ± {100 * std:.1f}"
        return out + f" ({len(values)})"


@dataclass
class Row:
    key: dict[str, str]
    config: str
    cells: dict[str, Cell] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    train_examples: int = 0  #: for sorting "full" among numbers
    #: task -> swept values -> seed -> result: the trials of a tuned cell, before one value is chosen
    trials: dict[str, dict[tuple[Any, ...], dict[int, dict[str, Any]]]] = field(default_factory=dict)
    all_trials: list[dict[str, Any]] = field(default_factory=list)  #: every trial (chosen or not)

    def average(self, tasks: list[str], metric: str = "accuracy") -> float | None:
        means = [self.cells[t].mean(metric) if t in self.cells else None for t in tasks]
        if not tasks or any(m is None for m in means):
            return None
        return sum(means) / len(means)  # type: ignore[arg-type]

    def cost(self) -> dict[str, Any]:
        params = sorted((r.get("parameters") or {}).get("trainable") or 0 for r in self.results)
        totals = sorted((r.get("parameters") or {}).get("total") or 0 for r in self.results)
        times = [(r.get("times") or {}).get("train_seconds") for r in self.results]
        speeds = [(r.get("times") or {}).get("tokens_per_second") for r in self.results]
        memory = [r.get("peak_memory_mb") for r in self.results]
        mfu = [(r.get("hardware") or {}).get("mfu") for r in self.results]
        padding = {part: [((r.get("padding") or {}).get(part) or {}).get("efficiency") for r in self.results]
                   for part in ("train", "predict")}
        trainable = params[len(params) // 2] if params else 0
        total = totals[len(totals) // 2] if totals else 0
        return {
            "trainable": trainable,
            "trainable_percent": 100.0 * trainable / total if total else None,
            "train_seconds": _mean([t for t in times if t is not None]),
            "tokens_per_second": _mean([s for s in speeds if s]),
            "peak_memory_mb": max((m for m in memory if m is not None), default=None),
            "mfu": _mean([m for m in mfu if m is not None]),
            "padding_train": _mean([e for e in padding["train"] if e is not None]),
            "padding_predict": _mean([e for e in padding["predict"] if e is not None]),
        }


@dataclass
class Board:
    tasks: list[str]
    rows: list[Row]
    failed: list[dict[str, Any]]
    meta: dict[str, Any]
    show_config: bool = False
    figures: dict[str, str] = field(default_factory=dict)  #: file name -> SVG text
    partial: Board | None = None  #: runs evaluated on a --limit sample, shown apart and never ranked


def _predictions(store: ResultStore | None, run_id: str) -> tuple[list[int], list[int]] | None:
    if store is None:
        return None
    data = store.predictions(run_id)
    if not data or "gold" not in data or "predicted" not in data:
        return None
    return data["gold"], data["predicted"]


def _mark_significance(rows: list[Row], tasks: list[str], store: ResultStore | None) -> None:
    """Mark the best row of each task, and the rows not significantly worse than it as tied."""
    for task in tasks:
        candidates = [r for r in rows if task in r.cells]
        if not candidates:
            continue
        best = max(candidates, key=lambda r: (r.cells[task].mean(), -rows.index(r)))
        best.cells[task].mark = "best"
        best_preds = {s: _predictions(store, rid) for s, rid in best.cells[task].run_ids.items()}
        best_preds = {s: p for s, p in best_preds.items() if p is not None}
        for row in candidates:
            if row is best:
                continue
            preds = {s: _predictions(store, rid) for s, rid in row.cells[task].run_ids.items()}
            preds = {s: p for s, p in preds.items() if p is not None}
            result = compare(best_preds, preds)
            if result is None:
                continue
            row.cells[task].p_value = result.p_value
            if result.p_value >= ALPHA:
                row.cells[task].mark = "tied"


def _group(ok: list[dict[str, Any]]) -> tuple[list[Row], list[str], set[str], bool]:
    """Rows (one per backbone x adapter x strategy x prompt x train size x config, a cell per task,
    sorted best first), the tasks, the tasks evaluated on dev, and whether configs need a column."""
    groups: dict[tuple[str, ...], Row] = {}
    configs: dict[tuple[str, ...], set[str]] = {}
    tasks: set[str] = set()
    dev_tasks: set[str] = set()
    for r in ok:
        spec = r["spec"]
        key = {"backbone": spec["backbone"], "adapter": adapter_label(r), "strategy": strategy_label(r),
               "prompt": spec.get("prompt") or "-", "train_size": str(spec["train_size"])}
        cfg = _config_id(r)
        configs.setdefault(tuple(key.values()), set()).add(cfg)
        row = groups.setdefault(tuple(key.values()) + (cfg,), Row(key=key, config=cfg))
        row.train_examples = max(row.train_examples, (r.get("counts") or {}).get("train_examples") or 0)
        task = spec["task"]
        tasks.add(task)
        if (r.get("task_info") or {}).get("eval_split") not in (None, "test"):
            dev_tasks.add(task)
        if spec.get("sweep"):
            values = tuple((name, (spec.get("training") or {}).get(name)) for name in spec["sweep"])
            row.trials.setdefault(task, {}).setdefault(values, {})[int(spec["seed"])] = r
            row.all_trials.append(r)
            continue
        _fill(row, task, r)
    for row in groups.values():
        for task, trials in row.trials.items():
            chosen = max(sorted(trials, key=repr), key=lambda values: _dev_score(trials[values]))
            for r in trials[chosen].values():
                _fill(row, task, r)
            row.cells[task].sweep = f"{', '.join(f'{_short_name(n)} {_short_value(v)}' for n, v in chosen)}; " \
                                    f"{len(trials)} trials"
    task_list = sorted(tasks)

    def order(row: Row) -> tuple[Any, ...]:
        avg = row.average(task_list)
        return (-(avg if avg is not None else -1.0), tuple(row.key.values()), row.config)

    rows = sorted(groups.values(), key=order)
    return rows, task_list, dev_tasks, any(len(c) > 1 for c in configs.values())


def _fill(row: Row, task: str, r: dict[str, Any]) -> None:
    """Put one run's test metrics into its row's cell for ``task``."""
    row.results.append(r)
    cell = row.cells.setdefault(task, Cell())
    seed = int(r["spec"]["seed"])
    cell.accuracy[seed] = float(r["metrics"]["accuracy"])
    if "macro_f1" in r["metrics"]:
        cell.macro_f1[seed] = float(r["metrics"]["macro_f1"])
    cell.run_ids[seed] = r["run_id"]
    flags = list((r.get("health") or {}).get("flags") or [])
    if flags:
        cell.flags[seed] = flags


def _dev_score(runs: dict[int, dict[str, Any]]) -> float:
    """The mean dev accuracy of one trial's seeds (the test split never chooses)."""
    values = [((r.get("training") or {}).get("selection") or {}).get("dev_metric") for r in runs.values()]
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else float("-inf")


def _short_name(name: str) -> str:
    return {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch",
            "weight_decay": "wd", "warmup_steps": "warmup"}.get(name, name)


def _short_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def build(results: list[dict[str, Any]], store: ResultStore | None = None) -> Board:
    """Aggregate stored results into rows (mean and std over seeds), with significance marks."""
    from stmbench import __version__

    ok = sorted((r for r in results if r.get("status") == "ok" and "accuracy" in (r.get("metrics") or {})),
                key=lambda r: r["run_id"])
    failed = sorted((r for r in results if r.get("status") != "ok"), key=lambda r: r["run_id"])
    partial = [r for r in ok if r.get("partial")]  # evaluated on a --limit sample: never ranked
    ok = [r for r in ok if not r.get("partial")]
    rows, task_list, dev_tasks, show_config = _group(ok)
    _mark_significance(rows, task_list, store)
    partial_rows, partial_tasks, _, partial_config = _group(partial)
    synthetic = sorted({r["spec"]["task"] for r in results if (r.get("task_info") or {}).get("synthetic")})
    devices = sorted({_device_text(r.get("device") or {}) for r in ok})
    newest = max((r.get("finished_at") or "" for r in results), default="")
    versions = sorted({(r.get("versions") or {}).get("stmbench", "?") for r in ok})
    meta = {"version": __version__, "result_versions": versions, "generated_from": newest,
            "results": len(results), "ok": len(ok) + len(partial), "failed": len(failed), "devices": devices,
            "synthetic_tasks": synthetic, "dev_tasks": sorted(dev_tasks), "partial": len(partial)}
    board = Board(task_list, rows, failed, meta, show_config)
    board.partial = Board(partial_tasks, partial_rows, [], meta, partial_config) if partial_rows else None
    board.figures = _figures(board)
    return board


def _device_text(device: dict[str, Any]) -> str:
    kind = device.get("type", "?")
    name = device.get("name", "?")
    if kind == "cpu":
        return f"CPU ({name}, {device.get('cpus', '?')} cores)"
    return f"{kind.upper()} ({name})"


# --- figures --------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "task"


def _figures(board: Board) -> dict[str, str]:
    from stmbench.plots import Series, size_curve, strategy_bars

    figures: dict[str, str] = {}
    for task in board.tasks:
        rows = [r for r in board.rows if task in r.cells]
        for backbone in sorted({r.key["backbone"] for r in rows}):
            mine = [r for r in rows if r.key["backbone"] == backbone]
            # accuracy vs training-set size: one line per strategy (its best row at each size)
            sizes = {r.train_examples for r in mine if r.train_examples > 0}
            series = []
            if len(sizes) >= 2:
                for strategy in sorted({r.key["strategy"] for r in mine}):
                    points: dict[int, Row] = {}
                    for r in mine:
                        if r.key["strategy"] == strategy and r.train_examples > 0:
                            cur = points.get(r.train_examples)
                            if cur is None or r.cells[task].mean() > cur.cells[task].mean():
                                points[r.train_examples] = r
                    if len(points) >= 2:
                        xs = sorted(points)
                        series.append(Series(strategy, [float(x) for x in xs],
                                             [100 * points[x].cells[task].mean() for x in xs],
                                             [100 * (_std(points[x].cells[task].values("accuracy")) or 0.0)
                                              for x in xs]))
            if series:
                figures[f"train-size-{_slug(task)}-{_slug(backbone)}.svg"] = size_curve(
                    f"{task}: accuracy vs training examples ({backbone})", series)
            # strategy comparison: the best row of each strategy
            best: dict[str, Row] = {}
            for r in mine:
                s = r.key["strategy"]
                if s not in best or r.cells[task].mean() > best[s].cells[task].mean():
                    best[s] = r
            if best:
                labels = sorted(best, key=lambda s: -best[s].cells[task].mean())
                figures[f"strategies-{_slug(task)}-{_slug(backbone)}.svg"] = strategy_bars(
                    f"{task}: best row per strategy ({backbone})", labels,
                    [100 * best[s].cells[task].mean() for s in labels],
                    [100 * (_std(best[s].cells[task].values("accuracy")) or 0.0) for s in labels])
    return figures


# --- text views -------------------------------------------------------------------------------

def _fmt_params(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def cost_texts(row: Row) -> dict[str, str]:
    c = row.cost()
    pct = c["trainable_percent"]
    return {
        "trainable": _fmt_params(c["trainable"]) + (f" ({pct:.2f}%)" if pct is not None else ""),
        "train_time": "" if c["train_seconds"] is None else f"{c['train_seconds']:.1f} s",
        "tokens_per_second": "" if c["tokens_per_second"] is None else f"{c['tokens_per_second']:,.0f}",
        "peak_memory": "" if c["peak_memory_mb"] is None else f"{c['peak_memory_mb']:,.0f} MiB",
        "mfu": "" if c["mfu"] is None else f"{100 * c['mfu']:.2f}%",
        "padding": "" if c["padding_train"] is None and c["padding_predict"] is None else " / ".join(
            "–" if e is None else f"{e:.2f}" for e in (c["padding_train"], c["padding_predict"])),
    }


def task_header(board: Board, task: str) -> str:
    out = task
    if task in board.meta["synthetic_tasks"]:
        out += " (synthetic)"
    if task in board.meta["dev_tasks"]:
        out += f" {DEV_MARK}"
    return out


def cell_text(cell: Cell, metric: str, markdown: bool) -> str:
    text = cell.text(metric)
    if text and cell.sweep:
        text += f" [{cell.sweep}]"
    if text and cell.flags:
        text += f" {cell.flag_text()}"
    if not text or metric != "accuracy":
        return text
    if cell.mark == "best":
        return f"**{text}**" if markdown else text
    if cell.mark == "tied":
        return f"{text} ≈"
    return text


def md_escape(text: str) -> str:
    """Text for a GitHub markdown table cell: HTML escaped (as the page does), pipes kept in the cell."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def table(board: Board, metric: str = "accuracy", *, markdown: bool = True,
          results_link: str = "results") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table as text (escaped for markdown when ``markdown``)."""
    header = ["backbone", "adapter", "strategy", "prompt", "train size"]
    if board.show_config:
        header.append("config")
    header += [task_header(board, t) for t in board.tasks]
    header += ["average", "trainable params", "train time", "tokens/s", "MFU", "padding eff. (train / predict)",
               "peak memory", "runs"]
    body = []
    for row in board.rows:
        line = list(row.key.values())
        if board.show_config:
            line.append(row.config)
        line += [cell_text(row.cells[t], metric, markdown) if t in row.cells else "" for t in board.tasks]
        avg = row.average(board.tasks, metric)
        line.append("" if avg is None else f"{100 * avg:.1f}")
        cost = cost_texts(row)
        line += [cost["trainable"], cost["train_time"], cost["tokens_per_second"], cost["mfu"], cost["padding"],
                 cost["peak_memory"]]
        ids = sorted(r["run_id"] for r in row.results)
        if markdown:
            line = [md_escape(x) for x in line]
        line.append(" ".join(f"[{i[:6]}]({results_link}/{i}.json)" for i in ids) if markdown else " ".join(ids))
        body.append(line)
    if markdown:
        header = [md_escape(h) for h in header]
    return header, body


def describe(board: Board, metric: str = "accuracy") -> list[str]:
    m = board.meta
    lines = [f"Generated by stmbench {m['version']} from {m['results']} stored results "
             f"({m['ok']} ok, {m['failed']} failed); the newest result finished {m['generated_from'] or 'n/a'}."]
    if m["devices"]:
        lines.append(f"Hardware: {', '.join(m['devices'])}.")
    if m["synthetic_tasks"]:
        lines.append(f"SYNTHETIC data: {', '.join(m['synthetic_tasks'])} is generated by stmbench for smoke "
                     "tests and demos; its scores say nothing about real-world accuracy.")
    lines.append(f"Cells: {METRICS[metric]} in % on the evaluation split, mean ± sample std over seeds "
                 "(number of seeds). Average: the mean over tasks, for rows that have every task.")
    lines.append("Bold: the best row of a task; ≈: not significantly worse than it (McNemar's exact test on "
                 f"per-example predictions, pooled over the seeds both rows share, p ≥ {ALPHA}); marks use accuracy.")
    if any(c.sweep for row in board.rows for c in row.cells.values()):
        lines.append("[lr 0.0005; 3 trials]: a tuned cell: of its trials (one per swept value, every seed), the value "
                     "with the best mean dev accuracy is shown, and significance uses those runs; the test split "
                     "chooses nothing. Every trial is kept in results/.")
    if any(c.flags for row in board.rows for c in row.cells.values()):
        lines.append(f"{FLAG_MARK} a run of the cell finished but is not to be trusted: diverged (its training loss rose "
                     "to over twice its initial loss) or degenerate (it predicts one class where the gold has "
                     "several); the run's `health` says more.")
    if m["dev_tasks"]:
        lines.append(f"{DEV_MARK} evaluated on the dev split (the public test split has no labels).")
    lines.append("Cost: trainable parameters (share of all), mean training time per run, training tokens per "
                 "second, MFU (estimated training FLOP/s: 6 per trainable and 4 per frozen non-embedding parameter "
                 "per real token, over the device's peak: a datasheet bf16 figure for known GPUs, else a measured "
                 "matmul), padding efficiency (real tokens / processed tokens, in training and in prediction), "
                 "and peak memory (GPU allocator peak, or the process's peak resident memory on CPU).")
    return lines


def render_markdown(board: Board, metric: str = "accuracy") -> str:
    from tabulate import tabulate

    header, body = table(board, metric)
    out = ["# stmbench leaderboard", ""]
    out += [line + "  " for line in describe(board, metric)]
    out.append("")
    out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True) if body else "No results yet.")
    if board.partial is not None:
        header, body = table(board.partial, metric)
        out += ["", "## Partial evaluations (not ranked)", "",
                "Runs evaluated on a sample of their evaluation split (`--limit N`, the same seeded sample for every "
                "run) for a quick look; they are not comparable with the table above and carry no marks.", ""]
        out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True))
    if board.figures:
        out += ["", "## Figures", ""]
        for name in sorted(board.figures):
            out += [f"![{name[:-4]}]({name})", ""]
    if board.failed:
        out += ["", "## Failed runs", ""]
        out.append(tabulate([[f"[{r['run_id'][:6]}](results/{r['run_id']}.json)", md_escape(_spec_text(r["spec"])),
                              md_escape((r.get("error") or "").splitlines()[0][:200]) if r.get("error") else ""]
                             for r in board.failed], headers=["run", "spec", "error"], tablefmt="github",
                            disable_numparse=True))
    out += ["", "Regenerate from the copies of the results kept here: "
            "`stmbench leaderboard --results-dir leaderboard/results --out leaderboard`.", ""]
    return "\n".join(out)


def _spec_text(spec: dict[str, Any]) -> str:
    return " / ".join(str(spec.get(k)) for k in ("backbone", "task", "strategy", "adapter", "prompt",
                                                 "train_size", "seed"))


# --- HTML ---------------------------------------------------------------------------------------

def html_view(board: Board) -> dict[str, Any]:
    """Plain data for the template: every string is escaped by Jinja2's autoescaping."""
    columns = [{"key": k, "label": label, "kind": kind, "task": ""} for k, label, kind in (
        ("backbone", "backbone", "text"), ("adapter", "adapter", "text"), ("strategy", "strategy", "text"),
        ("prompt", "prompt", "text"), ("train_size", "train size", "num"))]
    if board.show_config:
        columns.append({"key": "config", "label": "config", "kind": "text", "task": ""})
    for t in board.tasks:
        columns.append({"key": f"task:{t}", "label": task_header(board, t), "kind": "metric", "task": t})
    columns += [{"key": k, "label": label, "kind": kind, "task": ""} for k, label, kind in (
        ("average", "average", "metric"), ("trainable", "trainable params", "num"),
        ("train_time", "train time", "num"), ("tokens_per_second", "tokens/s", "num"), ("mfu", "MFU", "num"),
        ("padding", "padding eff. (train / predict)", "num"), ("peak_memory", "peak memory", "num"))]
    rows = []
    for row in board.rows:
        cost, texts = row.cost(), cost_texts(row)
        cells = [{"text": v, "sort": v} for v in row.key.values()]
        cells[4]["sort"] = str(row.train_examples)
        if board.show_config:
            cells.append({"text": row.config, "sort": row.config})
        for t in board.tasks:
            cell = row.cells.get(t)
            cells.append({
                "task": t, "mark": cell.mark if cell else "",
                "acc": cell.text("accuracy") if cell else "", "f1": cell.text("macro_f1") if cell else "",
                "acc_sort": "" if cell is None else f"{cell.mean('accuracy'):.6f}",
                "f1_sort": "" if cell is None or cell.mean("macro_f1") is None else f"{cell.mean('macro_f1'):.6f}",
                "p": "" if cell is None or cell.p_value is None else f"{cell.p_value:.3g}",
                "flags": cell.flag_text() if cell else "", "sweep": cell.sweep if cell else "",
            })
        acc, f1 = row.average(board.tasks, "accuracy"), row.average(board.tasks, "macro_f1")
        cells.append({"task": "", "mark": "", "flags": "", "sweep": "", "acc": "" if acc is None else f"{100 * acc:.1f}",
                      "f1": "" if f1 is None else f"{100 * f1:.1f}",
                      "acc_sort": "" if acc is None else f"{acc:.6f}", "f1_sort": "" if f1 is None else f"{f1:.6f}",
                      "p": ""})
        for key, value in (("trainable", cost["trainable"]), ("train_time", cost["train_seconds"]),
                           ("tokens_per_second", cost["tokens_per_second"]), ("mfu", cost["mfu"]),
                           ("padding", cost["padding_train"] if cost["padding_train"] is not None
                            else cost["padding_predict"]),
                           ("peak_memory", cost["peak_memory_mb"])):
            cells.append({"text": texts[key], "sort": "" if value is None else f"{value:.6f}"})
        rows.append({"key": row.key, "tasks": sorted(row.cells), "cells": cells,
                     "runs": sorted(r["run_id"] for r in row.results)})
    filters = {name: sorted({r.key[name] for r in board.rows}) for name in ("backbone", "strategy", "adapter")}
    return {"columns": columns, "rows": rows, "filters": filters, "tasks": board.tasks}


def render_html(board: Board) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("stmbench", "templates"), autoescape=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    figures = [{"name": name, "svg": svg} for name, svg in sorted(board.figures.items())]
    partial = None
    if board.partial is not None:
        header, body = table(board.partial, markdown=False)
        partial = {"header": header, "rows": body}
    return env.get_template("leaderboard.html.j2").render(
        board=board, view=html_view(board), notes=describe(board), figures=figures, partial=partial)


# --- files ------------------------------------------------------------------------------------

def write(board: Board, out_dir: str | Path, *, copy_from: Path | None = None) -> list[Path]:
    """Write README.md, index.html, the figures, and (from ``copy_from``) the results they show."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "README.md", out / "index.html"]
    atomic_write_text(paths[0], render_markdown(board))
    atomic_write_text(paths[1], render_html(board))
    for old in out.glob("*.svg"):  # figures of results that are gone must not linger
        if old.name not in board.figures:
            old.unlink()
    for name, svg in sorted(board.figures.items()):
        atomic_write_text(out / name, svg)
        paths.append(out / name)
    if copy_from is not None:
        target = out / "results"
        if target.resolve() != copy_from.resolve():
            target.mkdir(exist_ok=True)
            keep = set()
            shown = [x for b in (board, board.partial) if b is not None for row in b.rows
                     for x in [*row.results, *row.all_trials]]
            for r in [*shown, *board.failed]:
                for suffix in (".json", PREDICTIONS_SUFFIX):
                    src = copy_from / f"{r['run_id']}{suffix}"
                    if src.exists():
                        atomic_write_bytes(target / src.name, src.read_bytes())
                        keep.add(src.name)
            for old in target.glob("*.json"):
                if old.name not in keep:
                    old.unlink()
    return paths


SOURCE_FILE = ".stmbench-source.json"  #: in a leaderboard folder: the results folder it was built from


def _source_of(out: Path) -> Path | None:
    try:
        relative = json.loads((out / SOURCE_FILE).read_text(encoding="utf-8"))["results_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (out / relative).resolve()


def check_target(results_dir: str | Path, out_dir: str | Path, *, force: bool = False,
                 need_results: bool = True) -> None:
    """Refuse, before anything is written, to build a leaderboard from a results folder that does not
    exist or holds no results, or to replace one that was built from another results folder (its own
    copies in ``out/results`` count as its source) unless ``force``."""
    results, out = Path(results_dir), Path(out_dir)
    if need_results:
        if not results.is_dir():
            raise StmbenchError(f"results folder {results} does not exist (nothing to build a leaderboard from)")
        if not ResultStore(results).load_all():
            raise StmbenchError(f"results folder {results} holds no results (nothing to build a leaderboard from)")
    source = _source_of(out)
    if force or source is None or not (out / "README.md").exists():
        return
    if results.resolve() not in (source, (out / "results").resolve()):
        shown = os.path.relpath(source)
        shown = str(source) if shown.startswith("..") else shown
        raise StmbenchError(f"{out} holds a leaderboard built from {shown}, not {results}; "
                            "pass --force to replace it (or choose another --out / --leaderboard-dir)")


def generate(results_dir: str | Path, out_dir: str | Path, *, copy_results: bool = True,
             force: bool = False) -> tuple[Board, list[Path]]:
    results, out = Path(results_dir), Path(out_dir)
    check_target(results, out, force=force)
    store = ResultStore(results)
    board = build(store.load_all(), store)
    paths = write(board, out, copy_from=results if copy_results else None)
    if results.resolve() != (out / "results").resolve() or _source_of(out) is None:
        atomic_write_text(out / SOURCE_FILE, json.dumps(
            {"results_dir": os.path.relpath(results.resolve(), out.resolve())}) + "\n")
    return board, paths
