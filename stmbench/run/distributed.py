"""One run on k devices: ``--devices-per-run k`` launches the run as k processes with ``torchrun``
(``torch.distributed.run``), one per device, and the ``transformers`` Trainer trains data-parallel
(DDP; with ``--fsdp`` or ``--deepspeed`` sharded, as ``TrainingArguments`` take them).

The batch a run's spec names (``per_device_train_batch_size``) is the batch of one optimizer step
before accumulation, split over the k processes: each trains on ``batch / k`` rows per step, so the
effective batch, and with it the run's identity, is that of the same run on one device (the two are
the same run, stored once).  Every rank reads the data and builds the model; rank 0 alone writes
checkpoints (the Trainer's rule), predicts the evaluation split on the trained weights (the same
predictions a one-process run makes from those weights), keeps the model and hands the outcome back
to the launcher, which returns it to the executor like any in-process run.  A rank that fails exits
non-zero with its reason in the run's folder; ``torchrun`` then stops the others, and the run is
stored as failed with that rank's reason while the grid goes on.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError

log = logging.getLogger(__name__)

#: set in every rank's environment: the folder the launcher and its ranks share for one run
RUN_FOLDER = "STMBENCH_RANK_FOLDER"
PAYLOAD, OUTCOME = "payload.pkl", "outcome.pkl"
#: set where the ranks of a run may be on machines that share no folder (Ray Train across nodes):
#: every node's first rank saves the checkpoints (``save_on_each_node``), so each can load them
NODES_APART = "STMBENCH_NODES_APART"
#: who started the ranks, for the result (``torchrun`` unless a launcher says otherwise: ``ray_train``)
LAUNCHER = "STMBENCH_LAUNCHER"
TAIL = 4000  # characters of torchrun's output kept for a run whose ranks died without a reason


@dataclass(frozen=True)
class World:
    """Where this process stands in a distributed run (``size`` 1: a run in one process)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from the variables ``torchrun`` sets, but only inside a run stmbench
    launched (a driver started by someone else's launcher is one process to stmbench)."""
    if not os.environ.get(RUN_FOLDER):
        return World()
    return World(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                 size=int(os.environ.get("WORLD_SIZE", 1)))


def per_device_batch(batch: int, devices: int) -> int:
    """The rows each of ``devices`` processes trains on per step; an error where they do not divide."""
    if devices < 1:
        raise StmbenchError(f"--devices-per-run {devices}: expected 1 or more")
    if batch % devices:
        raise StmbenchError(f"a training batch of {batch} does not split over {devices} devices "
                            f"(--per-device-train-batch-size is the batch of one step, split over --devices-per-run)")
    return batch // devices


def record(spec: Any, settings: Any, size: int, device: str) -> dict[str, Any]:
    """The result's ``distributed`` fields: how a run was spread and the batch it trained with."""
    t = spec.training
    backend = None if size == 1 else "gloo" if device.startswith("cpu") else "nccl"
    per_device = t.per_device_train_batch_size // size
    return {"world_size": size, "backend": backend,
            "launcher": os.environ.get(LAUNCHER, "torchrun") if size > 1 else None,
            "sharding": "fsdp" if settings.fsdp else "deepspeed" if settings.deepspeed else "ddp" if size > 1 else None,
            "fsdp": settings.fsdp or None, "deepspeed": str(settings.deepspeed) if settings.deepspeed else None,
            "per_device_train_batch_size": per_device, "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "effective_batch": per_device * size * t.gradient_accumulation_steps}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(runner: Any, spec: Any) -> tuple[Any, Any]:
    """Run ``spec`` as ``runner.settings.devices_per_run`` processes under ``torchrun``; return
    ``(result, predictions)`` as :meth:`Runner.__call__` does, never raising for the run's own failure."""
    k = int(runner.settings.devices_per_run)
    with tempfile.TemporaryDirectory(prefix=f"stmbench-{spec.run_id}-") as tmp:
        folder = Path(tmp)
        (folder / PAYLOAD).write_bytes(pickle.dumps((runner, spec)))
        env = dict(os.environ)
        env[RUN_FOLDER] = str(folder)
        import torch

        # the launcher's own share of the cores (a pool worker's, a Ray task's), split over the k ranks
        threads = max(1, torch.get_num_threads() // k) if str(runner.session.device).startswith("cpu") else None
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={k}", "--nnodes=1",
                   "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "--max-restarts=0",
                   "-m", "stmbench.run.rank", str(folder)]
        log.info("run %s: %d processes (torchrun)", runner.session.run_label(spec), k)
        done = _run_showing_logs(command, env)
        outcome = folder / OUTCOME
        if outcome.is_file():
            result, predictions = pickle.loads(outcome.read_bytes())
            if done.returncode != 0 and result.status == "ok":
                result.status, result.error = "failed", _reason(folder, done)
            elif done.returncode != 0 and result.status == "failed":
                # rank 0 may have failed only because another rank failed or died under it: that comes first
                result.error = "; ".join([*_causes(folder, done, besides_rank_0=True), result.error or "failed"])
            return result, predictions
        return runner.failed(spec, _reason(folder, done)), None


#: the ranks' own log lines (``LEVEL stmbench.module: message``), passed on to the launcher's stderr
RANK_LOG = re.compile(r"^(WARNING|ERROR|CRITICAL) stmbench[\w.]*: ")


def _run_showing_logs(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run torchrun, passing the ranks' stmbench log lines on to this process's log as they come and
    keeping the rest (torchrun's own lines, its failure summary) for the run's reason."""
    kept: list[str] = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if RANK_LOG.match(line):  # again through the logger that wrote it, so it reads as it would here
                level, _, rest = line.rstrip("\n").partition(" ")
                name, _, message = rest.partition(": ")
                logging.getLogger(name).log(logging.getLevelName(level), "%s", message)
            else:
                kept.append(line)
                if len(kept) > 2000:
                    del kept[:1000]
        code = proc.wait()
    return subprocess.CompletedProcess(command, code, stdout="".join(kept))


def signal_deaths(output: str) -> list[str]:
    """``rank-R: Signal 9 (SIGKILL) received by PID N`` for each rank torchrun's failure summary
    reports killed by a signal (its ``rank :`` / ``traceback :`` lines)."""
    deaths = []
    for block in re.split(r"\n\s*\[\d+\]:\s*\n", output):
        rank = re.search(r"^\s*rank\s*:\s*(\d+)", block, re.M)
        why = re.search(r"^\s*traceback\s*:\s*(Signal \d+ \(\w+\).*)$", block, re.M)
        if rank and why:
            deaths.append(f"rank-{rank.group(1)}: {why.group(1).strip()}")
    return sorted(set(deaths))


def _causes(folder: Path, done: subprocess.CompletedProcess, *, besides_rank_0: bool = False) -> list[str]:
    """Why the ranks of a launch failed, causes first: the reasons ranks left (other ranks before rank
    0), then ranks a signal killed, except the SIGTERM torchrun sends the others once one has failed
    (named only where nothing else is known)."""
    files = sorted(folder.glob("rank-*.error"), key=lambda p: (p.stem == "rank-0", p.stem))
    reasons = [f"{p.stem}: {p.read_text(encoding='utf-8', errors='replace').strip()}" for p in files
               if not (besides_rank_0 and p.stem == "rank-0")]
    deaths = signal_deaths(done.stdout or "")
    killed = [d for d in deaths if "(SIGTERM)" not in d]
    return reasons + killed if reasons or killed or besides_rank_0 else deaths


def _reason(folder: Path, done: subprocess.CompletedProcess) -> str:
    causes = _causes(folder, done)
    if causes:
        return "; ".join(causes)
    tail = (done.stdout or "")[-TAIL:].strip().splitlines()
    return f"torchrun exited with {done.returncode}" + (f": {tail[-1]}" if tail else "")


__all__ = ["LAUNCHER", "NODES_APART", "OUTCOME", "PAYLOAD", "RUN_FOLDER", "World", "launch", "per_device_batch", "record", "world"]
