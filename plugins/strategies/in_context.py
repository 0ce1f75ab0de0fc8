"""``in_context``: zero-shot and k-shot prompting with no training, evaluated through lm-eval.

The task is written as an lm-eval ``multiple_choice`` YAML task (the same as ``stmbench
export-lm-eval`` writes) into a folder under the cache; ``lm_eval.simple_evaluate`` runs it with
``TaskManager(include_path=folder)`` on the in-memory backbone wrapped as ``HFLM(pretrained=model)``.
Per-example predictions come from lm-eval's logged samples; the result lands in the same store and
leaderboard as trained runs, with train size 0 and the ``--shots`` axis.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from stmbench import hookimpl
from stmbench.lm_eval_export import task_config, write_jsonl
from stmbench.types import HEAD_CAUSAL_LM, Prediction, Strategy

log = logging.getLogger(__name__)


def lm_eval_predict(model: Any, tokenizer: Any, *, task: Any, prompt: str, shots: int, seed: int,
                    eval_data: Any, train_data: Any, batch_size: int, work_dir: Path) -> dict[str, Any]:
    """Evaluate ``model`` on ``eval_data`` with lm-eval; return predictions (label indices, in the
    order of ``eval_data``), lm-eval's own accuracy and the task name used."""
    import lm_eval
    import yaml
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

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
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        quiet = logging.getLogger("lm_eval")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its warnings about an in-memory model are expected
        try:
            out = lm_eval.simple_evaluate(
                model=lm, tasks=[name], num_fewshot=shots, log_samples=True, bootstrap_iters=0,
                task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        finally:
            quiet.setLevel(level)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    logliks = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    predicted = [max(range(len(row)), key=row.__getitem__) for row in logliks]
    return {"predicted": predicted, "logliks": logliks, "acc": float(out["results"][name]["acc,none"]),
            "task": name}


class InContextStrategy(Strategy):
    name = "in_context"
    description = "zero/few-shot prompting, no training, scored by lm-eval (multiple_choice over the verbalizer)"
    head = HEAD_CAUSAL_LM
    trains = False
    needs_decoder = True

    def normalize(self, spec: Any, info: Any) -> Any:
        return spec.replace(adapter="none", adapter_options={}, train_size=0)

    def predict(self, model: Any, *, data: Any, task: Any, tokenizer: Any, spec: Any, session: Any) -> Prediction:
        train = session.task_data(task, "train", skip_bad_rows=spec.skip_bad_rows).dataset if spec.shots else None
        out = lm_eval_predict(model, tokenizer, task=task, prompt=spec.prompt, shots=spec.shots or 0, seed=spec.seed,
                              eval_data=data, train_data=train,
                              batch_size=spec.training.per_device_eval_batch_size,
                              work_dir=session.settings.cache_dir / "lm_eval")
        return Prediction(out["predicted"], {"metrics": {"lm_eval_acc": out["acc"]}, "lm_eval_task": out["task"]})


@hookimpl
def register_strategies(register):
    register(InContextStrategy())
