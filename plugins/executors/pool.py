"""The ``pool`` executor: one worker process per device (or per share of the CPU cores), a fresh
process for every run.

``--executor pool --executor-option devices=cuda:0,cuda:1`` pins one worker to each GPU (through
``CUDA_VISIBLE_DEVICES``); ``--executor-option workers=N`` runs N CPU workers that split the cores.
Each worker is a fresh process, forked from ``multiprocessing``'s fork server, which imported torch,
transformers and peft once (spawned, where there is no fork server); it loads the plugins before its
run arrives, runs one spec (``runs_per_worker=N``: N specs, one after another), sends each outcome
back and exits, and a new worker takes its place.  So a run that kills its process (a segfault, ``os._exit``, CUDA
out of memory, the kernel's OOM killer) is stored as ``failed`` with the exit reason, and the grid
goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from stmbench import Executor, StmbenchError, hookimpl

log = logging.getLogger(__name__)


@dataclass
class PoolOptions:
    devices: Any = field(default="", metadata={
        "help": "comma-separated devices, one worker each, e.g. cuda:0,cuda:1 (default: every CUDA device, "
                "else CPU workers)"})
    workers: int = field(default=0, metadata={
        "help": "number of CPU workers when no devices are given; they split the cores "
                "(default: half the cores, at least 1)"})
    runs_per_worker: int = field(default=1, metadata={
        "help": "runs a worker process does before a fresh one replaces it (default 1: a fresh process per "
                "run; more reuses its loaded data and model files, and a crash still fails only its own run)"})

    def __post_init__(self) -> None:
        devices = self.devices if isinstance(self.devices, (list, tuple)) else str(self.devices or "").split(",")
        self.devices = [str(d).strip() for d in devices if str(d).strip()]
        for device in self.devices:
            kind, _, index = device.partition(":")
            if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
                raise ValueError(f"device {device!r} is not cpu, cuda or cuda:N")
        if int(self.workers) < 0:
            raise ValueError("workers must not be negative")
        self.workers = int(self.workers)
        self.runs_per_worker = int(self.runs_per_worker)
        if self.runs_per_worker < 1:
            raise ValueError("runs_per_worker must be at least 1")


@dataclass
class Slot:
    """One place a worker runs: its device as the run sees it, its environment, its CPU threads."""

    label: str
    device: str | None
    env: dict[str, str]
    threads: int


def plan_slots(options: PoolOptions, cpus: int | None = None, per_run: int = 1) -> list[Slot]:
    """One slot per worker.  With ``per_run`` k > 1 (``--devices-per-run``) a worker's runs are k
    processes each: the GPUs are split into groups of k (``cuda:0,cuda:1`` -> one worker seeing both),
    and a CPU worker gets at least k cores."""
    cpus = cpus or os.cpu_count() or 1
    devices = list(options.devices or [])
    if not devices and not options.workers:
        import torch

        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    groups: list[list[str]]
    if not devices:
        n = options.workers or max(1, cpus // (2 * per_run))
        groups = [["cpu"]] * n
    elif per_run > 1 and any(d.startswith("cuda") for d in devices):
        if len(devices) % per_run or not all(d.startswith("cuda") for d in devices):
            raise StmbenchError(f"pool: {len(devices)} device(s) ({', '.join(devices)}) do not split into groups "
                                f"of {per_run} GPUs (--devices-per-run {per_run})")
        groups = [devices[i:i + per_run] for i in range(0, len(devices), per_run)]
    else:
        groups = [[d] for d in devices]
    threads = max(1, cpus // len(groups))
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    slots = []
    for group in groups:
        if group[0].startswith("cuda"):
            indices = ",".join(d.partition(":")[2] or "0" for d in group)
            label = "+".join(group) if len(group) > 1 else group[0]
            slots.append(Slot(label, "cuda", {**env, "CUDA_VISIBLE_DEVICES": indices}, threads))
        else:
            slots.append(Slot("cpu", "cpu", {**env, "CUDA_VISIBLE_DEVICES": ""}, threads))
    return slots


def _exit_parent_watch(driver: int) -> None:
    """Exit when the driver is gone (killed with -9, say): its claims expire, nobody reads our result.
    (The driver is not our parent when we were forked by the fork server.)"""
    from stmbench import pid_alive

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if not pid_alive(driver):
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="stmbench-parent-watch").start()


def _driver_log_levels() -> dict[str, int]:
    """The driver's stmbench log levels, for a worker to log the same way (tagged with its slot)."""
    return {name: logging.getLogger(name).getEffectiveLevel() for name in ("stmbench", "stmbench_plugins")}


