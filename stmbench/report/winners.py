"""The winners a study keeps, their model cards, and ``stmbench export``.

After a study, :func:`keep_winners` reads the stored results as the leaderboard does
(:func:`stmbench.report.board.aggregate`), and of each cell (backbone, task, strategy, adapter,
prompt, train size, settings) keeps the saved model of the run the leaderboard's choice rests on:
among the runs the cell shows (a tuned cell: the trial chosen on dev), the seed with the best dev
score, or, where the cell was not evaluated on dev, its lowest seed (the test split never chooses).
Saved models of other runs that were saved as ``best`` candidates are removed; those saved under
``--save-models all`` stay.  Each kept folder gets a model card (``README.md`` in the Hugging Face
card format, written with ``huggingface_hub``'s card classes) and a copy of its result
(``stmbench-result.json``) that the card links to.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.report.board import PRIMARY, Board, Cell, Row, aggregate, sample_std
from stmbench.run.keep import KIND_HEAD, KIND_MODEL, KIND_PEFT, RECORD, models_dir, read_record
from stmbench.store.result import RunResult
from stmbench.store.results import ResultStore

log = logging.getLogger(__name__)

CARD = "README.md"
RESULT_COPY = "stmbench-result.json"


@dataclass
class Winner:
    """The run a cell keeps, and why."""

    result: RunResult
    row: Row
    task: str
    cell: Cell
    how: str  #: how it was chosen, in words


def choose(board: Board, results: dict[str, RunResult]) -> dict[str, Winner]:
    """run id -> :class:`Winner`, one per cell of ``board`` (and of its partial board)."""
    out: dict[str, Winner] = {}
    for b in (board, board.partial):
        for row in (b.rows if b is not None else []):
            for task, cell in row.cells.items():
                runs = [results[i] for i in cell.run_ids.values() if i in results]
                dev = {r.run_id: r.selection.get("dev_metric") for r in runs}
                dev = {k: v for k, v in dev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                if dev:
                    best = max(sorted(dev), key=lambda k: dev[k])
                    how = (f"the best dev {PRIMARY} ({100 * dev[best]:.1f}) of the cell's {len(runs)} seed(s)"
                           + (f"; the cell's trial was chosen on dev ({cell.sweep})" if cell.sweep else ""))
                elif runs:
                    best = min(runs, key=lambda r: (r.spec.seed, r.run_id)).run_id
                    how = f"the cell has no dev evaluation, so its lowest seed (of {len(runs)}) is kept; the test split chooses nothing"
                else:
                    continue
                out[best] = Winner(result=results[best], row=row, task=task, cell=cell, how=how)
    return out


def keep_winners(results_dir: Path, *, say: Any = None, metrics: list[Any] | None = None) -> list[Path]:
    """Keep each cell's winner among the saved models of ``results_dir`` (see the module), write
    their cards, remove the other ``best`` candidates; return the kept folders.  ``metrics``: the
    session's (default: the built-ins, which builds a catalogue of its own)."""
    folder = models_dir(results_dir)
    if not folder.is_dir():
        return []
    store = ResultStore(Path(results_dir))
    results = store.load_all()
    by_id = {r.run_id: r for r in results}
    board = aggregate(results, store, metrics=metrics)
    winners = choose(board, by_id)
    kept = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            record = read_record(entry)
        except StmbenchError as exc:
            log.warning("%s", exc)
            continue
        run_id = entry.name
        result = by_id.get(run_id)
        if record["run_id"] != run_id or result is None or not result.ok:
            continue  # a run still going (its result is not stored yet), or not ours
        winner = winners.get(run_id)
        if winner is None and record.get("keep") == "best":
            shutil.rmtree(entry, ignore_errors=True)
            continue
        write_card(entry, record, result, winner, store)
        kept.append(entry)
    if say is not None and kept:
        say(f"kept {len(kept)} trained model(s) with model cards in {folder} (stmbench export RUN_ID --out DIR)")
    return kept


