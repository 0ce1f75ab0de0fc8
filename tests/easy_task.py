"""An easy synthetic pair task for tests that need a random-init backbone to learn within a few steps:
the label is spelled by ``text_b`` (one of two characters).  Generated, never copied from real data.

Registered by this module as the generator ``easy`` (load it as a plugin: ``--plugin tests.easy_task``);
a task file a test writes names it as ``generator: {name: easy}``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from stmbench import hookimpl

SIZES = {"train": 2000, "validation": 200, "test": 200}
CHARS = "天地人你我他上下左右大小多少来去花草山水"


def generate(split: str, labels: Sequence[Any], seed: int = 0, **sizes: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for i in range({**SIZES, **sizes}[split]):
        label = i % 2
        text_a = "".join(rng.choice(CHARS) for _ in range(rng.randint(4, 8)))
        rows.append({"text_a": text_a, "text_b": "是" if label else "否", "label": labels[label].value})
    return rows


def task_config(name: str = "easy", **changes: Any) -> dict[str, Any]:
    """A task file's content for this generator."""
    return {"name": name, "kind": "pair", "synthetic": True,
            "generator": {"name": "easy"},
            "labels": [{"value": "0", "word": "否"}, {"value": "1", "word": "是"}],
            "prompts": {"concise": "{text_a}\n{text_b}\n答案："}, **changes}


@hookimpl
def register_generators(register):
    from stmbench import FunctionGenerator

    register(FunctionGenerator("easy", generate, "an easy synthetic pair task for tests"))
