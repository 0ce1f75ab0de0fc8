"""The results store: one JSON file per run (``<run_id>.json``, a :class:`~stmbench.store.result.RunResult`)
and its per-example predictions (``<run_id>.predictions.json``), each written atomically; loaded into
pandas for tables.  Every file is read as untrusted (:mod:`stmbench.common.untrusted`) and checked
(:mod:`stmbench.store.verify`): one that fails is skipped with one line naming it and why.  A
:class:`ResultSet` of several folders also re-derives each result's metrics from its predictions."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from stmbench.store.result import ResultSchemaError, RunResult
from stmbench.common.untrusted import PREDICTIONS_BYTES, RESULT_BYTES, UntrustedFileError, read_json, term_text
from stmbench.common.files import atomic_write_text
from stmbench.store.verify import Refused, Verdict, check_result

log = logging.getLogger(__name__)




PREDICTIONS_SUFFIX = ".predictions.json"




class ResultStore:
    """A folder of run results.  Every file is read through :mod:`stmbench.common.untrusted` and checked
    by :func:`stmbench.store.verify.check_result`: a refused file is skipped with one warning naming it and
    why (kept in :attr:`refused`), and the others are read."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.refused: list[Verdict] = []

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def predictions_path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}{PREDICTIONS_SUFFIX}"

    def read(self, path: Path) -> tuple[RunResult, bytes]:
        """One result file, checked; :class:`~stmbench.store.verify.Refused` or
        :class:`~stmbench.common.untrusted.UntrustedFileError` with the reason, or
        :class:`~stmbench.store.result.ResultSchemaError` for a newer schema."""
        data, raw = read_json(path, limit=RESULT_BYTES)
        return check_result(data, path.name, str(path)), raw

    def get(self, run_id: str) -> RunResult | None:
        """The stored result of ``run_id``, ``None`` when there is none (or it is refused, with a
        warning); :class:`~stmbench.store.result.ResultSchemaError` when it is of a newer schema."""
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
        :class:`~stmbench.common.untrusted.UntrustedFileError` when it is refused."""
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

    from stmbench.common.errors import StmbenchError

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
