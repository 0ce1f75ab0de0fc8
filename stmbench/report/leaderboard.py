"""Results -> a leaderboard: ``README.md`` (GitHub pipe tables and SVG curves), ``index.html`` (one
self-contained page from a Jinja2 template: sortable, filterable, escaped), the figures, and a copy of
the result files it was built from (``results/``), so every row links to its evidence and anyone can
regenerate the page: ``stmbench leaderboard --results-dir leaderboard/results --out leaderboard``.

Everything shown is computed from the stored results (:mod:`stmbench.report.board` aggregates them; this
module renders the board and writes the files).  The same results give byte-identical files:
the only date is the newest result's finish time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from stmbench.report.board import ALPHA, DEV_MARK, FLAG_MARK, OTHER_DATA, PRIMARY, UNVERIFIED, Board, Cell, Row, aggregate
from stmbench.report.plots import board_figures
from stmbench.report.evidence import ResultSet
from stmbench.report.publish import SOURCE_FILE, check_target, publish, read_source  # noqa: F401 - public names
from stmbench.store.result import RunResult
from stmbench.store.results import ResultStore
from stmbench.common.untrusted import clean_text, md_text, safe_url


def build(results: list[RunResult], store: ResultStore | None = None,
          references: dict[str, list[dict[str, Any]]] | None = None, *, trust_unverified: bool = False,
          metrics: list[Any] | None = None) -> Board:
    """:func:`stmbench.report.board.aggregate` plus the figures and the published reference results of its
    tasks (``references``: task -> its definition's ``references:``): the board every view renders.
    Results that ``store`` could not verify (:attr:`ResultSet.unverified`: no predictions) are shown,
    flagged, and take no part in marks or findings unless ``trust_unverified``."""
    from stmbench.report.findings import analyse
    from stmbench.report.findings_view import figures_of

    unverified = set(getattr(store, "unverified", ()) or ())
    board = aggregate(results, store, unverified=unverified, trust_unverified=trust_unverified, metrics=metrics)
    board.figures = board_figures(board)
    board.findings = analyse(results if trust_unverified else [r for r in results if r.run_id not in unverified])
    board.figures.update(figures_of(board.findings))
    board.references = {t: list(refs) for t, refs in sorted((references or {}).items()) if refs and t in board.tasks}
    return board


def task_references(session: Any) -> dict[str, list[dict[str, Any]]]:
    """The ``references:`` of every registered task (for :func:`build`)."""
    return {name: list(session.get("task", name).references) for name in session.catalogue.names("task")}


def reference_table(board: Board, *, markdown: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the reference results (published elsewhere; not measured by stmbench)."""
    rows = []
    for task, refs in board.references.items():
        for ref in refs:
            source = ref["citation"] + (f" ({ref['note']})" if ref["note"] else "")
            if markdown:
                source = md_escape(source) + (f" [link]({safe_url(ref['url'])})" if safe_url(ref["url"]) else "")
            rows.append([md_escape(task) if markdown else task, md_escape(ref["model"]) if markdown else ref["model"],
                         md_escape(board.title(ref["metric"])) if markdown else board.title(ref["metric"]), ref["split"],
                         f"{ref['value']:.1f}", source])
    return ["task", "model", "metric", "split", "value (%)", "source"], rows


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
    if task in board.meta.get("task_metrics", {}):  # ranked by another metric than accuracy
        out += f" ({board.title(board.meta['task_metrics'][task])})"
    if task in board.meta["synthetic_tasks"]:
        out += " (synthetic)"
    if task in board.meta["dev_tasks"]:
        out += f" {DEV_MARK}"
    return out


def cell_text(cell: Cell, metric: str, markdown: bool) -> str:
    """A task cell's text; for markdown its parts are escaped before the bold mark is added."""
    esc = md_escape if markdown else (lambda x: x)
    text = cell.text(metric)
    if text and cell.sweep:
        text += f" [{esc(cell.sweep)}]"  # brackets without a (url) after them: never a link
    if text and cell.flags:
        text += f" {esc(cell.flag_text())}"
    if not text or metric != PRIMARY:
        return text
    if cell.mark == "best":
        return f"**{text}**" if markdown else text
    if cell.mark == "tied":
        return f"{text} ≈"
    return text


def md_escape(text: str) -> str:
    """Text for a GitHub markdown table cell (:func:`stmbench.common.untrusted.md_text`): control characters
    removed, HTML escaped, link, emphasis and pipe characters escaped."""
    return md_text(text)


def table(board: Board, metric: str = PRIMARY, *, markdown: bool = True,
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
        esc = md_escape if markdown else (lambda x: x)
        line = [esc(v) for v in row.key.values()]
        if board.show_config:
            line.append(esc(row.config))
        line += [cell_text(row.cells[t], metric, markdown) if t in row.cells else "" for t in board.tasks]
        avg = row.average(board.tasks, metric)
        line.append("" if avg is None else f"{100 * avg:.1f}")
        cost = cost_texts(row)
        line += [esc(cost[k]) for k in ("trainable", "train_time", "tokens_per_second", "mfu", "padding", "peak_memory")]
        ids = sorted(r.run_id for r in row.results)
        line.append(" ".join(f"[{i[:6]}]({results_link}/{i}.json)" for i in ids) if markdown else " ".join(ids))
        body.append(line)
    if markdown:
        header = [md_escape(h) for h in header]
    return header, body


def describe(board: Board, metric: str = PRIMARY) -> list[str]:
    m = board.meta
    lines = [f"Generated by stmbench {m['version']} from {m['results']} stored results "
             f"({m['ok']} ok, {m['failed']} failed); the newest result finished {m['generated_from'] or 'n/a'}."]
    if m["devices"]:
        lines.append(f"Hardware: {', '.join(m['devices'])}.")
    if m["synthetic_tasks"]:
        lines.append(f"SYNTHETIC data: {', '.join(m['synthetic_tasks'])} is generated by stmbench for smoke "
                     "tests and demos; its scores say nothing about real-world accuracy.")
    lines.append(f"Cells: {board.title(metric)} in % on the evaluation split, mean ± sample std over seeds "
                 "(number of seeds). Average: the mean over tasks, for rows that have every task.")
    lines.append("Reproducibility: a run repeats exactly (the same loss curve and predictions) on the same machine "
                 "with the same thread count and library versions; on another CPU, thread count or library build "
                 "floating-point sums are taken in another order, curves agree to about six digits and then drift, "
                 "and a long run of a small model can end elsewhere: the ± over seeds is the scale of that. "
                 "`stmbench run --check-reproducible RUN_ID` reruns one run here and compares.")
    if m.get("task_metrics"):
        lines.append("A task whose header names a metric is scored by it instead: entity F1 is seqeval's entity-level "
                     "F1 (an entity counts when its type and both ends match), for tasks that tag every token.")
    lines.append("Bold: the best row of a task; ≈: not significantly worse than it (McNemar's exact test on "
                 f"per-example predictions, pooled over the seeds both rows share, p ≥ {ALPHA}); marks use accuracy.")
    if any(c.sweep for row in board.rows for c in row.cells.values()):
        lines.append("[lr 0.0005; 3 trials]: a tuned cell: of its trials (one per swept value, every seed), the value "
                     "with the best mean dev accuracy is shown, and significance uses those runs; the test split "
                     "chooses nothing. Every trial is kept in results/.")
    if any("pruned" in c.sweep for row in board.rows for c in row.cells.values()):
        lines.append("[...; 6 trials, 4 pruned]: a pruned sweep (--pruner): Optuna's successive halving stopped the "
                     "trials that fell behind on dev at an evaluation; a pruned trial is never chosen or tested, and "
                     "each seed keeps its completed trial with the best dev score.")
    if any(f not in (OTHER_DATA, UNVERIFIED) for row in board.rows for c in row.cells.values() for fs in c.flags.values() for f in fs):
        lines.append(f"{FLAG_MARK} a run of the cell finished but is not to be trusted: diverged (its training loss rose "
                     "to over twice its initial loss), degenerate (it predicts one class where the gold has "
                     "several) or near_degenerate (over 95% of its predictions are one class, which holds under "
                     "60% of the gold); the run's `health` says more.")
    if any(OTHER_DATA in f for row in board.rows for c in row.cells.values() for f in c.flags.values()):
        lines.append(f"{FLAG_MARK} other data: the results of this cell came from different data, prompt text or "
                     "labels (their data fingerprints differ, see `data` in each result), so they are never pooled: "
                     "each source has a row of its own (config: `data <id>`).")
    if m.get("unverified"):
        lines.append(f"{FLAG_MARK} unverified: {m['unverified']} result(s) came without predictions, so their numbers could "
                     "not be recomputed; they are shown but take no part in bold / ≈ marks or findings"
                     + (" (here they do: --trust-unverified)." if m.get("trust_unverified") else "."))
    if m.get("refused"):
        lines.append(f"{len(m['refused'])} file(s) were refused (see Refused files).")
    if m.get("conflicts"):
        lines.append(f"{len(m['conflicts'])} run(s) are stored with different contents in two results folders; "
                     "the first folder given is used (see Conflicting results).")
    if m["dev_tasks"]:
        lines.append(f"{DEV_MARK} evaluated on the dev split (the public test split has no labels).")
    lines.append("Cost: trainable parameters (share of all), mean training time per run, training tokens per "
                 "second, MFU (estimated training FLOP/s: 6 per trainable and 4 per frozen non-embedding parameter "
                 "per real token, over the device's peak: a datasheet bf16 figure for known GPUs, else a measured "
                 "matmul), padding efficiency (real tokens / processed tokens, in training and in prediction), "
                 "and peak memory (each run's own: GPU allocator peak, or peak resident memory on CPU; see its memory.peak_method).")
    return lines


def render_markdown(board: Board, metric: str = PRIMARY) -> str:
    from tabulate import tabulate

    header, body = table(board, metric)
    out = ["# stmbench leaderboard", ""]
    out += [line + "  " for line in describe(board, metric)]
    out.append("")
    if board.findings is not None:
        from stmbench.report.findings_view import markdown as findings_markdown

        out += findings_markdown(board.findings) + ["## Results", ""]
    out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True) if body else "No results yet.")
    if board.partial is not None:
        header, body = table(board.partial, metric)
        out += ["", "## Partial evaluations (not ranked)", "",
                "Runs evaluated on a sample of their evaluation split (`--limit N`, the same seeded sample for every "
                "run) for a quick look; they are not comparable with the table above and carry no marks.", ""]
        out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True))
    if board.references:
        header, body = reference_table(board)
        out += ["", "## Reference results (published, not measured here)", "",
                "Numbers reported elsewhere on the same tasks, from the tasks' definitions (`references:`), for "
                "orientation: other models, code and often other data copies; they take no part in marks or "
                "significance.", ""]
        out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True))
    shown = [name for name in sorted(board.figures) if not name.startswith("findings-")]
    if shown:
        out += ["", "## Figures", ""]
        for name in shown:
            out += [f"![{name[:-4]}]({name})", ""]
    if board.failed:
        out += ["", "## Failed runs", ""]
        out.append(tabulate([[f"[{r.run_id[:6]}](results/{r.run_id}.json)", md_escape(r.spec.label(r.labels)),
                              md_escape(r.error.splitlines()[0][:200]) if r.error else ""]
                             for r in board.failed], headers=["run", "spec", "error"], tablefmt="github",
                            disable_numparse=True))
    if board.meta.get("refused"):
        out += ["", "## Refused files", "",
                "Files in the results folders that failed their checks (identity, fields, predictions, or metrics "
                "recomputed from the predictions); nothing of them is shown, counted or copied.", ""]
        out.append(tabulate([[md_escape(os.path.basename(path)), md_escape(reason)] for path, reason in board.meta["refused"]],
                            headers=["file", "why"], tablefmt="github", disable_numparse=True))
    if board.meta.get("conflicts"):
        out += ["", "## Conflicting results", "",
                "The same run id stored with different contents in two results folders; the first is shown.", ""]
        out.append(tabulate([[c[0], md_escape(c[1]), md_escape(c[2])] for c in board.meta["conflicts"]],
                            headers=["run", "used", "not used"], tablefmt="github", disable_numparse=True))
    out += ["", "Regenerate from the copies of the results kept here: "
            "`stmbench leaderboard --results-dir leaderboard/results --out leaderboard`.", ""]
    return "\n".join(out)


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
    views = metric_views(board)
    rows = []
    for row in board.rows:
        cost, texts = row.cost(), cost_texts(row)
        cells = [{"text": v, "sort": v} for v in row.key.values()]
        cells[4]["sort"] = str(row.train_examples)
        if board.show_config:
            cells.append({"text": row.config, "sort": row.config})
        for t in board.tasks:
            cell = row.cells.get(t)
            means = {key: cell.mean(name) if cell else None for key, name in views.items()}
            cells.append({
                "task": t, "mark": cell.mark if cell else "",
                "text": {key: cell.text(name) if cell else "" for key, name in views.items()},
                "sort": {key: "" if m is None else f"{m:.6f}" for key, m in means.items()},
                "p": "" if cell is None or cell.p_value is None else f"{cell.p_value:.3g}",
                "flags": cell.flag_text() if cell else "", "sweep": cell.sweep if cell else "",
            })
        averages = {key: row.average(board.tasks, name) for key, name in views.items()}
        cells.append({"task": "", "mark": "", "flags": "", "sweep": "", "p": "",
                      "text": {key: "" if a is None else f"{100 * a:.1f}" for key, a in averages.items()},
                      "sort": {key: "" if a is None else f"{a:.6f}" for key, a in averages.items()}})
        for key, value in (("trainable", cost["trainable"]), ("train_time", cost["train_seconds"]),
                           ("tokens_per_second", cost["tokens_per_second"]), ("mfu", cost["mfu"]),
                           ("padding", cost["padding_train"] if cost["padding_train"] is not None
                            else cost["padding_predict"]),
                           ("peak_memory", cost["peak_memory_mb"])):
            cells.append({"text": texts[key], "sort": "" if value is None else f"{value:.6f}"})
        rows.append({"key": row.key, "tasks": sorted(row.cells), "cells": cells,
                     "runs": sorted(r.run_id for r in row.results)})
    filters = {name: sorted({r.key[name] for r in board.rows}) for name in ("backbone", "strategy", "adapter")}
    metrics = [{"key": key, "title": board.title(name)} for key, name in views.items()]
    hide = ", ".join(f"body.metric-{a} .{b}" for a in views for b in views if a != b)
    return {"columns": columns, "rows": rows, "filters": filters, "tasks": board.tasks, "metrics": metrics,
            "hide": hide}


