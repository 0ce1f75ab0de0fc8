"""Writing a leaderboard folder without losing anybody's file.

* A folder that is not empty and was not written by stmbench (no :data:`SOURCE_FILE`) is refused
  unless ``force``; and even then stmbench replaces or removes only files it wrote itself (listed in
  :data:`SOURCE_FILE`): a file of the user's that has the name of one of its files is refused by name.
* The input results folders are never written: ``--out`` may not be one of them, lie inside one, or
  have one as its ``results/`` (except its own copies, which are then left as they are).
* The board is built in a temporary folder inside ``out`` and moved into place file by file under an
  exclusive lock on ``out``; files of the previous board that the new one does not have are removed
  last.  Two builders at once leave one complete board: the last one's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.store.results import ResultStore, expand_dirs
from stmbench.common.files import atomic_write_bytes, atomic_write_text
from stmbench.common.untrusted import UntrustedFileError, inside, read_json

SOURCE_FILE = ".stmbench-source.json"  #: in a leaderboard folder: its results folders and the files stmbench wrote
BUILDING_PREFIX = ".building-"


def _legacy_files(out: Path) -> list[str]:
    """The files a leaderboard written before :data:`SOURCE_FILE` listed them has: stmbench's names."""
    names = [p.name for p in out.glob("*.svg")] + [n for n in ("README.md", "index.html") if (out / n).is_file()]
    names += [f"results/{p.name}" for p in (out / "results").glob("*.json")] if (out / "results").is_dir() else []
    return sorted(names)


def read_source(out: Path) -> dict[str, Any] | None:
    """The record of a stmbench leaderboard folder: ``results_dirs`` (resolved) and ``files`` (the
    names stmbench wrote there); ``None`` when ``out`` is not one."""
    try:
        data, _ = read_json(out / SOURCE_FILE, limit=1024 * 1024)
        relative = data["results_dirs"] if "results_dirs" in data else [data["results_dir"]]
        files = data.get("files")
        if files is None:
            files = _legacy_files(out)
        if not (isinstance(relative, list) and all(isinstance(r, str) for r in relative)
                and isinstance(files, list) and all(isinstance(f, str) for f in files)):
            return None
    except (UntrustedFileError, KeyError, TypeError, AttributeError):
        return None
    safe = [f for f in files if _own_name(f)]
    return {"results_dirs": [(out / r).resolve() for r in relative], "relative": relative, "files": safe}


def _own_name(name: str) -> bool:
    """A name stmbench could have written: a top-level file or ``results/<file>``, never outside."""
    parts = Path(name).parts
    return (len(parts) == 1 or (len(parts) == 2 and parts[0] == "results")) and ".." not in parts \
        and not Path(name).is_absolute() and parts[-1] not in ("", ".", SOURCE_FILE)


