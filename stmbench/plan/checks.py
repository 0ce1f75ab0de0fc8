"""Everything checkable about a grid, checked once before anything trains.

:func:`preflight` looks at the runs a study is about to do: the device and the precision it asks
for, the optimizer and schedule names, the results folder, and every data split of every task (loaded
and validated in full, so a bad file is one error naming its file and line, not one failed run per
cell).  It returns one line per check that passed (``--dry-run`` prints them) and raises one
:class:`StmbenchError` listing every problem found, one line each.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.core.modeling import pick_device
from stmbench.spec.axes import FULL
from stmbench.spec.run import RunSpec


def _device_problems(requested: str | None, runs: list[RunSpec]) -> tuple[list[str], str]:
    import torch

    problems: list[str] = []
    device = pick_device(requested)
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        return [f"--device {device}: unknown device (use cpu, cuda, cuda:N or mps)"], device
    if kind == "cuda":
        if not torch.cuda.is_available():
            return [f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                    f"{'no CUDA build' if torch.version.cuda is None else 'no visible GPU'})"], device
        if index and int(index) >= torch.cuda.device_count():
            return [f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)"], device
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return [f"--device {device}: MPS is not available here"], device
    if any(r.training.fp16 for r in runs) and kind not in ("cuda", "mps"):
        problems.append(f"--fp16: float16 mixed precision needs a GPU; the device is {device} (use --bf16 on CPU)")
    if any(r.training.bf16 for r in runs) and kind == "cuda" and not torch.cuda.is_bf16_supported():
        problems.append(f"--bf16: {torch.cuda.get_device_name(device)} cannot do bfloat16 (use --fp16)")
    return problems, device


def _scale_problems(settings: Any, runs: list[RunSpec], device: str) -> list[str]:
    """``--devices-per-run``, ``--fsdp`` and ``--deepspeed`` against the devices and packages here."""
    import importlib.util
    import json

    import torch

    k, problems = int(settings.devices_per_run), []
    kind, _, index = device.partition(":")
    if k < 1:
        return [f"--devices-per-run {k}: expected 1 or more"]
    if k > 1:
        if not torch.distributed.is_available():
            problems.append(f"--devices-per-run {k}: this torch build has no torch.distributed")
        if kind == "cuda" and index:
            problems.append(f"--devices-per-run {k} with --device {device}: a run takes the first {k} visible GPUs "
                            "(give --device cuda, and CUDA_VISIBLE_DEVICES to choose them)")
        elif kind == "cuda" and k > torch.cuda.device_count():
            problems.append(f"--devices-per-run {k}: there are only {torch.cuda.device_count()} CUDA device(s) here")
        elif kind == "cpu" and k > (os.cpu_count() or 1):
            problems.append(f"--devices-per-run {k}: there are only {os.cpu_count()} CPU core(s) here, "
                            "one per process at least")
        elif kind == "mps":
            problems.append(f"--devices-per-run {k}: MPS has one device; use 1")
        if any(r.pruner for r in runs):
            problems.append(f"--devices-per-run {k} with --pruner: a pruned sweep's trials run on one device each "
                            "(the ranks of one trial would each decide alone); drop one of them")
        odd = sorted({r.training.per_device_train_batch_size for r in runs
                      if r.training.per_device_train_batch_size % k})
        if odd:
            problems.append(f"--devices-per-run {k}: a step batch of {', '.join(map(str, odd))} does not split over "
                            f"{k} devices (--per-device-train-batch-size is the batch of one step, split over them)")
    if settings.fsdp and settings.deepspeed:
        problems.append("--fsdp and --deepspeed: choose one way to shard")
    if settings.fsdp_config and not settings.fsdp:
        problems.append("--fsdp-config without --fsdp: give the FSDP options too")
    if settings.fsdp and kind != "cuda":
        problems.append(f"--fsdp {settings.fsdp}: FSDP needs CUDA devices; the device is {device}")
    if settings.deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            problems.append(f"--deepspeed {settings.deepspeed}: DeepSpeed is not installed (pip install deepspeed)")
        if kind != "cuda":
            problems.append(f"--deepspeed {settings.deepspeed}: DeepSpeed needs CUDA devices; the device is {device}")
    for flag, path in (("--deepspeed", settings.deepspeed), ("--fsdp-config", settings.fsdp_config)):
        if path:
            try:
                json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                problems.append(f"{flag} {path}: not a readable JSON file ({type(exc).__name__})")
    return problems


def _name_problems(runs: list[RunSpec]) -> list[str]:
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    problems = []
    for setting, flag, known in (("optim", "--optim", [o.value for o in OptimizerNames]),
                                 ("lr_scheduler_type", "--lr-scheduler-type", [s.value for s in SchedulerType])):
        for value in sorted({getattr(r.training, setting) for r in runs}):
            if value not in known:
                problems.append(f"{flag} {value}: unknown; known: {', '.join(known)}")
    return problems


def _folder_problems(results_dir: Path) -> list[str]:
    if results_dir.exists() and not results_dir.is_dir():
        return [f"--results-dir {results_dir}: it is a file, not a folder"]
    existing = results_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return [f"--results-dir {results_dir}: {existing} is not writable"]
    return []


def _data_problems(runs: list[RunSpec], session: Any, skip_bad_rows: bool) -> tuple[list[str], list[str]]:
    """Load and validate every split the runs use; check the train splits against the train sizes."""
    problems, checked = [], []
    tasks: dict[str, set[str]] = {}
    for run in runs:
        task = session.get("task", run.task)
        strategy = session.get("strategy", run.strategy)
        splits = tasks.setdefault(run.task, {task.eval_split})
        if strategy.trains or run.shots:
            splits.add("train")
        if strategy.trains and run.training.eval_strategy != "no" and task.eval_split != "validation":
            splits.add("validation")  # selected on
    for name in sorted(tasks):
        task = session.get("task", name)
        for split in sorted(tasks[name]):
            try:
                data = session.task_data(task, split, skip_bad_rows=skip_bad_rows)
            except StmbenchError as exc:
                problems.append(f"task {name}, split {split}: {exc}")
                continue
            rows = len(data.dataset)
            if task.is_tokens:  # a tag per token: the tags of every sentence
                counts = Counter(t for tags in data.dataset["tags"][:] for t in tags) if rows else Counter()
            else:
                counts = Counter(data.dataset["label"][:]) if rows else Counter()  # [:]: the column at once
            if rows == 0:
                problems.append(f"task {name}, split {split}: {data.source} has no rows")
                continue
            if split == "train":
                if len(counts) < 2:
                    problems.append(f"task {name}, split train: every row has one label "
                                    f"({task.labels[next(iter(counts))].value!r}); a classifier needs at least two")
                elif rows < len(task.labels) and not task.is_tokens:
                    problems.append(f"task {name}, split train: {rows} rows, fewer than its {len(task.labels)} labels")
                sizes = sorted({r.train_size for r in runs if r.task == name and r.train_size not in (FULL, 0)})
                too_big = [s for s in sizes if int(s) > rows]
                if too_big:
                    problems.append(f"task {name}: train size(s) {', '.join(map(str, too_big))} exceed its {rows} "
                                    "training examples")
                shots = sorted({int(r.shots) for r in runs if r.task == name and r.shots})
                too_many = [k for k in shots if k > rows]
                if too_many:
                    problems.append(f"task {name}: {', '.join(map(str, too_many))} in-context example(s) asked for, "
                                    f"but its train split has {rows}")
            checked.append(f"task {name}, split {split}: {rows} rows, {len(counts)} label(s)")
    return problems, checked


def _teacher_problems(runs: list[RunSpec], session: Any) -> tuple[list[str], list[str]]:
    """Ask each teacher of the runs (once per distinct setting) whether it can work: its model found,
    its server reachable and serving the model, its API-key variable set."""
    import json

    problems, checked, seen = [], [], set()
    for run in runs:
        if run.teacher is None:
            continue
        options = run.teacher_settings
        key = json.dumps([run.teacher, options], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        teacher = session.get("teacher", run.teacher)
        problem = teacher.preflight(teacher.typed_options(options), session.context)
        if problem:
            problems.append(problem)
        else:
            checked.append(f"teacher {teacher.display(options)} is ready")
    return problems, checked


def preflight(runs: list[RunSpec], session: Any, *, skip_bad_rows: bool = False) -> list[str]:
    """Check ``runs`` before any of them trains; the lines of what was checked, or one error with
    every problem (one line each)."""
    if not runs:
        return []
    problems, device = _device_problems(session.settings.device, runs)
    problems += _scale_problems(session.settings, runs, device)
    problems += _name_problems(runs)
    problems += _folder_problems(session.settings.results_dir)
    from stmbench.core.trackers import check_trackers

    problems += check_trackers(list(session.settings.report_to))
    data_problems, checked = _data_problems(runs, session, skip_bad_rows)
    problems += data_problems
    teacher_problems, teachers_checked = _teacher_problems(runs, session)
    problems += teacher_problems
    checked += teachers_checked
    if problems:
        raise StmbenchError("\n".join(problems) if len(problems) == 1 else
                            f"{len(problems)} problems found before training:\n" + "\n".join(f"  {p}" for p in problems))
    k = int(session.settings.devices_per_run)
    return [f"device {device}" + (f" x {k} processes per run (torchrun)" if k > 1 else "")
            + (" (bf16)" if any(r.training.bf16 for r in runs) else "")
            + (" (fp16)" if any(r.training.fp16 for r in runs) else ""),
            "optimizer(s) " + ", ".join(sorted({r.training.optim for r in runs})) + "; schedule(s) "
            + ", ".join(sorted({r.training.lr_scheduler_type for r in runs})),
            f"results folder {session.settings.results_dir} is writable", *checked]
