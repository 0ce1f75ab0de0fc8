"""The token budget of prediction batches: :class:`TokenBudget`.

A prediction batch costs memory in proportion to its padded tokens, not its
rows: full-vocabulary logits are ``vocab x 4`` bytes per position (about 200 KB for a 49k
vocabulary), and attention scores grow with the square of the length.  A fixed batch of 64 rows is
harmless at 64 tokens and tens of GB at 2,048.  So every prediction path (the strategies' own and
lm-eval's) takes its batches from a :class:`TokenBudget`: rows sorted longest first, each batch as
many rows as fit ``rows x padded length x (1 + attention share x length) <= tokens``, never more rows
than ``per_device_eval_batch_size``.

The budget is planned from the device's free memory by :func:`stmbench.core.memory.plan_budget`.

**Batches worth having, not only batches that fit.**  Past some size a bigger batch is no faster per
token, only heavier (on a 2-core CPU, 64 reviews of 300 tokens per batch took 3x the time and twice
the memory of batches of 4 rows).  A budget with ``ramp`` finds that size on the real batches, at no
extra cost: the first batch holds :data:`RAMP_FROM` padded tokens, each next one twice as many while
the one before was :data:`PLATEAU_GAIN` times faster per token than its predecessor (the time
between handing a batch out and being asked for the next is the caller's whole work on it); at the
first that was not, the batches step back to the size before and stay there
(``throughput_tokens``).  ``on_plateau`` hears the size found, so the next budget for the same
model starts there.  That size counts padded tokens only (rows x length), apart from the memory's
cost: a batch of one 2,000-token review keeps a device as busy as eight rows of 250 tokens, so a
plateau found on long rows caps the short rows after them at as many tokens, not at as many
memory-cost units (which would let them grow many times larger).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

RAMP_FROM = 512  #: padded tokens of a ramping budget's first batch
PLATEAU_GAIN = 1.1  #: a doubled batch must be this much faster per token to count as still growing


@dataclass(frozen=True)
class TokenBudget:
    """How many padded tokens one prediction batch may hold."""

    tokens: int  #: padded tokens per batch (rows x padded length), for short rows
    max_batch: int  #: rows per batch at most (``per_device_eval_batch_size``)
    source: str  #: where the budget came from (``eval_batch_tokens``, ``free RAM``, ...)
    #: extra tokens one token costs per token of length (attention scores grow with length squared)
    attention_share: float = 0.0
    memory_mb: float | None = None  #: the memory the budget was planned for
    bytes_per_token: int | None = None  #: the estimated cost of one token
    memory_tokens: int | None = None  #: what the free memory allows
    #: padded tokens per batch where the throughput stopped growing, known before (a budget for a model
    #: measured earlier)
    throughput_tokens: int | None = None
    ramp: bool = False  #: find where the throughput stops growing on the batches themselves
    on_plateau: Callable[[int], None] | None = field(default=None, compare=False, repr=False)
    _found: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def plateau(self) -> int | None:
        """Where the throughput stopped growing: known when the budget was planned, or found by its ramp."""
        return self.throughput_tokens or self._found.get("tokens")

    def rows_for(self, length: int, tokens: int | None = None) -> int:
        """Rows of ``length`` padded tokens in one batch, at least 1: as many as the memory allows
        (the budget's tokens, each row costing its length and attention's share), and no more than
        ``tokens`` padded tokens (default: where the throughput stopped growing, where known).  The
        throughput cap counts padded tokens alone: how full a batch keeps the device is its rows
        times their length, whatever the length."""
        length = max(1, int(length))
        cost = length * (1.0 + self.attention_share * length)
        rows = int(self.tokens // cost)
        fast = self.plateau if tokens is None else tokens
        if fast:
            rows = min(rows, int(fast // length))
        return max(1, min(self.max_batch, rows))

    def batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices in batches, longest first (each batch pads to its first row's length); the caller
        puts each result back at its index.  With ``ramp``, batch sizes grow while the throughput
        does (see the module's docstring)."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        growing = self.ramp and self.plateau is None and RAMP_FROM < self.tokens
        current = RAMP_FROM
        best, start, judged = 0.0, 0, 0
        while start < len(order):
            size = self.rows_for(lengths[order[start]], current if growing else None)
            batch = order[start:start + size]
            began = time.perf_counter()
            yield batch
            seconds = time.perf_counter() - began
            start += size
            if not growing:
                continue
            padded = len(batch) * max(1, int(lengths[batch[0]]))
            if padded >= judged * 1.5:  # a batch that grew (rows too long to grow it yet: nothing to compare)
                judged = padded
                rate = padded / max(seconds, 1e-9)
                if rate < best * PLATEAU_GAIN:  # not worth it: back to the size before, for good
                    current //= 2
                    growing = False
                    self._found["tokens"] = current
                    if self.on_plateau is not None:
                        self.on_plateau(current)
                    continue
                best = rate
            if size == self.max_batch or start >= len(order) or current * 2 > self.tokens:
                growing = False  # rows, rows left or memory end the ramp first: no plateau seen
            else:
                current *= 2

    def record(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k not in ("on_plateau", "_found")}
        if not self.ramp:
            out.pop("ramp")
        if self._found.get("tokens"):
            out["throughput_tokens"] = self._found["tokens"]
            out["source"] = f"{self.source}; batches of {self._found['tokens']} tokens, where the measured " \
                            "throughput stopped growing"
        return out


def as_budget(size: int | TokenBudget) -> TokenBudget:
    """A budget as it is, or a plain row count as a budget of that many rows whatever their length."""
    if isinstance(size, TokenBudget):
        return size
    return TokenBudget(tokens=2**62, max_batch=max(1, int(size)), source="rows")
