"""examples/plugin-package, as a contributor ships it: pip-installed as its own distribution, found
through its entry point, run end to end through the CLI onto a leaderboard."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "examples" / "plugin-package"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install`` of the example package into a folder of its own (a copy of the source, so the
    build leaves nothing in the repository); returns the environment that sees it."""
    root = tmp_path_factory.mktemp("plugin_package")
    source, site = root / "src", root / "site"
    shutil.copytree(PACKAGE, source)
    offline = importlib.util.find_spec("setuptools") is not None  # else pip fetches its build backend
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(source)]
    cmd[4:4] = ["--no-build-isolation", "--no-index"] if offline else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert list(site.glob("stmbench_example_plugin-0.2.0.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("STMBENCH_LOAD_PLUGINS", None)
    return env


def stmbench(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stmbench.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=900, cwd=cwd)


def test_the_installed_package_registers_its_objects(installed, shared_cache):
    out = stmbench(installed, "plugins", "--json", "--cache-dir", str(shared_cache))
    assert out.returncode == 0, out.stderr
    rows = {(o["kind"], o["name"]): o for o in json.loads(out.stdout)}
    for key in (("strategy", "prompt_classifier"), ("adapter", "top_layers"), ("task", "example_pairs"), ("metric", "mcc")):
        assert rows[key]["version"] == "0.2.0" and rows[key]["builtin"] is False
        assert rows[key]["module"] == "stmbench_example.plugin"
    shown = stmbench(installed, "plugins", "top_layers", "--cache-dir", str(shared_cache))
    assert shown.returncode == 0, shown.stderr
    assert "top_layers (adapter)" in shown.stdout and "third-party" in shown.stdout
    assert "options (--adapter-option top_layers.KEY=VALUE)" in shown.stdout and "top transformer layers" in shown.stdout


def test_a_grid_with_the_package_runs_onto_the_leaderboard(installed, shared_cache, tmp_path):
    grid = ["--backbones", "tiny-llama", "--tasks", "example_pairs", "--strategies", "prompt_classifier",
            "--adapters", "top_layers", "--prompts", "plain", "--train-sizes", "300", "--seeds", "1",
            "--num-train-epochs", "2", "--results-dir", str(tmp_path / "results"),
            "--leaderboard-dir", str(tmp_path / "leaderboard"), "--cache-dir", str(shared_cache), "--no-progress"]
    bad = stmbench(installed, "run", *grid, "--adapter-option", "top_layers.layers=-1")
    assert bad.returncode == 2 and "layers must be 0 or more" in bad.stderr, bad.stderr
    out = stmbench(installed, "run", *grid)
    assert out.returncode == 0, out.stdout + out.stderr
    [path] = [p for p in (tmp_path / "results").glob("*.json") if not p.name.endswith(".predictions.json")]
    result = json.loads(path.read_text(encoding="utf-8"))
    assert result["status"] == "ok" and result["schema_version"] == 4 and result["data"]["eval"]["rows"] == 200
    assert result["spec"]["strategy"] == "prompt_classifier" and result["spec"]["adapter"] == "top_layers"
    assert result["counts"]["train_examples"] == 300 and result["counts"]["eval_examples"] == 200
    assert 0 < result["parameters"]["trainable"] < result["parameters"]["total"]  # the lower layers are frozen
    board = (tmp_path / "leaderboard" / "README.md").read_text(encoding="utf-8")
    assert "example_pairs (synthetic)" in board
    row = next(line for line in board.splitlines() if "prompt_classifier" in line)
    assert "top_layers" in row and f"{100 * result['metrics']['accuracy']:.1f}" in row


def test_the_packages_metric_shows_on_a_leaderboard_of_results_stored_before_it_existed(installed, shared_cache, tmp_path):
    """No core change: the committed results never stored ``mcc``; the board computes it from their
    predictions, offers it in the page's toggle and prints its table for ``--metric mcc``."""
    from sklearn.metrics import matthews_corrcoef

    out = stmbench(installed, "leaderboard", "--results-dir", str(REPO / "leaderboard" / "results"), "--out",
                   str(tmp_path / "board"), "--metric", "mcc", "--cache-dir", str(shared_cache), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "Cells: MCC in %" in out.stdout
    page = (tmp_path / "board" / "index.html").read_text(encoding="utf-8")
    assert '<option value="mcc">MCC</option>' in page and "body.metric-acc .mcc" in page
    results = sorted(p for p in (REPO / "leaderboard" / "results").glob("*.predictions.json"))
    assert results
    for path in results:
        preds = json.loads(path.read_text(encoding="utf-8"))
        stored = json.loads(path.with_name(path.name.replace(".predictions", "")).read_text(encoding="utf-8"))
        assert "mcc" not in stored["metrics"]
        expected = 100 * matthews_corrcoef(preds["gold"], preds["predicted"])
        assert f'data-mcc="{expected / 100:.6f}"' in page
    unknown = stmbench(installed, "leaderboard", "--results-dir", str(REPO / "leaderboard" / "results"), "--out",
                       str(tmp_path / "board2"), "--metric", "nope", "--cache-dir", str(shared_cache))
    assert unknown.returncode == 2 and "unknown metric 'nope'" in unknown.stderr and "mcc" in unknown.stderr
