"""Rationale sets: what a teacher wrote for the rows of one task split, cached and resumable.

A set is keyed by what decides its text: the task, the split's data fingerprint, the teacher and the
options that change generation (:meth:`Teacher.set_options`), and the teacher prompt's hash.  It is one
JSONL file under ``<cache>/rationales/<task>/<key>.jsonl``: a header line, then one line per row,
appended and flushed chunk by chunk as the teacher yields, so a killed generation continues after
the last chunk written (a torn last line is dropped).  A file lock keeps two workers of one grid from
generating the same rows twice; every ``cot`` run that shares the set reads the same file.

Each row is cut after its first final answer and checked when it is written
(:func:`stmbench.core.teacher.end_at_answer`, :func:`stmbench.core.teacher.classify`): consistent,
contradicting its gold label, without a final answer, empty, or past its length budget.  The teacher
option ``keep`` decides what trains: ``consistent`` (STaR-style filtering, the default) or ``all``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmbench.common.errors import StmbenchError
from stmbench.core.teacher import (KEEP, STATUSES, TeacherAnswer, TeacherPrompt, TeacherRequest, classify, end_at_answer,
                                   split_rationale)

if TYPE_CHECKING:  # pragma: no cover
    from stmbench.core.session import Session
    from stmbench.tasks.task import Task, TaskData

log = logging.getLogger(__name__)

FORMAT = "stmbench-rationales"
VERSION = 1
MAX_TEXT = 16_000  #: characters of one teacher answer that are kept (a longer one is ``too_long``)
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class Selected:
    """The rationales one run trains on: the rows kept, their reasoning texts, and the record stored
    in the run's result (``data.rationales``)."""

    rows: list[int]
    texts: list[str]
    record: dict[str, Any]