def check_target(results_dirs: str | Path | list[str | Path], out_dir: str | Path, *, force: bool = False,
                 need_results: bool = True) -> list[Path]:
    """The results folders (globs expanded), after refusing, before anything is written: folders
    that do not exist or hold no results; an ``out`` that is or lies in an input folder; an ``out``
    that is not a stmbench leaderboard and not empty (unless ``force``); one built from other
    results folders (its own copies in ``out/results`` count as its source) unless ``force``."""
    out = Path(out_dir)
    given = list(results_dirs) if isinstance(results_dirs, (list, tuple)) else [results_dirs]
    if need_results:
        folders = expand_dirs(given)
        refused = []
        for path, result, _, reason in (entry for f in folders for entry in ResultStore(f).scan()):
            if result is not None:
                break  # one readable result is enough here; ResultSet reads them all
            refused.append(f"{path.name}: {reason}")
        else:
            raise StmbenchError(f"results folder {', '.join(map(str, folders))} holds no results "
                                "(nothing to build a leaderboard from)"
                                + (f"; {len(refused)} file(s) refused: " + "; ".join(refused[:5]) if refused else ""))
    else:
        folders = [Path(p) for p in given]
    target, copies = out.resolve(), (out / "results").resolve()
    inputs = [f.resolve() for f in folders]
    for folder in inputs:
        if inside(target, folder):
            raise StmbenchError(f"--out {out} is inside the results folder {folder}: input folders are never written")
        if folder == copies and inputs != [copies]:
            raise StmbenchError(f"--out {out}: its results/ is an input folder among others; it would be "
                                "overwritten (build from it alone, or choose another --out)")
    if out.exists() and not out.is_dir():
        raise StmbenchError(f"--out {out} is a file, not a folder")
    source = read_source(out) if out.is_dir() else None
    if source is None:
        present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if present and not force:
            raise StmbenchError(f"--out {out} is not empty and holds no stmbench leaderboard ({SOURCE_FILE} is "
                                f"missing; it has {', '.join(present[:5])}{' ...' if len(present) > 5 else ''}); "
                                "choose an empty or new folder, or pass --force (stmbench then never replaces "
                                "or removes a file it did not write)")
        return folders
    if force or not (out / "README.md").exists():
        return folders
    given_dirs = sorted(inputs)
    if given_dirs != sorted(source["results_dirs"]) and given_dirs != [copies]:
        shown = [os.path.relpath(s) for s in source["results_dirs"]]
        shown = [str(s) if r.startswith("..") else r for s, r in zip(source["results_dirs"], shown)]
        raise StmbenchError(f"{out} holds a leaderboard built from {', '.join(shown)}, not "
                            f"{', '.join(map(str, folders))}; pass --force to replace it (or choose another "
                            "--out / --leaderboard-dir)")
    return folders


def _lock(folder: Path) -> int:
    import fcntl

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _clean_stale(out: Path, age: float = 3600.0) -> None:
    """Temporary build folders that killed builders left (older than ``age`` seconds)."""
    for old in out.glob(f"{BUILDING_PREFIX}*"):
        try:
            if old.is_dir() and not old.is_symlink() and time.time() - old.stat().st_mtime > age:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def publish(files: dict[str, bytes], out_dir: str | Path, folders: list[Path], *, keep_copies: bool) -> list[Path]:
    """Put ``files`` (relative name -> bytes) into ``out_dir`` as one board: staged in a temporary
    folder, moved into place under a lock, stale files of the previous board removed, the record
    (:data:`SOURCE_FILE`) written last.  ``keep_copies``: ``results/`` is the input; leave it.
    Returns the pages and figures written (not the copies of the results)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=BUILDING_PREFIX))
    try:
        for name, data in files.items():
            atomic_write_bytes(stage / name, data)
        fd = _lock(out)
        try:
            previous = read_source(out)
            own = set(previous["files"]) if previous else set()
            clash = sorted(n for n in files if os.path.lexists(out / n) and n not in own
                           and not (keep_copies and n.startswith("results/")))
            if previous is None and (out / "results").is_symlink():
                clash.append("results (a symbolic link)")
            if clash:
                one = len(clash) == 1
                raise StmbenchError(f"--out {out}: {', '.join(clash[:5])} {'is' if one else 'are'} not stmbench's "
                                    f"(not listed in its record), so stmbench does not replace {'it' if one else 'them'}: "
                                    f"move {'it' if one else 'them'} away or choose another --out")
            if any(n.startswith("results/") for n in files):
                (out / "results").mkdir(exist_ok=True)
            for name in files:
                os.replace(stage / name, out / name)
            for name in sorted(own - set(files)):
                if keep_copies and name.startswith("results/"):
                    continue
                try:
                    (out / name).unlink()
                except FileNotFoundError:
                    pass
            own_copies = [f.resolve() for f in folders] == [(out / "results").resolve()]
            relative = previous["relative"] if own_copies and previous else \
                [os.path.relpath(f.resolve(), out.resolve()) for f in folders]
            recorded = set(files) | ({n for n in own if n.startswith("results/") and (out / n).exists()}
                                     if keep_copies else set())
            atomic_write_text(out / SOURCE_FILE, json.dumps({"results_dirs": relative, "files": sorted(recorded)},
                                                            indent=1) + "\n")
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in files if not name.startswith("results/")]  # the pages and figures, as before
