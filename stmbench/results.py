"""The results store: one JSON file per run (``<run_id>.json``, a :class:`~stmbench.result.RunResult`)
and its per-example predictions (``<run_id>.predictions.json``), each written atomically; loaded into
pandas for tables.  Every file is read as untrusted (:mod:`stmbench.untrusted`) and checked
(:mod:`stmbench.verify`): one that fails is skipped with one line naming it and why.  A
:class:`ResultSet` of several folders also re-derives each result's metrics from its predictions."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from stmbench.result import ResultSchemaError, RunResult
from stmbench.untrusted import PREDICTIONS_BYTES, RESULT_BYTES, UntrustedFileError, read_json, term_text
from stmbench.verify import (GoldSource, Refused, Verdict, check_against_data, check_predictions, check_result,
                             compare_metrics, recompute)

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
    """A folder of run results.  Every file is read through :mod:`stmbench.untrusted` and checked
    by :func:`stmbench.verify.check_result`: a refused file is skipped with one warning naming it and
    why (kept in :attr:`refused`), and the others are read."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.refused: list[Verdict] = []

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def predictions_path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}{PREDICTIONS_SUFFIX}"

    def read(self, path: Path) -> tuple[RunResult, bytes]:
        """One result file, checked; :class:`~stmbench.verify.Refused` or
        :class:`~stmbench.untrusted.UntrustedFileError` with the reason, or
        :class:`~stmbench.result.ResultSchemaError` for a newer schema."""
        data, raw = read_json(path, limit=RESULT_BYTES)
        return check_result(data, path.name, str(path)), raw

    def get(self, run_id: str) -> RunResult | None:
        """The stored result of ``run_id``, ``None`` when there is none (or it is refused, with a
        warning); :class:`~stmbench.result.ResultSchemaError` when it is of a newer schema."""
        path = self.path(run_id)
        if not os.path.lexists(path):
            return None
        try:
            return self.read(path)[0]
        except (Refused, UntrustedFileError) as exc:
            log.warning("ignoring result %s: %s", term_text(path), _reason(exc))
            return None

    def is_done(self, run_id: str) -> bool:
        """A run stored with status ``ok`` (failed runs are tried again)."""
        result = self.get(run_id)
        return result is not None and result.ok

    def write(self, result: RunResult, predictions: dict[str, Any] | None = None) -> Path:
        """Store a result (and its predictions first, so an ``ok`` result always has them).  A write
        that fails (a full disk, a read-only folder) leaves neither file half-written: the
        predictions written for it are removed again, and the error is raised."""
        result = RunResult.from_dict(result, f"result of run {result['run_id']}")  # a dict is checked too
        written = None
        try:
            if predictions is not None:
                atomic_write_text(self.predictions_path(result.run_id),
                                  json.dumps(predictions, ensure_ascii=False, separators=(",", ":")) + "\n")
                written = self.predictions_path(result.run_id)  # a failed write left the old file as it was
            path = self.path(result.run_id)
            atomic_write_text(path, json.dumps(result.to_dict(), ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        except BaseException:
            if written is not None:
                try:
                    written.unlink()
                except OSError:
                    pass
            raise
        return path

    def predictions_record(self, run_id: str) -> tuple[Any, bytes] | None:
        """The parsed predictions file of ``run_id`` and its bytes; ``None`` when there is none;
        :class:`~stmbench.untrusted.UntrustedFileError` when it is refused."""
        path = self.predictions_path(run_id)
        if not os.path.lexists(path):
            return None
        return read_json(path, limit=PREDICTIONS_BYTES)

    def predictions(self, run_id: str) -> dict[str, Any] | None:
        try:
            record = self.predictions_record(run_id)
        except UntrustedFileError as exc:
            log.warning("ignoring predictions of %s: %s", run_id, exc.reason)
            return None
        return record[0] if record is not None and isinstance(record[0], dict) else None

    def scan(self) -> Iterator[tuple[Path, RunResult | None, bytes, str]]:
        """Every result file, read and checked one at a time: ``(path, result, bytes, "")``, or
        ``(path, None, b"", why)`` for one that is refused.  Hidden files and predictions files are not
        results; nothing is followed out of the folder."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            if path.name.endswith(PREDICTIONS_SUFFIX) or path.name.startswith("."):
                continue
            try:
                result, raw = self.read(path)
            except (Refused, UntrustedFileError) as exc:
                yield path, None, b"", _reason(exc)
                continue
            except ResultSchemaError as exc:
                yield path, None, b"", str(exc).split(": ", 1)[-1]
                continue
            yield path, result, raw, ""

    def load_all(self) -> list[RunResult]:
        """Every stored result that passes its checks, sorted by run id; each refused file is skipped
        with one warning (and listed in :attr:`refused`)."""
        self.refused = []
        out = []
        for path, result, _, reason in self.scan():
            if result is None:
                log.warning("refused %s: %s", term_text(path), reason)
                self.refused.append(Verdict(str(path), "refused", reason))
            else:
                out.append(result)
        return out

    def frame(self) -> Any:
        """All results as a flat pandas DataFrame (``spec.*``, ``metrics.*``, ... columns)."""
        return results_frame(self.load_all())


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, UntrustedFileError) else str(exc)


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
    """The results of several folders, merged by run id, each checked before it counts
    (:attr:`verdicts`, one per file): its identity and fields (:func:`stmbench.verify.check_result`),
    its predictions, and its metrics recomputed from them (and from the task's data where
    ``gold_source`` has it).  A refused result is never shown or copied; one without predictions is
    ``unverified`` (:attr:`unverified`).  A run stored in two folders with the same contents (result
    and predictions) is one run; with different contents it is a conflict (both paths kept in
    :attr:`conflicts`), and the folder given first wins."""

    def __init__(self, folders: list[Path], *, gold_source: GoldSource | None = None, log_refusals: bool = True):
        self.folders = list(folders)
        self._log_refusals = log_refusals
        self.where: dict[str, Path] = {}
        self.conflicts: list[tuple[str, Path, Path]] = []
        self.verdicts: list[Verdict] = []
        self.unverified: set[str] = set()
        self._results: dict[str, RunResult] = {}
        self._evidence: dict[str, list[tuple[str, bytes]]] = {}  #: run id -> (file name, bytes as read)
        self._predictions: dict[str, dict[str, Any]] = {}
        for folder in self.folders:
            store = ResultStore(folder)
            for path, result, raw, reason in store.scan():
                if result is None:
                    self._refuse(path, reason)
                    continue
                try:
                    predictions, status, note = self._check(store, result, gold_source)
                except (Refused, UntrustedFileError) as exc:
                    self._refuse(path, _reason(exc))
                    continue
                evidence = [(path.name, raw)] + ([(store.predictions_path(result.run_id).name, predictions[1])]
                                                 if predictions is not None else [])
                self.verdicts.append(Verdict(str(path), status, note))
                seen = self._results.get(result.run_id)
                if seen is None:
                    self._results[result.run_id], self.where[result.run_id] = result, folder
                    self._evidence[result.run_id] = evidence
                    if predictions is not None:
                        self._predictions[result.run_id] = predictions[0]
                    if status == "unverified":
                        self.unverified.add(result.run_id)
                elif seen.to_dict() != result.to_dict() or self._predictions.get(result.run_id) != (
                        predictions[0] if predictions is not None else None):
                    self.conflicts.append((result.run_id, ResultStore(self.where[result.run_id]).path(result.run_id),
                                           path))
                    log.warning("run %s differs between %s and %s; the first is used", result.run_id,
                                *(term_text(p) for p in self.conflicts[-1][1:]))

    def _refuse(self, path: Path, reason: str) -> None:
        if self._log_refusals:
            log.warning("refused %s: %s", term_text(path), reason)
        self.verdicts.append(Verdict(str(path), "refused", reason))

    @staticmethod
    def _check(store: ResultStore, result: RunResult,
               gold_source: GoldSource | None) -> tuple[tuple[dict[str, Any], bytes] | None, str, str]:
        """``(predictions and their bytes, verdict, note)`` of one result that passed its own checks."""
        try:
            record = store.predictions_record(result.run_id)
        except UntrustedFileError as exc:
            raise Refused(f"its predictions file {store.predictions_path(result.run_id).name} {exc.reason}") from None
        if not result.ok:
            return record if record is not None and isinstance(record[0], dict) else None, "verified", \
                "a failed run (no metrics to check)"
        if record is None:
            return None, "unverified", "no predictions file: its metrics cannot be recomputed"
        gold, predicted = check_predictions(record[0], result)
        recomputed = recompute(result, gold, predicted)
        compare_metrics(result, recomputed)
        against = check_against_data(result, gold, gold_source)
        names = ", ".join(sorted(set(recomputed) & set(result.metrics))) or "nothing"
        return record, "verified", f"{names} recomputed from its predictions" + (
            ", gold labels equal to the task's data" if against else "")

    @property
    def refused(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "refused"]

    def load_all(self) -> list[RunResult]:
        return [self._results[run_id] for run_id in sorted(self._results)]

    def predictions(self, run_id: str) -> dict[str, Any] | None:
        return self._predictions.get(run_id)

    def files(self, run_id: str) -> list[Path]:
        """The result file of ``run_id`` and its predictions file, where they were read."""
        return [self.where[run_id] / name for name, _ in self._evidence.get(run_id, [])]

    def evidence(self, run_id: str) -> list[tuple[str, bytes]]:
        """``(file name, bytes)`` of the result and predictions of ``run_id`` exactly as they were
        read and checked (what a leaderboard copies: never re-read, never a link's target)."""
        return list(self._evidence.get(run_id, []))

    def frame(self) -> Any:
        return results_frame(self.load_all())
