"""The results store: one JSON file per run (``<run_id>.json``, a :class:`~stmbench.result.RunResult`)
and its per-example predictions (``<run_id>.predictions.json``), each written atomically; loaded into
pandas for tables.  A file that is not valid JSON is skipped with a warning (it was not written by
stmbench, whose writes are atomic); one of a schema this stmbench cannot read is an error."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from stmbench.result import RunResult

log = logging.getLogger(__name__)


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask (0644 under 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


PREDICTIONS_SUFFIX = ".predictions.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part:
    a temporary file in the same folder, flushed to disk, then renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp's 0600 would make results unreadable to others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


class ResultStore:
    """A folder of run results."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def predictions_path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}{PREDICTIONS_SUFFIX}"

    def get(self, run_id: str) -> RunResult | None:
        """The stored result of ``run_id``, ``None`` when there is none (or it is not valid JSON);
        :class:`~stmbench.result.ResultSchemaError` when it is of a schema this stmbench cannot read."""
        path = self.path(run_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable result %s: %s", path, exc)
            return None
        return RunResult.from_dict(data, str(path))

    def is_done(self, run_id: str) -> bool:
        """A run stored with status ``ok`` (failed runs are tried again)."""
        result = self.get(run_id)
        return result is not None and result.ok

    def write(self, result: RunResult, predictions: dict[str, Any] | None = None) -> Path:
        """Store a result (and its predictions first, so an ``ok`` result always has them)."""
        result = RunResult.from_dict(result, f"result of run {result['run_id']}")  # a dict is checked too
        if predictions is not None:
            atomic_write_text(self.predictions_path(result.run_id),
                              json.dumps(predictions, ensure_ascii=False, separators=(",", ":")) + "\n")
        path = self.path(result.run_id)
        atomic_write_text(path, json.dumps(result.to_dict(), ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        return path

    def predictions(self, run_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.predictions_path(run_id).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def load_all(self) -> list[RunResult]:
        """Every stored result, sorted by run id (files that are not valid JSON are skipped with a
        warning; a result of an unreadable schema raises :class:`~stmbench.result.ResultSchemaError`)."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            if path.name.endswith(PREDICTIONS_SUFFIX):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("ignoring unreadable result %s: %s", path, exc)
                continue
            if isinstance(data, dict) and "run_id" in data and "spec" in data:
                out.append(RunResult.from_dict(data, str(path)))
        return out

    def frame(self) -> Any:
        """All results as a flat pandas DataFrame (``spec.*``, ``metrics.*``, ... columns)."""
        return results_frame(self.load_all())


def results_frame(results: list[RunResult]) -> Any:
    """Results as a flat pandas DataFrame (nested fields become dotted columns; tracebacks left out)."""
    import pandas as pd

    if not results:
        return pd.DataFrame()
    slim = [{k: v for k, v in RunResult.from_dict(r).to_dict().items() if k != "traceback"} for r in results]
    return pd.json_normalize(slim, sep=".")


def expand_dirs(patterns: list[str | Path]) -> list[Path]:
    """Results folders from paths and glob patterns (``contrib/*/results``), in the order given,
    each once; a pattern that matches no folder is an error."""
    import glob

    from stmbench.errors import StmbenchError

    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        folders = [Path(m) for m in matches if Path(m).is_dir()]
        if not folders:
            raise StmbenchError(f"results folder {text} does not exist" if not glob.has_magic(text)
                                else f"no results folder matches {text}")
        out += [f for f in folders if f.resolve() not in {o.resolve() for o in out}]
    return out


class ResultSet:
    """The results of several folders, merged by run id: a run stored in two folders with the same
    contents is one run; with different contents it is a conflict (both paths kept in
    :attr:`conflicts`), and the folder given first wins."""

    def __init__(self, folders: list[Path]):
        self.folders = list(folders)
        self.where: dict[str, Path] = {}
        self.conflicts: list[tuple[str, Path, Path]] = []
        self._results: dict[str, RunResult] = {}
        for folder in self.folders:
            for result in ResultStore(folder).load_all():
                seen = self._results.get(result.run_id)
                if seen is None:
                    self._results[result.run_id], self.where[result.run_id] = result, folder
                elif seen.to_dict() != result.to_dict():
                    self.conflicts.append((result.run_id, ResultStore(self.where[result.run_id]).path(result.run_id),
                                           ResultStore(folder).path(result.run_id)))
                    log.warning("run %s differs between %s and %s; the first is used", result.run_id,
                                *self.conflicts[-1][1:])

    def load_all(self) -> list[RunResult]:
        return [self._results[run_id] for run_id in sorted(self._results)]

    def predictions(self, run_id: str) -> dict[str, Any] | None:
        folder = self.where.get(run_id)
        return ResultStore(folder).predictions(run_id) if folder is not None else None

    def files(self, run_id: str) -> list[Path]:
        """The result file of ``run_id`` and its predictions file, where they exist."""
        store = ResultStore(self.where[run_id])
        return [p for p in (store.path(run_id), store.predictions_path(run_id)) if p.exists()]

    def frame(self) -> Any:
        return results_frame(self.load_all())
