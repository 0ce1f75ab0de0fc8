"""The data readers of a task: a generator, local files in their original format (TSV, JSON lines),
or a hub data set.  Every row is validated while it is read; a bad row is a
:class:`~stmbench.common.errors.DataError` naming the file and line, or (with ``skip_bad_rows``) a count in
the run's result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stmbench.common.errors import DataError, StmbenchError
from stmbench.tasks.config import TaskConfig, TaskData

log = logging.getLogger(__name__)

Where = tuple[str, int | None]  # (file or source, line)


class BadRow(dict):
    """A placeholder row for a line that could not be parsed; validation raises its reason."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


def rows_to_data(task: TaskConfig, rows: list[dict[str, Any]], source: str, fingerprint: str,
                 report: dict[str, int]) -> TaskData:
    """Validated rows as a ``datasets.Dataset`` (label a ``ClassLabel``), duplicates counted."""
    import datasets

    if task.is_tokens:
        names = [lab.name for lab in task.labels]
        dup = len(rows) - len({tuple(r["tokens"]) for r in rows})
        features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                      "tags": datasets.Sequence(datasets.ClassLabel(names=names))})
        ds = datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in rows], "tags": [r["tags"] for r in rows]},
                                        features=features)
        return TaskData(ds, source, fingerprint, dict(report, rows=len(rows), duplicates=dup))

    columns: dict[str, list[Any]] = {"text_a": [], "text_b": [], "label": []}
    has_rationale = any("rationale" in r for r in rows)
    if has_rationale:
        columns["rationale"] = []
    seen: set[tuple[str, str]] = set()
    dup = 0
    for r in rows:
        key = (r["text_a"], r.get("text_b") or "")
        dup += key in seen
        seen.add(key)
        columns["text_a"].append(r["text_a"])
        columns["text_b"].append(r.get("text_b") or "")
        columns["label"].append(r["label"])
        if has_rationale:
            columns["rationale"].append(r.get("rationale") or "")
    report = dict(report, rows=len(rows), duplicates=dup)
    features = datasets.Features({
        "text_a": datasets.Value("string"), "text_b": datasets.Value("string"),
        "label": datasets.ClassLabel(names=[lab.name for lab in task.labels]),
        **({"rationale": datasets.Value("string")} if has_rationale else {}),
    })
    return TaskData(datasets.Dataset.from_dict(columns, features=features), source, fingerprint, report)


def validate_row(task: TaskConfig, raw: dict[str, Any], where: Where) -> dict[str, Any] | None:
    """Check one row already mapped to text_a/text_b/label; return it normalised, ``None`` for a row
    with an ignored label, or raise DataError."""
    path, line = where
    if isinstance(raw, BadRow):
        raise DataError(path, line, raw.reason)
    if task.is_tokens:
        return _validate_tokens(task, raw, where)
    needed = ["text_a", "label"] + (["text_b"] if task.is_pair else [])
    for name in needed:
        if raw.get(name) is None:
            raise DataError(path, line, f"missing field {task.field_name(name)!r}")
    for name in needed[:1] + needed[2:]:
        if not isinstance(raw[name], str):
            raise DataError(path, line, f"field {task.field_name(name)!r} is not text: {raw[name]!r}")
        if not raw[name].strip():
            raise DataError(path, line, f"empty text in field {task.field_name(name)!r}")
    value = str(raw["label"]).strip()
    if value in task.ignore_labels:
        return None
    index = {lab.value: i for i, lab in enumerate(task.labels)}.get(value)
    if index is None:
        known = ", ".join(lab.value for lab in task.labels)
        raise DataError(path, line, f"label {value!r} is not one of the task's labels ({known})")
    row = {"text_a": raw["text_a"].strip(), "text_b": (raw.get("text_b") or "").strip(), "label": index}
    if raw.get("rationale"):
        row["rationale"] = str(raw["rationale"])
    return row


