"""The full study of issue 3: every allowed strategy x adapter pair, rejections with reasons, LS-LLaMA's
unmasking, chain of thought, in-context evaluation through lm-eval, and the example recipes."""

from __future__ import annotations

import pytest

from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.run.training import train
from stmbench.spec.grid_spec import GridSpec
from tests.conftest import REPO
from tests.fixtures import write_task

STRATEGIES = "generative,discriminative,label_supervised,cot,in_context"
ADAPTERS = "full,frozen,lora,ia3,prompt_tuning,prefix_tuning,qlora"

ALLOWED = {
    ("tiny-llama", s, a)
    for s in ("generative", "cot")
    for a in ("full", "frozen", "lora", "ia3", "prompt_tuning", "prefix_tuning")
} | {
    ("tiny-llama", "discriminative", a) for a in ("full", "frozen", "lora", "ia3", "prompt_tuning")
} | {
    (b, "label_supervised", a) for b in ("tiny-llama", "tiny-bert") for a in ("full", "frozen", "lora", "ia3")
} | {
    ("tiny-bert", "discriminative", a) for a in ("full", "frozen", "lora", "ia3", "prompt_tuning")
} | {("tiny-llama", "in_context", "none")}


def test_every_allowed_pair_runs_and_every_other_is_rejected_with_a_reason(session):
    grid = GridSpec(backbones="tiny-llama,tiny-bert", strategies=STRATEGIES, adapters=ADAPTERS,
                    train_sizes=[48], training={"max_steps": 2, "per_device_train_batch_size": 16,
                                                "max_seq_length": 96},
                    strategy_options={"cot": {"max_new_tokens": 24}})
    plan = plan_grid(grid, session)
    assert {(s.backbone, s.strategy, s.adapter) for s in plan.runs} == ALLOWED
    reasons = {(s.backbone, s.strategy, s.adapter): why for s, why in plan.rejected}
    assert "needs a CUDA GPU" in reasons[("tiny-llama", "generative", "qlora")] or \
        "generated test model" in reasons[("tiny-llama", "generative", "qlora")]
    assert "past key values" in reasons[("tiny-llama", "discriminative", "prefix_tuning")]
    assert "brings its own head" in reasons[("tiny-llama", "label_supervised", "prompt_tuning")]
    assert "needs a causal language model" in reasons[("tiny-bert", "cot", "lora")]
    assert "needs a causal language model" in reasons[("tiny-bert", "in_context", "none")]
    every = {(b, s, "none" if s == "in_context" else a) for b in ("tiny-llama", "tiny-bert")
             for s in STRATEGIES.split(",") for a in ADAPTERS.split(",")}
    assert set(reasons) | ALLOWED == every and not set(reasons) & ALLOWED
    assert all(len(why) > 30 for why in reasons.values())
    for spec in plan.runs:
        result, predictions = run_spec(spec, session)
        assert result["status"] == "ok", (spec.label(), result.get("traceback"))
        assert len(predictions["predicted"]) == result["counts"]["eval_examples"]
        params = result["parameters"]
        if spec.adapter in ("full",):
            assert params["trainable"] == params["total"]
        elif spec.adapter == "none":
            assert params["trainable"] == 0 and result["counts"]["train_examples"] == 0
        else:
            assert 0 < params["trainable"] < params["total"], (spec.label(), params)
        if spec.strategy == "cot":
            assert "unparsable" in result["metrics"]


def test_dora_option_runs(session, small_training):
    plan = plan_grid(GridSpec(strategies="generative", adapters="lora", train_sizes=[32], training=small_training,
                              adapter_options={"lora": {"use_dora": True, "r": 4}}), session)
    result, _ = run_spec(plan.runs[0], session)
    assert result["status"] == "ok" and result["spec"]["adapter_options"]["use_dora"] is True


def test_qlora_is_rejected_without_cuda_before_training(session):
    """A real (local-directory) checkpoint through the hf backbone: no CUDA here, so rejected up front."""
    import torch

    path = session.catalogue.backbone_for("tiny-llama").checkpoint(session.get("task", "sample"), session.context)
    plan = plan_grid(GridSpec(backbones=str(path), strategies="generative", adapters="qlora,lora"), session)
    assert [s.adapter for s in plan.runs] == ["lora"]
    [(spec, why)] = plan.rejected
    if not torch.cuda.is_available():
        assert why == "qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none"
    assert plan.backbones[str(path)].backbone == "hf" and plan.backbones[str(path)].is_decoder


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_unmask_really_removes_the_causal_mask(session, attn):
    """With unmask, the hidden state at position i changes when a later token changes; without, not."""
    import torch

    task = session.get("task", "sample")
    strategy = session.get("strategy", "label_supervised")
    backbone = session.catalogue.backbone_for("tiny-llama")
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 16]])
    changed = ids.clone()
    changed[0, 6] = 20  # a later token
    mask = torch.ones_like(ids)
    states = {}
    for unmask in (False, True):
        base, tok = backbone.load("tiny-llama", head="base", task=task, context=session.context,
                                  load_kwargs={"attn_implementation": attn})
        model = strategy.prepare_model(base, tokenizer=tok, task=task, options=strategy.typed_options({"unmask": unmask}))
        model.eval()
        with torch.no_grad():
            states[unmask] = (model.encode(ids, mask), model.encode(changed, mask))
    before, after = states[False]
    assert torch.allclose(before[0, :6], after[0, :6], atol=1e-6)  # causal: earlier positions unaffected
    assert not torch.allclose(before[0, 6:], after[0, 6:])
    before, after = states[True]
    assert not torch.allclose(before[0, 2], after[0, 2], atol=1e-4)  # position 2 sees position 6 now
    assert (before[0, :6] - after[0, :6]).abs().amax(-1).min() > 1e-4  # every earlier position does


