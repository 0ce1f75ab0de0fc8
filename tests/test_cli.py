"""End-to-end tests of the ``stmbench`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, TESTS


def stored(folder):
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))
            if not p.name.endswith(".predictions.json")]


@pytest.mark.slow
def test_embedded_default_end_to_end(cli, tmp_path):
    results, board = tmp_path / "results", tmp_path / "leaderboard"
    code, out, err = cli("run", "--results-dir", str(results), "--leaderboard-dir", str(board))
    assert code == 0, err
    runs = stored(results)
    assert len(runs) == 8 and all(r["status"] == "ok" for r in runs)
    assert {(r["spec"]["strategy"], r["spec"]["adapter"], r["spec"]["train_size"]) for r in runs} == {
        (s, a, n) for s in ("generative", "discriminative") for a in ("full", "lora") for n in (1000, "full")}
    assert all(r["spec"]["backbone"] == "tiny-llama" and r["spec"]["task"] == "sample" for r in runs)
    best = max(r["metrics"]["accuracy"] for r in runs)
    # chance is 50.  The same four run ids score differently on different CPUs (float sums drift after
    # 6 digits over 12 epochs): the best was 91.0 and 88.3 on two machines of this kind, 79.7 on a third
    # (an "Intel Xeon Processor", deterministic there), so the bar is well above chance, not one machine's
    assert best >= 0.75, [r["metrics"] for r in runs]
    for r in runs:  # every result carries what the issue asks for
        assert r["task_info"]["synthetic"] is True
        assert {"trainable", "total"} <= set(r["parameters"])
        assert {"train_seconds", "eval_seconds"} <= set(r["times"])
        assert {"stmbench", "torch", "transformers", "peft", "lm_eval"} <= set(r["versions"])
        assert r["device"]["type"] == "cpu" and r["counts"]["train_examples"] == (6000 if r["spec"]["train_size"] == "full" else 1000)
    markdown = (board / "README.md").read_text(encoding="utf-8")
    rows = [line for line in markdown.splitlines() if line.startswith("| tiny-llama")]
    assert len(rows) == 8
    # it opens with findings that have a verdict and an interval (issue 27), not "too few paired cells"
    findings = [line for line in markdown.split("## Findings")[1].split("## Results")[0].splitlines()
                if line.startswith("- ") and " vs " in line]
    assert len(findings) == 3 and all("too few" not in line and " points [" in line for line in findings), findings
    assert any(line.startswith("- train size full vs 1000: ") for line in findings)
    assert "SYNTHETIC" in markdown and "sample (synthetic)" in markdown
    assert f"{100 * best:.1f}" in rows[0]  # sorted best first
    assert "| tiny-llama" in out and "8 ok, 0 failed" in out
    html = (board / "index.html").read_text(encoding="utf-8")
    assert html.count("<tr data-backbone=") == 8

    code, out, err = cli("run", "--results-dir", str(results), "--leaderboard-dir", str(board))
    assert code == 0 and "0 to do, 8 already done (skipped)" in out and "0 ok, 0 failed, 8 skipped" in out
    assert (board / "README.md").read_text(encoding="utf-8") == markdown  # byte-identical


def test_failed_run_is_recorded_and_the_grid_goes_on(cli, tmp_path, monkeypatch):
    results = tmp_path / "results"
    # the test plugin makes the run of seed 7 fail as it starts training; the other run goes on
    monkeypatch.setenv("STMBENCH_TEST_FAIL_SEED", "7")
    args = ["--strategies", "discriminative", "--adapters", "full", "--train-sizes", "64", "--seeds", "7,8",
            "--num-train-epochs", "1", "--results-dir", str(results), "--no-leaderboard",
            "--plugin", str(TESTS / "plugins" / "scale_plugin.py")]
    code, out, err = cli("run", *args)
    assert code == 1
    runs = {r["spec"]["seed"]: r for r in stored(results)}
    assert runs[7]["status"] == "failed" and "test failure of seed 7" in runs[7]["error"]
    assert runs[8]["status"] == "ok"
    code, out, _ = cli("run", *args)
    assert "1 to do, 1 already done" in out  # the failed run is tried again, the ok one skipped


def test_a_run_that_failed_just_before_the_next_invocation_is_tried_again(cli, tmp_path, monkeypatch):
    """A failed result stamped in the same second as the next ``stmbench run`` starts is a failure of
    the earlier invocation, not of this study: the run is tried again (results are stamped to the
    millisecond; stamped to the second, the retry was skipped with exit code 0)."""
    results = tmp_path / "results"
    args = ["--strategies", "discriminative", "--adapters", "full", "--train-sizes", "32", "--seeds", "7",
            "--max-steps", "1", "--results-dir", str(results), "--no-leaderboard", "--save-models", "none",
            "--plugin", str(TESTS / "plugins" / "scale_plugin.py")]
    monkeypatch.setenv("STMBENCH_TEST_FAIL_SEED", "7")
    assert cli("run", *args)[0] == 1
    monkeypatch.delenv("STMBENCH_TEST_FAIL_SEED")
    code, out, err = cli("run", *args)  # at once
    assert code == 0 and "1 ok, 0 failed" in out, out + err
    [result] = stored(results)
    assert result["status"] == "ok"


def test_rerun_and_dry_run(cli, tmp_path):
    args = ["--strategies", "discriminative", "--adapters", "full", "--train-sizes", "32", "--max-steps", "1",
            "--results-dir", str(tmp_path / "r"), "--no-leaderboard"]
    assert cli("run", *args)[0] == 0
    code, out, _ = cli("run", *args, "--rerun", "--dry-run")
    assert code == 0 and "1 to do, 0 already done" in out and "would run" in out


def test_unknown_backbone_is_one_clear_line(cli):
    code, out, err = cli("run", "--backbones", "no-such-model", "--tasks", "sample")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "no-such-model" in lines[0] and "offline" in lines[0] and "tiny-llama" in lines[0]


def test_unknown_names_list_the_known_ones(cli):
    code, _, err = cli("run", "--tasks", "lcqmcc")
    assert code == 2 and "unknown task 'lcqmcc'; known tasks: " in err and "lcqmc" in err
    code, _, err = cli("run", "--strategies", "generativ")
    assert code == 2 and "known strategies: cot, discriminative, generative, in_context, label_supervised" in err


def test_debug_shows_the_traceback(cli):
    from stmbench.common.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        cli("run", "--tasks", "lcqmcc", "--debug")


def test_help_shows_examples_and_trainer_flags():
    out = subprocess.run([sys.executable, "-m", "stmbench.cli.main", "run", "--help"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    for flag in ("--learning-rate", "--num-train-epochs", "--per-device-train-batch-size", "--max-seq-length",
                 "--bf16", "--seed", "--config", "examples:"):
        assert flag in out
