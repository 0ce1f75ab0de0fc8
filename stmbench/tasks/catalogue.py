"""``stmbench tasks``: every task with its kind, labels, sources and, where the data is at hand,
its split sizes."""

from __future__ import annotations

from typing import Any

from stmbench.common.errors import StmbenchError


def at_hand(task: Any, session: Any) -> bool:
    """Data that can be read without the network: generated, or local files under --data-dir."""
    if task.generator:
        return True
    data_dir = session.settings.data_dir
    return bool(task.local and data_dir is not None and (data_dir / task.name).is_dir())


def describe_tasks(session: Any, sizes: bool = True) -> list[dict[str, Any]]:
    out = []
    for name in session.catalogue.names("task"):
        task = session.get("task", name)
        row = task.summary()
        row["plugin"] = session.catalogue.entries["task"][name].plugin
        row["sizes"] = {}
        if sizes and at_hand(task, session):
            for split in ("train", "validation", "test"):
                try:
                    data = session.task_data(task, split)
                except StmbenchError as exc:
                    row["sizes"][split] = f"error: {exc}"
                    continue
                row["sizes"][split] = len(data.dataset)
        out.append(row)
    return out


def print_tasks(rows: list[dict[str, Any]]) -> None:
    from tabulate import tabulate

    table = []
    for r in rows:
        labels = ", ".join(f"{lab['value']}={lab['word']}" for lab in r["labels"])
        if len(labels) > 48:
            labels = f"{len(r['labels'])} labels: " + labels[:36] + "..."
        sizes = r["sizes"]
        size_text = " / ".join(str(sizes.get(s, "-")) for s in ("train", "validation", "test")) if sizes else "not at hand"
        if any(isinstance(v, str) for v in sizes.values()):
            size_text = next(v for v in sizes.values() if isinstance(v, str))
        name = r["name"] + (" (synthetic)" if r["synthetic"] else "")
        evaluation = r["eval_split"] + (" *" if r["eval_split"] != "test" else "")
        table.append([name, r["kind"], labels, "; ".join(r["sources"]), evaluation, size_text])
    print(tabulate(table, headers=["task", "kind", "labels (value=word)", "sources", "evaluated on",
                                   "train / validation / test"], tablefmt="simple", maxcolwidths=[None, None, 40, 50, None, 40]))
    if any(r["eval_split"] != "test" for r in rows):
        print("\n* the public test split has no labels: evaluated on the dev (validation) split")
