"""Errors that reach the user as one clear line (no traceback unless ``--debug``)."""

from __future__ import annotations

from collections.abc import Iterable


class StmbenchError(Exception):
    """A problem the user can fix: bad input, an unknown name, a missing file, no network."""


class UnknownNameError(StmbenchError, KeyError):
    """A plugin name that nothing registered; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        self.kind, self.name, self.known = kind, name, sorted(known)
        plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        msg = f"unknown {kind} {name!r}; known {plural}: {', '.join(self.known) or '(none)'}"
        super().__init__(msg + (f". {hint}" if hint else ""))

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DataError(StmbenchError):
    """A malformed data row; the message names the file and the line."""

    def __init__(self, path: str, line: int | None, reason: str):
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
