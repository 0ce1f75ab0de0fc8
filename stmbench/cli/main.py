"""``stmbench run | leaderboard | results | findings | rationales | plugins | tasks | export | export-lm-eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.common.untrusted import term_text
from stmbench.cli.args import grid_from, session_from

log = logging.getLogger("stmbench")

RUN_EXAMPLES = """\
examples:
  stmbench run                                   # the embedded default: tiny-llama on the synthetic
                                                 # sample task, generative+discriminative x full+lora
                                                 # x 1000 and all 6000 training examples
  stmbench run --backbones Qwen/Qwen2.5-0.5B --tasks lcqmc,bq --bf16
  stmbench run --backbones ./my-model --tasks lcqmc --data-dir ~/data \\
      --strategies generative,label_supervised --adapters lora --adapter-option lora.r=16 \\
      --train-sizes 1000,10000,full --seeds 1,2,3 --learning-rate 1e-4
  stmbench run --config examples/paper-2403.19930.yaml --backbones Qwen/Qwen2.5-0.5B
"""


def cmd_run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from stmbench.report import leaderboard
    from stmbench.report.refresh import check_leaderboard, refresh_leaderboard
    from stmbench.run.study import run_study

    session = session_from(args)
    if args.check_reproducible:
        from stmbench.run.reproduce import check_reproducible

        reproduction = check_reproducible(args.check_reproducible, session)
        for line in reproduction.lines():
            print(term_text(line), flush=True)
        return 0 if reproduction.reproduced else 1
    check_leaderboard(session)  # a leaderboard we may not replace is refused before anything runs
    from stmbench.run.study import BillOptions

    bill = BillOptions(budget_hours=args.budget_hours, device=args.estimate_device, mfu=args.mfu,
                       tokens_per_example=args.tokens_per_example)
    report = run_study(grid_from(args), session, rerun=args.rerun, dry_run=args.dry_run, max_runs=args.max_runs,
                       progress=lambda line: print(term_text(line), flush=True), bill=bill)
    if not args.dry_run:
        from stmbench.report.refresh import session_metrics
        from stmbench.report.winners import keep_winners

        keep_winners(session.settings.results_dir, say=lambda line: print(term_text(line), flush=True),
                     metrics=session_metrics(session))
    board, paths = (None, []) if args.dry_run else refresh_leaderboard(session)
    if board is not None:
        print()
        shown = board if board.rows or board.partial is None else board.partial
        if shown is not board:
            print("partial evaluations (--limit: not ranked; the leaderboard lists them apart):")
        header, body = leaderboard.table(shown)
        keep = [i for i, h in enumerate(header) if h not in ("runs",)]
        print(tabulate([[line[i] for i in keep] for line in body], headers=[header[i] for i in keep],
                       tablefmt="github", disable_numparse=True))
        print()
        print(f"leaderboard: {', '.join(str(p) for p in paths)}")
    return 1 if report.failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from stmbench.common.errors import UnknownNameError
    from stmbench.report import leaderboard
    from stmbench.report.board import PRIMARY
    from stmbench.report.evidence import session_gold_source
    from stmbench.report.refresh import session_metrics

    session = session_from(args)
    metrics = session_metrics(session)
    if args.metric != PRIMARY and args.metric not in {m.name for m in metrics}:
        raise UnknownNameError("metric", args.metric, session.catalogue.entries["metric"])
    board, paths = leaderboard.generate(args.results_dir or ["results"], args.out, copy_results=not args.no_copy_results,
                                        force=args.force, references=leaderboard.task_references(session),
                                        trust_unverified=args.trust_unverified, gold_source=session_gold_source(session),
                                        metrics=metrics)
    if args.metric != PRIMARY:
        print(leaderboard.render_markdown(board, args.metric))
    checked = f" ({len(board.meta['refused'])} file(s) refused, {board.meta['unverified']} unverified)" \
        if board.meta.get("refused") or board.meta.get("unverified") else ""
    print(term_text(f"{board.meta['ok']} ok result(s){checked} in {', '.join(args.results_dir or ['results'])} -> "
                    f"{len(paths)} files in {args.out}: {', '.join(p.name for p in paths[:2])}"
                    f"{' and figures' if len(paths) > 2 else ''}"))
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from stmbench.report.winners import export

    out = export(args.run_id, Path(args.results_dir), Path(args.out), push_to_hub=args.push_to_hub)
    files = sorted(p.name for p in out.iterdir())
    print(term_text(f"{args.run_id} -> {out}: {', '.join(files)}"
                    + (f"; uploaded to {args.push_to_hub}" if args.push_to_hub else "")))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from stmbench.core.catalogue import describe_plugins

    session = session_from(args)
    if args.name:
        from stmbench.cli.views import show_plugin

        return show_plugin(session, args.name, as_json=args.json)
    objects = session.catalogue.describe()
    if args.json:
        payload: Any = objects
        if args.all:
            payload = {"objects": objects, "plugins": describe_plugins(session.pm)}
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0
    titles = {"strategy": "strategies", "generator": "generators (of synthetic tasks' data)"}
    for kind in session.catalogue.entries:  # every catalogue kind, in registration-hook order
        title = titles.get(kind, f"{kind}s")
        rows = [[o["name"], o["module"], o["description"]] for o in objects if o["kind"] == kind]
        print(f"{title}:")
        print(tabulate(rows, headers=["name", "module", "description"], tablefmt="simple",
                       maxcolwidths=[None, None, 70]))
        print()
    if args.all:
        rows = [[p["plugin"], p["version"], "yes" if p["builtin"] else "no", ", ".join(p["hooks"])]
                for p in describe_plugins(session.pm)]
        print("plugin modules:")
        print(tabulate(rows, headers=["plugin", "version", "built-in", "hooks"], tablefmt="simple"))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from stmbench.tasks.catalogue import describe_tasks, print_tasks

    session = session_from(args)
    rows = describe_tasks(session, sizes=not args.no_sizes)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print_tasks(rows)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stmbench.tasks.lm_eval import export_tasks

    session = session_from(args)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    paths = export_tasks(session, names, Path(args.out), prompt=args.prompt, num_fewshot=args.num_fewshot)
    for p in paths:
        print(p)
    print(f"run: lm_eval --model hf --model_args pretrained=<model dir> --include_path {args.out} "
          f"--tasks {','.join('stmbench_' + n for n in names)}")
    return 0


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    from stmbench.spec.training import TrainingSettings

    group = parser.add_argument_group("training (transformers.TrainingArguments names)")
    for f in dataclasses.fields(TrainingSettings):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            group.add_argument(flag, dest=f.name, type=kind, default=None,
                               help=f"{help_text} (default {f.default})")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="load a plugin module (dotted path or .py file) that is not installed; repeatable")
    common.add_argument("--task-dir", action="append", default=[], metavar="DIR",
                        help="a folder of task YAML files to add; repeatable")
    common.add_argument("--data-dir", metavar="DIR", help="DIR/<task>/ holds a task's original data files")
    common.add_argument("--cache-dir", metavar="DIR", help="tiny models and tokenised data (default ~/.cache/stmbench)")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")

    parser = argparse.ArgumentParser(
        prog="stmbench",
        description="Is this language model a good backbone for supervised fine-tuning on NLU tasks, "
                    "and which way of fine-tuning it works best?",
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from stmbench.common.version import __version__

    parser.add_argument("--version", action="version", version=f"stmbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="train and evaluate a grid, then refresh the leaderboard",
                         description="Expand the axes into runs, train and evaluate each, store one JSON "
                                     "per run, and write the leaderboard.  Finished runs are skipped.",
                         epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", metavar="YAML", help="a grid file; flags given here override it")
    axes = run.add_argument_group("axes (comma-separated lists)")
    axes.add_argument("--backbones", help="registered names, hub ids or local paths (default tiny-llama)")
    axes.add_argument("--tasks", help="task names (default sample)")
    axes.add_argument("--strategies", help="default generative,discriminative")
    axes.add_argument("--adapters", help="default full,lora")
    axes.add_argument("--prompts", help="prompt templates, e.g. concise,complex (default concise)")
    axes.add_argument("--train-sizes", dest="train_sizes", help="numbers of training examples or 'full'")
    axes.add_argument("--seeds", help="default 42")
    axes.add_argument("--shots", help="in-context examples for in_context, e.g. 0,5 (default 0)")
    axes.add_argument("--learning-rates", metavar="LR,LR,...",
                      help="tune the learning rate: run each value and keep, per cell, the one with the best dev "
                           "accuracy (every trial is stored; implies --eval-strategy epoch unless given)")
    axes.add_argument("--sweep", action="append", default=[], metavar="SETTING=V1,V2",
                      help="tune any training setting the same way, e.g. num_train_epochs=1,3 (repeatable)")
    axes.add_argument("--trials", type=int, metavar="N",
                      help="draw N trials from a sampled search space, e.g. --sweep learning_rate=loguniform:1e-5:1e-3 "
                           "(also uniform:LO:HI, int:LO:HI, choice:A,B,C); the same seed draws the same trials")
    axes.add_argument("--sampler", choices=["random", "qmc"], help="who draws them (default random; qmc: Sobol)")
    axes.add_argument("--sweep-seed", type=int, metavar="N", help="the sampler's seed (default 0)")
    axes.add_argument("--pruner", metavar="asha[KEY=VALUE,...]",
                      help="stop a swept cell's losing trials early on dev with Optuna's successive halving (ASHA): "
                           "asha, or asha[reduction_factor=3,min_resource=1,bootstrap_count=0]; default none")
    axes.add_argument("--teacher", metavar="NAME[KEY=VALUE,...]",
                      help="who writes cot's rationales: 'hf[model=HUB_ID_OR_PATH_OR_GGUF]' or "
                           "'openai[model=NAME,base_url=URL,api_key_env=VAR]' (a comma list: an axis of cot runs)")
    axes.add_argument("--rationales", metavar="DIR",
                      help="a folder of rationales (DIR/<task>/train.jsonl, as stmbench rationales export writes)")
    run.add_argument("--adapter-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                     help="e.g. lora.r=16 or lora.target_modules=all-linear; repeatable")
    run.add_argument("--strategy-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                     help="e.g. label_supervised.unmask=true; repeatable")
    _add_training_flags(run)
    where = run.add_argument_group("where and how")
    where.add_argument("--results-dir", default="results", help="one JSON per run (default ./results)")
    where.add_argument("--leaderboard-dir", default="leaderboard", help="default ./leaderboard")
    where.add_argument("--no-leaderboard", action="store_true", help="do not write the leaderboard")
    where.add_argument("--force", action="store_true",
                       help="replace a leaderboard that was built from another results folder")
    where.add_argument("--max-runs", type=int, default=10_000, metavar="N",
                       help="refuse a grid of more than N combinations up front (default 10,000)")
    where.add_argument("--rerun", action="store_true", help="run again even the runs stored as ok")
    where.add_argument("--dry-run", action="store_true", help="show the plan and its estimated cost, and stop")
    where.add_argument("--check-reproducible", metavar="RUN_ID",
                       help="rerun one stored run (of --results-dir) in a temporary folder and report whether its loss "
                            "curve, predictions and metrics repeat, and what of the environment differs; exit 1 if not")
    cost = run.add_argument_group("the bill (estimated before anything trains)")
    cost.add_argument("--budget-hours", type=float, metavar="H",
                      help="refuse a grid whose training is estimated over H device-hours (with pruning where it prunes)")
    cost.add_argument("--estimate-device", metavar="NAME",
                      help="price the grid on this GPU's datasheet bf16 peak (H100, A100, L4, ...) instead of this device")
    cost.add_argument("--mfu", type=float, metavar="X",
                      help="the model FLOPs utilisation to price at (default: measured by earlier results of the "
                           "backbone in the store, else 0.30 on a GPU and 0.10 on a CPU)")
    cost.add_argument("--tokens-per-example", type=int, metavar="N",
                      help="tokens per train example where the data is not at hand to count them (default 64)")
    where.add_argument("--limit", type=int, metavar="N",
                       help="evaluate on a seeded sample of N examples of the eval split, for a quick look "
                            "(as lm-eval's --limit); such results are partial: shown apart, never ranked")
    where.add_argument("--skip-bad-rows", action="store_true",
                       help="count malformed data rows instead of stopping at the first")
    where.add_argument("--executor", help="a registered executor (default local; see stmbench plugins)")
    where.add_argument("--executor-option", action="append", default=[], metavar="KEY=VALUE",
                       help="options for the executor plugin; repeatable")
    where.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    where.add_argument("--save-steps", type=int, metavar="N",
                       help="checkpoint every N training steps so a killed run resumes (default: every epoch; "
                            "0: no checkpoints)")
    where.add_argument("--claim-timeout", type=float, metavar="SECONDS",
                       help="another worker's claim on a run is stale after this long without a heartbeat "
                            "(default 300)")
    where.add_argument("--trust-remote-code", action="store_true", help="allow hub models' own code")
    where.add_argument("--report-to", metavar="TRACKER,...",
                       help="log each run's training curves, its spec (as config) and at its end its test metrics, "
                            "health and cost to these Trainer integrations: tensorboard (under "
                            "<results>/tensorboard/<run_id>/), mlflow (MLFLOW_TRACKING_URI), wandb, ... (default none)")
    where.add_argument("--save-models", choices=["none", "best", "all"],
                       help="keep trained weights under <results>/models/<run_id>/ with a model card: best (the "
                            "cell-best run of each leaderboard cell, chosen on dev), all, or none (default: best "
                            "for adapters that train at most 10%% of the weights, none for full fine-tuning)")
    where.add_argument("--backbone-name", action="append", default=[], metavar="[BACKBONE=]NAME",
                       help="the name shown for a backbone on the leaderboard, in figure names and these lines "
                            "(default: a .gguf file's name, a hub id, a folder's name; the full name stays in each "
                            "result); BACKBONE=NAME, or NAME alone with one backbone; repeatable")
    scale = run.add_argument_group("one run on several devices")
    scale.add_argument("--devices-per-run", type=int, metavar="K",
                       help="launch each run as K processes with torchrun, one per device, training data-parallel "
                            "(gloo on CPU, NCCL on GPUs); the step batch (--per-device-train-batch-size) is split "
                            "over the K, so the run is the same run as on one device (default 1)")
    scale.add_argument("--fsdp", metavar="OPTIONS",
                       help="shard the model with FSDP, as TrainingArguments' fsdp takes it (e.g. \"full_shard "
                            "auto_wrap\"); needs CUDA devices")
    scale.add_argument("--fsdp-config", metavar="JSON", help="TrainingArguments' fsdp_config (a JSON file)")
    scale.add_argument("--deepspeed", metavar="CONFIG.json",
                       help="train with DeepSpeed (ZeRO) from this config, as TrainingArguments' deepspeed takes it")
    run.set_defaults(func=cmd_run)

    lb = sub.add_parser("leaderboard", parents=[common], help="write the leaderboard from stored results")
    lb.add_argument("--results-dir", action="append", metavar="DIR",
                    help="a results folder or a glob of them; repeatable: one leaderboard from many contributors' "
                         "results (default: results)")
    lb.add_argument("--out", default="leaderboard")
    lb.add_argument("--metric", default="accuracy", metavar="NAME",
                    help="also print the table for this registered metric (accuracy, macro_f1, entity_f1, a "
                         "plugin's; see 'stmbench plugins'); the page has a toggle")
    lb.add_argument("--force", action="store_true",
                    help="replace a leaderboard that was built from another results folder")
    lb.add_argument("--no-copy-results", action="store_true",
                    help="do not copy the result files next to the page (its links then point nowhere)")
    lb.add_argument("--trust-unverified", action="store_true",
                    help="let results without predictions (their metrics cannot be recomputed) take part in the "
                         "bold / ≈ marks and the findings; they are flagged either way")
    lb.set_defaults(func=cmd_leaderboard)

    xp = sub.add_parser("export", parents=[common], help="copy a kept model (--save-models) out, or push it to the hub",
                        description="Copy <results>/models/RUN_ID/ (the adapter or model, its tokenizer and model "
                                    "card) to a new folder; --push-to-hub uploads it where the hub is reachable.")
    xp.add_argument("run_id", metavar="RUN_ID")
    xp.add_argument("--out", required=True, help="a new (or empty) folder")
    xp.add_argument("--results-dir", default="results", help="default ./results")
    xp.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this hub repository (org/name)")
    xp.set_defaults(func=cmd_export_model)

    pl = sub.add_parser("plugins", parents=[common], help="list loaded plugins by kind, or show one with its options")
    pl.add_argument("name", nargs="?", help="show this registered object: its plugin, capabilities and options")
    pl.add_argument("--json", action="store_true", help="a JSON list of {name, kind, module, ...}")
    pl.add_argument("--all", action="store_true", help="also list every plugin module with its hooks")
    pl.set_defaults(func=cmd_plugins)

    from stmbench.report.findings_view import add_findings_parser
    from stmbench.cli.views import add_results_parser

    add_results_parser(sub, common)
    from stmbench.cli.rationales import add_rationales_parser

    add_rationales_parser(sub, common)
    add_findings_parser(sub, common)

    tk = sub.add_parser("tasks", parents=[common], help="list tasks with labels, sources and split sizes")
    tk.add_argument("--json", action="store_true")
    tk.add_argument("--no-sizes", action="store_true", help="do not load data to count split sizes")
    tk.set_defaults(func=cmd_tasks)

    ex = sub.add_parser("export-lm-eval", parents=[common], help="write tasks as an lm-eval task folder",
                        epilog="then: lm_eval --model hf --model_args pretrained=DIR --include_path OUT "
                               "--tasks stmbench_lcqmc")
    ex.add_argument("--tasks", required=True, help="comma-separated task names")
    ex.add_argument("--out", required=True, help="the folder to write")
    ex.add_argument("--prompt", default="concise", help="the prompt template (default concise)")
    ex.add_argument("--num-fewshot", type=int, default=None, help="fix the number of in-context examples")
    ex.set_defaults(func=cmd_export)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    from stmbench.common.untrusted import TerminalHandler

    handler = TerminalHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("stmbench", "stmbench_plugins"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level)
        lg.propagate = False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    if not progress:  # read when datasets / huggingface_hub are imported (lazily, later)
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and other libraries' tqdm bars
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args)
    try:
        return args.func(args)
    except StmbenchError as exc:
        if args.debug:
            raise
        print("stmbench: error: " + "\n".join(term_text(line) for line in str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stmbench: interrupted; finished runs are stored and will be skipped next time", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover  (the console script; exits the process)
    """``stmbench``: :func:`main`, then a quick exit.  Once torch, transformers and datasets are
    imported, the interpreter's own shutdown (collecting every module) takes about 0.6 s on a 2-core
    CPU, more than some runs' training; by then every result is written atomically and fsynced, so
    the exit handlers (logging's flush, Ray's and multiprocessing's clean-up) run, the standard
    streams are flushed, and the process ends without that collection."""
    import atexit

    from stmbench.common import hostmem

    hostmem.tune()  # fewer page faults per training step on a CPU (glibc's mallopt)
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(int(code or 0))


if __name__ == "__main__":  # pragma: no cover
    entry()
