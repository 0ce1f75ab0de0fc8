"""One rank of a run launched on several processes (:func:`stmbench.run.distributed.launch`):
``python -m stmbench.run.rank FOLDER`` under ``torchrun``.  Rank 0 runs the whole lifecycle (hooks,
training, prediction, keeping the model) and leaves its outcome in FOLDER; the other ranks train
with it and stop; a rank that fails leaves its reason in FOLDER and exits non-zero."""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path

from stmbench.run.distributed import LAUNCHER, NODES_APART, OUTCOME, PAYLOAD, RUN_FOLDER, world

log = logging.getLogger(__name__)


def main(folder: Path, payload: str = PAYLOAD) -> int:
    """One rank of a launched run; rank 0's outcome goes to ``FOLDER/outcome.pkl``."""
    import torch

    from stmbench.run.pipeline import error_text, execute, run_spec

    here = world()
    runner, spec = pickle.loads((folder / payload).read_bytes())
    if runner.session.device.startswith("cuda"):
        runner = runner.with_device(f"cuda:{here.local_rank}")  # its session is rebuilt with this rank's device
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    session = runner.session
    info = runner.backbones.get(spec.backbone)
    if here.main:
        result, predictions = run_spec(spec, session, info=info)
        tmp = folder / (OUTCOME + f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps((result, predictions)))
        os.replace(tmp, folder / OUTCOME)
        if result.status == "failed":
            (folder / f"rank-{here.rank}.error").write_text(result.error or "failed", encoding="utf-8")
            return 1  # torchrun stops the ranks still waiting in a collective
        return 0
    try:
        execute(spec, session, info)  # trains with the others; prediction and writing are rank 0's
    except Exception as exc:  # noqa: BLE001 - the reason goes to the launcher, the run fails
        message = error_text(exc)
        (folder / f"rank-{here.rank}.error").write_text(message, encoding="utf-8")
        log.error("rank %d of run %s failed: %s", here.rank, session.run_label(spec), message)
        return 1
    return 0


def run_here(payload: bytes, folder: str, *, nodes_apart: bool = False,
             launcher: str = "torchrun") -> tuple[int, bytes | None, str | None]:
    """Be one rank of a run in a process another launcher started with the torch.distributed
    variables set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``: Ray Train's workers): the same as under
    torchrun, in ``folder`` (the same path on every rank; created here).  Returns ``(exit code, rank
    0's pickled outcome or None, this rank's reason for failing or None)``.  ``nodes_apart``: the ranks
    may be on machines that share no folder, so every node's first rank keeps the checkpoints;
    ``launcher``: who started the ranks, as the result records it."""
    where = Path(folder)
    os.environ[LAUNCHER] = launcher
    if nodes_apart:
        os.environ[NODES_APART] = "1"
    where.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_FOLDER] = str(where)
    rank = world().rank
    (where / f"{PAYLOAD}.{rank}").write_bytes(payload)
    code = main(where, payload=f"{PAYLOAD}.{rank}")
    error = where / f"rank-{rank}.error"
    outcome = where / OUTCOME
    return (code, outcome.read_bytes() if rank == 0 and outcome.is_file() else None,
            f"rank-{rank}: {error.read_text(encoding='utf-8', errors='replace').strip()}" if error.is_file() else None)


if __name__ == "__main__":
    from stmbench.common import hostmem

    hostmem.tune()  # as the console command does
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1])))


__all__ = ["main", "run_here"]
