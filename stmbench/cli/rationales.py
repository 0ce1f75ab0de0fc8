"""``stmbench rationales generate | show | export``: make, read and hand over rationale sets.

``generate`` writes a teacher's rationales for a task split into the cache (the same set a ``cot`` run
of that teacher reads: a run later finds them there), with a progress bar and its ETA; ``show``
prints the cached sets of a task with their counts and a few rationales; ``export`` writes one set as
the folder that ``--rationales DIR`` (the ``folder`` teacher) reads back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.common.untrusted import term_text


def add_rationales_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    rp = sub.add_parser("rationales", parents=[common], help="generate, show and export chain-of-thought rationales",
                        epilog="examples: stmbench rationales generate --tasks lcqmc --data-dir ~/data --teacher "
                               "'hf[model=SmolLM2-135M-Instruct.Q4_1.gguf]' --limit 1000; stmbench rationales show "
                               "--tasks lcqmc; stmbench rationales export --tasks lcqmc --out rationales/")
    rp.add_argument("action", choices=["generate", "show", "export"])
    rp.add_argument("--tasks", required=True, help="comma-separated task names")
    rp.add_argument("--split", default="train", choices=["train", "validation", "test"], help="default train")
    rp.add_argument("--teacher", metavar="NAME[KEY=VALUE,...]",
                    help="generate: who writes them (hf[model=...], openai[model=...,base_url=...]); "
                         "show / export: only this teacher's sets")
    rp.add_argument("--limit", type=int, metavar="N", help="generate: the first N rows of the split only")
    rp.add_argument("-n", "--examples", type=int, default=3, metavar="N", help="rationales printed (default 3)")
    rp.add_argument("--out", metavar="DIR", help="export: the folder to write (DIR/<task>/<split>.jsonl)")
    rp.set_defaults(func=cmd_rationales)


def _teacher(session: Any, entry: str) -> tuple[str, dict[str, Any]]:
    from stmbench.spec.axes import parse_axis_entry

    name, options = parse_axis_entry(entry)
    plugin = session.get("teacher", name)
    return name, plugin.options(options)


def _sets(session: Any, task: Any, data: Any, split: str, teacher: tuple[str, dict[str, Any]] | None) -> list[Any]:
    from stmbench.run.rationales import cached_sets

    found = [(path, header, rows) for path, header, rows in cached_sets(session, task)
             if header["split"] == split and header.get("data_fingerprint") == data.fingerprint]  # these rows' sets
    if teacher is not None:
        wanted = session.get("teacher", teacher[0]).set_options(teacher[1])
        found = [s for s in found if s[1]["teacher"] == teacher[0] and s[1]["teacher_options"] == wanted]
    return found


def _print_examples(entries: list[dict[str, Any]], data: Any, n: int) -> None:
    rows = data.dataset.select([e["row"] for e in entries[:n]]).to_list() if entries else []
    for entry, row in zip(entries[:n], rows):
        pair = f"{row['text_a']} | {row.get('text_b') or ''}"
        print(term_text(f"  [{entry['status']}] row {entry['row']}: {pair}"))
        print(term_text(f"      -> {entry['text']}"))


def cmd_rationales(args: argparse.Namespace) -> int:
    from stmbench.cli.args import session_from
    from stmbench.run.rationales import RationaleSet, counts_of

    session = session_from(args)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    teacher = _teacher(session, args.teacher) if args.teacher else None
    if args.action == "generate" and teacher is None:
        raise StmbenchError("rationales generate needs --teacher NAME[KEY=VALUE,...]")
    if args.action == "export" and not args.out:
        raise StmbenchError("rationales export needs --out DIR")
    if teacher is not None and args.action == "generate":
        plugin = session.get("teacher", teacher[0])
        problem = plugin.preflight(plugin.typed_options(teacher[1]), session.context)
        if problem:
            raise StmbenchError(problem)
    for name in names:
        task = session.get("task", name)
        data = session.task_data(task, args.split)
        if args.action == "generate":
            assert teacher is not None
            n = len(data.dataset) if args.limit is None else min(args.limit, len(data.dataset))
            rationale_set = RationaleSet.of(session, task, data, args.split, *teacher)
            before = len(rationale_set.read())
            entries = list(rationale_set.ensure(list(range(n)), progress=args.progress is not False).values())
            counts = counts_of(entries)
            label = session.get("teacher", teacher[0]).display(teacher[1])
            print(term_text(f"{name}/{args.split}: {n} rows from {label} ({n - min(n, before)} generated now): "
                            + ", ".join(f"{k} {v}" for k, v in counts.items())))
            print(term_text(f"  set {rationale_set.key}: {rationale_set.path}"))
            _print_examples(entries, data, args.examples)
            continue
        sets = _sets(session, task, data, args.split, teacher)
        if not sets:
            print(term_text(f"{name}/{args.split}: no cached rationale sets"
                            + (" of that teacher" if teacher else "")))
            continue
        if args.action == "show":
            for path, header, _ in sets:
                rationale_set = RationaleSet(path, header, task, data, session, header["teacher_options"])
                entries = sorted(rationale_set.read().values(), key=lambda e: e["row"])
                label = session.get("teacher", header["teacher"]).display(header["teacher_options"]) \
                    if header["teacher"] in session.catalogue.entries["teacher"] else header["teacher"]
                print(term_text(f"{name}/{args.split}: set {path.stem} from {label}, {len(entries)} rows: "
                                + ", ".join(f"{k} {v}" for k, v in counts_of(entries).items())))
                _print_examples(entries, data, args.examples)
            continue
        path, header, _ = sets[0]  # export: the newest set (of the teacher asked for)
        _export(session, task, data, header, path, Path(args.out), args.split)
    return 0


def _export(session: Any, task: Any, data: Any, header: dict[str, Any], path: Path, out: Path, split: str) -> None:
    from stmbench.common.files import atomic_write_text
    from stmbench.run.rationales import RationaleSet, counts_of

    rationale_set = RationaleSet(path, header, task, data, session, header["teacher_options"])
    entries = sorted(rationale_set.read().values(), key=lambda e: e["row"])
    rows = data.dataset.select([e["row"] for e in entries]).to_list()
    lines = [json.dumps({"text_a": row["text_a"], "text_b": row.get("text_b") or "",
                         "label": task.labels[int(row["label"])].value, "rationale": entry["text"],
                         "truncated": entry["truncated"], "status": entry["status"]}, ensure_ascii=False) for entry, row in zip(entries, rows)]
    target = out / task.name / f"{split}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "".join(line + "\n" for line in lines))
    manifest = {**header, "rows": len(entries), "counts": counts_of(entries), "set": path.stem}
    atomic_write_text(out / task.name / f"{split}.manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(term_text(f"{task.name}/{split}: {len(entries)} rationales from set {path.stem} -> {target} "
                    f"(read back with --rationales {out})"))