def _is_hub_id(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)
            and not name.lower().endswith(".gguf"))


def base_model_id(backbone: str) -> str | None:
    """The hub id of a run's base model where it has one (a hub id, a hub GGUF file's repository)."""
    repo, sep, _ = backbone.partition("::")
    if sep:
        return repo if _is_hub_id(repo) else None
    return backbone if _is_hub_id(backbone) else None


def card_text(record: dict[str, Any], result: RunResult, winner: Winner | None) -> str:
    """The model card of a saved run: YAML metadata (``huggingface_hub.ModelCardData``) and a body
    written from the result; every name from a result is escaped for markdown."""
    from huggingface_hub import EvalResult, ModelCardData

    from stmbench.report.leaderboard import md_escape

    spec = result.spec
    names = spec.names(result.labels)
    score = result.score
    synthetic = bool(result.task_info.get("synthetic"))
    library = "peft" if record["kind"] == KIND_PEFT else "transformers"
    metric = result.primary_metric
    values = sorted(winner.cell.primary.values()) if winner else []
    mean = sum(values) / len(values) if values else None
    std = sample_std(values)
    model_name = f"{names['backbone']} {spec.task} {names['strategy']} {names['adapter']}"
    data = ModelCardData(
        base_model=base_model_id(spec.backbone), library_name=library,
        tags=["stmbench", f"strategy-{spec.strategy}", f"adapter-{spec.adapter}", f"task-{spec.task}"]
        + (["synthetic-data"] if synthetic else []),
        model_name=model_name,
        eval_results=[EvalResult(task_type="text-classification", dataset_type=f"stmbench/{spec.task}",
                                 dataset_name=f"{spec.task}{' (synthetic)' if synthetic else ''}",
                                 dataset_split=str(result.task_info.get("eval_split") or "test"),
                                 metric_type=metric, metric_value=round(100 * score, 2) if score is not None else None,
                                 metric_name=f"{metric} (this run, seed {spec.seed})")],
    )
    esc = md_escape
    lines = [f"# {esc(model_name)}", ""]
    if synthetic:
        lines += [f"**Trained and tested on SYNTHETIC data** (the `{esc(spec.task)}` task is generated): its score "
                  "says the pipeline works, nothing about the model on real text.", ""]
    what = {KIND_PEFT: "a peft adapter (load it onto the base model with `PeftModel.from_pretrained`)",
            KIND_MODEL: "the whole fine-tuned transformers model (`from_pretrained` this folder)",
            KIND_HEAD: f"the fine-tuned transformers model and the `{esc(spec.strategy)}` head's weights "
                       "(`stmbench-head.safetensors`)"}[record["kind"]]
    lines += [f"What stmbench run `{result.run_id}` trained: {what}, with its tokenizer."]
    if winner is not None:
        lines += ["", f"Kept as the run of its leaderboard cell (backbone, task, strategy, adapter, prompt, train size, "
                      f"settings): {esc(winner.how)}."]
    else:
        lines += ["", "Saved under `--save-models all`; not its cell's choice."]
    lines += ["", "## Results", "", f"| | {esc(metric)} |", "|---|---|",
              f"| this run (seed {spec.seed}, split {esc(str(result.task_info.get('eval_split') or 'test'))}) | "
              f"{100 * score:.1f} |" if score is not None else "| this run | - |"]
    if mean is not None:
        text = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")
        lines.append(f"| the cell over {len(values)} seed(s) (mean{' ± std' if std is not None else ''}) | {text} |")
    dev = result.selection.get("dev_metric") if result.selection else None
    if isinstance(dev, (int, float)):
        lines.append(f"| dev ({esc(str(result.selection.get('dev') or 'dev rows'))}) | {100 * dev:.1f} |")
    data_record = result.data or {}
    fingerprints = ", ".join(f"{k} `{esc(str(v.get('fingerprint')))}` ({v.get('rows')} rows)"
                             for k, v in data_record.items() if isinstance(v, dict) and "fingerprint" in v)
    lines += ["", "## Base model, data and settings", "",
              f"- base model: `{esc(spec.backbone)}`" + (f" (shown as {esc(names['backbone'])})"
                                                        if names["backbone"] != spec.backbone else ""),
              f"- task: `{esc(spec.task)}`; data fingerprints: {fingerprints or 'not recorded'}",
              f"- strategy: {esc(names['strategy'])}; adapter: {esc(names['adapter'])}; prompt: {esc(str(spec.prompt))}; "
              f"train size: {esc(str(spec.train_size))}; seed: {spec.seed}",
              "- every setting (the run's spec): see `stmbench-model.json` and the result",
              f"- result: [{RESULT_COPY}]({RESULT_COPY}) (a copy of `results/{result.run_id}.json`: "
              "metrics, loss curve, health, versions, device)"]
    lines += ["", "Every setting of the run (its spec, from which its id is the hash):", "", "```json",
              json.dumps(spec.to_dict(), sort_keys=True, indent=1, ensure_ascii=True).replace("`", "\\u0060"), "```", "", "## Use it", ""]
    if record["kind"] == KIND_PEFT:
        lines += ["With peft, onto the base model as the run loaded it (`adapter_config.json` names it):", "",
                  "```python", "from peft import PeftModel", "",
                  "model = PeftModel.from_pretrained(base_model, \"path/to/this/folder\")", "```", ""]
    lines += ["With the strategy's own head and prediction code (as the run predicted):", "", "```python",
              "from stmbench.core.session import Session, Settings", "from stmbench.run.keep import load_saved", "",
              "model, tokenizer, spec = load_saved(\"path/to/this/folder\", Session(Settings()))", "```", ""]
    text = "---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines)
    return text


