"""Numbers you can trust: diverged and degenerate runs, loss curves (issue 9)."""

from __future__ import annotations

import json
import math

import pytest

from stmbench.report.leaderboard import build, render_markdown
from stmbench.run.scoring import health
from stmbench.store.results import ResultStore
from stmbench.spec.grid_spec import GridSpec
from stmbench.run.study import run_study
from tests.conftest import REPO


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
    from stmbench.report.leaderboard import render_html

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


def test_near_degenerate_flag():
    """SmolLM2-135M zero-shot on 600 balanced reviews answered one class 598 times (accuracy 50.0):
    two stray predictions must not keep such a run unflagged."""
    gold = [0, 1] * 300
    out = health(None, gold, [1] * 598 + [0, 0])
    assert out["flags"] == ["near_degenerate"] and out["top_predicted_share"] == round(598 / 600, 4)
    assert "99.7% of the predictions are one class" in out["notes"][0]
    assert health(None, gold, [1] * 560 + [0] * 40)["flags"] == []  # 93%: a strong lean, not flagged
    # a gold set that is itself 97% one class: answering it 98% of the time is no collapse
    skewed = [1] * 582 + [0] * 18
    assert health(None, skewed, [1] * 590 + [0] * 10)["flags"] == []
    assert health(None, gold, [1] * 600)["flags"] == ["degenerate"]  # one class: the stronger flag only


# --- nothing lost by a slip ------------------------------------------------------------------------

def _stored(folder, n=2):
    from tests.test_leaderboard import add, pattern

    store = ResultStore(folder)
    for i in range(n):
        add(store, run_id=f"r{i}", correct=pattern(60 + i), backbone="<b>x|y</b>")
    return store


def test_a_leaderboard_is_not_replaced_from_another_or_a_missing_results_folder(tmp_path, cli):
    from stmbench.report import leaderboard

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

    from stmbench.report import leaderboard

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


# --- every mistake caught before training: one line, no traceback, nothing stored or trained ------