class RationaleSet:
    """One cached set (see the module docstring)."""

    def __init__(self, path: Path, header: dict[str, Any], task: Task, data: TaskData, session: Session,
                 options: dict[str, Any]):
        self.path, self.header, self.task, self.data, self.session = path, header, task, data, session
        self.options = options  #: the teacher's options, runtime ones included

    @classmethod
    def of(cls, session: Session, task: Task, data: TaskData, split: str, teacher: str,
           options: dict[str, Any]) -> RationaleSet:
        plugin = session.get("teacher", teacher)
        header = {"format": FORMAT, "version": VERSION, "task": task.name, "split": split,
                  "data_fingerprint": data.fingerprint, "teacher": teacher,
                  "teacher_options": plugin.set_options(plugin.options(options)),
                  "prompt_sha256": TeacherPrompt.of(task).sha256}
        blob = json.dumps(header, sort_keys=True, ensure_ascii=False, default=str)
        key = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
        return cls(session.settings.cache_dir / "rationales" / task.name / f"{key}.jsonl", header, task, data, session,
                   plugin.options(options))

    @property
    def key(self) -> str:
        return self.path.stem

    # -- reading --------------------------------------------------------------------------------
    def read(self, *, repair: bool = False) -> dict[int, dict[str, Any]]:
        """The rows written so far (``row -> entry``).  A last line cut off mid-write is dropped (and,
        with ``repair``, cut from the file so appending continues cleanly)."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        good = raw.rfind(b"\n") + 1  # everything after the last newline is a torn write
        if repair and good < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
            log.info("rationale set %s: dropped a line cut off mid-write", self.path)
        lines = raw[:good].decode("utf-8").splitlines()
        if not lines:
            return {}
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if header != self.header:
            raise StmbenchError(f"{self.path}: not the rationale set it is named for (its header differs); remove it")
        out: dict[int, dict[str, Any]] = {}
        for number, line in enumerate(lines[1:], 2):
            try:
                entry = json.loads(line)
                out[int(entry["row"])] = entry
            except (ValueError, KeyError, TypeError) as exc:
                raise StmbenchError(f"{self.path}, line {number}: not a rationale entry ({exc})") from None
        return out

    # -- generating -----------------------------------------------------------------------------
    def ensure(self, rows: list[int], *, progress: bool = False) -> dict[int, dict[str, Any]]:
        """The entries of ``rows``, generating those the set lacks (under a file lock)."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            have = self.read(repair=True)
            missing = [r for r in dict.fromkeys(rows) if r not in have]
            if missing:
                self._generate(missing, have, progress=progress)
        return {r: have[r] for r in rows}

    def _generate(self, missing: list[int], have: dict[int, dict[str, Any]], *, progress: bool) -> None:
        from tqdm.auto import tqdm

        teacher = self.session.get("teacher", self.header["teacher"])
        options = teacher.typed_options(self.options)
        budget = int(getattr(options, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        prompt = TeacherPrompt.of(self.task)
        examples = self.data.dataset.select(missing).to_list()
        requests = [TeacherRequest(messages=prompt.messages(self.task, ex), example=ex, task=self.task.name,
                                   split=self.header["split"], max_new_tokens=budget) for ex in examples]
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        label = teacher.display(self.header["teacher_options"])
        log.info("rationales for %s/%s: %d row(s) to write with teacher %s (%d already in %s)", self.task.name,
                 self.header["split"], len(missing), label, len(have), self.path)
        done = 0
        with open(self.path, "a", encoding="utf-8") as fh, \
                tqdm(total=len(missing), desc=f"rationales {self.task.name}/{self.header['split']} ({label})",
                     unit="row", disable=not progress) as bar:
            if fresh:
                fh.write(json.dumps(self.header, ensure_ascii=False, sort_keys=True) + "\n")
            for chunk in teacher.generate(requests, task=self.task, options=options, context=self.session.context):
                chunk = list(chunk)
                if done + len(chunk) > len(requests):
                    raise StmbenchError(f"teacher {teacher.name!r} gave more answers than it was asked for")
                for answer in chunk:
                    entry = self._entry(missing[done], answer, examples[done])
                    have[entry["row"]] = entry
                    fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    done += 1
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(chunk))
        if done != len(requests):
            raise StmbenchError(f"teacher {teacher.name!r} answered {done} of {len(requests)} requests")

    def _entry(self, row: int, answer: Any, example: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(answer, TeacherAnswer) or not isinstance(answer.text, str):
            raise StmbenchError(f"teacher {self.header['teacher']!r} yielded {type(answer).__name__}, not a TeacherAnswer")
        if len(answer.text) > MAX_TEXT:
            answer = TeacherAnswer(answer.text[:MAX_TEXT], truncated=True)
        answer = end_at_answer(answer, self.task)  # a rationale ends in its (first) answer
        return {"row": row, "text": answer.text, "truncated": bool(answer.truncated),
                "status": classify(answer, int(example["label"]), self.task)}


def counts_of(entries: list[dict[str, Any]]) -> dict[str, int]:
    seen = Counter(e["status"] for e in entries)
    return {status: seen.get(status, 0) for status in STATUSES}


def select(session: Session, task: Task, data: TaskData, split: str, rows: list[int], *, teacher: str,
           options: dict[str, Any], progress: bool = False) -> Selected:
    """The rationales of ``rows`` from the set of ``teacher`` (generated where missing), filtered by
    the teacher's ``keep`` option, and the record a result stores."""
    rationale_set = RationaleSet.of(session, task, data, split, teacher, options)
    entries = rationale_set.ensure(rows, progress=progress)
    keep = str(options.get("keep", "consistent"))
    if keep not in KEEP:
        raise StmbenchError(f"teacher option keep={keep!r}: use one of {', '.join(KEEP)}")
    kept = [r for r in rows if keep == "all" or entries[r]["status"] == "consistent"]
    texts = [split_rationale(entries[r]["text"], task) for r in kept]
    counts = counts_of([entries[r] for r in rows])
    plugin = session.get("teacher", teacher)
    if not kept:
        raise StmbenchError(f"teacher {plugin.display(options)}: none of the {len(rows)} rationales is consistent with "
                            f"its gold label ({', '.join(f'{k} {v}' for k, v in counts.items() if v)}); "
                            "use the teacher option keep=all to train on them anyway")
    digest = hashlib.sha256(json.dumps([kept, texts], ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    record = {"source": "teacher", "teacher": teacher, "teacher_label": plugin.display(options),
              "set": rationale_set.key, "prompt_sha256": rationale_set.header["prompt_sha256"],
              "rows": len(rows), "counts": counts, "keep": keep, "kept": len(kept), "sha256": digest}
    log.info("rationales of %s from %s: %s; %d kept (keep=%s)", task.name, record["teacher_label"],
             ", ".join(f"{k} {v}" for k, v in counts.items()), len(kept), keep)
    return Selected(rows=kept, texts=texts, record=record)


def cached_sets(session: Session, task: Task) -> list[tuple[Path, dict[str, Any], int]]:
    """``(path, header, rows written)`` of every cached set of ``task``, newest first."""
    folder = session.settings.cache_dir / "rationales" / task.name
    out = []
    for path in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []:
        try:
            with open(path, encoding="utf-8") as fh:
                header = json.loads(fh.readline())
                rows = sum(1 for line in fh if line.endswith("\n"))
        except (OSError, ValueError):
            continue
        if isinstance(header, dict) and header.get("format") == FORMAT:
            out.append((path, header, rows))
    return out