def _worker_main(runner: Any, conn: Any, env: dict[str, str], threads: int, parent: int,
                 levels: dict[str, int], label: str) -> None:
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)
    _exit_parent_watch(parent)
    from stmbench import tune_host_allocator

    tune_host_allocator()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(levelname)s %(name)s [worker {label} pid {os.getpid()}]: %(message)s"))
    for name, level in levels.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    import torch

    torch.set_num_threads(threads)
    runner.warm()
    while True:
        spec = conn.recv()
        if spec is None:
            break
        conn.send(runner(spec))
    conn.close()


def exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer sends it too)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


class Worker:
    def __init__(self, ctx: Any, slot: Slot, runner: Any):
        self.slot = slot
        self.conn, child = ctx.Pipe()
        # the driver's environment now (the fork server's is the one it had when it started), then the slot's
        env = {**os.environ, **slot.env}
        self.proc = ctx.Process(target=_worker_main, args=(runner, child, env, slot.threads, os.getpid(),
                                                           _driver_log_levels(), slot.label),
                                name=f"stmbench-worker-{slot.label}", daemon=False)
        self.proc.start()
        child.close()
        self.spec: Any = None
        self.runs = 0

    def give(self, spec: Any) -> None:
        self.spec = spec
        self.runs += 1
        self.conn.send(spec)

    def outcome(self) -> tuple[Any, Any] | str:
        """The run's ``(result, predictions)``, or why the process ended without them."""
        try:
            if self.conn.poll():
                outcome = self.conn.recv()
                self.spec = None
                return outcome
        except (EOFError, OSError):
            pass
        self.proc.join()
        return f"the worker process (pid {self.proc.pid}, {self.slot.label}) {exit_reason(self.proc.exitcode)}"

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


def worker_context() -> Any:
    """Where workers come from: the fork server, with what a run imports preloaded (no import per run,
    and no CUDA or threads in the process forked from), else spawn (no fork server on Windows)."""
    from stmbench import RUN_MODULES

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(RUN_MODULES))
    return ctx


class PoolExecutor(Executor):
    name = "pool"
    description = "one worker process per device (devices=cuda:0,cuda:1) or CPU share (workers=N), a fresh process per run"
    options_class = PoolOptions

    def execute(self, work, *, run, options: dict[str, Any]) -> None:
        slots = plan_slots(options, per_run=int(getattr(run.settings, "devices_per_run", 1) or 1))
        log.info("pool: %d worker(s): %s (%d CPU thread(s) each)", len(slots),
                 ", ".join(s.label for s in slots), slots[0].threads)
        ctx = worker_context()
        runners = {s.label: run.with_device(s.device) for s in slots}
        workers: list[Worker | None] = [Worker(ctx, s, runners[s.label]) for s in slots]
        try:
            while True:
                for i, worker in enumerate(workers):
                    if worker is not None and worker.spec is None:
                        spec = work.take()
                        if spec is None:
                            break
                        worker.give(spec)
                busy = [w for w in workers if w is not None and w.spec is not None]
                if not busy:
                    if work.finished():
                        break
                    work.wait()
                    continue
                waitables = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
                ready = set(multiprocessing.connection.wait(waitables, timeout=work.poll))
                for worker in busy:
                    if worker.conn not in ready and worker.proc.sentinel not in ready:
                        continue
                    spec = worker.spec
                    outcome = worker.outcome()
                    index = workers.index(worker)
                    if isinstance(outcome, str):
                        log.error("run %s: %s", spec.label(), outcome)
                        work.done(spec, run.failed(spec, outcome), None)
                    else:
                        work.done(spec, *outcome)
                        if worker.runs < options.runs_per_worker and work.open:
                            continue  # this worker takes the next run
                        worker.stop()
                    workers[index] = Worker(ctx, worker.slot, runners[worker.slot.label]) if work.open else None
        except BaseException:
            for worker in workers:
                if worker is not None:
                    worker.kill()
            raise
        for worker in workers:
            if worker is not None:
                worker.stop()


@hookimpl
def register_executors(register):
    register(PoolExecutor())

