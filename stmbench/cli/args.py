"""Command-line arguments -> typed objects, once: :class:`~stmbench.common.settings.Settings`, the
:class:`~stmbench.core.session.Session` and the :class:`~stmbench.spec.grid_spec.GridSpec` of a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError


def settings_from(args: argparse.Namespace) -> Any:
    from stmbench.common.settings import Settings, default_cache_dir
    from stmbench.core.trackers import parse_report_to

    return Settings(
        results_dir=Path(_first(getattr(args, "results_dir", None)) or "results"),
        leaderboard_dir=None if getattr(args, "no_leaderboard", False) else Path(getattr(args, "leaderboard_dir", "leaderboard")),
        cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        task_dirs=[Path(p) for p in args.task_dir],
        plugins=list(args.plugin),
        trust_remote_code=getattr(args, "trust_remote_code", False),
        device=getattr(args, "device", None),
        debug=args.debug,
        progress=args.progress,
        force=getattr(args, "force", False),
        save_models=getattr(args, "save_models", None) or "auto",
        report_to=parse_report_to(getattr(args, "report_to", None)),
        devices_per_run=1 if getattr(args, "devices_per_run", None) is None else args.devices_per_run,
        fsdp=getattr(args, "fsdp", None) or "",
        fsdp_config=getattr(args, "fsdp_config", None),
        deepspeed=getattr(args, "deepspeed", None),
        backbone_names=_backbone_names(getattr(args, "backbone_name", None) or [], getattr(args, "backbones", None)),
        **{k: getattr(args, k) for k in ("save_steps", "claim_timeout") if getattr(args, k, None) is not None},
    )


#: the longest name ``--backbone-name`` may give (it is shown in tables and figure file names)
MAX_BACKBONE_NAME = 80


def _backbone_names(items: list[str], backbones: str | None) -> dict[str, str]:
    """``--backbone-name path/model.gguf=SmolLM2`` (or ``SmolLM2`` alone with one ``--backbones``)."""
    from stmbench.spec.axes import _split_top_level

    given = _split_top_level(backbones) if backbones else []
    out: dict[str, str] = {}
    for item in items:
        backbone, eq, name = item.rpartition("=")
        if not eq:
            if len(given) != 1:
                raise StmbenchError(f"--backbone-name {item!r}: with {len(given) or 'no'} --backbones, write "
                                    "BACKBONE=NAME")
            backbone, name = given[0], item
        name = name.strip()
        if not name or len(name) > MAX_BACKBONE_NAME or not name.isprintable():
            raise StmbenchError(f"--backbone-name {item!r}: a name of 1 to {MAX_BACKBONE_NAME} printable characters")
        out[backbone.strip()] = name
    return out


def _first(value: Any) -> Any:
    """The first of a repeatable flag's values (``leaderboard --results-dir`` takes several)."""
    return value[0] if isinstance(value, list) and value else value


def _parse_options(items: list[str], what: str) -> dict[str, dict[str, Any]]:
    """``["lora.r=16", "lora.use_dora=true"]`` -> ``{"lora": {"r": 16, "use_dora": True}}``."""
    from stmbench.spec.axes import parse_assignment

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        usage = f"--{what}-option {item!r}: expected NAME.KEY=VALUE, e.g. lora.r=16"
        name, dot, rest = item.partition(".")
        if not (dot and name):
            raise StmbenchError(usage)
        key, value = parse_assignment(rest, usage)
        out.setdefault(name, {})[key] = value
    return out


def grid_from(args: argparse.Namespace) -> Any:
    from stmbench.spec.grid_spec import AXES, GridSpec
    from stmbench.spec.training import TrainingSettings

    grid = GridSpec.from_yaml(args.config) if args.config else GridSpec()
    training = {name: getattr(args, name) for name in TrainingSettings.field_names()
                if getattr(args, name) is not None}
    overrides: dict[str, Any] = {axis: getattr(args, axis) for axis in AXES}
    if not args.config and all(value is None for value in overrides.values()):
        from stmbench.spec.grid_spec import EMBEDDED_DEFAULT

        overrides.update(EMBEDDED_DEFAULT)  # the embedded default study
    overrides.update(training=training or None,
                     adapter_options=_parse_options(args.adapter_option, "adapter") or None,
                     strategy_options=_parse_options(args.strategy_option, "strategy") or None,
                     executor=args.executor,
                     executor_options=dict(_kv(args.executor_option)) or None,
                     skip_bad_rows=True if args.skip_bad_rows else None, limit=args.limit,
                     sweep=_sweep(args) or None, teacher=getattr(args, "teacher", None),
                     trials=getattr(args, "trials", None), sampler=getattr(args, "sampler", None),
                     sweep_seed=getattr(args, "sweep_seed", None), pruner=getattr(args, "pruner", None),
                     rationales=getattr(args, "rationales", None),
                     devices_per_run=getattr(args, "devices_per_run", None))
    return grid.with_overrides(**overrides)


def _sweep(args: argparse.Namespace) -> dict[str, list[str]]:
    """``--learning-rates 1e-5,5e-5`` and ``--sweep NAME=V1,V2`` -> ``{name: [values]}``."""
    from stmbench.spec.axes import _split_top_level

    out: dict[str, list[str]] = {}
    if args.learning_rates:
        out["learning_rate"] = _split_top_level(args.learning_rates)
    for item in args.sweep:
        name, eq, values = item.partition("=")
        if not (eq and name.strip() and values.strip()):
            raise StmbenchError(f"--sweep {item!r}: expected NAME=V1,V2,..., e.g. num_train_epochs=1,3")
        from stmbench.spec.search import is_distribution

        out[name.strip()] = values.strip() if is_distribution(values) else _split_top_level(values)
    return out


def _kv(items: list[str]) -> list[tuple[str, Any]]:
    from stmbench.spec.axes import parse_assignment

    return [parse_assignment(item, f"--executor-option {item!r}: expected KEY=VALUE") for item in items]


def session_from(args: argparse.Namespace) -> Any:
    from stmbench.core.session import Session

    return Session(settings_from(args))