def test_unmask_on_an_encoder_is_rejected(session):
    plan = plan_grid(GridSpec(backbones="tiny-bert", strategies="label_supervised", adapters="full",
                              strategy_options={"label_supervised": {"unmask": True}}), session)
    assert not plan.runs and "encoder that has none" in plan.rejected[0][1]


def _trained_generative(session, task_name, steps=30):
    spec = plan_grid(GridSpec(tasks=task_name, strategies="generative", adapters="full", train_sizes=["full"],
                              training={"max_steps": steps, "max_seq_length": 96}), session).runs[0]
    task, strategy = session.get("task", task_name), session.get("strategy", "generative")
    model, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
    data = session.task_data(task, "train").dataset
    features = data.map(strategy.feature_encoder(task=task, tokenizer=tok, spec=spec, context=session.context),
                        batched=True, remove_columns=data.column_names)
    train(model, features, strategy=strategy, tokenizer=tok, spec=spec, session=session)
    return spec, task, model, tok


@pytest.mark.parametrize("task_name", ["sample", "chnsenticorp"])
def test_generative_scoring_agrees_with_lm_eval(make_session, tmp_path, task_name):
    """Same trained model, same test set: stmbench's answer scoring and lm-eval's multiple_choice give
    the same per-example log-likelihoods, predictions and accuracy.  ``sample`` has one-token answers
    (one forward pass); ``chnsenticorp`` two-token answers (sequence scoring)."""
    from stmbench_plugins.strategies._common import score_choices
    from stmbench_plugins.strategies.in_context import lm_eval_predict

    session = make_session(data_dir=tmp_path)
    if task_name != "sample":
        write_task(session.get("task", task_name), tmp_path)
    spec, task, model, tok = _trained_generative(session, task_name)
    data = session.task_data(task, task.eval_split).dataset
    prompts = [task.render(spec.prompt, ex) for ex in data]
    ours, mode = score_choices(model, tok, prompts, task.label_words, max_len=96, batch_size=32)
    assert mode == ("first_token" if task_name == "sample" else "shared_context")
    theirs = lm_eval_predict(model, tok, task=task, prompt=spec.prompt, shots=0, seed=1, eval_data=data,
                             train_data=None, batch_size=16, work_dir=tmp_path / "lm")
    for a, b in zip(ours, theirs["logliks"]):
        assert a == pytest.approx(b, abs=1e-4)
    predicted = session.get("strategy", "generative").predict(model, data=data, task=task, tokenizer=tok, spec=spec,
                                                              context=session.context).labels
    assert predicted == theirs["predicted"]
    accuracy = sum(p == g for p, g in zip(predicted, data["label"])) / len(data)
    assert accuracy == pytest.approx(theirs["acc"])


@pytest.mark.parametrize("engine", ["stmbench", "lm_eval"])
def test_in_context_zero_and_few_shot_land_in_the_store(session, engine):
    plan = plan_grid(GridSpec(strategies="in_context", adapters="full,lora", shots="0,2",
                              training={"learning_rate": 0.1},
                              strategy_options={"in_context": {"engine": engine}}), session)
    assert [(s.adapter, s.train_size, s.shots) for s in plan.runs] == [("none", 0, 0), ("none", 0, 2)]
    assert plan.runs[0].training.learning_rate == 2e-5  # training settings are not part of an eval-only run
    for spec in plan.runs:
        result, predictions = run_spec(spec, session)
        assert result["status"] == "ok", result.get("traceback")
        assert result["prediction_info"]["engine"] == engine
        if engine == "lm_eval":
            assert result["metrics"]["accuracy"] == pytest.approx(result["metrics"]["lm_eval_acc"])
        else:
            assert result["prediction_info"]["scoring"] == "first_token"
            assert 0 < result["padding"]["predict"]["efficiency"] <= 1
        assert result["counts"]["train_examples"] == 0 and len(predictions["predicted"]) == 300


