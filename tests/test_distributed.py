"""One run on k devices (issue 28): ``--devices-per-run 2`` launches a run as two CPU processes with
torchrun (gloo), the Trainer trains data-parallel, rank 0 predicts and writes; the pre-flight refuses
what cannot work before anything trains; the executors plan k devices per run."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import TESTS

SCALE_PLUGIN = str(TESTS / "plugins" / "scale_plugin.py")
#: 64 rows, 1 epoch, a step batch of 8: 8 steps, each logged
FAST = ["--strategies", "discriminative", "--adapters", "full", "--train-sizes", "64", "--num-train-epochs", "1",
        "--per-device-train-batch-size", "8", "--max-seq-length", "96", "--logging-steps", "1", "--limit", "40",
        "--no-leaderboard"]


def _stored(folder):
    [path] = [p for p in folder.glob("*.json") if not p.name.endswith(".predictions.json")]
    result = json.loads(path.read_text(encoding="utf-8"))
    predictions = json.loads(path.with_name(f"{result['run_id']}.predictions.json").read_text(encoding="utf-8"))
    return result, predictions


def _results(folder):
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))
            if not p.name.endswith(".predictions.json")]


@pytest.mark.slow
def test_two_processes_train_the_loss_curve_of_one_with_the_same_step_batch_and_predict_the_same(cli, tmp_path):
    """The same spec (step batch 8) on one process and on two (4 rows each per step): the same run id,
    the logged losses equal within float tolerance, the same 40 test predictions, and the result says
    how it was spread."""
    code, _, err_one = cli("run", "--results-dir", str(tmp_path / "one"), *FAST)
    assert code == 0, err_one
    code, out, err = cli("run", "--results-dir", str(tmp_path / "two"), "--devices-per-run", "2", *FAST)
    assert code == 0, err
    # rank 0's log lines reach the driver's log: the same health warnings as the one-process run's
    assert [line for line in err.splitlines() if "is flagged" in line] == \
        [line for line in err_one.splitlines() if "is flagged" in line]
    one, one_predicted = _stored(tmp_path / "one")
    two, two_predicted = _stored(tmp_path / "two")
    assert one["status"] == two["status"] == "ok", two.get("error")
    assert one["run_id"] == two["run_id"]  # the same effective batch: the same run
    curve_one = [loss for _, loss in one["training"]["loss_curve"]]
    curve_two = [loss for _, loss in two["training"]["loss_curve"]]
    assert len(curve_one) == len(curve_two) == 8
    assert curve_two == pytest.approx(curve_one, abs=1e-4), (curve_one, curve_two)
    assert two_predicted["predicted"] == one_predicted["predicted"]
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "launcher": "torchrun", "sharding": "ddp",
                                  "fsdp": None, "deepspeed": None, "per_device_train_batch_size": 4,
                                  "gradient_accumulation_steps": 1, "effective_batch": 8}
    assert one["distributed"]["world_size"] == 1 and one["distributed"]["effective_batch"] == 8
    assert two["metrics"] == one["metrics"]


@pytest.mark.slow
def test_dev_selection_on_two_processes_picks_what_one_process_picks(cli, tmp_path):
    """Scored on dev every epoch (each rank predicts the dev rows the way the run is tested), the
    best checkpoint is the same one, and both ranks load it from the folder rank 0 saved it in."""
    args = [*FAST, "--num-train-epochs", "3", "--eval-strategy", "epoch"]
    code, _, err = cli("run", "--results-dir", str(tmp_path / "one"), *args)
    assert code == 0, err
    code, _, err = cli("run", "--results-dir", str(tmp_path / "two"), "--devices-per-run", "2", *args)
    assert code == 0, err
    (one, one_predicted), (two, two_predicted) = _stored(tmp_path / "one"), _stored(tmp_path / "two")
    assert two["status"] == "ok", two.get("error")
    picked = [r["training"]["selection"] for r in (one, two)]
    assert picked[0]["selected_step"] == picked[1]["selected_step"]
    assert [v for _, v in picked[0]["dev_curve"]] == pytest.approx([v for _, v in picked[1]["dev_curve"]], abs=1e-9)
    assert two_predicted["predicted"] == one_predicted["predicted"]


@pytest.mark.slow
def test_a_rank_that_fails_fails_its_run_with_the_ranks_reason_and_the_grid_goes_on(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("STMBENCH_TEST_FAIL_RANK", "1")
    monkeypatch.setenv("STMBENCH_TEST_FAIL_SEED", "1")  # only seed 1's rank 1 raises
    results = tmp_path / "r"
    code, out, err = cli("run", "--results-dir", str(results), "--devices-per-run", "2", "--seeds", "1,2",
                         "--plugin", SCALE_PLUGIN, *FAST)
    assert code == 1  # a run failed
    by_seed = {r["spec"]["seed"]: r for r in _results(results)}
    assert by_seed[1]["status"] == "failed" and by_seed[2]["status"] == "ok"
    assert by_seed[1]["error"].startswith("rank-1: ") and "test failure of rank 1" in by_seed[1]["error"]
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_from_its_checkpoint(cli, tmp_path, monkeypatch):
    """Both ranks are killed (SIGKILL) at step 5 with checkpoints every 2 steps: the run is stored as failed;
    the next ``stmbench run`` resumes both ranks from step 4 and ends with the uninterrupted curve."""
    results, steps = tmp_path / "r", tmp_path / "steps.txt"
    monkeypatch.setenv("STMBENCH_TEST_STEPS", str(steps))
    monkeypatch.setenv("STMBENCH_TEST_KILL_AT_STEP", "5")
    args = ["--devices-per-run", "2", "--save-steps", "2", "--plugin", SCALE_PLUGIN, *FAST]
    code, _, _ = cli("run", "--results-dir", str(results), *args)
    [killed] = _results(results)
    # both ranks kill themselves at step 5: the reason names the signal of each rank torchrun saw die
    assert code == 1 and killed["status"] == "failed" and "(SIGKILL)" in killed["error"], killed["error"]
    monkeypatch.delenv("STMBENCH_TEST_KILL_AT_STEP")
    code, _, err = cli("run", "--results-dir", str(results), *args)
    assert code == 0, err
    [resumed] = _results(results)
    assert resumed["status"] == "ok" and resumed["training"]["resumed_from_step"] == 4, resumed.get("error")
    firsts = [int(line.split()[1]) for line in steps.read_text(encoding="utf-8").split("\n") if line]
    assert firsts.count(5) == 2  # both ranks of the second launch started after the checkpoint of step 4
    code, _, err = cli("run", "--results-dir", str(tmp_path / "straight"), *FAST)
    assert code == 0, err
    [straight] = _results(tmp_path / "straight")
    assert resumed["training"]["loss_curve"][-1][1] == pytest.approx(straight["training"]["loss_curve"][-1][1], abs=1e-4)


@pytest.mark.slow
def test_ray_train_workers_are_the_ranks_of_a_run_and_rank_0s_outcome_comes_back(cli, tmp_path):
    """``placement=train``: the run's two ranks are two Ray Train workers of a local 2-CPU Ray
    instance (a TorchTrainer, as it would place them on two nodes); rank 0's result reaches the driver
    through an actor and is stored there, with the loss curve of one process."""
    pytest.importorskip("ray")
    code, _, err = cli("run", "--results-dir", str(tmp_path / "one"), *FAST)
    assert code == 0, err
    code, _, err = cli("run", "--results-dir", str(tmp_path / "ray"), "--devices-per-run", "2", "--executor", "ray",
                       "--executor-option", "local_cpus=2", "--executor-option", "placement=train", *FAST)
    assert code == 0, err
    (one, one_predicted), (placed, placed_predicted) = _stored(tmp_path / "one"), _stored(tmp_path / "ray")
    assert placed["status"] == "ok", placed.get("error")
    assert placed["distributed"]["world_size"] == 2 and placed["distributed"]["per_device_train_batch_size"] == 4
    assert placed["distributed"]["launcher"] == "ray_train"
    assert [v for _, v in placed["training"]["loss_curve"]] == pytest.approx(
        [v for _, v in one["training"]["loss_curve"]], abs=1e-4)
    assert placed_predicted["predicted"] == one_predicted["predicted"]


@pytest.mark.parametrize(("flags", "says"), [
    (["--devices-per-run", "3"], "there are only"),
    (["--devices-per-run", "2", "--per-device-train-batch-size", "7"], "a step batch of 7 does not split over 2"),
    (["--devices-per-run", "0"], "1 or more"),
    (["--fsdp", "full_shard auto_wrap"], "FSDP needs CUDA devices"),
    (["--fsdp-config", "x.json"], "--fsdp-config without --fsdp"),
    (["--deepspeed", "ds.json"], "--deepspeed ds.json: DeepSpeed"),
    (["--devices-per-run", "2", "--device", "cuda:1"], "cuda"),
    (["--devices-per-run", "2", "--pruner", "asha", "--sweep", "learning_rate=1e-4,1e-3",
      "--eval-strategy", "epoch"], "with --pruner"),
])
def test_what_cannot_spread_is_refused_before_anything_trains(cli, tmp_path, flags, says, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    results = tmp_path / "r"
    code, _, err = cli("run", "--results-dir", str(results), *FAST, *flags)
    assert code == 2 and says in err and "Traceback" not in err, err
    assert not results.exists() or not list(results.glob("*.json"))


def test_a_grid_file_says_devices_per_run_and_a_flag_overrides_it(cli, tmp_path):
    from stmbench import StmbenchError
    from stmbench.spec.grid_spec import GridSpec

    config = tmp_path / "grid.yaml"
    config.write_text("strategies: [discriminative]\nadapters: [full]\ndevices_per_run: 2\n", encoding="utf-8")
    code, out, err = cli("run", "--config", str(config), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert code == 0, err
    assert "device cpu x 2 processes per run (torchrun)" in out
    code, out, err = cli("run", "--config", str(config), "--devices-per-run", "1", "--results-dir",
                         str(tmp_path / "r"), "--dry-run")
    assert code == 0 and "processes per run" not in out, err
    for bad in (0, "2", True):
        with pytest.raises(StmbenchError, match="devices_per_run"):
            GridSpec(devices_per_run=bad)


def test_the_pool_gives_each_worker_k_gpus_and_a_cpu_worker_k_cores():
    from stmbench import StmbenchError
    from stmbench_plugins.executors.pool import PoolOptions, plan_slots

    slots = plan_slots(PoolOptions(devices="cuda:0,cuda:1,cuda:2,cuda:3"), cpus=8, per_run=2)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert [s.label for s in slots] == ["cuda:0+cuda:1", "cuda:2+cuda:3"] and all(s.threads == 4 for s in slots)
    with pytest.raises(StmbenchError, match="groups of 2"):
        plan_slots(PoolOptions(devices="cuda:0,cuda:1,cuda:2"), cpus=8, per_run=2)
    cpu = plan_slots(PoolOptions(), cpus=8, per_run=2)  # no GPU here: CPU workers of at least k cores
    assert len(cpu) == 2 and all(s.device == "cpu" and s.threads == 4 for s in cpu)
    assert [s.threads for s in plan_slots(PoolOptions(), cpus=2, per_run=2)] == [2]


def test_torchruns_failure_summary_names_the_rank_a_signal_killed():
    from stmbench.run.distributed import signal_deaths

    summary = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
stmbench.run.rank FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-03_15:40:01
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
============================================================"""
    assert signal_deaths(summary) == ["rank-1: Signal 9 (SIGKILL) received by PID 4242"]
    assert signal_deaths("rank 1 raised RuntimeError") == []
