"""Findings rendered: the markdown section at the top of the leaderboard, the figures (forest plot of
every effect, train-size curves with bands, tuning-budget curves; deterministic SVG), and the
``stmbench findings`` command (markdown, JSON or CSV)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from stmbench.report.findings import BAYES_MIN_CELLS, MIN_CELLS, ROPE, Findings

INTRO = (f"Paired comparisons on cells that differ only in one axis (same backbone, task, other axes, trial "
         f"and seed): mean difference in points with a 95% stratified-bootstrap interval, wins/ties/losses over "
         f"cells, P(better) (probability of improvement), a Wilcoxon signed-rank p-value Holm-corrected over "
         f"the page, and from {BAYES_MIN_CELLS} cells a Bayesian signed-rank test with a {ROPE}-point region of "
         f"practical equivalence. Fewer than {MIN_CELLS} paired cells: no verdict. Partial, failed and diverged "
         f"runs and reference rows are not used.")


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def rows(findings: Findings) -> list[dict[str, Any]]:
    """One flat row per comparison (the CSV and the tables)."""
    out = []
    for c in findings.comparisons:
        out.append({"axis": c.axis, "a": c.a, "b": c.b, "verdict": c.verdict, "cells": c.cells,
                    "unpaired": c.unpaired, "pairs": c.pairs, "mean": c.mean,
                    "ci_low": None if c.ci is None else c.ci[0], "ci_high": None if c.ci is None else c.ci[1],
                    "wins": c.wins, "ties": c.ties, "losses": c.losses, "p_better": c.p_improvement,
                    "p_wilcoxon": c.p_value, "p_holm": c.p_holm,
                    **{f"bayes_{k}": (c.bayes or {}).get(k) for k in ("a_better", "equivalent", "b_better")}})
    return out


def markdown(findings: Findings, *, level: int = 2, figures: bool = True) -> list[str]:
    """The Findings section (lines)."""
    from tabulate import tabulate

    h = "#" * level
    out = [f"{h} Findings", "", INTRO, ""]
    if not findings.comparisons:
        out += ["No axis of these results has two values that share a cell: nothing to compare.", ""]
    out += [f"- {line}" for line in sentences(findings)]
    if findings.excluded:
        out.append("- left out: " + ", ".join(f"{n} {why}" for why, n in sorted(findings.excluded.items())) + " run(s).")
    out.append("")
    if findings.comparisons:
        table = [[r["axis"], f"{r['a']} vs {r['b']}", r["verdict"], f"{r['cells']} ({r['unpaired']})",
                  _num(r["mean"], "+.1f"), "" if r["ci_low"] is None else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]",
                  "" if r["mean"] is None else f"{r['wins']}/{r['ties']}/{r['losses']}", _num(r["p_better"], ".2f"), _num(r["p_holm"], ".3g"),
                  "" if r["bayes_equivalent"] is None else
                  f"{r['bayes_a_better']:.2f} / {r['bayes_equivalent']:.2f} / {r['bayes_b_better']:.2f}"]
                 for r in rows(findings)]
        out += [tabulate(table, headers=["axis", "comparison", "verdict", "cells (unpaired)", "mean", "95% CI",
                                         "W/T/L", "P(better)", "Holm p", "Bayes A / = / B"],
                         tablefmt="github", disable_numparse=True), ""]
    for strategy, budget in findings.budgets.items():
        if budget["expected_max"]:
            curve = ", ".join(f"k={k} {v:.1f}" for k, v in enumerate(budget["expected_max"], start=1))
            out.append(f"- tuning budget, {strategy}: expected best dev score after k trials "
                       f"(over {budget['cells']} cells): {curve}.")
        else:
            trials = "; ".join(", ".join(f"{v:.1f}" for v in t) for t in budget["trials"])
            out.append(f"- tuning budget, {strategy}: fewer than 5 trials per cell; the trials' dev scores: {trials}.")
        if budget.get("pruned_cells"):
            planned, steps = budget["planned_steps"], budget["steps"]
            saved = f"{100.0 * (1 - steps / planned):.0f}%" if planned else "?"
            out.append(f"- pruning, {strategy}: {budget['pruned']} of {sum(len(t) for t in budget['trials'])} trials "
                       f"stopped early on dev over {budget['pruned_cells']} pruned cell(s); their trials trained "
                       f"{steps:,} of the {planned:,} steps their full budgets plan: {saved} of the training compute "
                       "saved (pruned trials enter the budget curve at the best dev score they reached).")
    if findings.budgets:
        out.append("")
    if figures:
        out += [f"![{name[:-4]}]({name})" for name in sorted(figures_of(findings))] + [""]
    return out


def sentences(findings: Findings) -> list[str]:
    """One sentence per comparison, then one per train-size lead (the markdown's and the page's)."""
    return [c.sentence() for c in findings.comparisons] + [
        f"train size: {a['a']} stays ahead of {a['b']} from {a['from_size']} examples on "
        f"(sizes compared: {', '.join(a['sizes'])})." for a in findings.ahead]


def html_context(findings: Findings | None, figures: dict[str, str]) -> dict[str, Any] | None:
    """What the page's Findings section shows."""
    if findings is None:
        return None
    return {"intro": INTRO, "sentences": sentences(findings),
            "figures": [{"name": n, "svg": svg} for n, svg in sorted(figures.items()) if n.startswith("findings-")]}


