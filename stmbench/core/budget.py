"""The token budget of prediction batches: :class:`TokenBudget`.

A prediction batch costs memory in proportion to its padded tokens, not its
rows: full-vocabulary logits are ``vocab x 4`` bytes per position (about 200 KB for a 49k
vocabulary), and attention scores grow with the square of the length.  A fixed batch of 64 rows is
harmless at 64 tokens and tens of GB at 2,048.  So every prediction path (the strategies' own and
lm-eval's) takes its batches from a :class:`TokenBudget`: rows sorted longest first, each batch as
many rows as fit ``rows x padded length x (1 + attention share x length) <= tokens``, never more rows
than ``per_device_eval_batch_size``.

The budget is planned from the device's free memory by :func:`stmbench.core.memory.plan_budget`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any


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
    throughput_tokens: int | None = None  #: where the measured throughput stops growing

    def rows_for(self, length: int) -> int:
        """Rows of ``length`` padded tokens that fit in one batch (at least 1)."""
        length = max(1, int(length))
        cost = length * (1.0 + self.attention_share * length)
        return max(1, min(self.max_batch, int(self.tokens // cost)))

    def batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices in batches, longest first (each batch pads to its first row's length); the caller
        puts each result back at its index."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        start = 0
        while start < len(order):
            size = self.rows_for(lengths[order[start]])
            yield order[start:start + size]
            start += size

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def as_budget(size: int | TokenBudget) -> TokenBudget:
    """A budget as it is, or a plain row count as a budget of that many rows whatever their length."""
    if isinstance(size, TokenBudget):
        return size
    return TokenBudget(tokens=2**62, max_batch=max(1, int(size)), source="rows")
