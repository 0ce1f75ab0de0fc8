"""Keeping what won (issue 27): --save-models, the model card, stmbench export, and a saved model
loaded back with peft / transformers predicting exactly what its run predicted."""

from __future__ import annotations

import json

import pytest

from stmbench.run.keep import KIND_HEAD, KIND_MODEL, KIND_PEFT, load_saved, policy_for, read_record
from stmbench.store.results import ResultStore

FAST = ["--train-sizes", "128", "--num-train-epochs", "1", "--limit", "48"]


def _stored(results):
    return {p.stem: json.loads(p.read_text()) for p in results.glob("*[0-9a-f].json")}


def test_the_default_keeps_adapters_and_not_full_fine_tunes():
    assert policy_for("auto", trainable=5, total=1000) == "best"
    assert policy_for("auto", trainable=1000, total=1000) == "none"
    assert policy_for("all", trainable=1000, total=1000) == "all"
    with pytest.raises(Exception, match="choose one of auto, none, best, all"):
        policy_for("some", trainable=1, total=2)


@pytest.fixture(scope="module")
def saved_grid(tmp_path_factory, shared_cache):
    """One grid, --save-models all: a LoRA run, a full run and label_supervised heads (LoRA and full)."""
    from stmbench.cli.main import main

    root = tmp_path_factory.mktemp("keep")
    results = root / "results"
    code = main(["run", "--cache-dir", str(shared_cache), "--no-progress", "--no-leaderboard",
                 "--results-dir", str(results), "--save-models", "all",
                 "--strategies", "generative,discriminative,label_supervised", "--adapters", "lora,full",
                 "--strategy-option", "label_supervised.unmask=true", *FAST])
    assert code == 0
    return results


def test_a_saved_model_loads_back_with_peft_or_transformers_and_predicts_what_its_run_predicted(saved_grid, shared_cache):
    """The reload test: each saved folder, loaded with PeftModel.from_pretrained / AutoModel*.from_pretrained
    (and the label_supervised head from its weights), predicts the run's test rows label for label."""
    from peft import PeftModel
    from transformers import PreTrainedModel

    from stmbench.core.session import Session, Settings
    from stmbench.run.pipeline import Loaded, RunParts, predict_run, read_data

    session = Session(Settings(results_dir=saved_grid, cache_dir=shared_cache, progress=False, device="cpu"))
    store = ResultStore(saved_grid)
    kinds = {}
    for run_id, result in _stored(saved_grid).items():
        folder = saved_grid / "models" / run_id
        record = read_record(folder)
        model, tokenizer, spec = load_saved(folder, session)
        assert spec.run_id == run_id
        kinds[(spec.strategy, spec.adapter)] = record["kind"]
        if record["kind"] == KIND_PEFT:
            assert isinstance(model, PeftModel)
        elif record["kind"] == KIND_MODEL:
            assert isinstance(model, PreTrainedModel)
        parts = RunParts.of(spec, session)
        predicted = predict_run(parts, read_data(parts, session), Loaded(model, tokenizer, record["head"]), session)
        stored = store.predictions(run_id)
        assert list(predicted.prediction.labels) == stored["predicted"], (spec.strategy, spec.adapter)
        assert predicted.metrics["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert kinds == {("generative", "lora"): KIND_PEFT, ("generative", "full"): KIND_MODEL,
                     ("discriminative", "lora"): KIND_PEFT, ("discriminative", "full"): KIND_MODEL,
                     ("label_supervised", "lora"): KIND_PEFT, ("label_supervised", "full"): KIND_HEAD}


def test_best_keeps_one_run_per_cell_chosen_on_dev_with_a_card_the_hub_tools_parse(cli, tmp_path):
    from huggingface_hub import ModelCard

    results = tmp_path / "results"
    code, out, err = cli("run", "--results-dir", str(results), "--strategies", "discriminative", "--adapters", "lora",
                         "--seeds", "1,2,3", "--eval-strategy", "epoch", *FAST)
    assert code == 0, err
    assert "kept 1 trained model(s) with model cards" in out  # the default (auto) keeps LoRA's best
    stored = _stored(results)
    [kept] = [p.name for p in (results / "models").iterdir()]
    dev = {rid: r["training"]["selection"]["dev_metric"] for rid, r in stored.items()}
    assert dev[kept] == max(dev.values())  # the best dev score of the cell's three seeds, not the best test
    card = ModelCard.load(results / "models" / kept / "README.md")
    [index] = card.data.eval_results
    assert index.metric_value == round(100 * stored[kept]["metrics"]["accuracy"], 2)
    assert card.data.library_name == "peft" and "synthetic-data" in card.data.tags
    accs = sorted(100 * r["metrics"]["accuracy"] for r in stored.values())
    mean = sum(accs) / 3
    assert f"| the cell over 3 seed(s) (mean ± std) | {mean:.1f} ±" in card.text
    assert "best dev accuracy" in card.text and "SYNTHETIC" in card.text
    assert json.loads((results / "models" / kept / "stmbench-result.json").read_text())["run_id"] == kept

    out_dir = tmp_path / "exported"
    code, out, err = cli("export", kept, "--results-dir", str(results), "--out", str(out_dir))
    assert code == 0, err
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "stmbench-model.json",
            "tokenizer.json"} <= {p.name for p in out_dir.iterdir()}
    code, out, err = cli("export", kept, "--results-dir", str(results), "--out", str(tmp_path / "x"),
                         "--push-to-hub", "me/model")
    assert code == 2 and "offline" in err.lower() and not (tmp_path / "x").exists()
    code, out, err = cli("export", "0123456789abcdef", "--results-dir", str(results), "--out", str(tmp_path / "y"))
    assert code == 2 and f"kept: {kept}" in err


def test_full_fine_tunes_keep_nothing_unless_asked(cli, tmp_path):
    results = tmp_path / "results"
    code, out, err = cli("run", "--results-dir", str(results), "--strategies", "generative", "--adapters", "full",
                         *FAST)
    assert code == 0, err
    assert not (results / "models").exists() and "kept" not in out
