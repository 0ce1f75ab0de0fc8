"""Command-line views of what is stored and registered: ``stmbench results`` (list, filter, show and
export stored runs of one or more results folders) and ``stmbench plugins NAME``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.store.result import RunResult
from stmbench.common.untrusted import clean_text, term_text

FILTERS = ("backbone", "task", "strategy", "adapter")
FORMATS = ("table", "csv", "json", "parquet")


def add_results_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    rs = sub.add_parser("results", parents=[common], help="list, filter, show and export stored runs",
                        epilog="examples: stmbench results --failed; stmbench results --task lcqmc --format csv "
                               "--out lcqmc.csv; stmbench results show 3f2a")
    rs.add_argument("action", nargs="?", choices=["show", "verify"],
                    help="show one run (by run id or a unique prefix); verify: every file's verdict (verified, "
                         "unverified, refused and why), exit 1 when a file is refused")
    rs.add_argument("run_id", nargs="*", metavar="RUN_ID|DIR", help="the run to show; the folders to verify")
    rs.add_argument("--results-dir", action="append", metavar="DIR",
                    help="a results folder or a glob of them; repeatable (default: results)")
    rs.add_argument("--status", choices=["ok", "failed"], help="only runs with this status")
    for name in FILTERS:
        rs.add_argument(f"--{name}", help=f"only runs of this {name} (comma-separated names)")
    rs.add_argument("--failed", action="store_true", help="failed runs with their reasons")
    rs.add_argument("--format", choices=FORMATS, default="table",
                    help="table (default), or an export of the flat pandas frame (ResultStore.frame())")
    rs.add_argument("--out", help="write the export to this file (needed for parquet)")
    rs.set_defaults(func=cmd_results)


def select(results: list[RunResult], args: argparse.Namespace) -> list[RunResult]:
    """The results that pass the filters of ``args``."""
    status = "failed" if args.failed else args.status
    keep = []
    for r in results:
        if status and r.status != status:
            continue
        if any(getattr(args, name) and str(getattr(r.spec, name)) not in getattr(args, name).split(",") for name in FILTERS):
            continue
        keep.append(r)
    return keep


def _row(r: RunResult, failed: bool) -> list[Any]:
    spec = r.spec
    names = spec.names(r.labels)
    line = [r.run_id, r.status, *(names[k] for k in ("backbone", "task", "strategy", "adapter", "prompt")),
            spec.train_size, spec.seed, "" if r.score is None else f"{r.primary_metric} {100 * r.score:.1f}", (r.finished_at or "")[:19]]
    if failed:
        line.append((r.error or "").splitlines()[0][:160] if r.error else "")
    return line


def cmd_results(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from stmbench.report.evidence import ResultSet
    from stmbench.store.results import expand_dirs, results_frame

    if args.action == "verify":
        return _verify(args)
    store = ResultSet(expand_dirs(args.results_dir or ["results"]))
    if args.action == "show":
        if len(args.run_id) > 1:
            raise StmbenchError("stmbench results show RUN_ID: one run at a time")
        return _show(store, args.run_id[0] if args.run_id else None)
    if args.run_id:
        raise StmbenchError(f"unexpected argument {args.run_id[0]!r}: did you mean "
                            f"'stmbench results show {args.run_id[0]}'?")
    results = select(store.load_all(), args)
    if args.format == "table":
        header = ["run", "status", "backbone", "task", "strategy", "adapter", "prompt", "train size", "seed",
                  "score", "finished"] + (["error"] if args.failed else [])
        rows = [[term_text(clean_text(x)) for x in _row(r, args.failed)] for r in results]
        print(tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True) if results
              else "no stored runs match")
        print(f"{len(results)} of {len(store.load_all())} run(s) in {', '.join(map(str, store.folders))}")
        return 0
    frame = results_frame(results)
    if args.format == "parquet":
        if not args.out:
            raise StmbenchError("--format parquet needs --out FILE")
        frame.to_parquet(args.out, index=False)
    elif args.format == "csv":
        text = frame.to_csv(index=False)
    else:
        text = frame.to_json(orient="records", force_ascii=False, indent=2) + "\n"
    if args.format != "parquet":
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    if args.out:
        print(f"{len(results)} run(s) -> {args.out}", file=sys.stderr)
    return 0


def _show(store: Any, run_id: str | None) -> int:
    if not run_id:
        raise StmbenchError("stmbench results show RUN_ID: which run? (an id or a unique prefix; see stmbench results)")
    matches = [r for r in store.load_all() if r.run_id.startswith(run_id)]
    if len(matches) != 1:
        found = ", ".join(r.run_id for r in matches[:10])
        raise StmbenchError(f"run id {run_id!r} matches {len(matches)} stored runs" + (f": {found}" if found else ""))
    result = matches[0]
    record = result.to_dict()
    trace = record.pop("traceback", "")
    text = json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True)  # JSON escapes C0 controls itself
    print("\n".join(term_text(line) for line in text.splitlines()))
    print(f"file: {term_text(store.files(result.run_id)[0])}")
    if trace:
        print("\n".join(term_text(line) for line in trace.rstrip().splitlines()))
    return 0


def _verify(args: argparse.Namespace) -> int:
    """``stmbench results verify DIR...``: one line per file (verified / unverified / refused, and
    why), then the counts; exit 1 when any file was refused."""
    from stmbench.report.evidence import ResultSet
    from stmbench.store.results import expand_dirs

    folders = expand_dirs([*(args.results_dir or []), *args.run_id] or ["results"])
    gold_source = None
    try:
        from stmbench.cli.args import session_from
        from stmbench.report.evidence import session_gold_source

        gold_source = session_gold_source(session_from(args))
    except StmbenchError:
        pass
    store = ResultSet(folders, gold_source=gold_source, log_refusals=False)  # each refusal is said once, below
    for verdict in store.verdicts:
        print(verdict.line())
    counts = {s: sum(v.status == s for v in store.verdicts) for s in ("verified", "unverified", "refused")}
    for run_id, first, other in store.conflicts:
        print(term_text(f"conflict   {other}: run {run_id} differs from {first} (the first is used)"))
    print(f"{len(store.verdicts)} file(s): {counts['verified']} verified, {counts['unverified']} unverified, "
          f"{counts['refused']} refused" + (f", {len(store.conflicts)} conflict(s)" if store.conflicts else ""))
    return 1 if counts["refused"] else 0


OPTION_FLAGS = {"adapter": "--adapter-option", "strategy": "--strategy-option", "executor": "--executor-option"}


def show_plugin(session: Any, name: str, *, as_json: bool) -> int:
    """``stmbench plugins NAME``: what NAME is, who registered it, what it declares, its options."""
    from tabulate import tabulate

    rows = session.catalogue.describe_one(name)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return 0
    for row in rows:
        origin = "built in" if row["builtin"] else "third-party"
        print(f"{row['name']} ({row['kind']})")
        print(f"  {row['description']}")
        print(f"  plugin: {row['plugin']} (module {row['module']}, version {row['version'] or '?'}, {origin})")
        for key, value in row["capabilities"].items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"  {key}: {shown}")
        if row["options"]:
            flag = OPTION_FLAGS.get(row["kind"], "--option")
            key = "KEY=VALUE" if row["kind"] == "executor" else f"{row['name']}.KEY=VALUE"
            print(f"options ({flag} {key}):")
            print(tabulate([[o["name"], json.dumps(o["default"], ensure_ascii=False), o["help"]] for o in row["options"]],
                           headers=["option", "default", "help"], tablefmt="simple", maxcolwidths=[None, None, 70]))
        elif row["kind"] != "task":
            print("options: none")
        print()
    return 0
