"""Which rows a run sees: label-stratified, seeded train subsamples, the dev rows it selects on, the
``--limit`` sample of the eval split, and fast column access to ``datasets.Dataset`` objects."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from stmbench.common.errors import StmbenchError
from stmbench.spec.axes import FULL

if TYPE_CHECKING:  # pragma: no cover
    from stmbench.core.session import Session
    from stmbench.spec.run import RunSpec


def column(data: Any, name: str) -> list[Any]:
    """A column of a ``datasets.Dataset`` as a list, at once (iterating a column object converts row
    by row: seconds for a few thousand rows)."""
    return list(data[name][:])


def sequence_lengths(features: Any, name: str = "input_ids") -> list[int]:
    """The length of every row's ``name`` list, computed by Arrow."""
    import pyarrow.compute as pc

    return pc.list_value_length(features.with_format("arrow")[:].column(name)).to_pylist()


def stratified_split(labels: list[int], *, n_train: int, n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """``(train, test)`` indices exactly as ``Dataset.train_test_split(..., stratify_by_column="label",
    seed=seed)`` draws them (its own ``stratified_shuffle_split_generate_indices`` and generator),
    from a plain label list; raises ``ValueError`` where a class is too small to stratify.  (Through
    the ``Dataset`` the label column is converted row by row: seconds per run on a 6,000-row split,
    minutes on LCQMC's 240,000.)"""
    import numpy as np
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    train, test = next(stratified_shuffle_split_generate_indices(
        np.asarray(labels), n_train, n_test, rng=np.random.default_rng(seed)))
    return [int(i) for i in train], [int(i) for i in test]


def seeded_permutation(n: int, seed: int) -> list[int]:
    """The order ``Dataset.shuffle(seed=seed)`` (and an unstratified ``train_test_split``) draws."""
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def subsample_indices(data: Any, size: int | str, seed: int, task: str) -> list[int] | None:
    """Indices of a label-stratified, seeded subsample of ``size`` rows (``None``: use all)."""
    if size == FULL:
        return None
    n = len(data)
    if size > n:
        raise StmbenchError(f"train size {size} exceeds the {n} training examples of task {task!r}")
    if size == n:
        return None
    try:
        if "label" not in data.column_names:  # a tag per token: nothing to stratify by
            raise ValueError("no label column")
        train, _ = stratified_split(column(data, "label"), n_train=size, n_test=n - size, seed=seed)
    except ValueError:  # a class too small to stratify (tiny sizes): fall back to a seeded shuffle
        train = seeded_permutation(n, seed)[:size]
    return sorted(train)


LIMIT_SEED = 0  # every --limit run sees the same sample, whatever its own seed


def limit_sample(data: Any, n: int) -> Any:
    """A fixed-seed sample of ``n`` examples of the eval split, in their original order."""
    import random

    return data.select(sorted(random.Random(LIMIT_SEED).sample(range(len(data)), n)))


HOLDOUT_SEED = 0  # the held-out dev rows are the same for every run of a task


def dev_rows(task: Any, train_data: Any, spec: RunSpec, session: Session) -> tuple[Any, dict[str, Any], list[int] | None]:
    """The rows to select on: the task's validation split when it is tested on another split, else a
    seeded, label-stratified share of train (``dev_holdout``), returned with the train rows left
    (``pool``).  The split the run is tested on is never used."""
    if task.eval_split != "validation":
        data = session.task_data(task, "validation", skip_bad_rows=spec.skip_bad_rows)
        return data.dataset, {"dev": "validation split", "dev_examples": len(data.dataset)}, None
    n = len(train_data.dataset)
    n_test = math.ceil(spec.training.dev_holdout * n)  # as train_test_split(test_size=<share>) counts
    try:
        if "label" not in train_data.dataset.column_names:  # a tag per token: nothing to stratify by
            raise ValueError("no label column")
        pool, held = stratified_split(column(train_data.dataset, "label"), n_train=n - n_test, n_test=n_test,
                                      seed=HOLDOUT_SEED)
    except ValueError:  # a class too small to stratify
        order = seeded_permutation(n, HOLDOUT_SEED)
        held, pool = order[:n_test], order[n_test:]
    held, pool = sorted(held), sorted(pool)
    info = {"dev": f"held out from train ({spec.training.dev_holdout:g} of it, seeded, label-stratified): "
                   f"the eval split ({task.eval_split}) is the task's dev split",
            "dev_examples": len(held)}
    return train_data.dataset.select(held), info, pool


def gold(task: Any, data: Any) -> list[Any]:
    """The gold answers of ``data``: label indices, or a list of tag indices per sentence."""
    return column(data, "tags" if task.is_tokens else "label")


def report_counts(prefix: str, data: Any) -> dict[str, int]:
    """What validation counted while loading a split: bad rows skipped, rows with an ignored label,
    duplicate pairs (kept)."""
    return {f"{prefix}_bad_rows": data.report.get("bad_rows", 0),
            f"{prefix}_ignored_labels": data.report.get("ignored", 0),
            f"{prefix}_duplicates": data.report.get("duplicates", 0)}
