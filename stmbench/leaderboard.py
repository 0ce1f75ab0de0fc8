"""Results -> ``leaderboard/README.md`` (tabulate pipe tables) and ``leaderboard/index.html`` (one
self-contained page rendered from a Jinja2 template with autoescaping).

Everything shown is computed from the stored results; the same results give byte-identical files
(the only date is the newest result's finish time).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench.results import ResultStore, atomic_write_text

ROW_KEYS = ("backbone", "adapter", "strategy", "prompt", "train_size")


def _fmt_num(x: float | None, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _config_id(result: dict[str, Any]) -> str:
    """A short id of the settings that are not row keys (training, options)."""
    spec = result["spec"]
    blob = json.dumps([spec.get("training"), spec.get("adapter_options"), spec.get("strategy_options"),
                       spec.get("skip_bad_rows")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def strategy_label(result: dict[str, Any]) -> str:
    spec = result["spec"]
    name = (result.get("labels") or {}).get("strategy") or spec["strategy"]
    shots = spec.get("shots")
    return f"{name} ({shots}-shot)" if shots is not None else name


def adapter_label(result: dict[str, Any]) -> str:
    return (result.get("labels") or {}).get("adapter") or result["spec"]["adapter"]


@dataclass
class Cell:
    values: list[float]
    run_ids: list[str]
    macro_f1: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        if len(self.values) < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    def text(self) -> str:
        out = f"{100 * self.mean:.1f}"
        if self.std is not None:
            out += f" ± {100 * self.std:.1f}"
        return out + f" ({self.n})"


@dataclass
class Row:
    key: dict[str, Any]
    cells: dict[str, Cell]
    config: str

    def average(self, tasks: list[str]) -> float | None:
        if not tasks or any(t not in self.cells for t in tasks):
            return None
        return sum(self.cells[t].mean for t in tasks) / len(tasks)


@dataclass
class Board:
    tasks: list[str]
    rows: list[Row]
    failed: list[dict[str, Any]]
    meta: dict[str, Any]
    show_config: bool = False


def build(results: list[dict[str, Any]]) -> Board:
    """Aggregate stored results into leaderboard rows (mean and std over seeds)."""
    from stmbench import __version__

    ok = [r for r in results if r.get("status") == "ok" and "accuracy" in r.get("metrics", {})]
    failed = sorted((r for r in results if r.get("status") != "ok"), key=lambda r: r["run_id"])
    groups: dict[tuple[Any, ...], Row] = {}
    tasks: set[str] = set()
    configs: dict[tuple[Any, ...], set[str]] = {}
    for r in sorted(ok, key=lambda r: r["run_id"]):
        spec = r["spec"]
        key = {"backbone": spec["backbone"], "adapter": adapter_label(r), "strategy": strategy_label(r),
               "prompt": spec.get("prompt") or "-", "train_size": str(spec["train_size"])}
        cfg = _config_id(r)
        gkey = tuple(key.values()) + (cfg,)
        configs.setdefault(tuple(key.values()), set()).add(cfg)
        row = groups.setdefault(gkey, Row(key=key, cells={}, config=cfg))
        task = spec["task"]
        tasks.add(task)
        cell = row.cells.setdefault(task, Cell([], []))
        cell.values.append(float(r["metrics"]["accuracy"]))
        cell.run_ids.append(r["run_id"])
        if "macro_f1" in r["metrics"]:
            cell.macro_f1.append(float(r["metrics"]["macro_f1"]))
    task_list = sorted(tasks)
    rows = sorted(groups.values(), key=lambda row: (
        -(row.average(task_list) if row.average(task_list) is not None else -1.0),
        tuple(str(v) for v in row.key.values()), row.config))
    synthetic = sorted({r["spec"]["task"] for r in results if (r.get("task_info") or {}).get("synthetic")})
    devices = sorted({f"{(r.get('device') or {}).get('type', '?')} ({(r.get('device') or {}).get('name', '?')})"
                      for r in ok})
    newest = max((r.get("finished_at") or "" for r in results), default="")
    meta = {"version": __version__, "generated_from": newest, "results": len(results), "ok": len(ok),
            "failed": len(failed), "devices": devices, "synthetic_tasks": synthetic}
    show_config = any(len(c) > 1 for c in configs.values())
    return Board(task_list, rows, failed, meta, show_config)


def table(board: Board) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table as text."""
    header = ["backbone", "adapter", "strategy", "prompt", "train size"]
    if board.show_config:
        header.append("config")
    header += [f"{t} (synthetic)" if t in board.meta["synthetic_tasks"] else t for t in board.tasks]
    header.append("average")
    body = []
    for row in board.rows:
        line = [str(v) for v in row.key.values()]
        if board.show_config:
            line.append(row.config)
        line += [row.cells[t].text() if t in row.cells else "" for t in board.tasks]
        avg = row.average(board.tasks)
        line.append("" if avg is None else f"{100 * avg:.1f}")
        body.append(line)
    return header, body


def describe(board: Board) -> list[str]:
    m = board.meta
    lines = [f"Generated by stmbench {m['version']} from {m['results']} stored results "
             f"({m['ok']} ok, {m['failed']} failed); newest result finished {m['generated_from'] or 'n/a'}."]
    if m["devices"]:
        lines.append(f"Hardware: {', '.join(m['devices'])}.")
    if m["synthetic_tasks"]:
        lines.append(f"SYNTHETIC data: {', '.join(m['synthetic_tasks'])} is generated by stmbench for "
                     "smoke tests; its scores say nothing about real-world accuracy.")
    lines.append("Cells: test accuracy in % as mean ± sample std over seeds (number of seeds).")
    return lines


def render_markdown(board: Board) -> str:
    from tabulate import tabulate

    header, body = table(board)
    out = ["# stmbench leaderboard", ""]
    out += [line + "  " for line in describe(board)]
    out.append("")
    out.append(tabulate(body, headers=header, tablefmt="github", disable_numparse=True) if body else "No results yet.")
    if board.failed:
        out += ["", "## Failed runs", ""]
        out.append(tabulate([[r["run_id"], _spec_text(r["spec"]), (r.get("error") or "").splitlines()[0][:200]]
                             for r in board.failed], headers=["run", "spec", "error"], tablefmt="github",
                            disable_numparse=True))
    out += ["", "Regenerate: `stmbench leaderboard --results-dir results --out leaderboard`.", ""]
    return "\n".join(out)


def _spec_text(spec: dict[str, Any]) -> str:
    return " / ".join(str(spec.get(k)) for k in ("backbone", "task", "strategy", "adapter", "prompt",
                                                 "train_size", "seed"))


def render_html(board: Board) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("stmbench", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    header, body = table(board)
    return env.get_template("leaderboard.html.j2").render(board=board, header=header, body=body,
                                                          notes=describe(board))


def write(board: Board, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    paths = [out / "README.md", out / "index.html"]
    atomic_write_text(paths[0], render_markdown(board))
    atomic_write_text(paths[1], render_html(board))
    return paths


def generate(results_dir: str | Path, out_dir: str | Path) -> tuple[Board, list[Path]]:
    board = build(ResultStore(results_dir).load_all())
    return board, write(board, out_dir)