def metric_views(board: Board) -> dict[str, str]:
    """The page's metric toggle: a short key (a CSS class and data attribute) -> the metric; first the
    ranking metric of each task, then each catalogue metric some cell has."""
    views = {"acc": PRIMARY}
    for m in board.metrics:
        key = m.short if re.fullmatch(r"[a-z][a-z0-9_]{0,31}", m.short or "") else None
        key = key if key and key not in views else f"m{len(views)}"
        views[key] = m.name
    return views


def _finalize(value: Any) -> Any:
    """Every string a template prints loses its control characters (markup marked safe, the
    figures, is left as it is); Jinja2's autoescaping then escapes it for HTML."""
    import markupsafe

    return clean_text(value) if isinstance(value, str) and not isinstance(value, markupsafe.Markup) else value


def render_html(board: Board) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("stmbench.report", "templates"), autoescape=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             finalize=_finalize)
    env.filters["basename"] = os.path.basename
    figures = [{"name": name, "svg": svg} for name, svg in sorted(board.figures.items())
               if not name.startswith("findings-")]
    from stmbench.report.findings_view import html_context

    findings = html_context(board.findings, board.figures)
    partial = None
    if board.partial is not None:
        header, body = table(board.partial, markdown=False)
        partial = {"header": header, "rows": body}
    references = None
    if board.references:
        header, body = reference_table(board, markdown=False)
        urls = [safe_url(ref["url"]) for refs in board.references.values() for ref in refs]
        references = {"header": header, "rows": [{"cells": row, "url": url} for row, url in zip(body, urls)]}
    return env.get_template("leaderboard.html.j2").render(
        board=board, view=html_view(board), notes=describe(board), figures=figures, partial=partial,
        references=references, findings=findings)


