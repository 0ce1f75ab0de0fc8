"""A test plugin for the scale-out tests, steered by environment variables (so it works the same in
the driver, in pool workers, in Ray workers and in separate ``stmbench run`` processes):

* ``STMBENCH_TEST_TRAININGS=FILE``: every started run appends ``run_id pid`` to FILE;
* ``STMBENCH_TEST_EXIT_SEED=N``: a run with seed N kills its own process with ``os._exit(3)``;
* ``STMBENCH_TEST_KILL_AT_STEP=N``: the process is killed with SIGKILL at training step N;
* ``STMBENCH_TEST_STEPS=FILE``: every trained run appends ``run_id first_step`` to FILE;
* ``STMBENCH_TEST_FAIL_SEED=N``: a run with seed N raises an error as its training starts (with
  ``STMBENCH_TEST_FAIL_RANK=R`` as well: only rank R of a run launched on several processes);
* ``STMBENCH_TEST_SPOIL_FROM_EPOCH=N``: from the end of epoch N on, every weight is zeroed (the model
  "overfits": its dev accuracy falls), so dev selection must pick an earlier epoch.
"""

from __future__ import annotations

import os
import signal

from transformers import TrainerCallback

from stmbench import hookimpl


def _append(var: str, line: str) -> None:
    path = os.environ.get(var)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


class StepWatch(TrainerCallback):
    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        spoil = os.environ.get("STMBENCH_TEST_SPOIL_FROM_EPOCH")
        if spoil and model is not None and state.epoch >= float(spoil) - 1e-6:
            import torch

            with torch.no_grad():
                for param in model.parameters():
                    param.zero_()

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.first = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.first:
            _append("STMBENCH_TEST_STEPS", f"{self.run_id} {state.global_step}")
            self.first = False
        kill_at = os.environ.get("STMBENCH_TEST_KILL_AT_STEP")
        if kill_at and state.global_step == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def run_started(run):
    _append("STMBENCH_TEST_TRAININGS", f"{run.run_id} {os.getpid()}")
    if os.environ.get("STMBENCH_TEST_EXIT_SEED") == str(run.seed):
        os._exit(3)


@hookimpl
def trainer_callbacks(run):
    if os.environ.get("STMBENCH_TEST_FAIL_SEED") == str(run.seed):
        rank = os.environ.get("STMBENCH_TEST_FAIL_RANK")
        if rank is None:
            raise RuntimeError(f"test failure of seed {run.seed}")
        if os.environ.get("RANK") == rank:
            raise RuntimeError(f"test failure of rank {rank}")
    return [StepWatch(run.run_id)]
