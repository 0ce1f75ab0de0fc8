"""The leaderboard of a session's results folder: refused before a study when it may not be replaced,
refreshed after it (the CLI's ``stmbench run`` does both around :func:`stmbench.run.study.run_study`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stmbench.core.session import Session
from stmbench.report import leaderboard
from stmbench.report.board import Board
from stmbench.report.evidence import session_gold_source


def check_leaderboard(session: Session) -> None:
    """Refuse, before anything runs, a leaderboard folder the study could not replace afterwards."""
    if session.settings.leaderboard_dir is not None:
        leaderboard.check_target(session.settings.results_dir, session.settings.leaderboard_dir,
                                 force=session.settings.force, need_results=False)


def refresh_leaderboard(session: Session) -> tuple[Board | None, list[Path]]:
    """Rebuild the session's leaderboard from its results folder, with the session's metrics, task
    references and gold labels: ``(board, files written)``; ``(None, [])`` without a leaderboard folder."""
    if session.settings.leaderboard_dir is None:
        return None, []
    return leaderboard.generate(session.settings.results_dir, session.settings.leaderboard_dir,
                                force=session.settings.force, references=leaderboard.task_references(session),
                                gold_source=session_gold_source(session), metrics=session_metrics(session))


def session_metrics(session: Any) -> list[Any]:
    """Every metric the session's plugins registered (built-in and third-party)."""
    return [e.obj for _, e in sorted(session.catalogue.entries["metric"].items())]
