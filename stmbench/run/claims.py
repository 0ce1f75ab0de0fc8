"""Claims: how any number of workers share one grid through its results folder, with no coordinator.

Before a worker starts a run it creates ``<run_id>.claim`` next to the result with
``O_CREAT | O_EXCL`` (atomic on local and network filesystems alike), holding its host, pid, start
time and a heartbeat that a background thread refreshes.  Another worker that finds the file skips
the run, and takes it over only when the claim is *stale*: its heartbeat is older than the timeout,
or it names a process on this host that no longer exists (``kill -9``, a crash).  A takeover happens
under a second ``O_EXCL`` file (``<run_id>.claim.takeover``), so two workers that find the same stale
claim cannot both take it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from stmbench.common.files import atomic_write_text

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"
DEFAULT_TIMEOUT = 300.0  # seconds without a heartbeat after which a claim is stale
DEFAULT_HEARTBEAT = 15.0


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    try:  # a zombie (exited, not yet reaped by its parent) holds its pid but does no work
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


class ClaimBook:
    """The claims of one process in one results folder, with their heartbeat thread."""

    def __init__(self, folder: str | Path, *, timeout: float = DEFAULT_TIMEOUT,
                 heartbeat: float | None = None):
        self.folder = Path(folder)
        self.timeout = float(timeout)
        self.heartbeat = float(heartbeat if heartbeat is not None else min(DEFAULT_HEARTBEAT, self.timeout / 4))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._held: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()  # held while a claim file is written or removed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}{CLAIM_SUFFIX}"

    # --- reading -----------------------------------------------------------------------------

    def holder(self, run_id: str) -> dict[str, Any] | None:
        """The claim on ``run_id`` as stored (``{}`` when the file is being written), or ``None``."""
        path = self.path(run_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
            return info if isinstance(info, dict) else {}
        except json.JSONDecodeError:
            return {}

    def stale_reason(self, run_id: str, info: dict[str, Any] | None) -> str | None:
        """Why the claim ``info`` on ``run_id`` is stale, or ``None`` while its holder lives."""
        if info is None:
            return None
        if info.get("host") == self.host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
            return f"process {info['pid']} on {self.host} is gone"
        beat = info.get("heartbeat")
        if not isinstance(beat, (int, float)):  # being written, or garbage: judge by the file's age
            try:
                beat = self.path(run_id).stat().st_mtime
            except FileNotFoundError:
                return None
        age = time.time() - beat
        if age > self.timeout:
            return f"no heartbeat for {age:.0f} s (timeout {self.timeout:.0f} s)"
        return None

    # --- taking and giving back --------------------------------------------------------------

    def _create(self, run_id: str) -> bool:
        now = time.time()
        info = {"run_id": run_id, "host": self.host, "pid": self.pid, "token": uuid.uuid4().hex,
                "started": now, "heartbeat": now}
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path(run_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info))
        with self._lock:
            self._held[run_id] = info
        self._start_heartbeat()
        return True

    def acquire(self, run_id: str) -> bool:
        """Claim ``run_id``; ``False`` when a live worker holds it.  A stale claim is taken over."""
        if run_id in self._held:
            return True
        if self._create(run_id):
            return True
        info = self.holder(run_id)
        reason = self.stale_reason(run_id, info)
        if reason is None:
            return False
        lock = self.path(run_id).with_name(self.path(run_id).name + ".takeover")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # someone else is taking it over; a lock left by a dead taker expires
            try:
                if time.time() - lock.stat().st_mtime > self.timeout:
                    lock.unlink()
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            again = self.holder(run_id)
            if again != info or self.stale_reason(run_id, again) is None:
                return False  # it changed hands (or came back to life) meanwhile
            self.path(run_id).unlink(missing_ok=True)
            if not self._create(run_id):
                return False
            who = f"{info.get('host', '?')}:{info.get('pid', '?')}" if info else "an unreadable claim"
            log.warning("took over run %s from %s: %s", run_id, who, reason)
            return True
        finally:
            lock.unlink(missing_ok=True)

    def release(self, run_id: str) -> None:
        """Give ``run_id`` back (only if this process still holds it)."""
        with self._lock:
            info = self._held.pop(run_id, None)
            if info is not None and (self.holder(run_id) or {}).get("token") == info["token"]:
                self.path(run_id).unlink(missing_ok=True)

    def release_all(self) -> None:
        for run_id in list(self._held):
            self.release(run_id)
        self._stop.set()

    @property
    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    # --- heartbeat ---------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="stmbench-claims", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.refresh()

    def refresh(self) -> None:
        """Write a fresh heartbeat into every held claim (a claim taken over meanwhile is let go)."""
        with self._lock:
            for run_id, info in list(self._held.items()):
                current = self.holder(run_id)
                if current is not None and current.get("token") not in (None, info["token"]):
                    log.warning("run %s was taken over by %s:%s; its result will be stored twice",
                                run_id, current.get("host"), current.get("pid"))
                    del self._held[run_id]
                    continue
                info = {**info, "heartbeat": time.time()}
                try:
                    atomic_write_text(self.path(run_id), json.dumps(info))
                except OSError as exc:
                    log.warning("cannot refresh the claim on %s: %s", run_id, exc)
                    continue
                self._held[run_id] = info
