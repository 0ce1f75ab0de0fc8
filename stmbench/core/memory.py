"""Memory: the token budget of prediction batches planned from the free memory, and each run's own
peak memory.

**Planning the token budget** (:func:`plan_budget`; why batches go by tokens is
:mod:`stmbench.core.budget`).  The budget is the memory the device has free (free RAM on CPU, free
GPU memory on CUDA; ``STMBENCH_EVAL_MEMORY_MB`` overrides what is detected) times
:data:`USABLE_SHARE`, divided by an estimate of the bytes one token costs, from the model's
vocabulary, hidden, MLP and head sizes.  Within it, the batches grow from 512 tokens only while
they get faster per token (:class:`stmbench.core.budget.TokenBudget`'s ramp); where that stopped
is kept per model shape and machine (:func:`known_throughput`) for the next budgets.  ``--eval-batch-tokens N`` sets a
plain budget instead (``rows x padded length <= N``).

**Peak memory per run.**  On CUDA, ``torch.cuda.reset_peak_memory_stats`` then
``max_memory_allocated``.  On Linux CPU, the kernel's high-water mark of the process's resident
memory is reset at the start of a run (writing ``5`` to ``/proc/self/clear_refs``) and read at its
end (``VmHWM`` in ``/proc/self/status``), so a run never reports an earlier run's peak.  Where that
reset is not allowed, a thread samples the resident size every 50 ms.  The result says which
(``memory.peak_method``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import Any

from stmbench.core.budget import TokenBudget
from stmbench.core.modeling import keep_machine_measure, keeps_logits, machine_key, machine_measures, transformers_model

#: share of the free memory that prediction batches may plan to use (the rest: the model, the
#: allocator's slack, the data, other processes)
USABLE_SHARE = 0.5
MEMORY_ENV = "STMBENCH_EVAL_MEMORY_MB"


def model_config(model: Any) -> Any:
    inner = transformers_model(model)
    return getattr(inner, "config", None) or getattr(model, "config", None)


def free_memory(device: str) -> tuple[float, str]:
    """Bytes free for this process's batches and what they were read from."""
    if os.environ.get(MEMORY_ENV):
        return float(os.environ[MEMORY_ENV]) * 2**20, MEMORY_ENV
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free), "free GPU memory"
    import psutil

    return float(psutil.virtual_memory().available), "free RAM"


def bytes_per_token(config: Any, dtype_bytes: int, *, full_logits: bool) -> tuple[int, float]:
    """``(bytes of one token, attention bytes per token per token of length)`` of an inference
    forward pass: the residual stream and one layer's attention and MLP activations live at once;
    with ``full_logits``, every position's logits in the model's dtype plus a float32
    log-softmax copy (lm-eval) are added; attention scores and probabilities (and the 4-D mask) per
    head."""
    get = lambda *names, default=0: next((int(getattr(config, n)) for n in names  # noqa: E731
                                          if getattr(config, n, None)), default)
    hidden = get("hidden_size", "d_model", "n_embd", default=1024)
    inner = get("intermediate_size", "ffn_dim", "n_inner", default=4 * hidden)
    heads = get("num_attention_heads", "n_head", default=16)
    vocab = get("vocab_size", default=32000)
    per_token = dtype_bytes * (8 * hidden + 3 * inner)
    if full_logits:
        per_token += vocab * (dtype_bytes + 8)
    attention = (2 * heads + 1) * dtype_bytes
    return per_token, attention


