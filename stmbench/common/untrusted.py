"""The one reader of files from outside the process: contributed results and predictions, task and
grid YAML, data files.  Every file is hostile until checked:

* **regular files only**: a FIFO, a device, a socket or a folder is refused before it is opened (a
  FIFO would block a reader forever), and the open itself is non-blocking and re-checked;
* **symbolic links are not followed**, except, where a caller names the folder the file must stay
  in (``root``), a link that resolves inside it;
* **bounded**: a size limit per kind of file, a nesting limit for JSON and YAML, a node limit for
  YAML, and YAML aliases refused (a "billion laughs" file expands nothing);
* JSON's ``NaN`` / ``Infinity`` and numbers that overflow to infinity are refused.

A refusal is an :class:`UntrustedFileError` naming the file and why, in one line; callers that read
many files skip the bad one with that line and go on.  The text helpers at the end make what such
files say safe to show: on a terminal (:func:`term_text`), in markdown (:func:`md_text`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import sys
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from stmbench.common.errors import StmbenchError

MiB = 1024 * 1024
RESULT_BYTES = 4 * MiB  #: one run result (its traceback included)
PREDICTIONS_BYTES = 64 * MiB  #: one predictions file (12,500 LCQMC test pairs take about 60 KB)
YAML_BYTES = 1 * MiB  #: a task or grid file
DATA_BYTES = 2048 * MiB  #: one local data file of a task
MAX_DEPTH = 32  #: nesting of JSON / YAML containers
MAX_YAML_NODES = 200_000


class UntrustedFileError(StmbenchError):
    """A file from outside that was refused: :attr:`path` and :attr:`reason`."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{term_text(str(path))}: {reason}")


def inside(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or lies below it (both taken as given: resolve them first where links matter)."""
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def contained(path: str | Path, root: str | Path, what: str = "file") -> Path:
    """``path`` (relative to ``root``, or under it) as a path that stays inside ``root``: no ``..``
    out of it, no absolute path elsewhere, no symbolic link that leads out of it."""
    root_path = Path(root)
    candidate = Path(path)
    full = candidate if candidate.is_absolute() else root_path / candidate
    if ".." in candidate.parts and not inside(Path(os.path.normpath(full)), Path(os.path.normpath(root_path))):
        raise UntrustedFileError(path, f"the {what} name leads out of its folder {root_path} ('..')")
    if not inside(Path(os.path.normpath(full)), Path(os.path.normpath(root_path))):
        raise UntrustedFileError(path, f"the {what} must be inside its folder {root_path}")
    if os.path.lexists(full) and not inside(full.resolve(), root_path.resolve()):
        raise UntrustedFileError(path, f"the {what} is a symbolic link out of its folder {root_path}")
    return full


def read_bytes(path: str | Path, *, limit: int, root: str | Path | None = None) -> bytes:
    """The bytes of one regular file of at most ``limit`` bytes.  A symbolic link is refused, or,
    with ``root``, followed only when it resolves inside ``root``."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UntrustedFileError(path, "does not exist") from None
    except OSError as exc:
        raise UntrustedFileError(path, f"cannot be read ({exc.strerror})") from None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if stat.S_ISLNK(info.st_mode):
        if root is None:
            raise UntrustedFileError(path, "is a symbolic link (not followed)")
        target = path.resolve()
        if not inside(target, Path(root).resolve()):
            raise UntrustedFileError(path, f"is a symbolic link out of its folder {root} (not followed)")
        path, info = target, os.stat(target)
    else:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFileError(path, f"is {_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise UntrustedFileError(path, f"is {info.st_size:,} bytes, over the limit of {limit:,}")
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UntrustedFileError(path, f"cannot be opened ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the check and the open
            raise UntrustedFileError(path, "is not a regular file")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(8 * MiB, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UntrustedFileError(path, f"grew over the limit of {limit:,} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _text(path: str | Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UntrustedFileError(path, f"is not UTF-8 text (byte {exc.start})") from None


def check_depth(value: Any, path: str | Path, limit: int = MAX_DEPTH) -> None:
    """Refuse containers nested deeper than ``limit`` and floats that are not finite."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise UntrustedFileError(path, f"nests deeper than {limit} levels")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise UntrustedFileError(path, f"holds a number that is not finite ({item})")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes, path: str | Path) -> Any:
    """JSON from untrusted bytes: UTF-8, no NaN / Infinity, nested at most :data:`MAX_DEPTH` deep."""
    try:
        value = json.loads(_text(path, data), parse_constant=_no_constant)
    except RecursionError:
        raise UntrustedFileError(path, f"nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise UntrustedFileError(path, f"is not valid JSON ({str(exc)[:120]})") from None
    check_depth(value, path)
    return value


def read_json(path: str | Path, *, limit: int = RESULT_BYTES, root: str | Path | None = None) -> tuple[Any, bytes]:
    """The parsed value of a JSON file and its bytes (:func:`read_bytes`, :func:`parse_json`)."""
    data = read_bytes(path, limit=limit, root=root)
    return parse_json(data, path), data


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with aliases refused and the nodes and nesting bounded."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in this file",
                                              self.peek_event().start_mark)
        self._nodes += 1
        self._depth += 1
        try:
            if self._nodes > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_NODES:,} nodes",
                                                  self.peek_event().start_mark)
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str, path: str | Path) -> Any:
    """YAML from untrusted text: safe tags only, no aliases, bounded nodes and nesting."""
    loader = _BoundedLoader(text)
    try:
        value = loader.get_single_data()
    except RecursionError:
        raise UntrustedFileError(path, f"nests deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        raise UntrustedFileError(path, f"is not valid YAML for stmbench: {' '.join(str(exc).split())[:300]}") from None
    finally:
        loader.dispose()
    check_depth(value, path)
    return value


def read_yaml(path: str | Path, *, limit: int = YAML_BYTES, root: str | Path | None = None) -> Any:
    """A task or grid file: :func:`read_bytes` then :func:`parse_yaml`."""
    return parse_yaml(_text(path, read_bytes(path, limit=limit, root=root)), path)


# --- showing what a file says ------------------------------------------------------------------

def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def clean_text(text: Any) -> str:
    """``text`` without control or format characters (escape codes, bidi overrides, line breaks
    become a space): what every view shows of a string that came from a file."""
    return "".join(" " if ch in "\t\n\r\x0b\x0c\x85\u2028\u2029" else ("" if _is_control(ch) else ch)
                   for ch in str(text))


def term_text(text: Any) -> str:
    """``text`` for a terminal: control characters shown as escapes (``\\x1b``), never sent."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if _is_control(ch) else ch for ch in str(text))


_MD_SPECIAL = re.compile(r"([\\`*\[\]!|~])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_text(text: Any) -> str:
    """``text`` for a GitHub markdown table cell: control characters removed, HTML escaped, and the
    characters that make links, images, emphasis, code or a new cell escaped with a backslash."""
    import html

    escaped = html.escape(clean_text(text), quote=False)
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), escaped)


def safe_url(url: Any) -> str:
    """``url`` when it is an ``http(s)://`` address without spaces or control characters, else ``""``."""
    text = str(url or "")
    if re.fullmatch(r"https?://[^\s<>\"'`\\]+", text) and clean_text(text) == text:
        return text
    return ""


class TerminalHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is when they are written, control characters escaped
    (:func:`term_text`): a file name or a message from a file never sends escape codes."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(term_text(line) for line in super().format(record).splitlines())