# --- files (stmbench.report.publish writes them) ----------------------------------------------

def board_files(board: Any, copy_from: ResultSet | None, out: Path) -> dict[str, bytes]:
    """Every file of a board: README.md, index.html, the figures and (from ``copy_from``, the bytes
    that were checked) the results it shows."""
    files = {"README.md": render_markdown(board).encode("utf-8"), "index.html": render_html(board).encode("utf-8")}
    for name, svg in sorted(board.figures.items()):
        files[name] = svg.encode("utf-8")
    if copy_from is not None and [f.resolve() for f in copy_from.folders] != [(out / "results").resolve()]:
        shown = [x for b in (board, board.partial) if b is not None for row in b.rows
                 for x in [*row.results, *row.all_trials]]
        for r in [*shown, *board.failed]:
            for name, data in copy_from.evidence(r.run_id):
                files[f"results/{name}"] = data
    return files


def generate(results_dirs: str | Path | list[str | Path], out_dir: str | Path, *, copy_results: bool = True,
             force: bool = False, references: dict[str, list[dict[str, Any]]] | None = None,
             trust_unverified: bool = False, gold_source: Any = None,
             metrics: list[Any] | None = None) -> tuple[Any, list[Path]]:
    """Build the leaderboard in ``out_dir`` from one or more results folders (or glob patterns), with
    the published ``references`` of its tasks; every result checked (:class:`ResultSet`), refused
    ones listed and never copied, unverified ones out of marks and findings unless ``trust_unverified``.
    ``metrics`` are the catalogue's (default: the built-ins)."""
    out = Path(out_dir)
    folders = check_target(results_dirs, out, force=force)
    store = ResultSet(folders, gold_source=gold_source, metrics=metrics)
    board = build(store.load_all(), store, references, trust_unverified=trust_unverified, metrics=metrics)
    board.meta["conflicts"] = [[run_id, str(a), str(b)] for run_id, a, b in store.conflicts]
    board.meta["refused"] = [[v.path, v.reason] for v in store.refused]
    keep = [f.resolve() for f in folders] == [(out / "results").resolve()]
    paths = publish(board_files(board, store if copy_results else None, out), out, folders, keep_copies=keep)
    return board, paths
