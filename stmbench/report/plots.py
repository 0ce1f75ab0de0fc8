"""Leaderboard figures drawn with matplotlib as deterministic SVG (fixed hash salt, no date)."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stmbench.report.board import Board, sample_std
from stmbench.common.untrusted import clean_text


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]  # accuracy in %
    err: list[float]


def _figure(width: float = 6.4, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "stmbench", "svg.fonttype": "none", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "text.parse_math": False})  # names from result files are text, never $math$
    return plt, plt.figure(figsize=(width, height))




def _svg(plt, fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prologue and doctype: the SVG is inlined in HTML
    # names from result files: no control or bidi characters (XML forbids most; they are never shown)
    text = "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs"))
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # RDF boilerplate


def size_curve(title: str, series: Sequence[Series]) -> str:
    """Accuracy against training-set size (log x axis), one line per series."""
    plt, fig = _figure()
    ax = fig.add_subplot()
    for s in series:
        ax.errorbar(s.x, s.y, yerr=s.err, marker="o", capsize=3, label=clean_text(s.label))
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(clean_text(title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(plt, fig)


def strategy_bars(title: str, labels: Sequence[str], values: Sequence[float], errors: Sequence[float]) -> str:
    """One bar per strategy (the best row of each), with the std over seeds."""
    plt, fig = _figure(6.4, 0.5 + 0.35 * max(3, len(labels)))
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    ax.barh(positions, values, xerr=errors, capsize=3, color="#4c72b0")
    ax.set_yticks(positions, [clean_text(label) for label in labels])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%)")
    ax.set_xlim(0, 100)
    for pos, value in zip(positions, values):
        if value > 85:  # no room to the right: write it inside the bar's end
            ax.text(value - 1, pos, f"{value:.1f}", va="center", ha="right", fontsize=8, color="white")
        else:
            ax.text(value + 1, pos, f"{value:.1f}", va="center", fontsize=8)
    ax.set_title(clean_text(title))
    ax.grid(axis="x", alpha=0.3)
    return _svg(plt, fig)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "task"


def board_figures(board: Board) -> dict[str, str]:
    """The leaderboard's figures (file name -> SVG): accuracy vs training-set size and the best row of
    each strategy, per task and backbone."""
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
                    points: dict[int, Any] = {}
                    for r in mine:
                        if r.key["strategy"] == strategy and r.train_examples > 0:
                            cur = points.get(r.train_examples)
                            if cur is None or r.cells[task].mean() > cur.cells[task].mean():
                                points[r.train_examples] = r
                    if len(points) >= 2:
                        xs = sorted(points)
                        series.append(Series(strategy, [float(x) for x in xs],
                                             [100 * points[x].cells[task].mean() for x in xs],
                                             [100 * (sample_std(points[x].cells[task].values("accuracy")) or 0.0)
                                              for x in xs]))
            if series:
                figures[f"train-size-{_slug(task)}-{_slug(backbone)}.svg"] = size_curve(
                    f"{task}: accuracy vs training examples ({backbone})", series)
            # strategy comparison: the best row of each strategy
            best: dict[str, Any] = {}
            for r in mine:
                s = r.key["strategy"]
                if s not in best or r.cells[task].mean() > best[s].cells[task].mean():
                    best[s] = r
            if best:
                labels = sorted(best, key=lambda s: -best[s].cells[task].mean())
                figures[f"strategies-{_slug(task)}-{_slug(backbone)}.svg"] = strategy_bars(
                    f"{task}: best row per strategy ({backbone})", labels,
                    [100 * best[s].cells[task].mean() for s in labels],
                    [100 * (sample_std(best[s].cells[task].values("accuracy")) or 0.0) for s in labels])
    return figures
