"""stmbench run --check-reproducible (issue 27): one stored run rerun and compared."""

from __future__ import annotations

import json

from stmbench.run.reproduce import Reproduction, compare_curves

FAST = ["--strategies", "discriminative", "--adapters", "lora", "--train-sizes", "128", "--num-train-epochs", "2",
        "--limit", "40", "--logging-steps", "1"]


def test_a_stored_run_reruns_to_the_same_curve_and_predictions_and_a_changed_one_is_caught(cli, tmp_path):
    results = tmp_path / "results"
    code, out, err = cli("run", "--results-dir", str(results), "--no-leaderboard", *FAST)
    assert code == 0, err
    [path] = results.glob("*[0-9a-f].json")
    run_id = path.stem
    code, out, err = cli("run", "--results-dir", str(results), "--check-reproducible", run_id)
    assert code == 0, out + err
    assert f"rerun of {run_id} (tiny-llama / sample / discriminative / lora" in out and "REPRODUCED" in out
    assert "identical at every logged step" in out and "predictions: 0 of 40 differ" in out
    assert "environment: the same library versions, device and thread count" in out
    assert sorted(p.name for p in results.iterdir()) == sorted([path.name, f"{run_id}.predictions.json", "models"])

    # a stored curve that drifts from step 3 on (as one from another CPU would)
    result = json.loads(path.read_text())
    curve = result["training"]["loss_curve"]
    for point in curve[2:]:
        point[1] *= 1.001
    result["device"]["cpu_threads"] = 64
    path.write_text(json.dumps(result))
    code, out, err = cli("run", "--results-dir", str(results), "--check-reproducible", run_id)
    assert code == 1 and "NOT REPRODUCED" in out
    assert f"drifts from step {int(curve[2][0])}" in out and "device.cpu_threads 64 -> " in out
    assert "seed spread is the scale of such a difference" in out

    code, out, err = cli("run", "--results-dir", str(results), "--check-reproducible", "0123456789abcdef")
    assert code == 2 and "no stored result of that run" in err


def test_curves_are_compared_step_by_step():
    report = Reproduction(run_id="x", label="x")
    compare_curves([[1, 2.0], [2, 1.5]], [[1, 2.0], [2, 1.5 * (1 + 1e-8)]], report)
    assert report.first_drift is None and not report.identical_curve and report.steps == 2
    report = Reproduction(run_id="x", label="x")
    compare_curves([[1, 2.0], [2, 1.5]], [[1, 2.0]], report)
    assert report.first_drift == 2
