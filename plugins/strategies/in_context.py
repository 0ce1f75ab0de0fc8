"""``in_context``: zero-shot and k-shot prompting with no training, built and checked with lm-eval.

The task is written as an lm-eval ``multiple_choice`` YAML task (the same as ``stmbench
export-lm-eval`` writes) into a folder under the cache and loaded with
``TaskManager(include_path=folder)``.  Two engines (option ``engine``):

- ``stmbench`` (default): lm-eval builds every request (prompt, few-shot examples drawn with the
  run's seed, continuations) exactly as ``simple_evaluate`` would; stmbench's scorer computes the
  log-likelihoods in length-sorted batches, one forward pass per example when the answers are one
  token, projecting only the scored positions.  Same predictions, less time.
- ``lm_eval``: ``lm_eval.simple_evaluate`` end to end on the in-memory backbone wrapped as
  ``HFLM(pretrained=model)``; per-example predictions come from its logged samples (a cross-check).

The result lands in the same store and leaderboard as trained runs, with train size 0 and the
``--shots`` axis.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stmbench import (
    HEAD_CAUSAL_LM, hookimpl, keeps_logits, lm_eval_task_config as task_config, PaddingMeter, Prediction,
    Strategy, TokenBudget, write_jsonl
)
from stmbench_plugins.strategies._common import argmax, score_requests

log = logging.getLogger(__name__)

ENGINES = ("stmbench", "lm_eval")


@dataclass
class InContextOptions:
    engine: str = field(default="stmbench", metadata={
        "help": "stmbench: lm-eval builds the requests, stmbench's one-pass scorer scores them (the same "
                "predictions, faster); lm_eval: lm_eval.simple_evaluate end to end (a cross-check)"})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}: use one of {', '.join(ENGINES)}")


@contextlib.contextmanager
def lm_eval_task(task: Any, *, prompt: str, shots: int, eval_data: Any, train_data: Any,
                 work_dir: Path) -> Iterator[tuple[str, Any]]:
    """The task as an lm-eval YAML task in a temporary folder: yields its name and a ``TaskManager``."""
    from lm_eval.tasks import TaskManager
    import yaml

    digest = hashlib.sha256(f"{task.name}|{prompt}|{len(eval_data)}|{shots}".encode()).hexdigest()[:8]
    name = f"stmbench_{task.name.replace('-', '_')}_{prompt}_{digest}"
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="lm_eval-") as tmp:
        folder = Path(tmp)
        files = {"test": str(folder / "eval.jsonl")}
        write_jsonl(Path(files["test"]), eval_data)
        if shots:
            files["train"] = str(folder / "train.jsonl")
            write_jsonl(Path(files["train"]), train_data)
        config = task_config(task, prompt=prompt, data_files=files, name=name)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                                             encoding="utf-8")
        quiet = logging.getLogger("lm_eval")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its warnings about an in-memory model are expected
        try:
            yield name, TaskManager(include_path=str(folder), include_defaults=False)
        finally:
            quiet.setLevel(level)


def lm_eval_requests(manager: Any, name: str, *, shots: int, seed: int) -> list[list[tuple[str, str]]]:
    """The ``(context, continuation)`` of every choice of every example, in document order, as
    ``lm_eval.simple_evaluate`` builds them (``num_fewshot`` and the few-shot seed set the same way)."""
    task_obj = manager.load([name])["tasks"][name]
    if task_obj.get_config("num_fewshot") != 0:  # simple_evaluate keeps a task's own explicit 0
        task_obj.set_config(key="num_fewshot", value=shots)
    task_obj.set_fewshot_seed(seed=seed)
    task_obj.build_all_requests(limit=None, rank=0, world_size=1)
    by_doc: dict[int, dict[int, tuple[str, str]]] = {}
    for instance in task_obj.instances:
        by_doc.setdefault(instance.doc_id, {})[instance.idx] = tuple(instance.args)
    return [[by_doc[d][k] for k in sorted(by_doc[d])] for d in sorted(by_doc)]


def stmbench_predict(model: Any, tokenizer: Any, *, task: Any, prompt: str, shots: int, seed: int,
                     eval_data: Any, train_data: Any, batch_size: int | TokenBudget, work_dir: Path) -> dict[str, Any]:
    """lm-eval's requests scored by :func:`score_requests`; cut from the left to lm-eval's context
    length (``resolve_max_length`` of the model, plus the token whose prediction is not read)."""
    from lm_eval.models.utils import resolve_max_length

    with lm_eval_task(task, prompt=prompt, shots=shots, eval_data=eval_data, train_data=train_data,
                      work_dir=work_dir) as (name, manager):
        requests = lm_eval_requests(manager, name, shots=shots, seed=seed)
    meter = PaddingMeter()
    max_len = resolve_max_length(getattr(model, "config", None), tokenizer) + 1
    scores, mode = score_requests(model, tokenizer, requests, max_len=max_len, batch_size=batch_size, meter=meter)
    return {"predicted": [argmax(row) for row in scores], "logliks": scores, "scoring": mode,
            "padding": meter.report(), "task": name}


def budget_hflm(model: Any, tokenizer: Any, budget: TokenBudget) -> Any:
    """lm-eval's ``HFLM`` on the in-memory model, batching by ``budget``.

    ``HFLM(batch_size="auto")`` asks ``_batch_scheduler(pos, requests)`` for the size of the batch
    that ends at each position of its longest-first request list (``Collator.get_chunks``); its own
    scheduler finds a size by trying forward passes until one does not raise out-of-memory, which on
    a CPU never happens (the kernel kills the process).  This one plans the batches from the token
    budget instead: a batch starts at a request and takes as many as fit its padded length (lm-eval
    cuts every request to ``max_length`` tokens as here)."""
    from lm_eval.models.huggingface import HFLM

    class BudgetHFLM(HFLM):
        def _batch_scheduler(self, pos: int, n_reordered_requests: Any) -> int:
            requests = n_reordered_requests
            if getattr(self, "_planned_for", None) is not requests:
                self._planned_for, self._size_at = requests, {}
                start = 0
                while start < len(requests):
                    _, ctx, cont = requests[start]
                    length = len((ctx + cont)[-(self.max_length + 1):][:-1])
                    size = min(budget.rows_for(length), len(requests) - start)
                    self._size_at.update(dict.fromkeys(range(start, start + size), size))
                    start += size
            return self._size_at[pos]

        def _detect_batch_size(self, requests: Any = None, pos: int = 0) -> int:
            return budget.rows_for(self.max_length)  # rolling log-likelihoods: windows of max_length

    return BudgetHFLM(pretrained=model, tokenizer=tokenizer, batch_size="auto", max_batch_size=budget.max_batch)


def lm_eval_predict(model: Any, tokenizer: Any, *, task: Any, prompt: str, shots: int, seed: int,
                    eval_data: Any, train_data: Any, batch_size: int | TokenBudget, work_dir: Path) -> dict[str, Any]:
    """Evaluate ``model`` on ``eval_data`` with ``lm_eval.simple_evaluate``; return predictions
    (label indices, in the order of ``eval_data``), lm-eval's own accuracy and the task name used."""
    import lm_eval

    from stmbench import as_budget

    with lm_eval_task(task, prompt=prompt, shots=shots, eval_data=eval_data, train_data=train_data,
                      work_dir=work_dir) as (name, manager):
        lm = budget_hflm(model, tokenizer, as_budget(batch_size))
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[name], num_fewshot=shots, log_samples=True, bootstrap_iters=0,
            task_manager=manager, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    logliks = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    predicted = [argmax(row) for row in logliks]
    return {"predicted": predicted, "logliks": logliks, "acc": float(out["results"][name]["acc,none"]),
            "task": name}


