"""Grid expansion, run ids, planning (validation, rejection, normalisation, settings)."""

from __future__ import annotations

import pytest

from stmbench.common.errors import StmbenchError, UnknownNameError
from stmbench.plan.grid import expand, plan_grid
from stmbench.spec.grid_spec import GridSpec
from stmbench.spec.run import RunSpec
from stmbench.spec.training import TrainingSettings


def spec(**changes) -> RunSpec:
    base = RunSpec(backbone="tiny-llama", task="sample", strategy="generative", adapter="full",
                   prompt="concise", train_size="full", seed=1)
    return base.replace(**changes)


def test_run_id_is_stable_and_sensitive_to_every_field():
    a = spec()
    assert a.run_id == spec().run_id
    assert len(a.run_id) == 16
    variants = [spec(seed=2), spec(prompt="complex"), spec(train_size=100), spec(adapter="lora"),
                spec(training=TrainingSettings(learning_rate=1e-3)), spec(adapter_options={"r": 4}),
                spec(strategy_options={"x": 1}), spec(shots=5), spec(skip_bad_rows=True)]
    ids = {v.run_id for v in variants}
    assert a.run_id not in ids and len(ids) == len(variants)


def test_run_id_known_value_does_not_drift():
    # a change to the hashing would orphan every stored result: this pins it
    assert spec().run_id == RunSpec.from_dict(spec().to_dict()).run_id
    assert spec().run_id == "81b2fe909fa48682"


def test_expand_is_the_product_in_a_stable_order():
    grid = GridSpec(backbones="a,b", tasks=["t"], strategies="s1,s2", adapters="x", prompts="p",
                    train_sizes="100,full", seeds="1,2,3")
    specs = list(expand(grid))
    assert len(specs) == 2 * 2 * 2 * 3
    assert [s.backbone for s in specs[:12]] == ["a"] * 12
    assert specs[0].train_size == 100 and specs[-1].train_size == "full"
    assert [s.seed for s in specs[:3]] == [1, 2, 3]


def test_grid_rejects_bad_axes():
    with pytest.raises(StmbenchError, match="neither a number nor 'full'"):
        GridSpec(train_sizes="lots")
    with pytest.raises(StmbenchError, match="axis is empty"):
        GridSpec(seeds="")
    with pytest.raises(StmbenchError, match="unknown training setting"):
        GridSpec(training={"learning_rat": 1})


def test_grid_yaml_and_overrides(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("backbones: [tiny-llama]\nstrategies: generative\nseeds: [1, 2]\n"
                    "training: {learning_rate: 0.01}\nadapter_options: {lora: {r: 4}}\n", encoding="utf-8")
    grid = GridSpec.from_yaml(path)
    assert grid.seeds == [1, 2] and grid.strategies == ["generative"]
    grid = grid.with_overrides(seeds="7", training={"num_train_epochs": 2}, adapter_options={"lora": {"lora_alpha": 8}})
    assert grid.seeds == [7]
    assert grid.training == {"learning_rate": 0.01, "num_train_epochs": 2}
    assert grid.adapter_options == {"lora": {"r": 4, "lora_alpha": 8}}
    path.write_text("backbone: [x]\n", encoding="utf-8")
    with pytest.raises(StmbenchError, match="unknown key.*backbone"):
        GridSpec.from_yaml(path)


def test_plan_default_grid_is_four_runs(session):
    plan = plan_grid(GridSpec(), session)
    assert len(plan.runs) == 4 and not plan.rejected
    assert {(s.strategy, s.adapter) for s in plan.runs} == {
        ("generative", "full"), ("generative", "lora"), ("discriminative", "full"), ("discriminative", "lora")}
    lora = next(s for s in plan.runs if s.adapter == "lora")
    assert lora.adapter_options["r"] == 8  # defaults filled in, so they are part of the run id


def test_plan_resolves_training_in_layers(session):
    plan = plan_grid(GridSpec(adapters="full", strategies="generative"), session)
    assert plan.runs[0].training.learning_rate == 2e-3  # the tiny backbone's recommendation
    plan = plan_grid(GridSpec(adapters="full", strategies="generative", training={"learning_rate": 0.5}), session)
    assert plan.runs[0].training.learning_rate == 0.5  # the user wins


def test_plan_unknown_names_list_the_known_ones(session):
    with pytest.raises(UnknownNameError) as err:
        plan_grid(GridSpec(tasks="nope"), session)
    assert "known tasks:" in str(err.value) and "lcqmc" in str(err.value) and "sample" in str(err.value)
    with pytest.raises(UnknownNameError, match="known adapters: .*full.*lora"):
        plan_grid(GridSpec(adapters="lorra"), session)
    with pytest.raises(UnknownNameError, match="unknown strategy 'x'; known strategies: cot, discriminative, generative, in_context, label_supervised"):
        plan_grid(GridSpec(strategies="x"), session)


def test_plan_unknown_backbone_fails_fast_offline(session):
    import time

    start = time.perf_counter()
    with pytest.raises(StmbenchError) as err:
        plan_grid(GridSpec(backbones="no-such-model"), session)
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "no-such-model" in msg and "offline" in msg and "tiny-llama" in msg


def test_plan_rejects_generative_on_an_encoder_and_keeps_the_rest(session):
    plan = plan_grid(GridSpec(backbones="tiny-llama,tiny-bert", adapters="full"), session)
    rejected = {(s.backbone, s.strategy): why for s, why in plan.rejected}
    assert ("tiny-bert", "generative") in rejected
    assert "needs a causal language model" in rejected[("tiny-bert", "generative")]
    assert {(s.backbone, s.strategy) for s in plan.runs} == {
        ("tiny-llama", "generative"), ("tiny-llama", "discriminative"), ("tiny-bert", "discriminative")}


def test_encoder_classifier_ignores_the_prompt_axis(session):
    plan = plan_grid(GridSpec(backbones="tiny-bert", strategies="discriminative", adapters="full",
                              prompts="concise,complex"), session)
    assert len(plan.runs) == 1 and plan.runs[0].prompt is None


def test_plan_rejects_missing_prompt_and_bad_options(session):
    with pytest.raises(StmbenchError, match="unknown prompt 'fancy'.*have: complex, concise"):
        plan_grid(GridSpec(strategies="generative", adapters="full", prompts="concise,fancy"), session)
    with pytest.raises(StmbenchError, match="unknown option.*lora.*rank"):
        plan_grid(GridSpec(adapters="lora", adapter_options={"lora": {"rank": 4}}), session)
    with pytest.raises(StmbenchError, match="r must be at least 1"):
        plan_grid(GridSpec(adapters="lora", adapter_options={"lora": {"r": 0}}), session)


def test_adapter_that_trains_nothing_is_rejected_for_training_strategies(session):
    plan = plan_grid(GridSpec(strategies="generative", adapters="none,full"), session)
    assert [s.adapter for s in plan.runs] == ["full"]
    [(spec, why)] = plan.rejected
    assert spec.adapter == "none" and "trains nothing" in why and "'frozen'" in why
