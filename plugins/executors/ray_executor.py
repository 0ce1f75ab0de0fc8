"""The ``ray`` executor: every run is a Ray task on a Ray cluster (``pip install "stmbench[ray]"``).

Each run is one task with the resources it needs (``num_cpus``, ``num_gpus``) and ``max_calls=1``, so
it gets a fresh worker process that gives its GPU memory back when it ends.  ``address=auto`` joins
a running cluster (``ray start --head`` / ``ray start --address=...`` on the nodes); no address starts
a local instance.  Outcomes come back to the driver, which stores them, so the workers need no
shared results folder.  A task whose worker dies (segfault, OOM kill, a lost node) is stored as a
``failed`` run with Ray's reason; Ray does not retry it (``max_retries=0``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from stmbench import Executor, hookimpl, StmbenchError

log = logging.getLogger(__name__)


@dataclass
class RayOptions:
    address: str = field(default="", metadata={
        "help": "'auto' joins the running cluster, or a cluster address (host:port, ray://host:10001); "
                "empty starts a local instance"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs per run"})
    num_gpus: Any = field(default=None, metadata={
        "help": "GPUs per run (default: --devices-per-run where the cluster has GPUs, else 0; on CPUs a run "
                "of k processes asks for at least k CPUs)"})
    max_in_flight: int = field(default=0, metadata={
        "help": "most runs submitted at once (default: as many as the cluster's resources fit)"})
    local_cpus: int = field(default=0, metadata={
        "help": "CPUs of a local instance started here (default: all of this machine's)"})
    placement: str = field(default="auto", metadata={
        "help": "where the k processes of a run (--devices-per-run k) go: 'task' (one Ray task that starts "
                "them with torchrun, on one node), 'train' (k Ray Train workers, TorchTrainer, across nodes), "
                "or 'auto': train where k is more than one node has (default auto)"})

    def __post_init__(self) -> None:
        self.address = str(self.address or "")
        self.num_cpus = float(self.num_cpus)
        if self.num_cpus <= 0:
            raise ValueError("num_cpus must be positive")
        if self.num_gpus is not None:
            self.num_gpus = float(self.num_gpus)
            if self.num_gpus < 0:
                raise ValueError("num_gpus must not be negative")
        if self.placement not in ("auto", "task", "train"):
            raise ValueError(f"placement {self.placement!r}: expected auto, task or train")
        if int(self.max_in_flight) < 0 or int(self.local_cpus) < 0:
            raise ValueError("max_in_flight and local_cpus must not be negative")
        self.max_in_flight, self.local_cpus = int(self.max_in_flight), int(self.local_cpus)


def _ray_run(runner: Any, spec: Any, threads: int) -> Any:
    """The body of one Ray task (in a fresh worker process)."""
    import torch

    from stmbench import tune_host_allocator

    tune_host_allocator()
    torch.set_num_threads(max(1, threads))
    return runner(spec)


def _train_rank(config: dict[str, Any]) -> None:
    """One Ray Train worker: one rank of the run (Ray Train set up its process group and variables)."""
    import ray

    from stmbench import run_rank_here

    code, outcome, error = run_rank_here(config["payload"], config["folder"], nodes_apart=True, launcher="ray_train")
    if outcome is not None:
        ray.get(config["mailbox"].put.remote("outcome", outcome))
    if error is not None:
        ray.get(config["mailbox"].put.remote("error", error))
    if code:
        raise RuntimeError(error or f"exit code {code}")


def _ray_train_run(runner: Any, spec: Any, k: int, use_gpu: bool, cpus: float) -> Any:
    """One run on ``k`` Ray Train workers (a ``TorchTrainer``, which may place them on several nodes);
    rank 0's outcome comes back through a small actor, so no node needs the driver's folders."""
    import os
    import pickle
    import shutil
    import tempfile
    import uuid

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    @ray.remote(num_cpus=0)
    class Mailbox:
        def __init__(self) -> None:
            self.items: dict[str, list[Any]] = {}

        def put(self, key: str, value: Any) -> None:
            self.items.setdefault(key, []).append(value)

        def read(self) -> dict[str, list[Any]]:
            return self.items

    mailbox = Mailbox.remote()
    folder = os.path.join(tempfile.gettempdir(), f"stmbench-ray-{spec.run_id}-{uuid.uuid4().hex[:8]}")
    per_worker = {"CPU": cpus, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_rank, train_loop_config={"payload": pickle.dumps((runner, spec)), "folder": folder, "mailbox": mailbox},
        scaling_config=ScalingConfig(num_workers=k, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(name=f"stmbench-{spec.run_id}", storage_path=os.path.join(folder, "ray"),
                             failure_config=FailureConfig(max_failures=0)))
    failure = None
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - a failed rank: the run fails with its reason
        failure = f"Ray Train: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # this node's copy (other nodes' ranks leave theirs in /tmp)
    items = ray.get(mailbox.read.remote())
    if items.get("outcome"):
        result, predictions = pickle.loads(items["outcome"][0])
        if items.get("error") and result.status == "ok":
            result.status, result.error = "failed", "; ".join(sorted(items["error"]))
        return result, predictions
    return runner.failed(spec, "; ".join(sorted(items.get("error", []))) or failure or "Ray Train: no outcome"), None


def _capacity(resources: dict[str, float], num_cpus: float, num_gpus: float) -> int:
    fits = [int(resources.get("CPU", 1) // num_cpus)]
    if num_gpus:
        fits.append(int(resources.get("GPU", 0) // num_gpus))
    return max(1, min(fits))


def _across_nodes(placement: str, k: int, gpus: bool) -> bool:
    """Whether a run's k processes are Ray Train workers (``train``) rather than one task's torchrun."""
    if placement != "auto":
        return placement == "train"
    import ray

    kind = "GPU" if gpus else "CPU"
    most = max((node.get("Resources", {}).get(kind, 0) for node in ray.nodes() if node.get("Alive")), default=0)
    return k > most


class RayExecutor(Executor):
    name = "ray"
    description = "one Ray task per run on a Ray cluster (address=auto) or a local instance; the driver stores"
    options_class = RayOptions

    def execute(self, work, *, run, options: dict[str, Any]) -> None:
        try:
            import ray
            from ray.exceptions import RayError
        except ImportError:
            raise StmbenchError('the ray executor needs Ray: pip install "stmbench[ray]"') from None
        started = False
        pending: dict[Any, Any] = {}  # Ray object ref -> spec
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if options.address:
                ray.init(address=options.address, **kwargs)
            else:
                ray.init(num_cpus=options.local_cpus or None, **kwargs)
                started = True
        try:
            resources = ray.cluster_resources()
            k = int(getattr(run.settings, "devices_per_run", 1) or 1)  # a run's processes (--devices-per-run)
            gpus = options.num_gpus if options.num_gpus is not None else (float(k) if resources.get("GPU") else 0.0)
            cpus = options.num_cpus if gpus else max(options.num_cpus, float(k))  # a CPU process per rank
            if k > 1 and gpus and gpus < k:
                raise StmbenchError(f"ray: num_gpus={gpus:g} per run, but --devices-per-run {k} needs {k}")
            limit = options.max_in_flight or _capacity(resources, cpus, gpus)
            log.info("ray: %s CPU(s), %s GPU(s) in the cluster; %d run(s) at a time", resources.get("CPU", 0),
                     resources.get("GPU", 0), limit)
            runner = ray.put(run)
            threads = int(cpus)
            task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=0)(_ray_run)

            across = k > 1 and _across_nodes(options.placement, k, bool(gpus))
            per_rank = 1.0 if gpus else max(1.0, cpus / k)
            train_task = None
            if across:
                # the run's k ranks are k Ray Train workers (one GPU, or cpus / k CPUs, each); the task
                # that drives their TorchTrainer takes no resources of its own
                limit = options.max_in_flight or _capacity(resources, k * per_rank, float(k) if gpus else 0.0)
                log.info("ray: each run on %d Ray Train workers (%g %s each)", k, per_rank, "GPU" if gpus else "CPU")
                train_task = ray.remote(num_cpus=0, max_retries=0)(_ray_train_run)

            def submit(spec: Any) -> Any:
                if train_task is not None:
                    return train_task.remote(runner, spec, k, bool(gpus), per_rank)
                return task.remote(runner, spec, threads)

            while True:
                while len(pending) < limit:
                    spec = work.take()
                    if spec is None:
                        break
                    pending[submit(spec)] = spec
                if not pending:
                    if work.finished():
                        break
                    work.wait()
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=work.poll)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        result, predictions = ray.get(ref)
                    except RayError as exc:
                        reason = f"the Ray task failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                        log.error("run %s: %s", spec.label(), reason)
                        result, predictions = run.failed(spec, reason), None
                    work.done(spec, result, predictions)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


@hookimpl
def register_executors(register):
    register(RayExecutor())
