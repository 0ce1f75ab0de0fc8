"""Tasks as data: a task YAML file becomes a :class:`Task`.

A task says where its data comes from (a generator, local files in their original format under
``--data-dir``, or a hub data set loaded with ``datasets``), which fields hold ``text_a``,
``text_b`` and the label, the labels with their verbalizer words, its prompt templates and metrics.
Every row is validated while it is read; a bad row is a :class:`~stmbench.errors.DataError` naming
the file and line, or (with ``skip_bad_rows``) a count in the run's result.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from stmbench.errors import DataError, StmbenchError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
KINDS = ("pair", "nli", "single")
METRICS = ("accuracy", "macro_f1")
PLACEHOLDERS = {"text_a", "text_b"}


@dataclass(frozen=True)
class Label:
    """One class: ``value`` as written in the original files, a readable ``name``, and the
    verbalizer ``word`` a generative model answers with."""

    value: str
    name: str
    word: str


@dataclass
class TaskData:
    """One loaded split: a ``datasets.Dataset`` with ``text_a``, ``text_b``, ``label`` (label index)
    and, where the source has one, ``rationale``; plus what validation counted."""

    dataset: datasets.Dataset
    source: str
    fingerprint: str
    report: dict[str, int] = field(default_factory=dict)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise StmbenchError(f"{where}: {msg}")


class Task:
    """A classification task over one sentence or a sentence pair.  Usually built from YAML by
    :func:`load_task_file`; a plugin may also subclass it and override :meth:`load`."""

    kind_name: ClassVar[str] = "task"
    kind = "task"  # the catalogue kind (the task's own kind is ``task_kind``)

    def __init__(self, config: dict[str, Any], path: str | None = None):
        where = path or f"task {config.get('name')!r}"
        self.path = path
        self.config = config
        self.name: str = config.get("name", "")
        _check(bool(self.name) and isinstance(self.name, str), where, "a task needs a 'name'")
        self.description: str = config.get("description", "")
        self.task_kind: str = config.get("kind", "pair")
        _check(self.task_kind in KINDS, where, f"kind must be one of {', '.join(KINDS)}")
        self.synthetic: bool = bool(config.get("synthetic", False))
        self.citation: str = config.get("citation", "")
        raw_labels = config.get("labels") or []
        _check(isinstance(raw_labels, list) and len(raw_labels) >= 2, where, "a task needs a list of at least two labels")
        for i, lab in enumerate(raw_labels, 1):
            _check(isinstance(lab, dict), where, f"label {i} must be a mapping with 'value' and 'word'")
            for key in ("value", "word"):
                _check(lab.get(key) not in (None, ""), where, f"label {i} ({lab.get('value', '?')!r}) has no {key!r}")
        self.labels = [Label(str(lab["value"]), str(lab.get("name", lab["value"])), str(lab["word"]))
                       for lab in raw_labels]
        values = [lab.value for lab in self.labels]
        _check(len(set(values)) == len(values), where, "label values must be distinct")
        words = [lab.word for lab in self.labels]
        _check(len(set(words)) == len(words), where, "verbalizer words must be distinct")
        self.ignore_labels = {str(v) for v in config.get("ignore_labels", [])}
        self.prompts: dict[str, str] = dict(config.get("prompts") or {})
        _check(bool(self.prompts), where, "a task needs at least one prompt template")
        needed = {"text_a"} if self.task_kind == "single" else {"text_a", "text_b"}
        for pname, template in self.prompts.items():
            _check(isinstance(template, str), where, f"prompt {pname!r} must be a text template")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:  # an unbalanced { or }
                raise StmbenchError(f"{where}: prompt {pname!r} is not a valid template ({exc}; write "
                                    "{{ and }} for literal braces)") from None
            _check(fields <= PLACEHOLDERS, where, f"prompt {pname!r} uses unknown fields {sorted(fields - PLACEHOLDERS)}")
            _check(needed <= fields, where, f"prompt {pname!r} must use {sorted(needed)}")
        self.answer_marker: str = config.get("answer_marker", "答案：")
        self.metrics: list[str] = list(config.get("metrics", ["accuracy", "macro_f1"]))
        _check(set(self.metrics) <= set(METRICS), where, f"metrics must be among {', '.join(METRICS)}")
        self.eval_split: str = config.get("eval_split", "test")
        _check(self.eval_split in SPLITS, where, f"eval_split must be one of {', '.join(SPLITS)}")
        self.eval_note: str = config.get("eval_note", "")
        self.generator: dict[str, Any] | None = config.get("generator")
        self.hub: dict[str, Any] | None = config.get("hub")
        self.local: dict[str, Any] | None = config.get("local")
        _check(bool(self.generator or self.hub or self.local), where,
               "a task needs a data source: 'generator', 'hub' or 'local'")
        if self.local:
            _check(self.local.get("format") in ("tsv", "jsonl"), where, "local.format must be 'tsv' or 'jsonl'")

    # -- description ------------------------------------------------------------------------
    @property
    def label_words(self) -> list[str]:
        return [lab.word for lab in self.labels]

    @property
    def is_pair(self) -> bool:
        return self.task_kind != "single"

    def sources(self) -> list[str]:
        out = []
        if self.generator:
            out.append("generated (synthetic)")
        if self.local:
            out.append(f"--data-dir/{self.name}/ ({self.local['format']})")
        if self.hub:
            cfg = f" ({self.hub['name']})" if self.hub.get("name") else ""
            out.append(f"hub {self.hub['path']}{cfg}")
        return out

    def render(self, prompt: str, example: dict[str, Any]) -> str:
        """The prompt text for one example (no answer)."""
        try:
            template = self.prompts[prompt]
        except KeyError:
            from stmbench.errors import UnknownNameError

            raise UnknownNameError(f"prompt of task {self.name!r}", prompt, self.prompts) from None
        return template.format(text_a=example["text_a"], text_b=example.get("text_b") or "")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.task_kind,
            "description": self.description,
            "synthetic": self.synthetic,
            "labels": [{"value": lab.value, "name": lab.name, "word": lab.word} for lab in self.labels],
            "prompts": sorted(self.prompts),
            "metrics": self.metrics,
            "eval_split": self.eval_split,
            "eval_note": self.eval_note,
            "sources": self.sources(),
            "path": self.path,
        }

    # -- loading ------------------------------------------------------------------------------
    def load(self, split: str, *, data_dir: Path | None = None, skip_bad_rows: bool = False) -> TaskData:
        """Load one split, from the generator, ``data_dir/<name>/``, or the hub (in that order)."""
        if split not in SPLITS:
            raise StmbenchError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        if self.generator:
            return self._load_generated(split)
        if data_dir is not None and self.local:
            folder = Path(data_dir) / self.name
            if folder.is_dir():
                return self._load_local(folder, split, skip_bad_rows)
            if not self.hub:
                raise StmbenchError(f"task {self.name!r}: no folder {folder}")
            log.info("task %s: no folder %s, trying the hub", self.name, folder)
        if self.hub:
            return self._load_hub(split, skip_bad_rows)
        raise StmbenchError(
            f"task {self.name!r} is loaded from local files: pass --data-dir DIR with DIR/{self.name}/ "
            f"holding {self._file_names(split)}"
        )

    def _label_index(self) -> dict[str, int]:
        return {lab.value: i for i, lab in enumerate(self.labels)}

    def _rows_to_data(self, rows: list[dict[str, Any]], source: str, fingerprint: str, report: dict[str, int]) -> TaskData:
        import datasets

        columns = {"text_a": [], "text_b": [], "label": []}
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
            "label": datasets.ClassLabel(names=[lab.name for lab in self.labels]),
            **({"rationale": datasets.Value("string")} if has_rationale else {}),
        })
        ds = datasets.Dataset.from_dict(columns, features=features)
        return TaskData(ds, source, fingerprint, report)

    def _validate(self, raw: dict[str, Any], where: tuple[str, int | None]) -> dict[str, Any] | None:
        """Check one row already mapped to text_a/text_b/label; return it normalised, ``None`` for a
        row with an ignored label, or raise DataError."""
        path, line = where
        if isinstance(raw, _BadRow):
            raise DataError(path, line, raw.reason)
        needed = ["text_a", "label"] + (["text_b"] if self.is_pair else [])
        for name in needed:
            if raw.get(name) is None:
                raise DataError(path, line, f"missing field {self._field_name(name)!r}")
        for name in needed[:1] + needed[2:]:
            if not isinstance(raw[name], str):
                raise DataError(path, line, f"field {self._field_name(name)!r} is not text: {raw[name]!r}")
            if not raw[name].strip():
                raise DataError(path, line, f"empty text in field {self._field_name(name)!r}")
        value = str(raw["label"]).strip()
        if value in self.ignore_labels:
            return None
        index = self._label_index().get(value)
        if index is None:
            known = ", ".join(lab.value for lab in self.labels)
            raise DataError(path, line, f"label {value!r} is not one of the task's labels ({known})")
        row = {"text_a": raw["text_a"].strip(), "text_b": (raw.get("text_b") or "").strip(), "label": index}
        if raw.get("rationale"):
            row["rationale"] = str(raw["rationale"])
        return row

    def _field_name(self, name: str) -> str:
        fields = (self.local or {}).get("fields", {})
        return str(fields.get(name, name))

    # generator ----------------------------------------------------------------------------
    def _load_generated(self, split: str) -> TaskData:
        spec = dict(self.generator or {})
        target = spec.pop("function")
        module, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        rows = fn(split=split, labels=self.labels, **spec)
        where = f"generator {target}"
        out, report = self._collect(((raw, (where, i)) for i, raw in enumerate(rows, 1)), skip_bad_rows=False)
        fp = hashlib.sha256(json.dumps([target, spec, split], sort_keys=True).encode()).hexdigest()[:16]
        return self._rows_to_data(out, f"{where} (synthetic)", fp, report)

    # local files --------------------------------------------------------------------------
    def _file_names(self, split: str) -> list[str]:
        files = (self.local or {}).get("files", {}).get(split)
        if files is None:
            return []
        return [files] if isinstance(files, str) else list(files)

    def _load_local(self, folder: Path, split: str, skip_bad_rows: bool) -> TaskData:
        names = self._file_names(split)
        if not names:
            raise StmbenchError(f"task {self.name!r} has no local file for split {split!r}")
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is None:
            raise StmbenchError(
                f"task {self.name!r}: none of {', '.join(names)} found in {folder} for split {split!r}"
            )
        data = path.read_bytes()
        fmt = self.local["format"]  # type: ignore[index]
        rows, report = self._collect(((raw, (str(path), line_no)) for line_no, raw in self._parse_local(path, data, fmt)),
                                     skip_bad_rows)
        return self._rows_to_data(rows, str(path), hashlib.sha256(data).hexdigest()[:16], report)

    def _collect(self, raw_rows: Any, skip_bad_rows: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Validate ``(raw row, (file, line))`` pairs: keep the good rows, drop ignored labels, and
        raise on a bad row (or, with ``skip_bad_rows``, count it and go on)."""
        rows, bad, ignored = [], 0, 0
        for raw, where in raw_rows:
            try:
                row = self._validate(raw, where)
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

    def _parse_local(self, path: Path, data: bytes, fmt: str):
        """Yield ``(line number, row dict)``; undecodable or malformed lines yield a row that fails
        validation with its reason (so ``skip_bad_rows`` applies to them too)."""
        fields: dict[str, Any] = self.local.get("fields", {})  # type: ignore[union-attr]
        header = bool(self.local.get("header", False))  # type: ignore[union-attr]
        columns: list[str] | None = None
        for line_no, raw_line in enumerate(data.splitlines(), 1):
            try:
                text = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, _BadRow(f"bytes that are not UTF-8 at column {exc.start + 1}")
                continue
            if line_no == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            if fmt == "jsonl":
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield line_no, _BadRow(f"not valid JSON: {exc.msg}")
                    continue
                if not isinstance(obj, dict):
                    yield line_no, _BadRow("a JSON line must be an object")
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
            width = len(columns) if columns else int(self.local.get("columns", len(fields)))  # type: ignore[union-attr]
            if len(cells) != width:
                yield line_no, _BadRow(f"expected {width} tab-separated columns, found {len(cells)}")
                continue
            row = {}
            for key, src in fields.items():
                idx = columns.index(src) if isinstance(src, str) and columns else int(src)
                row[key] = cells[idx]
            yield line_no, row

    # hub ------------------------------------------------------------------------------------
    def _load_hub(self, split: str, skip_bad_rows: bool) -> TaskData:
        from stmbench.hub import load_hub_dataset

        hub = self.hub or {}
        hub_split = hub.get("splits", {}).get(split, split)
        ds = load_hub_dataset(hub["path"], hub.get("name"), hub_split, task=self.name,
                              local_hint=self._local_hint(split) if self.local else "")
        fields = hub.get("fields", {})
        label_feature = ds.features.get(fields.get("label", "label"))
        int2str = getattr(label_feature, "int2str", None)
        where = f"hub {hub['path']}" + (f" ({hub['name']})" if hub.get("name") else "") + f" split {hub_split}"

        def mapped():
            for i, raw in enumerate(ds, 1):
                row = {k: raw.get(src) for k, src in fields.items()}
                if int2str is not None and isinstance(row.get("label"), int):
                    if row["label"] < 0:  # ClassLabel -1: the split's labels are hidden
                        raise StmbenchError(f"{where} has no labels (hidden test split); evaluate on 'validation'")
                    row["label"] = int2str(row["label"])
                yield row, (where, i)

        rows, report = self._collect(mapped(), skip_bad_rows)
        return self._rows_to_data(rows, where, ds._fingerprint, report)

    def _local_hint(self, split: str) -> str:
        names = self._file_names(split)
        return f"pass --data-dir DIR with the original files, e.g. DIR/{self.name}/{names[0]}" if names else ""


class _BadRow(dict):
    """A placeholder row for a line that could not be parsed; validation raises its reason."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


def load_task_file(path: str | Path) -> Task:
    """Read one task YAML file into a :class:`Task` (errors name the file)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StmbenchError(f"{path}: cannot read task file: {exc}") from exc
    if not isinstance(config, dict):
        raise StmbenchError(f"{path}: a task file must be a YAML mapping")
    config.setdefault("name", path.stem)
    return Task(config, str(path))


def load_task_dir(folder: str | Path) -> list[Task]:
    """Every ``*.yaml`` / ``*.yml`` task file in ``folder``, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StmbenchError(f"task folder {folder} does not exist")
    return [load_task_file(p) for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml")]
