"""--report-to (issue 27): each run logged to real trackers, read back with their own readers, offline."""

from __future__ import annotations

import json

import pytest

FAST = ["--strategies", "discriminative", "--adapters", "lora", "--train-sizes", "128", "--num-train-epochs", "1",
        "--limit", "40", "--logging-steps", "1", "--save-models", "none"]


def _result(results):
    [result] = [json.loads(p.read_text()) for p in results.glob("*[0-9a-f].json")]
    return result


def test_tensorboard_gets_the_curves_the_spec_and_the_test_metrics(cli, tmp_path, monkeypatch, shared_cache):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    results = tmp_path / "results"
    fast = [*FAST[:-1], "all"]  # keep the model, to see what its saved config holds
    code, out, err = cli("run", "--results-dir", str(results), "--report-to", "tensorboard", *fast)
    assert code == 0, err
    result = _result(results)
    folder = results / "tensorboard" / result["run_id"]
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    stored = [(int(step), loss) for step, loss in result["training"]["loss_curve"]]
    assert [s for s, _ in losses] == [s for s, _ in stored]  # the same curve the result keeps
    assert [v for _, v in losses] == pytest.approx([v for _, v in stored], rel=1e-6)
    [accuracy] = events.Scalars("test/accuracy")
    assert accuracy.value == pytest.approx(result["metrics"]["accuracy"])
    assert events.Scalars("test/health_flagged")[0].value == float(bool(result["health"]["flags"]))
    assert events.Scalars("test/cost_train_seconds")[0].value == pytest.approx(result["times"]["train_seconds"])
    config = events.Tensors("model_config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f'"stmbench.run_id": "{result["run_id"]}"' in config and '"stmbench.strategy": "discriminative"' in config
    # the spec was only lent to the trackers: the saved model's config keeps none of it
    saved = json.loads((results / "models" / result["run_id"] / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] and "stmbench." not in json.dumps(saved)
    from stmbench.core.session import Session, Settings
    from stmbench.run.keep import load_saved

    model, _, _ = load_saved(results / "models" / result["run_id"],
                             Session(Settings(cache_dir=shared_cache, progress=False, device="cpu")))
    assert not [k for k in model.config.to_dict() if k.startswith("stmbench.")]


def test_mlflow_gets_a_named_run_with_the_spec_as_parameters_and_the_test_metrics(cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3: the local file store is opt-in
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "stmbench-test")
    results = tmp_path / "results"
    code, out, err = cli("run", "--results-dir", str(results), "--report-to", "mlflow", *FAST)
    assert code == 0, err
    result = _result(results)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("stmbench-test")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.endswith(f"[{result['run_id']}]")
    assert run.info.run_name.startswith("tiny-llama / sample / discriminative / lora")
    assert run.data.params["stmbench.run_id"] == result["run_id"]
    assert run.data.params["stmbench.training.learning_rate"] == str(result["spec"]["training"]["learning_rate"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert run.data.metrics["test_cost_peak_memory_mb"] == pytest.approx(result["peak_memory_mb"])
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [int(m.step) for m in history] == [int(s) for s, _ in result["training"]["loss_curve"]]


def test_an_unknown_or_missing_tracker_is_one_line_before_anything_trains(cli, tmp_path, monkeypatch):
    import transformers.integrations as integrations

    results = tmp_path / "results"
    code, out, err = cli("run", "--results-dir", str(results), "--report-to", "tensorbored", *FAST)
    assert code == 2 and "--report-to tensorbored: not a tracker transformers knows; known:" in err
    assert "tensorboard" in err and not results.exists()
    monkeypatch.setattr(integrations, "get_available_reporting_integrations", lambda: ["tensorboard"])
    code, out, err = cli("run", "--results-dir", str(results), "--report-to", "wandb", *FAST)
    assert code == 2 and "--report-to wandb: its package is not installed: pip install wandb" in err
    assert not list(results.glob("*.json"))