def test_cot_parses_answers_and_counts_the_unparsable(session):
    from stmbench_plugins.strategies.cot import cot_prompt, parse_answer

    task = session.get("task", "sample")
    assert parse_answer("两句都问北京的天气，意思相同。答案：是", task) == 1
    assert parse_answer("答案：否。再想想答案：是", task) == 1  # the last answer counts
    assert parse_answer("答案： 否", task) == 0
    assert parse_answer("意思相同", task) == -1 and parse_answer("答案：也许", task) == -1
    nli = session.get("task", "ocnli")
    assert parse_answer("答案：可能", nli) == 1
    prompt = cot_prompt(task, "concise", {"text_a": "甲", "text_b": "乙"})
    assert not prompt.endswith("答案：") and prompt.endswith("两句话意思相同吗？")


def test_cot_rationales_from_data_or_hook_or_a_clear_error(make_session, tmp_path, small_training):
    import sys

    sys.path.insert(0, str(REPO / "tests" / "plugins"))
    try:
        import fake_plugin
    finally:
        sys.path.pop(0)
    grid = GridSpec(tasks="lcqmc", strategies="cot", adapters="full", train_sizes=[32],
                    training={**small_training, "max_steps": 1}, strategy_options={"cot": {"max_new_tokens": 8}})
    plain = make_session(data_dir=tmp_path)
    write_task(plain.get("task", "lcqmc"), tmp_path)
    plan = plan_grid(grid, plain)  # no source of rationales: rejected with the reason, before anything loads
    assert not plan.runs and len(plan.rejected) == 1
    assert "task 'lcqmc' has no source of them" in plan.rejected[0][1] and "--teacher" in plan.rejected[0][1]
    hooked = make_session(fake_plugin, data_dir=tmp_path)
    result, _ = run_spec(plan_grid(grid, hooked).runs[0], hooked)
    assert result["status"] == "ok", result.get("traceback")


def test_encoder_baseline_encodes_real_pairs(session):
    task = session.get("task", "sample")
    strategy = session.get("strategy", "discriminative")
    [spec] = plan_grid(GridSpec(backbones="tiny-bert", strategies="discriminative", adapters="full"), session).runs
    _, tok = session.catalogue.backbone_for("tiny-bert").load("tiny-bert", head="sequence_classification",
                                                              task=task, context=session.context,
                                                              load_kwargs={})
    enc = strategy.encode_inputs(tok, task, spec, [{"text_a": "北京天气", "text_b": "上海", "label": 0}])
    assert enc["input_ids"][0][0] == tok.cls_token_id
    assert enc["token_type_ids"][0] == [0] * 6 + [1] * 3  # [CLS] 4 chars [SEP] | 2 chars [SEP]


@pytest.mark.parametrize("recipe", ["paper-2403.19930.yaml", "ls-llama.yaml"])
def test_example_recipes_plan_on_a_tiny_backbone(session, recipe):
    grid = GridSpec.from_yaml(REPO / "examples" / recipe).with_overrides(
        backbones=["tiny-llama"], tasks=["sample"], train_sizes=["full"])
    plan = plan_grid(grid, session)
    assert plan.runs
    trained = [s for s in plan.runs if s.strategy != "in_context"]
    assert all(s.sweep == ("learning_rate",) and s.training.eval_strategy == "epoch" for s in trained)
    assert len({s.training.learning_rate for s in trained}) == 3
    strategies = {s.strategy for s in plan.runs}
    if recipe.startswith("paper"):
        assert {"generative", "discriminative", "cot", "in_context"} <= strategies
        assert {s.prompt for s in plan.runs if s.strategy == "generative"} == {"concise", "complex"}
    else:
        assert strategies == {"label_supervised"}
        assert {s.strategy_options["unmask"] for s in plan.runs} == {False, True}
        lora = plan.runs[0].adapter_options
        assert (lora["r"], lora["lora_alpha"]) == (12, 32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_scoring_only_the_scored_positions_changes_no_score(session, dtype):
    """score_choices casts only the scored positions to float32; the scores equal those of a
    log-softmax over the whole float32 logits tensor, exactly, in both scoring modes."""
    import torch

    from stmbench_plugins.strategies._common import encode_pairs, forward_logits, score_choices

    task = session.get("task", "sample")
    model, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
    model = model.to(getattr(torch, dtype)).eval()
    rows = session.task_data(task, "test").dataset.select(range(12))
    prompts = [task.render("concise", ex) for ex in rows]
    for mode in ("auto", "sequence"):
        # one row per forward, as the reference: the same shapes, so the same numbers up to summation order
        ours, used = score_choices(model, tok, prompts, task.label_words, max_len=96, batch_size=1, mode=mode)
        assert used == ("first_token" if mode == "auto" else "sequence")
        for k, word in enumerate(task.label_words):
            for i, (ctx, cont) in enumerate(encode_pairs(tok, prompts, [word] * len(prompts), 96)):
                ids = torch.tensor([ctx + cont])
                with torch.inference_mode():
                    logp = torch.log_softmax(forward_logits(model, ids, torch.ones_like(ids)).float(), dim=-1)
                reference = sum(float(logp[0, len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
                assert ours[i][k] == pytest.approx(reference, rel=1e-6, abs=1e-6)