def plan_budget(model: Any, *, device: str, max_batch: int, tokens: int = 0,
                full_logits: bool = False, cache_dir: Any = None) -> TokenBudget:
    """The budget for predicting with ``model`` on ``device``: ``tokens`` when given (> 0), else
    planned from the free memory and capped where the throughput stops growing (see the module's
    docstring)."""
    if tokens and tokens > 0:
        return TokenBudget(tokens=int(tokens), max_batch=max_batch, source="eval_batch_tokens")
    config = model_config(model)
    try:
        dtype_bytes = next(p for p in model.parameters()).element_size()
    except (StopIteration, AttributeError):
        dtype_bytes = 4
    per_token, attention = bytes_per_token(config, dtype_bytes, full_logits=full_logits)
    free, source = free_memory(device)
    usable = free * USABLE_SHARE
    by_memory = max(1, int(usable // per_token))
    fast, remember = known_throughput(model, device, cache_dir)
    if fast is not None and fast < by_memory:
        source = f"{source}; batches of {fast} tokens, where the measured throughput stopped growing before"
    return TokenBudget(tokens=by_memory, max_batch=max_batch, source=source,
                       attention_share=round(attention / per_token, 6), memory_mb=round(free / 2**20, 1),
                       bytes_per_token=per_token, memory_tokens=by_memory, throughput_tokens=fast,
                       ramp=True, on_plateau=remember)


# --- the batch worth having: where throughput stops growing ---------------------------------------

THROUGHPUT_FILE = "eval-throughput.json"  #: in the cache folder: measured plateaus per model shape and machine
_THROUGHPUT: dict[str, int] = {}


def _shape_key(model: Any, device: str) -> str | None:
    """What a throughput plateau depends on: the transformers model's configuration and dtype, whether
    only kept positions are projected, the host, processor, torch build and threads."""
    import hashlib

    import torch

    config = model_config(model)
    if config is None or not hasattr(config, "to_json_string"):
        return None
    try:
        dtype = str(next(p for p in model.parameters()).dtype).removeprefix("torch.")
    except (StopIteration, AttributeError):
        return None
    shape = hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:16]
    return f"{shape}|kept={keeps_logits(model)}|{machine_key(device, dtype, torch.get_num_threads())}"


def known_throughput(model: Any, device: str, cache_dir: Any = None) -> tuple[int | None, Callable[[int], None] | None]:
    """``(tokens, remember)``: where ``model``'s prediction throughput stopped growing on this machine
    when it was last measured (this process, or ``cache_dir/eval-throughput.json``), or ``None``;
    and a function that keeps a newly measured plateau for the next budgets (``None`` when the
    model's shape cannot be keyed)."""
    key = _shape_key(model, device)
    if key is None:
        return None, None
    if key not in _THROUGHPUT and cache_dir is not None:
        cached = machine_measures(cache_dir, THROUGHPUT_FILE).get(key)
        if cached is not None:
            _THROUGHPUT[key] = int(cached)

    def remember(tokens: int) -> None:
        _THROUGHPUT[key] = int(tokens)
        if cache_dir is not None:
            keep_machine_measure(cache_dir, THROUGHPUT_FILE, key, int(tokens))

    return _THROUGHPUT.get(key), remember


# --- peak memory per run ----------------------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            found = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


_SAMPLING: PeakMemory | None = None  # the sampler thread's owner, where /proc cannot be used


class PeakMemory:
    """The peak memory of one run (see the module's docstring); ``start()`` then ``stop()``."""

    def __init__(self, device: str):
        self.device = device
        self.method = ""
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeakMemory:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated (reset at the run's start)"
            return self
        from stmbench.common import hostmem

        hostmem.release()  # the free memory an earlier run left in the heap is not this run's
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # reset the resident-memory high-water mark (VmHWM)
            if _status_kb("VmHWM") is not None:
                self.method = "VmHWM (peak resident memory, reset at the run's start)"
                return self
        except OSError:
            pass
        self.method = "resident memory sampled every 50 ms"
        global _SAMPLING
        if _SAMPLING is not None:  # a run that failed before stop(): end its sampler
            _SAMPLING._stop.set()
        _SAMPLING = self
        self._peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, name="stmbench-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, _rss_bytes())

    def stop(self) -> float | None:
        """The peak in MiB since :meth:`start`."""
        import torch

        if self.method.startswith("torch.cuda"):
            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            return round(self._peak / 2**20, 1)
        kb = _status_kb("VmHWM")
        return None if kb is None else round(kb / 1024, 1)


