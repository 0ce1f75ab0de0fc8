"""The strategies and adapters of the core slice on the tiny backbones, with small budgets."""

from __future__ import annotations

import pytest

from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.spec.grid_spec import GridSpec


def run_grid(session, **axes):
    plan = plan_grid(GridSpec(**axes), session)
    assert not plan.rejected, plan.rejected
    return [run_spec(s, session) for s in plan.runs]


@pytest.mark.parametrize("strategy", ["generative", "discriminative"])
@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_strategy_adapter_pair_runs(session, small_training, strategy, adapter):
    [(result, predictions)] = run_grid(session, strategies=strategy, adapters=adapter, train_sizes=[200],
                                       training=small_training)
    assert result["status"] == "ok", result.get("traceback")
    assert result["counts"]["train_examples"] == 200
    assert result["counts"]["eval_examples"] == 300
    assert len(predictions["predicted"]) == 300 and set(predictions["predicted"]) <= {0, 1}
    assert 0 <= result["metrics"]["accuracy"] <= 1 and "macro_f1" in result["metrics"]
    params = result["parameters"]
    if adapter == "full":
        assert params["trainable"] == params["total"]
    else:
        assert 0 < params["trainable"] < params["total"] / 10
    assert result["training"]["train_steps"] == 13  # ceil(200 / 16)
    assert result["times"]["train_seconds"] > 0 and result["times"]["tokens_per_second"] > 0


def test_same_spec_gives_the_same_metrics(session, small_training):
    first = run_grid(session, strategies="generative", adapters="full", train_sizes=[160], training=small_training)
    second = run_grid(session, strategies="generative", adapters="full", train_sizes=[160], training=small_training)
    assert first[0][0]["run_id"] == second[0][0]["run_id"]
    assert first[0][0]["metrics"] == second[0][0]["metrics"]
    assert first[0][1]["predicted"] == second[0][1]["predicted"]


def test_train_sizes_are_stratified_and_seeded(session):
    from stmbench.run.splits import subsample_indices

    task = session.get("task", "sample")
    data = session.task_data(task, "train").dataset
    a = subsample_indices(data, 100, 1, "sample")
    assert a == subsample_indices(data, 100, 1, "sample") and a != subsample_indices(data, 100, 2, "sample")
    labels = [data[i]["label"] for i in a]
    assert len(a) == 100 and labels.count(1) == 50  # the split is balanced, so is the sample
    assert subsample_indices(data, "full", 1, "sample") is None
    with pytest.raises(Exception, match="exceeds the 6000 training examples"):
        subsample_indices(data, 10**6, 1, "sample")


def test_untrained_decoder_is_near_chance(session):
    """The sample set is balanced: a model that learned nothing scores about 50%."""
    from stmbench.core.types import Prediction  # noqa: F401 - the contract used below

    task = session.get("task", "sample")
    strategy = session.get("strategy", "generative")
    backbone = session.catalogue.backbone_for("tiny-llama")
    model, tok = backbone.load("tiny-llama", head="causal_lm", task=task, context=session.context,
                               load_kwargs={})
    spec = plan_grid(GridSpec(strategies="generative", adapters="full"), session).runs[0]
    data = session.task_data(task, "test").dataset
    pred = strategy.predict(model, data=data, task=task, tokenizer=tok, spec=spec, context=session.context)
    acc = sum(p == g for p, g in zip(pred.labels, data["label"])) / len(data)
    assert 0.35 <= acc <= 0.65
    assert pred.info["scoring"] == "first_token"


def test_pad_token_is_distinct_from_eos_on_the_model_config(session):
    task = session.get("task", "sample")
    backbone = session.catalogue.backbone_for("tiny-llama")
    model, tok = backbone.load("tiny-llama", head="sequence_classification", task=task,
                               context=session.context, load_kwargs={})
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.id2label == {0: "different", 1: "same"}


def test_choose_pad_token_adds_one_when_pad_is_eos():
    from stmbench.core.modeling import PAD_TOKEN, choose_pad_token

    class Tok:
        def __init__(self):
            self.pad_token_id = self.eos_token_id = 5
            self.unk_token_id = None
            self.added = None

        def add_special_tokens(self, mapping):
            self.added = mapping
            self.pad_token_id = 9

    tok = Tok()
    assert choose_pad_token(tok) is True and tok.added == {"pad_token": PAD_TOKEN}
    tok = Tok()
    tok.unk_token_id, tok.unk_token = 3, "<unk>"
    assert choose_pad_token(tok) is False and tok.pad_token == "<unk>"


def test_scoring_modes_agree_for_one_token_answers(session):
    """One pass per prompt (first_token) and one pass per choice (sequence, lm-eval's way) agree."""
    from stmbench_plugins.strategies._common import score_choices

    task = session.get("task", "sample")
    model, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
    prompts = [task.render("complex", ex) for ex in session.task_data(task, "test").dataset.select(range(40))]
    fast, fast_mode = score_choices(model, tok, prompts, task.label_words, max_len=256, batch_size=16)
    slow, slow_mode = score_choices(model, tok, prompts, task.label_words, max_len=256, batch_size=16,
                                    mode="sequence")
    assert (fast_mode, slow_mode) == ("first_token", "sequence")
    for a, b in zip(fast, slow):
        assert a == pytest.approx(b, abs=1e-4)


def test_a_shared_context_scores_what_one_pass_per_choice_scores(session):
    """Several-token answers: each context run once, its continuations on its key/value cache
    (shared_context), against one full pass per (context, choice) (sequence, lm-eval's way); with
    examples of two and of three choices in one batch, and contexts of many lengths (left padding)."""
    from stmbench_plugins.strategies._common import score_requests

    task = session.get("task", "sample")
    model, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
    rows = session.task_data(task, "test").dataset.select(range(30))
    prompts = [task.render("complex" if i % 2 else "concise", ex) for i, ex in enumerate(rows)]
    words = ["是的", "不是", "也许是吧"]
    requests = [[(p, w) for w in (words if i % 3 == 0 else words[:2])] for i, p in enumerate(prompts)]
    shared, mode = score_requests(model, tok, requests, max_len=256, batch_size=8)
    full, full_mode = score_requests(model, tok, requests, max_len=256, batch_size=8, mode="sequence")
    assert (mode, full_mode) == ("shared_context", "sequence")
    margins = {round(a[1] - a[0], 3) for a in full}
    assert len(margins) > 10  # the scores depend on the context: the comparison has teeth
    for a, b in zip(shared, full):
        assert len(a) == len(b) and a == pytest.approx(b, abs=1e-4)