def _task_yaml(tmp_path, **changes):
    """A task folder holding one generated-data task file, with ``changes`` applied."""
    import yaml

    config = {"name": "mytask", "generator": "sample", "synthetic": True,
              "labels": [{"value": "0", "word": "no"}, {"value": "1", "word": "yes"}],
              "prompts": {"concise": "{text_a} / {text_b}?"}, **changes}
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    (folder / "mytask.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _lcqmc_data(tmp_path, breaking=None):
    """``--data-dir`` with the lcqmc files in their original format, broken by ``breaking(task, folder)``."""
    from stmbench.core.session import Session, Settings
    from tests.fixtures import write_task

    task = Session(Settings(progress=False)).get("task", "lcqmc")
    folder = write_task(task, tmp_path / "data")
    if breaking:
        breaking(task, folder)
    return ["--tasks", "lcqmc", "--data-dir", str(tmp_path / "data")]


def _corrupt(kind, split="train", line=5):
    from tests.fixtures import corrupt_line, file_for

    def breaking(task, folder):
        path = folder / file_for(task, split)
        corrupt_line(path, line, kind, task)
        return path
    return breaking


def _one_class(task, folder):
    from tests.fixtures import file_for

    path = folder / file_for(task, "train")
    lines = [line.rsplit("\t", 1)[0] + "\t1" for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


BAD_INPUTS = [
    # training settings
    ("lr-nan", lambda t: ["--learning-rate", "nan"], "learning_rate must be a finite number"),
    ("lr-inf", lambda t: ["--learning-rate", "inf"], "learning_rate must be a finite number"),
    ("lr-negative", lambda t: ["--learning-rate=-1e-5"], "learning_rate must be positive"),
    ("lr-zero", lambda t: ["--learning-rate", "0"], "learning_rate must be positive"),
    ("epochs-negative", lambda t: ["--num-train-epochs=-1"], "num_train_epochs must not be negative"),
    ("weight-decay-negative", lambda t: ["--weight-decay=-0.1"], "weight_decay must not be negative"),
    ("warmup-negative", lambda t: ["--warmup-steps=-5"], "warmup_steps must not be negative"),
    ("batch-zero", lambda t: ["--per-device-train-batch-size", "0"], "per_device_train_batch_size"),
    ("seq-length-zero", lambda t: ["--max-seq-length", "0"], "max_seq_length must be at least 1"),
    ("accumulation-zero", lambda t: ["--gradient-accumulation-steps", "0"], "gradient_accumulation_steps"),
    ("max-steps-zero", lambda t: ["--max-steps", "0"], "max_steps must be positive"),
    ("logging-steps-zero", lambda t: ["--logging-steps", "0"], "logging_steps must be at least 1"),
    ("both-precisions", lambda t: ["--bf16", "--fp16"], "choose one of bf16 and fp16"),
    ("optim", lambda t: ["--optim", "adamw_nope"], "--optim adamw_nope: unknown"),
    ("scheduler", lambda t: ["--lr-scheduler-type", "wavy"], "--lr-scheduler-type wavy: unknown"),
    # axes
    ("seed-negative", lambda t: ["--seeds=-1"], "seed -1 is outside"),
    ("seed-too-big", lambda t: ["--seeds", str(2**32)], f"seed {2**32} is outside"),
    ("seed-not-a-number", lambda t: ["--seeds", "one"], "seeds and shots must be integers"),
    ("train-size-zero", lambda t: ["--train-sizes", "0"], "train size 0"),
    ("train-size-negative", lambda t: ["--train-sizes=-3"], "train size must not be negative, got -3"),
    ("train-size-too-big", lambda t: ["--train-sizes", "7000"], "train size(s) 7000 exceed its 6000"),
    ("prompt", lambda t: ["--prompts", "nope"], "unknown prompt 'nope'"),
    ("strategy", lambda t: ["--strategies", "nope"], "nope"),
    ("adapter", lambda t: ["--adapters", "nope"], "nope"),
    ("task", lambda t: ["--tasks", "nope"], "nope"),
    ("backbone", lambda t: ["--backbones", "no-such-backbone"], "no-such-backbone"),
    ("all-rejected", lambda t: ["--adapters", "none"], "every combination of the grid was rejected"),
    ("adapter-option", lambda t: ["--adapters", "lora", "--adapter-option", "lora.rank=4"], "rank"),
    # where and how
    ("device-unknown", lambda t: ["--device", "tpu"], "--device tpu: unknown device"),
    ("device-missing", lambda t: ["--device", "cuda:99"], "--device cuda:99"),
    ("fp16-on-cpu", lambda t: ["--device", "cpu", "--fp16"], "--fp16: float16 mixed precision needs a GPU"),
    ("executor", lambda t: ["--executor", "nope"], "nope"),
    ("executor-option", lambda t: ["--executor-option", "workers=2"], "workers"),
    ("results-dir-is-a-file", lambda t: ["--results-dir", _write(t, "afile", "x")], "it is a file"),
    # files
    ("grid-training-not-a-mapping", lambda t: ["--config", _write(t, "g.yaml", "training: 5\n")], "training must be a mapping"),
    ("grid-unknown-key", lambda t: ["--config", _write(t, "g.yaml", "epochz: 3\n")], "unknown key(s) epochz"),
    ("grid-bad-yaml", lambda t: ["--config", _write(t, "g.yaml", "tasks: [a\n")], "g.yaml"),
    ("grid-missing", lambda t: ["--config", str(t / "nope.yaml")], "nope.yaml"),
    ("task-label-without-word", lambda t: ["--task-dir", str(_task_yaml(t, labels=[{"value": "0"}, {"value": "1", "word": "y"}]))],
     "has no 'word'"),
    ("task-prompt-brace", lambda t: ["--task-dir", str(_task_yaml(t, prompts={"concise": "{text_a / {text_b}"}))],
     "prompt 'concise' is not a valid template"),
    ("plugin-raises", lambda t: ["--plugin", _write(t, "boom.py", "x = 1\nraise RuntimeError('boom')\n")],
     "RuntimeError: boom (" ),
    ("plugin-syntax", lambda t: ["--plugin", _write(t, "syn.py", "def f(:\n")], "SyntaxError"),
    ("plugin-missing-module", lambda t: ["--plugin", "no_such_plugin_module"], "no_such_plugin_module"),
    # data
    ("data-empty-file", lambda t: _lcqmc_data(t, lambda task, f: (f / "train.txt").write_text("")), "train.txt"),
    ("data-missing-split", lambda t: _lcqmc_data(t, lambda task, f: (f / "test.txt").unlink()), "test"),
    ("data-column-count", lambda t: _lcqmc_data(t, _corrupt("columns")), "train.txt:5"),
    ("data-not-utf8", lambda t: _lcqmc_data(t, _corrupt("bad_utf8")), "train.txt"),
    ("data-unknown-label", lambda t: _lcqmc_data(t, _corrupt("label")), "train.txt:5: label '7'"),
    ("data-empty-text", lambda t: _lcqmc_data(t, _corrupt("empty")), "train.txt:5: empty text"),
    ("data-bad-eval-row", lambda t: _lcqmc_data(t, _corrupt("label", split="test", line=3)), "test.txt:3"),
    ("data-one-class", lambda t: _lcqmc_data(t, _one_class), "every row has one label"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_a_bad_input_is_one_line_before_anything_trains(case, cli, tmp_path, monkeypatch):
    from tests.conftest import TESTS

    name, make_args, needle = case
    results = tmp_path / "results"
    results.mkdir()
    (results / "0123456789abcdef.json").write_text('{"run_id": "0123456789abcdef", "status": "ok"}', encoding="utf-8")
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    trainings = tmp_path / "trainings.txt"
    monkeypatch.setenv("STMBENCH_TEST_TRAININGS", str(trainings))
    args = ["run", "-q", "--strategies", "discriminative", "--adapters", "full", "--max-steps", "1",
            "--results-dir", str(results), "--leaderboard-dir", str(tmp_path / "lb"),
            "--plugin", str(TESTS / "plugins" / "scale_plugin.py")]
    code, out, err = cli(*args, *make_args(tmp_path))
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code != 0, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(errors) == 1 and needle in errors[0], err
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before
    assert not trainings.exists(), "a run started"
    assert not (tmp_path / "lb").exists()


def test_dry_run_shows_the_checks_it_made(cli, tmp_path):
    code, out, err = cli("run", "--dry-run", "--results-dir", str(tmp_path / "r"), "--train-sizes", "100",
                         "--leaderboard-dir", str(tmp_path / "lb"))
    assert code == 0
    checked = [line.strip() for line in out.splitlines() if line.strip().startswith("checked:")]
    assert any(line.startswith("checked: device ") for line in checked)
    assert "checked: task sample, split train: 6000 rows, 2 label(s)" in checked
    assert not (tmp_path / "r").exists()


# --- --limit ---------------------------------------------------------------------------------------

def test_limit_evaluates_a_seeded_sample_marked_partial_and_never_ranked(cli, tmp_path):
    results, board = tmp_path / "results", tmp_path / "lb"
    common = ["--strategies", "discriminative", "--adapters", "full", "--max-steps", "2",
              "--results-dir", str(results), "--leaderboard-dir", str(board)]
    assert cli("run", *common)[0] == 0
    code, out, err = cli("run", *common, "--limit", "40", "--seeds", "1,2")
    assert code == 0, err
    stored = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in results.glob("*[0-9a-f].json")}
    partial = [r for r in stored.values() if r.get("partial")]
    full = [r for r in stored.values() if not r.get("partial")]
    assert len(partial) == 2 and len(full) == 1
    assert all(r["partial"] == {"limit": 40, "of": 300} and r["counts"]["eval_examples"] == 40 for r in partial)
    preds = [json.loads((results / f"{r['run_id']}.predictions.json").read_text(encoding="utf-8")) for r in partial]
    assert preds[0]["gold"] == preds[1]["gold"]  # the same sample whatever the run's seed
    markdown = (board / "README.md").read_text(encoding="utf-8")
    main, _, rest = markdown.partition("## Partial evaluations (not ranked)")
    assert rest and main.count("| tiny-llama") == 1 and rest.count("| tiny-llama") == 1
    assert "**" not in rest and "≈" not in rest  # no significance marks among partial rows
    assert 'id="partial"' in (board / "index.html").read_text(encoding="utf-8")
    # a full run is not "done" because a partial run of the same cell is
    assert "1 to do" in cli("run", *common, "--seeds", "1", "--dry-run")[1]


# --- model selection on dev ---------------------------------------------------------------------------

SELECTING = {"num_train_epochs": 3, "lr_scheduler_type": "constant", "learning_rate": 5e-4, "max_seq_length": 64,
             "per_device_train_batch_size": 32}


def _easy_task_dir(tmp_path, **changes):
    import yaml

    from tests.easy_task import task_config

    folder = tmp_path / "easy-tasks"
    folder.mkdir(exist_ok=True)
    config = task_config(**changes)
    (folder / f"{config['name']}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return folder


def test_dev_selection_tests_the_best_dev_checkpoint_when_later_epochs_overfit(make_session, monkeypatch, tmp_path):
    from tests.conftest import TESTS

    # the test plugin zeroes every weight from the end of epoch 2 on: dev accuracy falls after epoch 1
    monkeypatch.setenv("STMBENCH_TEST_SPOIL_FROM_EPOCH", "2")
    session = make_session(plugins=[str(TESTS / "plugins" / "scale_plugin.py"), "tests.easy_task"],
                           task_dirs=[_easy_task_dir(tmp_path)])
    grid = GridSpec(tasks=["easy"], strategies=["discriminative"], adapters=["full"], train_sizes=[320], seeds=[3],
                    training={**SELECTING, "eval_strategy": "epoch"})
    [result] = run_study(grid, session).results
    assert result["status"] == "ok", result.get("error")
    selection = result["training"]["selection"]
    per_epoch = result["training"]["train_steps"] // 3
    assert [step for step, _ in selection["dev_curve"]] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert selection["selected_step"] == per_epoch
    assert selection["dev_metric"] == selection["dev_curve"][0][1] > selection["dev_curve"][1][1]
    assert selection["dev"] == "validation split" and selection["dev_examples"] == 200
    # what was tested is the epoch-1 model: the same accuracy as a run that stopped after one epoch
    # (a constant learning rate and the same seed give the same first epoch)
    one = GridSpec(tasks=["easy"], strategies=["discriminative"], adapters=["full"], train_sizes=[320], seeds=[3],
                   training={**SELECTING, "num_train_epochs": 1})
    [first_epoch] = run_study(one, session).results
    assert result["metrics"]["accuracy"] == first_epoch["metrics"]["accuracy"] > 0.8
    # without selection the spoiled last epoch is what gets tested
    [last] = run_study(GridSpec(tasks=["easy"], strategies=["discriminative"], adapters=["full"], train_sizes=[320],
                                seeds=[3], training=SELECTING), session).results
    assert last["metrics"]["accuracy"] == 0.5


def test_where_the_eval_split_is_dev_a_stratified_slice_of_train_is_held_out(cli, tmp_path):
    import yaml

    config = yaml.safe_load((REPO / "tasks" / "sample.yaml").read_text(encoding="utf-8"))
    config.update(name="sample-dev", eval_split="validation")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "sample-dev.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    code, out, err = cli("run", "--task-dir", str(tmp_path / "tasks"), "--tasks", "sample-dev", "--strategies",
                         "discriminative", "--adapters", "full", "--train-sizes", "full", "--max-steps", "4",
                         "--eval-strategy", "steps", "--eval-steps", "2", "--early-stopping-patience", "1",
                         "--results-dir", str(tmp_path / "r"), "--no-leaderboard")
    assert code == 0, err
    [result] = [json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "r").glob("*[0-9a-f].json")]
    selection = result["training"]["selection"]
    assert selection["dev"].startswith("held out from train") and "validation" in selection["dev"]
    assert selection["dev_examples"] == 600 and result["counts"]["train_examples"] == 5400
    assert [s for s, _ in selection["dev_curve"]] in ([2, 4], [2])
    assert result["counts"]["eval_examples"] == 300  # tested on the validation split, never selected on


# --- tuned comparisons -------------------------------------------------------------------------------

def test_a_learning_rate_sweep_stores_every_trial_and_shows_one_row_per_cell(cli, tmp_path):
    results, board = tmp_path / "results", tmp_path / "lb"
    code, out, err = cli("run", "--plugin", "tests.easy_task", "--task-dir", str(_easy_task_dir(tmp_path)), "--tasks", "easy",
                         "--strategies", "discriminative", "--adapters", "full", "--train-sizes", "128",
                         "--seeds", "1,2", "--learning-rates", "1e-6,5e-4", "--num-train-epochs", "2",
                         "--lr-scheduler-type", "constant", "--max-seq-length", "64",
                         "--results-dir", str(results), "--leaderboard-dir", str(board))
    assert code == 0, err
    stored = [json.loads(p.read_text(encoding="utf-8")) for p in results.glob("*[0-9a-f].json")]
    assert len(stored) == 4  # 2 learning rates x 2 seeds, every trial kept
    assert all(r["spec"]["sweep"] == ["learning_rate"] and r["spec"]["training"]["eval_strategy"] == "epoch"
               for r in stored)
    dev = {}
    for r in stored:
        dev.setdefault(r["spec"]["training"]["learning_rate"], []).append(r["training"]["selection"]["dev_metric"])
    best = max(dev, key=lambda lr: sum(dev[lr]) / 2)
    assert best == 5e-4  # the tiny model learns nothing at 1e-6
    chosen = sorted(r["metrics"]["accuracy"] for r in stored if r["spec"]["training"]["learning_rate"] == best)
    markdown = (board / "README.md").read_text(encoding="utf-8")
    rows = [line for line in markdown.splitlines() if line.startswith("| tiny-llama")]
    assert len(rows) == 1 and "[lr 0.0005; 2 trials]" in rows[0]
    mean = 100 * sum(chosen) / 2
    assert f"{mean:.1f} ± " in rows[0]
    assert len(list((board / "results").glob("*[0-9a-f].json"))) == 4  # every trial is evidence
    assert "[lr 0.0005; 2 trials]" in (board / "index.html").read_text(encoding="utf-8")


def test_the_board_flags_a_near_degenerate_run_from_its_predictions_whatever_the_result_claims(tmp_path):
    from stmbench.report.board import aggregate
    from tests.test_leaderboard import GOLD, add

    store = ResultStore(tmp_path / "results")
    # predicts class 1 for 98 of 100 examples (gold: 50 / 50); the stored result claims no flags
    add(store, run_id="lean", correct=[g == 1 or i in (0, 2) for i, g in enumerate(GOLD)])
    add(store, run_id="fine", correct=[i % 3 > 0 for i in range(100)], strategy="discriminative")
    board = aggregate(store.load_all(), store)
    flags = {row.key["strategy"]: row.cells["t1"].flag_text() for row in board.rows}
    assert "near_degenerate" in flags["generative"] and flags["discriminative"] == ""