def render(findings: Findings, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(findings.to_dict(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        table = rows(findings)
        writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else ["axis"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        return buf.getvalue()
    return "\n".join(markdown(findings, level=1, figures=False))


# --- figures -------------------------------------------------------------------------------------

def figures_of(findings: Findings) -> dict[str, str]:
    """``{file name: svg}``: the forest plot, the train-size curves and the budget curves, where
    there is something to draw."""
    from stmbench.report.plots import _figure, _svg
    from stmbench.common.untrusted import clean_text

    out: dict[str, str] = {}
    shown = [c for c in findings.comparisons if c.mean is not None]
    if shown:
        plt, fig = _figure(6.4, 0.6 + 0.32 * len(shown))
        ax = fig.add_subplot()
        ys = list(range(len(shown)))[::-1]
        for y, c in zip(ys, shown):
            ax.errorbar([c.mean], [y], xerr=[[c.mean - c.ci[0]], [c.ci[1] - c.mean]], fmt="o", capsize=3,
                        color="black" if c.verdict in ("better", "worse") else "grey")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.axvspan(-ROPE, ROPE, color="tab:blue", alpha=0.12, label=f"±{ROPE} points (practically equivalent)")
        ax.set_yticks(ys, [clean_text(f"{c.axis}: {c.a} vs {c.b}") for c in shown])
        ax.set_xlabel("difference in points (A - B), 95% stratified bootstrap interval")
        ax.set_title("Effects (black: significant after Holm)")
        ax.legend(fontsize=7, loc="lower right")
        out["findings-effects.svg"] = _svg(plt, fig)
    if findings.curves:
        plt, fig = _figure()
        ax = fig.add_subplot()
        from stmbench.report.findings import _ordered

        sizes = _ordered({p.size for points in findings.curves.values() for p in points}, "train_size")
        for name, points in findings.curves.items():
            xs = [sizes.index(p.size) for p in points]
            ax.plot(xs, [p.mean for p in points], marker="o", label=clean_text(name))
            ax.fill_between(xs, [p.band[0] for p in points], [p.band[1] for p in points], alpha=0.2)
        ax.set_xticks(range(len(sizes)), [clean_text(str(size)) for size in sizes])
        ax.set_xlabel("train size (examples)")
        ax.set_ylabel("score (%)")
        ax.set_title("Score against train size (band: 95% bootstrap over tasks and seeds)")
        ax.legend(fontsize=7)
        out["findings-train-size.svg"] = _svg(plt, fig)
    budgets = {s: b for s, b in findings.budgets.items() if b["expected_max"]}
    if budgets:
        plt, fig = _figure()
        ax = fig.add_subplot()
        for strategy, b in budgets.items():
            label = clean_text(strategy) + (f" ({b['pruned']} trials pruned, at their best dev score)" if b.get("pruned")
                                            else "")
            ax.plot(range(1, len(b["expected_max"]) + 1), b["expected_max"], marker="o",
                    linestyle="--" if b.get("pruned") else "-", label=label)
        ax.set_xlabel("trials (k)")
        ax.set_ylabel("expected best dev score (%)")
        ax.set_title("Tuning budget (Dodge et al. 2019)")
        ax.legend(fontsize=7)
        out["findings-budget.svg"] = _svg(plt, fig)
    return out


# --- stmbench findings ----------------------------------------------------------------------------

def add_findings_parser(sub: Any, common: Any) -> None:
    fp = sub.add_parser("findings", parents=[common],
                        help="answer the study's questions from stored results: paired effects per axis, "
                             "train-size curves, tuning budgets")
    fp.add_argument("--results-dir", action="append", metavar="DIR",
                    help="a results folder or a glob of them; repeatable (default: results)")
    fp.add_argument("--task", action="append", default=[], help="only this task (repeatable)")
    fp.add_argument("--backbone", action="append", default=[], help="only this backbone (repeatable)")
    fp.add_argument("--format", choices=["md", "json", "csv"], default="md")
    fp.add_argument("--compare", metavar="AXIS=A,B",
                    help="one question, e.g. strategy=generative,discriminative or label_supervised.unmask=true,false")
    fp.add_argument("--trust-unverified", action="store_true",
                    help="also count results without predictions (their metrics cannot be recomputed)")
    fp.set_defaults(func=cmd_findings)


def cmd_findings(args: Any) -> int:
    from stmbench.common.errors import StmbenchError
    from stmbench.report.findings import AXIS_NAMES, analyse
    from stmbench.report.evidence import ResultSet
    from stmbench.store.results import expand_dirs

    only = None
    if args.compare:
        axis, _, values = args.compare.partition("=")
        pair = [v.strip() for v in values.split(",")]
        if not axis or len(pair) != 2 or not all(pair):
            raise StmbenchError(f"--compare {args.compare!r}: write AXIS=A,B, e.g. strategy=generative,discriminative")
        axis = {v: k for k, v in AXIS_NAMES.items()}.get(axis.replace("-", " "), axis.replace("-", "_"))
        only = (axis, pair[0], pair[1])
    store = ResultSet(expand_dirs(args.results_dir or ["results"]))
    results = [r for r in store.load_all() if args.trust_unverified or r.run_id not in store.unverified]
    findings = analyse(results, tasks=args.task, backbones=args.backbone, only=only)
    print(render(findings, args.format), end="")
    return 0