def _validate_tokens(task: TaskConfig, raw: dict[str, Any], where: Where) -> dict[str, Any]:
    path, line = where
    tokens, tags = raw.get("tokens"), raw.get("tags")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise DataError(path, line, "a sentence needs a non-empty list of non-empty tokens")
    if not isinstance(tags, list) or len(tags) != len(tokens):
        raise DataError(path, line, f"{len(tokens)} tokens but {len(tags) if isinstance(tags, list) else 'no'} tags")
    index = {lab.value: i for i, lab in enumerate(task.labels)}
    unknown = sorted({str(t) for t in tags if str(t) not in index})
    if unknown:
        raise DataError(path, line, f"tag(s) {', '.join(map(repr, unknown))} not among the task's labels "
                                    f"({', '.join(index)})")
    return {"tokens": [t.strip() for t in tokens], "tags": [index[str(t)] for t in tags]}


def parse_conll(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """CoNLL-style sentences: one ``token<whitespace>tag`` per line (the tag is the last field), a
    blank line between sentences, ``-DOCSTART-`` lines skipped; yields ``(line, row)`` per sentence
    (a sentence with a malformed line is a bad row at that line)."""
    tokens: list[str] = []
    tags: list[str] = []
    start, bad = 1, None
    for line_no, raw_line in enumerate(data.splitlines() + [b""], 1):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = bad or (line_no, f"bytes that are not UTF-8 at column {exc.start + 1}")
            continue
        fields = text.lstrip("\ufeff").split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if bad:
                yield bad[0], BadRow(bad[1])
            elif tokens:
                yield start, {"tokens": tokens, "tags": tags}
            tokens, tags, start, bad = [], [], line_no + 1, None
        elif len(fields) < 2:
            bad = bad or (line_no, f"expected a token and its tag, found {text.strip()!r}")
        else:
            tokens.append(fields[0])
            tags.append(fields[-1])


def collect(task: TaskConfig, raw_rows: Iterable[tuple[dict[str, Any], Where]],
            skip_bad_rows: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Validate ``(raw row, (file, line))`` pairs: keep the good rows, drop ignored labels, and raise
    on a bad row (or, with ``skip_bad_rows``, count it and go on)."""
    rows, bad, ignored = [], 0, 0
    for raw, where in raw_rows:
        try:
            row = validate_row(task, raw, where)
        except DataError as exc:
            if not skip_bad_rows:
                raise
            log.warning("skipped bad row: %s", exc)
            bad += 1
            continue
        if row is None:
            ignored += 1
        else:
            rows.append(row)
    return rows, {"bad_rows": bad, "ignored": ignored}


MAX_GENERATOR_INT = 10_000_000  #: the largest number a task file may hand a generator (sizes, seeds)


def find_generator(task: TaskConfig, generators: Iterable[Any]) -> Any:
    """The registered generator a task's ``generator:`` names (``name:``, or ``function: module:attr``
    as a registered generator declares it); a task file never makes stmbench import code."""
    spec = task.generator or {}
    wanted = spec.get("name") or spec.get("function")
    found = [g for g in generators if g.name == wanted or (g.function and g.function == wanted)]
    if not found:
        known = ", ".join(sorted(f"{g.name} ({g.function})" if g.function else g.name for g in generators)) or "none"
        raise StmbenchError(f"task {task.name!r}: generator {wanted!r} is not registered by any plugin "
                            f"(registered: {known}); a task file names a registered generator, never code")
    return found[0]


def generator_options(task: TaskConfig) -> dict[str, Any]:
    """The keyword arguments a task file hands its generator: scalars, numbers bounded."""
    options = {k: v for k, v in (task.generator or {}).items() if k not in ("name", "function")}
    for key, value in options.items():
        if not isinstance(value, (str, int, float, bool)) or (
                isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_GENERATOR_INT):
            raise StmbenchError(f"task {task.name!r}: generator option {key!r} must be a number up to "
                                f"{MAX_GENERATOR_INT:,}, a text or true/false, not {str(value)[:40]!r}")
    return options


def load_generated(task: TaskConfig, split: str, generators: Iterable[Any] = ()) -> TaskData:
    """A split from the registered generator the task names (synthetic data)."""
    generator = find_generator(task, list(generators))
    spec = generator_options(task)
    target = (task.generator or {}).get("function") or (task.generator or {}).get("name")
    rows = generator.generate(split=split, labels=task.labels, **spec)
    where = f"generator {target}"
    out, report = collect(task, ((raw, (where, i)) for i, raw in enumerate(rows, 1)), skip_bad_rows=False)
    fp = hashlib.sha256(json.dumps([target, spec, split], sort_keys=True).encode()).hexdigest()[:16]
    return rows_to_data(task, out, f"{where} (synthetic)", fp, report)


def load_local(task: TaskConfig, folder: Path, split: str, skip_bad_rows: bool) -> TaskData:
    """A split from the task's original files in ``folder``."""
    from stmbench.common.untrusted import DATA_BYTES, contained, read_bytes

    names = task.file_names(split)
    if not names:
        raise StmbenchError(f"task {task.name!r} has no local file for split {split!r}")
    paths = [contained(n, folder, "data file") for n in names]  # no '..', no absolute path, no link out
    path = next((p for p in paths if os.path.lexists(p)), None)
    if path is None:
        raise StmbenchError(f"task {task.name!r}: none of {', '.join(names)} found in {folder} for split {split!r}")
    data = read_bytes(path, limit=DATA_BYTES, root=folder)  # a regular file, links only inside the folder
    parsed = parse_conll(path, data) if task.is_tokens else parse_local(task, path, data)
    rows, report = collect(task, ((raw, (str(path), line_no)) for line_no, raw in parsed), skip_bad_rows)
    return rows_to_data(task, rows, str(path), hashlib.sha256(data).hexdigest()[:16], report)


def parse_local(task: TaskConfig, path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, row dict)``; undecodable or malformed lines yield a row that fails
    validation with its reason (so ``skip_bad_rows`` applies to them too)."""
    local = task.local or {}
    fields: dict[str, Any] = local.get("fields", {})
    header = bool(local.get("header", False))
    columns: list[str] | None = None
    for line_no, raw_line in enumerate(data.splitlines(), 1):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, BadRow(f"bytes that are not UTF-8 at column {exc.start + 1}")
            continue
        if line_no == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        if local["format"] == "jsonl":
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, BadRow(f"not valid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                yield line_no, BadRow("a JSON line must be an object")
                continue
            yield line_no, {k: obj.get(src) for k, src in fields.items()}
            continue
        cells = next(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
        if header and columns is None:
            columns = cells
            missing = [src for src in fields.values() if isinstance(src, str) and src not in columns]
            if missing:
                raise DataError(str(path), line_no, f"header lacks column(s) {', '.join(missing)}")
            continue
        width = len(columns) if columns else int(local.get("columns", len(fields)))
        if len(cells) != width:
            yield line_no, BadRow(f"expected {width} tab-separated columns, found {len(cells)}")
            continue
        row = {}
        for key, src in fields.items():
            idx = columns.index(src) if isinstance(src, str) and columns else int(src)
            row[key] = cells[idx]
        yield line_no, row


def local_hint(task: TaskConfig, split: str) -> str:
    names = task.file_names(split)
    return f"pass --data-dir DIR with the original files, e.g. DIR/{task.name}/{names[0]}" if names else ""


def load_hub(task: TaskConfig, split: str, skip_bad_rows: bool) -> TaskData:
    """A split of the task's hub data set (``datasets.load_dataset``; offline: a clear error)."""
    from stmbench.common.hub import load_hub_dataset

    hub = task.hub or {}
    hub_split = hub.get("splits", {}).get(split, split)
    ds = load_hub_dataset(hub["path"], hub.get("name"), hub_split, task=task.name,
                          local_hint=local_hint(task, split) if task.local else "")
    fields = hub.get("fields", {})
    label_feature = ds.features.get(fields.get("label", "label"))
    int2str = getattr(label_feature, "int2str", None)
    where = f"hub {hub['path']}" + (f" ({hub['name']})" if hub.get("name") else "") + f" split {hub_split}"

    def mapped() -> Iterator[tuple[dict[str, Any], Where]]:
        for i, raw in enumerate(ds, 1):
            row = {k: raw.get(src) for k, src in fields.items()}
            if int2str is not None and isinstance(row.get("label"), int):
                if row["label"] < 0:  # ClassLabel -1: the split's labels are hidden
                    raise StmbenchError(f"{where} has no labels (hidden test split); evaluate on 'validation'")
                row["label"] = int2str(row["label"])
            yield row, (where, i)

    rows, report = collect(task, mapped(), skip_bad_rows)
    return rows_to_data(task, rows, where, ds._fingerprint, report)
