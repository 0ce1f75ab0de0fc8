"""Loading from the Hugging Face hub that fails fast and clearly when there is no network.

``transformers`` and ``datasets`` retry an unreachable hub for about 25 s before they give up.
stmbench first tries the local cache (``local_files_only`` / offline mode); only when that misses
does it check, with a short socket connect, whether the hub can be reached at all, and if not it
raises one clear error that says so instead of retrying.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from typing import Any
from urllib.parse import urlparse

from stmbench.common.errors import StmbenchError

log = logging.getLogger(__name__)
_TRUE = {"1", "ON", "YES", "TRUE"}


def offline_by_env() -> bool:
    """``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE`` / ``HF_DATASETS_OFFLINE``) is set."""
    return any(os.environ.get(v, "").upper() in _TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.lru_cache(maxsize=None)
def _reachable(url: str, timeout: float) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError as exc:
        log.debug("hub %s unreachable: %s", url, exc)
        return False


def hub_available(timeout: float = 3.0) -> bool:
    """Whether the hub can be reached now (never true when offline mode is set)."""
    return not offline_by_env() and _reachable(endpoint(), timeout)


def offline_reason() -> str:
    return ("offline mode is set (HF_HUB_OFFLINE)" if offline_by_env()
            else f"the hub ({endpoint()}) cannot be reached from this machine")


@contextlib.contextmanager
def _offline_mode():
    """Make ``huggingface_hub`` and ``datasets`` use only their caches, for this block."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def from_pretrained(cls: Any, name: str, *, what: str, hint: str = "", **kwargs: Any) -> Any:
    """``cls.from_pretrained(name)`` that tries the cache first and fails fast offline.

    A local directory is loaded as it is.  A hub id is looked up in the cache; on a miss, the hub
    is used when reachable, else :class:`StmbenchError` says the hub is offline.
    """
    if os.path.isdir(name):
        return cls.from_pretrained(name, **kwargs)
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError as cached_miss:
        if not hub_available():
            raise StmbenchError(
                f"cannot load {what} {name!r}: it is not a local directory, not in the Hugging Face "
                f"cache, and {offline_reason()}{'; ' + hint if hint else ''}"
            ) from cached_miss
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise StmbenchError(f"cannot load {what} {name!r} from the hub: {exc}") from exc


def load_hub_dataset(path: str, name: str | None, split: str, *, task: str, local_hint: str = "") -> Any:
    """``datasets.load_dataset(path, name, split=split)``, from the cache when the hub is offline."""
    import datasets

    online = hub_available()
    try:
        with (contextlib.nullcontext() if online else _offline_mode()):
            return datasets.load_dataset(path, name, split=split)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
        config = f" ({name})" if name else ""
        if not online:
            raise StmbenchError(
                f"task {task!r}: data set {path}{config} is not in the local cache and "
                f"{offline_reason()}; {local_hint or 'download it on a machine with network first'}"
            ) from exc
        raise StmbenchError(f"task {task!r}: cannot load {path}{config} split {split!r}: {exc}") from exc
