"""Small data files in each task's original format, generated (never copied from real data sets).

    python -m tests.fixtures DIR [TASK ...]     # writes DIR/<task>/ for each task (default: all)

Pair and NLI rows are built from the synthetic sample generator's questions; single-sentence rows
from its questions too.  The content is synthetic: only the *format* is that of the real files.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

FIXTURE_SIZES = {"train": 120, "validation": 40, "test": 40}


def synthetic_rows(task: Any, split: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows with text_a, text_b and a label *value* of ``task`` (balanced over labels)."""
    from stmbench_tasks.sample import generate_all

    offset = {"train": 0, "validation": 1, "test": 2}[split]
    pairs = generate_all(seed=seed + offset, sizes={"train": n, "validation": 0, "test": 0})["train"]
    rng = random.Random(seed + offset)
    rows = []
    for i, pair in enumerate(pairs):
        label = task.labels[i % len(task.labels)] if len(task.labels) != 2 else task.labels[pair["label"]]
        rows.append({"text_a": pair["text_a"], "text_b": pair["text_b"], "label": label.value,
                     "id": f"{split}-{i}", "extra": rng.random()})
    return rows


def _source_columns(task: Any) -> list[str]:
    """The column names of a headered TSV file: the mapped fields plus an id column."""
    fields = task.local["fields"]
    cols = [fields[k] for k in ("text_a", "text_b", "label") if k in fields]
    return ["id", *cols] if task.name == "pawsx-zh" else cols


def render_rows(task: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Lines of a file in the task's local format (no trailing newlines)."""
    fmt, fields = task.local["format"], task.local["fields"]
    lines = []
    if fmt == "jsonl":
        for r in rows:
            obj = {fields[k]: r[k] for k in ("text_a", "text_b", "label") if k in fields}
            obj["idx"] = r["id"]
            lines.append(json.dumps(obj, ensure_ascii=False))
        return lines
    if task.local.get("header"):
        cols = _source_columns(task)
        back = {v: k for k, v in fields.items()}
        lines.append("\t".join(cols))
        for r in rows:
            lines.append("\t".join(str(r["id"]) if c == "id" else str(r[back[c]]) for c in cols))
        return lines
    width = int(task.local.get("columns", len(fields)))
    for r in rows:
        cells = [""] * width
        for key, idx in fields.items():
            cells[int(idx)] = str(r[key])
        lines.append("\t".join(cells))
    return lines


def file_for(task: Any, split: str) -> str:
    files = task.local["files"][split]
    return files if isinstance(files, str) else files[0]


def write_task(task: Any, folder: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write ``folder/<task>/`` with every split in the task's original format."""
    out = folder / task.name
    out.mkdir(parents=True, exist_ok=True)
    for split, n in {**FIXTURE_SIZES, **(sizes or {})}.items():
        lines = render_rows(task, synthetic_rows(task, split, n, seed))
        (out / file_for(task, split)).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def corrupt_line(path: Path, line_no: int, kind: str, task: Any) -> None:
    """Break line ``line_no`` (1-based) of a data file in one of the ways validation must catch."""
    lines = path.read_bytes().split(b"\n")
    text = lines[line_no - 1].decode("utf-8")
    fmt = task.local["format"]
    if kind == "bad_utf8":
        lines[line_no - 1] = lines[line_no - 1][:6] + b"\xff\xfe" + lines[line_no - 1][6:]
        path.write_bytes(b"\n".join(lines))
        return
    if fmt == "jsonl":
        obj = json.loads(text)
        fields = task.local["fields"]
        if kind == "label":
            obj[fields["label"]] = "7"
        elif kind == "missing":
            del obj[fields["text_a"]]
        elif kind == "empty":
            obj[fields["text_a"]] = "  "
        elif kind == "columns":
            text = "{not json"
        text = text if kind == "columns" else json.dumps(obj, ensure_ascii=False)
    else:
        cells = text.split("\t")
        if kind == "label":
            cells[-1] = "7"
        elif kind == "empty":
            cells[0] = " "
        elif kind in ("columns", "missing"):
            cells = cells[:-1]
        text = "\t".join(cells)
    lines[line_no - 1] = text.encode("utf-8")
    path.write_bytes(b"\n".join(lines))


def main(argv: list[str]) -> int:
    from stmbench.core.session import Session, Settings

    if not argv:
        print(__doc__)
        return 2
    folder = Path(argv[0])
    session = Session(Settings(progress=False))
    names = argv[1:] or [n for n in session.catalogue.names("task") if session.get("task", n).local]
    for name in names:
        print(write_task(session.get("task", name), folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
