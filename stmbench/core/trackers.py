"""Which experiment trackers ``--report-to`` names, checked before anything trains (the tracking
itself is :mod:`stmbench.run.tracking`, through the Trainer's own integrations)."""

from __future__ import annotations


def parse_report_to(text: str | None) -> list[str]:
    """``"tensorboard, mlflow"`` -> ``["tensorboard", "mlflow"]``; ``none`` / empty -> ``[]``."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return [] if names in ([], ["none"]) else names


def check_trackers(names: list[str]) -> list[str]:
    """One problem line per tracker that is unknown to transformers or whose package is missing."""
    if not names:
        return []
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    problems = []
    available = set(get_available_reporting_integrations())
    packages = {"tensorboard": "tensorboard", "mlflow": "mlflow (or mlflow-skinny)", "wandb": "wandb",
                "comet_ml": "comet_ml", "clearml": "clearml", "dvclive": "dvclive", "trackio": "trackio"}
    for name in names:
        if name == "all":
            problems.append("--report-to all: name the trackers (each is checked before training)")
        elif name not in INTEGRATION_TO_CALLBACK:
            problems.append(f"--report-to {name}: not a tracker transformers knows; known: "
                            f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        elif name not in available:
            problems.append(f"--report-to {name}: its package is not installed: pip install {packages.get(name, name)}")
    return problems