def write_card(folder: Path, record: dict[str, Any], result: RunResult, winner: Winner | None,
               store: ResultStore) -> None:
    from stmbench.common.files import atomic_write_text

    atomic_write_text(folder / CARD, card_text(record, result, winner))
    atomic_write_text(folder / RESULT_COPY, json.dumps(result.to_dict(), ensure_ascii=False, indent=2,
                                                       sort_keys=True) + "\n")


def export(run_id: str, results_dir: Path, out: Path, *, push_to_hub: str | None = None) -> Path:
    """Copy the kept model of ``run_id`` to ``out`` (a new folder); with ``push_to_hub``, upload it
    to that hub repository (offline: a clear error at once, before anything is copied)."""
    import re

    if not re.fullmatch(r"[0-9a-f]{16}", run_id):
        raise StmbenchError(f"run id {run_id!r}: expected the 16 hex digits of a stored run")
    kept = models_dir(results_dir)
    source = kept / run_id
    if not source.is_dir() or source.is_symlink():
        saved = sorted(p.name for p in kept.glob("[0-9a-f]*") if p.is_dir()) if kept.is_dir() else []
        raise StmbenchError(f"no kept model of run {run_id} in {kept} (kept: "
                            f"{', '.join(saved) or 'none'}; runs keep models with --save-models)")
    read_record(source)
    if push_to_hub:
        from stmbench.common.hub import hub_available, offline_reason

        if not hub_available():
            raise StmbenchError(f"--push-to-hub {push_to_hub}: {offline_reason()}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise StmbenchError(f"{out} exists and is not empty: export writes a new folder")
    for path in source.rglob("*"):
        if path.is_symlink():
            raise StmbenchError(f"{path}: a link in a saved model folder; refusing to export it")
    shutil.copytree(source, out, dirs_exist_ok=True)
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=push_to_hub,
                          commit_message=f"stmbench run {run_id}")
    return out


__all__ = ["CARD", "RECORD", "RESULT_COPY", "KIND_MODEL", "Winner", "choose", "export", "keep_winners"]
