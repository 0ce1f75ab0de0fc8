"""Scale out (issue 8): claims shared by concurrent processes, the pool and ray executors, runs that
survive being killed, and the study API they all go through."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from stmbench.run.claims import ClaimBook
from stmbench.common.errors import StmbenchError
from stmbench.store.results import ResultStore
from stmbench.spec.grid_spec import GridSpec
from stmbench.run.study import Runner, clean_debris, run_study
from tests.conftest import REPO, TESTS

SCALE_PLUGIN = str(TESTS / "plugins" / "scale_plugin.py")
TINY = {"max_steps": 3, "per_device_train_batch_size": 16, "max_seq_length": 96}


def _grid(**axes):
    values = {"strategies": "discriminative", "adapters": "full", "train_sizes": [32, 48], "seeds": [1, 2],
              "training": dict(TINY)}
    values.update(axes)
    return GridSpec(**values)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lines(path):
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def _stmbench(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "stmbench.cli.main", "run", "--no-progress", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_processes_share_one_grid_and_train_each_run_once(tmp_path, shared_cache):
    """Two ``stmbench run`` processes started together on one 6-run grid and one results folder."""
    trainings = tmp_path / "trainings.txt"
    env = dict(os.environ, STMBENCH_TEST_TRAININGS=str(trainings))
    args = ["--strategies", "discriminative", "--adapters", "full", "--train-sizes", "32,48,64", "--seeds", "1,2",
            "--max-steps", "6", "--max-seq-length", "96", "--results-dir", str(tmp_path / "results"),
            "--leaderboard-dir", str(tmp_path / "board"), "--cache-dir", str(shared_cache),
            "--plugin", SCALE_PLUGIN]
    procs = [_stmbench(*args, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    lines = trainings.read_text(encoding="utf-8").splitlines()
    per_run = Counter(line.split()[0] for line in lines)
    per_process = Counter(line.split()[1] for line in lines)
    print("trainings per run:", dict(per_run), "per process:", dict(per_process))
    assert len(per_run) == 6 and set(per_run.values()) == {1}  # every run trained exactly once
    assert len(per_process) == 2  # and both processes did some of them
    stored = ResultStore(tmp_path / "results").load_all()
    assert len(stored) == 6 and {r["status"] for r in stored} == {"ok"}
    assert not list((tmp_path / "results").glob("*.claim"))  # every claim released
    assert "ETA" in "".join(outputs) and "by other workers" in "".join(outputs)


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    mine, other = ClaimBook(tmp_path, timeout=60), ClaimBook(tmp_path, timeout=60)
    assert mine.acquire("a") and not other.acquire("a")  # a live holder (this very process) keeps it
    info = mine.holder("a")
    assert {"host", "pid", "started", "heartbeat"} <= set(info) and info["pid"] == os.getpid()
    mine.release("a")
    assert other.acquire("a")
    other.release_all()

    def write(run_id, **claim):
        (tmp_path / f"{run_id}.claim").write_text(json.dumps(claim), encoding="utf-8")

    now = time.time()
    write("dead", host=socket.gethostname(), pid=_dead_pid(), started=now, heartbeat=now)
    write("silent", host="elsewhere", pid=1, started=now - 999, heartbeat=now - 120)
    write("alive", host="elsewhere", pid=1, started=now, heartbeat=now)
    assert mine.acquire("dead")  # its process is gone: taken over at once
    assert mine.acquire("silent")  # no heartbeat for longer than the timeout
    assert not mine.acquire("alive")  # another machine's worker that still beats
    assert mine.holder("dead")["pid"] == os.getpid()
    mine.refresh()
    assert mine.holder("silent")["heartbeat"] >= now
    mine.release_all()
    assert sorted(p.name for p in tmp_path.glob("*.claim")) == ["alive.claim"]


def test_a_killed_workers_claim_does_not_block_the_grid(session, tmp_path):
    grid = _grid(train_sizes=[32], seeds=[1])
    [spec] = run_study(grid, session, dry_run=True).todo
    now = time.time()
    claim = session.settings.results_dir / f"{spec.run_id}.claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": now,
                                 "heartbeat": now}), encoding="utf-8")
    report = run_study(grid, session)
    assert report.ok == 1 and not claim.exists()


def test_study_reports_and_cleans_what_killed_processes_left(session, tmp_path):
    results = session.settings.results_dir
    results.mkdir(parents=True)
    old, fresh = results / ".x.json.abc.tmp", results / ".y.json.def.tmp"
    old.write_text("partial")
    fresh.write_text("being written")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    empty, busy = tmp_path / "tmp" / "stmbench-trainer-dead", tmp_path / "tmp" / "stmbench-trainer-busy"
    empty.mkdir(parents=True)
    busy.mkdir()
    (busy / "trainer_state.json").write_text("{}")
    removed = clean_debris(results, temp_dir=tmp_path / "tmp")
    assert set(removed) == {old, empty} and fresh.exists() and busy.exists()


def test_runner_pickles_settings_not_objects(make_session, tmp_path):
    class InProcessOnly:
        pass

    with pytest.raises(StmbenchError, match="cannot travel to worker processes"):
        pickle.dumps(Runner(make_session(InProcessOnly())))
    import tests.plugins.scale_plugin as module

    runner = pickle.loads(pickle.dumps(Runner(make_session(module, results_dir=tmp_path / "rel"))))
    assert runner.plugins == ["tests.plugins.scale_plugin"] and runner.settings.results_dir.is_absolute()


def test_bad_executor_options_fail_before_anything_runs(session):
    with pytest.raises(StmbenchError, match="unknown option.*executor 'pool'.*known: devices, runs_per_worker, workers"):
        run_study(_grid(executor="pool", executor_options={"gpus": 2}), session)
    with pytest.raises(StmbenchError, match="runs_per_worker must be at least 1"):
        run_study(_grid(executor="pool", executor_options={"runs_per_worker": 0}), session)
    with pytest.raises(StmbenchError, match="device 'gpu0' is not cpu, cuda or cuda:N"):
        run_study(_grid(executor="pool", executor_options={"devices": "gpu0"}), session)
    with pytest.raises(StmbenchError, match="local' takes no options"):
        run_study(_grid(executor_options={"workers": 2}), session)
    assert not ResultStore(session.settings.results_dir).load_all()


@pytest.mark.slow
@pytest.mark.parametrize("runs_per_worker", [1, 3])
def test_pool_stores_a_run_that_killed_its_process_as_failed(make_session, monkeypatch, tmp_path, runs_per_worker):
    monkeypatch.setenv("STMBENCH_TEST_EXIT_SEED", "2")
    trainings = tmp_path / "trainings.txt"
    monkeypatch.setenv("STMBENCH_TEST_TRAININGS", str(trainings))
    session = make_session(plugins=[SCALE_PLUGIN])
    report = run_study(_grid(train_sizes=[32], seeds=[1, 2, 3, 4], executor="pool",
                             executor_options={"workers": 2, "runs_per_worker": runs_per_worker}), session)
    assert (report.ok, report.failed) == (3, 1)
    pids = [line.split()[1] for line in trainings.read_text(encoding="utf-8").splitlines()]
    assert len(pids) == 4 and str(os.getpid()) not in pids
    if runs_per_worker == 1:
        assert len(set(pids)) == 4  # a fresh process per run
    else:
        assert len(set(pids)) < 4  # a worker took a second run
    [failed] = [r for r in ResultStore(session.settings.results_dir).load_all() if r["status"] == "failed"]
    assert failed["spec"]["seed"] == 2 and "exited with code 3" in failed["error"]
    assert {r["spec"]["seed"] for r in report.results if r["status"] == "ok"} == {1, 3, 4}


@pytest.mark.slow
def test_ray_gives_the_same_metrics_as_local(make_session, tmp_path, monkeypatch):
    """Each run a Ray task in a fresh worker process; 2 CPUs per task, so that the run uses as many
    threads as the local one (float sums, and so borderline predictions, depend on the thread count)."""
    pytest.importorskip("ray", reason='the ray executor needs pip install "stmbench[ray]"')
    trainings = tmp_path / "trainings.txt"
    monkeypatch.setenv("STMBENCH_TEST_TRAININGS", str(trainings))
    local = make_session(results_dir=tmp_path / "local", leaderboard_dir=tmp_path / "lb-local")
    remote = make_session(results_dir=tmp_path / "ray", plugins=[SCALE_PLUGIN], leaderboard_dir=tmp_path / "lb-ray")
    expected = run_study(_grid(), local)
    report = run_study(_grid(executor="ray", executor_options={"local_cpus": 2, "num_cpus": 2}), remote)
    assert (report.ok, report.failed) == (4, 0)
    got = {r["run_id"]: r["metrics"] for r in report.results}
    assert got == {r["run_id"]: r["metrics"] for r in expected.results}
    pids = [line.split()[1] for line in trainings.read_text(encoding="utf-8").splitlines()]
    assert len(set(pids)) == 4 and str(os.getpid()) not in pids  # one fresh Ray worker per run
    assert len(ResultStore(tmp_path / "ray").load_all()) == 4  # stored by the driver


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_result(cli, tmp_path, shared_cache, monkeypatch):
    args = ["--strategies", "generative", "--adapters", "full", "--train-sizes", "64", "--seeds", "3",
            "--max-steps", "8", "--per-device-train-batch-size", "8", "--max-seq-length", "96",
            "--save-steps", "3", "--no-leaderboard", "--plugin", SCALE_PLUGIN]
    steps = tmp_path / "steps.txt"
    monkeypatch.setenv("STMBENCH_TEST_STEPS", str(steps))
    code, out, err = cli("run", *args, "--results-dir", str(tmp_path / "whole"))
    assert code == 0, err
    [whole] = ResultStore(tmp_path / "whole").load_all()
    assert whole["training"]["resumed_from_step"] is None

    killed = tmp_path / "killed"
    proc = _stmbench(*args, "--results-dir", str(killed), "--cache-dir", str(shared_cache),
                     env=dict(os.environ, STMBENCH_TEST_KILL_AT_STEP="5"))
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == -9, output
    assert not ResultStore(killed).load_all() and list(killed.glob("*.claim"))  # killed mid-run
    checkpoints = list((shared_cache / "checkpoints").glob(f"{whole['run_id']}-*/checkpoint-3"))
    assert len(checkpoints) == 1

    code, out, err = cli("run", *args, "--results-dir", str(killed))
    assert code == 0, err
    assert "from " in err and "checkpoint-3 (step 3)" in err and "took over run" in err
    [resumed] = ResultStore(killed).load_all()
    assert resumed["training"]["resumed_from_step"] == 3 and resumed["training"]["train_steps"] == 8
    first_steps = [line.split()[1] for line in steps.read_text(encoding="utf-8").splitlines()]
    assert first_steps == ["1", "1", "4"]  # whole run, killed run, resumed run: its first step is 4
    assert resumed["metrics"] == whole["metrics"]
    assert ResultStore(killed).predictions(resumed["run_id"])["predicted"] == \
        ResultStore(tmp_path / "whole").predictions(whole["run_id"])["predicted"]
    assert not checkpoints[0].parent.exists()  # removed once the run was stored
