"""Numbers you can trust: diverged and degenerate runs, loss curves (issue 9)."""

from __future__ import annotations

import math

import pytest

from stmbench.leaderboard import build, render_markdown
from stmbench.pipeline import health
from stmbench.results import ResultStore
from stmbench.spec import GridSpec
from stmbench.study import run_study


def _one_run(session, learning_rate, train_size=64, **training):
    grid = GridSpec(strategies=["generative"], adapters=["full"], train_sizes=[train_size], seeds=[1],
                    training={"learning_rate": learning_rate, "num_train_epochs": 1, "max_seq_length": 96,
                              "logging_steps": 2, **training})
    report = run_study(grid, session)
    assert len(report.results) == 1
    return report.results[0]


@pytest.mark.parametrize("learning_rate", [float("nan"), 1e30])
def test_a_run_whose_loss_or_gradients_become_nan_is_stopped_and_failed(session, learning_rate):
    if math.isnan(learning_rate):  # refused before anything trains
        with pytest.raises(Exception, match="learning_rate"):
            _one_run(session, learning_rate)
        return
    result = _one_run(session, learning_rate, train_size=200)
    assert result["status"] == "failed"
    assert result["error"].startswith("diverged at step ")
    step = int(result["error"].split("step ")[1].split(":")[0])
    assert step < 6  # stopped at once, not after the 13 steps of the epoch
    assert len(result["training"]["loss_curve"]) < 6


def test_a_run_whose_loss_explodes_is_ok_but_flagged_in_both_leaderboards(session):
    result = _one_run(session, 1000.0, train_size=200)
    assert result["status"] == "ok"
    assert "diverged" in result["health"]["flags"]
    curve = result["training"]["loss_curve"]
    assert curve[0][0] == 1 and curve[-1][0] == result["training"]["train_steps"]
    assert result["health"]["peak_loss"] > 2 * result["health"]["initial_loss"]
    store = ResultStore(session.settings.results_dir)
    board = build(store.load_all(), store)
    assert "⚠ " in render_markdown(board) and "diverged" in render_markdown(board)
    from stmbench.leaderboard import render_html

    assert 'class="flag"' in render_html(board)


def test_a_healthy_run_keeps_its_loss_curve_and_no_flags(session):
    result = _one_run(session, 5e-4, num_train_epochs=2)
    assert result["status"] == "ok"
    assert "diverged" not in result["health"]["flags"]
    steps = [s for s, _ in result["training"]["loss_curve"]]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == result["training"]["train_steps"] >= 4
    assert len(steps) >= 3


def test_health_flags():
    assert health({"loss_curve": [[1, 1.0], [9, 0.5]]}, [0, 1, 1], [0, 1, 0])["flags"] == []
    assert health({"loss_curve": [[1, 1.0], [9, 2.5]]}, [0, 1], [0, 1])["flags"] == ["diverged"]
    # a loss that exploded and came back down still flags the run
    assert health({"loss_curve": [[1, 1.0], [5, 900.0], [9, 0.9]]}, [0, 1], [0, 1])["flags"] == ["diverged"]
    assert health(None, [0, 1, 1], [1, 1, 1])["flags"] == ["degenerate"]
    assert health(None, [1, 1], [1, 1])["flags"] == []  # one gold class: one predicted class is fine


# --- nothing lost by a slip ------------------------------------------------------------------------

def _stored(folder, n=2):
    from tests.test_leaderboard import add, pattern

    store = ResultStore(folder)
    for i in range(n):
        add(store, run_id=f"r{i}", correct=pattern(60 + i), backbone="<b>x|y</b>")
    return store


def test_a_leaderboard_is_not_replaced_from_another_or_a_missing_results_folder(tmp_path, cli):
    from stmbench import leaderboard

    _stored(tmp_path / "results")
    leaderboard.generate(tmp_path / "results", tmp_path / "lb")
    before = {p.name: p.read_bytes() for p in (tmp_path / "lb").iterdir() if p.is_file()}
    _stored(tmp_path / "other", 1)
    for args, message in ((["--results-dir", str(tmp_path / "typo")], "does not exist"),
                          (["--results-dir", str(tmp_path / "other")], "pass --force"),
                          (["--results-dir", str(tmp_path / "empty")], "holds no results")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        code, out, err = cli("leaderboard", *args, "--out", str(tmp_path / "lb"))
        assert code == 2 and message in err and "Traceback" not in err, err
        assert {p.name: p.read_bytes() for p in (tmp_path / "lb").iterdir() if p.is_file()} == before
    # its own copies are its source; --force replaces it
    assert cli("leaderboard", "--results-dir", str(tmp_path / "lb" / "results"), "--out", str(tmp_path / "lb"))[0] == 0
    assert cli("leaderboard", "--results-dir", str(tmp_path / "other"), "--out", str(tmp_path / "lb"), "--force")[0] == 0
    assert len(list((tmp_path / "lb" / "results").glob("*[0-9].json"))) == 1


def test_the_markdown_leaderboard_escapes_html_and_pipes_and_files_get_normal_permissions(tmp_path):
    import os

    from stmbench import leaderboard

    _stored(tmp_path / "results")
    old = os.umask(0o022)
    try:
        leaderboard.generate(tmp_path / "results", tmp_path / "lb")
    finally:
        os.umask(old)
    text = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert "<b>" not in text and "&lt;b&gt;x\\|y&lt;/b&gt;" in text
    for path in [*(tmp_path / "lb").glob("*.*"), *(tmp_path / "lb" / "results").glob("*.json")]:
        assert path.stat().st_mode & 0o777 == 0o644, path
