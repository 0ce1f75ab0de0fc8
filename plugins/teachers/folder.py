"""The ``folder`` teacher: rationales a user brings (``--rationales DIR``, the same as
``--teacher "folder[path=DIR]"``), in the layout ``stmbench rationales export`` writes.

``DIR/<task>/<split>.jsonl`` (or ``DIR/<task>.jsonl``): one JSON object per line with ``text_a``,
``text_b`` and ``rationale`` (the teacher's text, ending in its answer after the task's answer marker),
maybe ``truncated`` (``true``: it stopped at its length budget); ``label`` and anything else are
ignored.  Rows are matched by their texts; a row the folder lacks
gets an empty rationale (counted ``empty``).  The folder is read as untrusted: files inside it only,
no links out of it, bounded in size, a malformed line named by file and line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench import hookimpl, StmbenchError, Teacher, TeacherAnswer, TeacherOptions, TeacherRequest

MAX_BYTES = 512 * 1024 * 1024  #: one rationale file


@dataclass
class FolderTeacherOptions(TeacherOptions):
    path: str = field(default="", metadata={"help": "the folder of rationales"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError("the folder teacher needs path=DIR")


def _files(root: Path, task: str, split: str) -> list[Path]:
    return [root / task / f"{split}.jsonl", root / f"{task}.jsonl"]


def read_rationales(root: str | Path, task: str, split: str) -> dict[tuple[str, str], TeacherAnswer] | None:
    """``(text_a, text_b) -> answer`` of one task split in the folder, or ``None`` without a file."""
    from stmbench import read_untrusted_bytes

    root = Path(root)
    for path in _files(root, task, split):
        if not (path.exists() or path.is_symlink()):
            continue
        if not path.resolve().is_relative_to(root.resolve()):
            raise StmbenchError(f"{path}: leads out of the folder {root} (not followed)")
        data = read_untrusted_bytes(path, limit=MAX_BYTES, root=root)
        out: dict[tuple[str, str], TeacherAnswer] = {}
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise StmbenchError(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k, ""), str) for k in ("text_a", "text_b", "rationale")) \
                    or not row.get("text_a"):
                raise StmbenchError(f"{path}, line {number}: needs text_a, text_b and rationale as text")
            out[(row["text_a"], row.get("text_b", ""))] = TeacherAnswer(row.get("rationale", ""),
                                                                        truncated=row.get("truncated") is True)
        return out
    return None


class FolderTeacher(Teacher):
    name = "folder"
    description = "rationales a user brings: DIR/<task>/<split>.jsonl (what stmbench rationales export writes)"
    options_class = FolderTeacherOptions

    def set_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The path and a hash of the folder's rationale files (so an edited folder is a new set)."""
        from stmbench import read_untrusted_bytes

        root = Path(options["path"])
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.jsonl")) if root.is_dir() else []:
            if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(root.resolve()):
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(hashlib.sha256(read_untrusted_bytes(path, limit=MAX_BYTES, root=root)).digest())
        return {"path": options["path"], "sha256": digest.hexdigest()[:16]}

    def preflight(self, options: Any, context: Any) -> str | None:
        if not Path(options.path).is_dir():
            return f"teacher folder: --rationales {options.path}: no such folder"
        return None

    def generate(self, requests: list[TeacherRequest], *, task: Any, options: Any,
                 context: Any) -> Iterator[list[TeacherAnswer]]:
        by_split: dict[str, dict[tuple[str, str], TeacherAnswer]] = {}
        for split in sorted({r.split for r in requests}):
            found = read_rationales(options.path, task.name, split)
            if found is None:
                raise StmbenchError(f"--rationales {options.path}: no {task.name}/{split}.jsonl (or {task.name}.jsonl) "
                                    "in the folder")
            by_split[split] = found
        yield [by_split[r.split].get((r.example["text_a"], r.example.get("text_b") or ""), TeacherAnswer(""))
               for r in requests]


@hookimpl
def register_teachers(register):
    register(FolderTeacher())