class InContextStrategy(Strategy):
    name = "in_context"
    description = ("zero/few-shot prompting, no training: lm-eval's multiple_choice requests over the verbalizer, "
                   "scored by stmbench (engine=stmbench) or by lm-eval itself (engine=lm_eval)")
    head = HEAD_CAUSAL_LM
    trains = False
    needs_decoder = True
    options_class = InContextOptions

    def normalize(self, spec: Any, info: Any) -> Any:
        return spec  # keeps the shots axis (the planner sets the no-training adapter and train size 0)

    def predict(self, model: Any, *, data: Any, task: Any, tokenizer: Any, spec: Any, context: Any) -> Prediction:
        train = context.task_data(task, "train", skip_bad_rows=spec.skip_bad_rows).dataset if spec.shots else None
        engine = self.typed_options(spec.strategy_options).engine
        run = stmbench_predict if engine == "stmbench" else lm_eval_predict
        budget = context.eval_budget(model, spec, full_logits=engine == "lm_eval" or not keeps_logits(model))
        out = run(model, tokenizer, task=task, prompt=spec.prompt, shots=spec.shots or 0, seed=spec.seed,
                  eval_data=data, train_data=train, batch_size=budget,
                  work_dir=context.cache_dir / "lm_eval")
        info: dict[str, Any] = {"engine": engine, "lm_eval_task": out["task"]}
        if engine == "lm_eval":
            return Prediction(out["predicted"], metrics={"lm_eval_acc": out["acc"]}, info=info)
        return Prediction(out["predicted"], padding=out["padding"], info={**info, "scoring": out["scoring"]})


@hookimpl
def register_strategies(register):
    register(InContextStrategy())
