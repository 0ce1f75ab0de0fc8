"""Where a training process spends its time, from ``py-spy``'s sampled Python stacks: ``py-spy
record --format raw`` writes one line per distinct stack (``frame;frame;... count``), and
:func:`phases` sorts the samples into the phases of a ``transformers.Trainer`` run (the optimizer
step, backward, forward and loss, building batches, callbacks, the rest of the training loop, and
everything outside it: imports, loading, evaluation).  ``pip install py-spy`` to use it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: (phase, a substring of a frame that puts a sample in it), the first match from the top of the list
PHASES = [
    ("optimizer step", ("torch/optim/", "accelerate/optimizer.py")),
    ("backward", ("backward (torch/", "backward (accelerate/")),
    ("data: batches, collator", ("get_batch_samples", "torch/utils/data/")),
    ("callbacks", ("call_event (transformers",)),
    ("forward + loss", ("compute_loss", "training_step")),
    ("rest of the training loop", ("_inner_training_loop",)),
]
OUTSIDE = "outside training (start, imports, load, eval)"


def command(out: Path, rate: int = 200) -> list[str]:
    """The ``py-spy record`` prefix writing raw stacks of the process (and its children) to ``out``."""
    beside = Path(sys.executable).parent / "py-spy"  # in the virtual environment, not on PATH
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return [spy, "record", "--format", "raw", "--rate", str(rate), "--subprocesses", "--nonblocking",
            "--output", str(out), "--"]


def phases(raw: Path, rate: int = 200) -> dict[str, float]:
    """Seconds (samples / rate) per phase of the stacks in ``raw``."""
    seconds: dict[str, float] = {name: 0.0 for name, _ in PHASES}
    seconds[OUTSIDE] = 0.0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        inside = "_inner_training_loop" in stack
        phase = OUTSIDE
        if inside:
            frames = stack.split(";")
            loop = next(i for i, f in enumerate(frames) if "_inner_training_loop" in f)
            below = frames[loop:]
            phase = next((name for name, marks in PHASES if any(m in f for f in below for m in marks)), OUTSIDE)
        seconds[phase] += int(count) / rate
    return seconds


def table(rows: list[tuple[str, dict[str, float], dict[str, float]]]) -> str:
    """``rows`` of (label, the script's phases, stmbench's phases) as lines of seconds."""
    lines = []
    for label, plain, ours in rows:
        lines.append(f"  {label}")
        for name in [*(n for n, _ in PHASES), OUTSIDE]:
            lines.append(f"    {name:<46} {plain[name]:6.2f} / {ours[name]:6.2f} s")
    return "\n".join(lines)
