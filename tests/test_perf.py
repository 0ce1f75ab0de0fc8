"""Issue 10: the fast paths change no number.  Projecting only the labelled / scored positions onto
the vocabulary, length-grouped training batches and length-sorted prediction give the losses and
predictions of the plain paths; results record padding efficiency, precision and MFU."""

from __future__ import annotations

import pytest

from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.run.training import train
from stmbench.spec.grid_spec import GridSpec


def _generative_setup(session, adapter="full", strategy_name="generative", steps=6):
    spec = plan_grid(GridSpec(tasks="sample", strategies=strategy_name, adapters=adapter, train_sizes=[96],
                              training={"max_steps": steps, "max_seq_length": 96, "logging_steps": 1,
                                        "per_device_train_batch_size": 16}), session).runs[0]
    task, strategy = session.get("task", "sample"), session.get("strategy", strategy_name)
    data = session.task_data(task, "train").dataset.select(range(96))
    return spec, task, strategy, data


def _train_once(session, spec, task, strategy, data):
    import transformers

    transformers.set_seed(spec.seed)
    model, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
    transformers.set_seed(spec.seed)
    adapter = session.get("adapter", spec.adapter)
    info = session.catalogue.backbone_for("tiny-llama").resolve("tiny-llama", session.context)
    model = adapter.wrap(model, head=strategy.head, info=info, options=adapter.typed_options(spec.adapter_options))
    features = data.map(strategy.feature_encoder(task=task, tokenizer=tok, spec=spec, context=session.context),
                        batched=True, remove_columns=data.column_names)
    return train(model, features, strategy=strategy, tokenizer=tok, spec=spec, session=session).record()


@pytest.mark.parametrize("strategy_name,adapter", [("generative", "full"), ("generative", "lora"), ("cot", "full")])
def test_projecting_only_labelled_positions_keeps_the_training_losses(make_session, monkeypatch, strategy_name,
                                                                     adapter):
    import stmbench.core.modeling

    session = make_session(save_steps=0)  # no checkpoint: the second training must not resume the first
    spec, task, strategy, data = _generative_setup(session, adapter, strategy_name)
    kept = _train_once(session, spec, task, strategy, data)
    assert kept["logits"] == "labelled positions"
    monkeypatch.setattr(stmbench.core.modeling, "keeps_logits", lambda model: False)
    full = _train_once(session, spec, task, strategy, data)
    assert full["logits"] == "all positions"
    assert len(kept["loss_curve"]) == len(full["loss_curve"]) == 6  # a loss at each of the 6 steps
    for (step_a, a), (step_b, b) in zip(kept["loss_curve"], full["loss_curve"]):
        assert step_a == step_b and a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert kept["train_loss"] == pytest.approx(full["train_loss"], rel=1e-4)
    assert kept["resumed_from_step"] is None and full["resumed_from_step"] is None


def test_prediction_is_the_same_with_and_without_kept_logits(session, monkeypatch):
    import stmbench.core.modeling
    from stmbench_plugins.strategies._common import score_choices

    task = session.get("task", "sample")
    model, tok = session.catalogue.backbone_for("tiny-llama").load("tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
    rows = session.task_data(task, "test").dataset.select(range(40))
    prompts = [task.render("concise", ex) + "x" * (i % 7) for i, ex in enumerate(rows)]  # varied lengths
    fast = {mode: score_choices(model, tok, prompts, task.label_words, max_len=96, batch_size=8, mode=mode)[0]
            for mode in ("auto", "sequence")}
    monkeypatch.setattr("stmbench_plugins.strategies._common.keeps_logits", lambda m: False)
    for mode in ("auto", "sequence"):
        plain, _ = score_choices(model, tok, prompts, task.label_words, max_len=96, batch_size=40, mode=mode)
        for a, b in zip(fast[mode], plain):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
    assert stmbench.core.modeling.keeps_logits(model)


def test_length_grouped_batches_are_seeded_and_mostly_real_tokens():
    from stmbench.run.training import length_grouped_sampler

    lengths = [20 + (i * 37) % 60 for i in range(1000)]  # 20..79 tokens, spread
    a = length_grouped_sampler(lengths, 16, seed=3)
    first = list(a)
    assert sorted(first) == list(range(1000))
    assert list(length_grouped_sampler(lengths, 16, seed=3)) == first
    assert list(length_grouped_sampler(lengths, 16, seed=4)) != first
    a.set_epoch(1)
    second = list(a)
    assert second != first
    a.set_epoch(0)
    assert list(a) == first  # a resumed epoch sees the order it left
    batches = [second[i:i + 16] for i in range(0, 1000, 16)]
    real = sum(lengths)
    processed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert real / processed >= 0.9
    shuffled = [list(range(1000))[i:i + 16] for i in range(0, 1000, 16)]
    assert real / sum(max(lengths[i] for i in b) * len(b) for b in shuffled) < 0.75


def test_results_record_padding_precision_and_mfu(session):
    grid = GridSpec(tasks="sample", strategies="generative,discriminative", adapters="full", train_sizes=[64],
                    training={"max_steps": 2, "per_device_train_batch_size": 16, "max_seq_length": 96})
    for spec in plan_grid(grid, session).runs:
        result, _ = run_spec(spec, session)
        assert result["status"] == "ok", result.get("traceback")
        for part in ("train", "predict"):
            padding = result["padding"][part]
            assert 0 < padding["efficiency"] <= 1 and padding["real_tokens"] <= padding["processed_tokens"]
        assert result["precision"] == {"bf16": False, "fp16": False, "bf16_chosen_automatically": False,
                                       "tf32": False, "dtype": "float32"}
        hw = result["hardware"]
        assert hw["train_flops"] > 0 and 0 < hw["mfu"] < 1
        assert hw["peak_source"].startswith("measured float32 matmul on cpu")
        assert result["attention"] in ("sdpa", "eager")


@pytest.mark.parametrize("task_name", ["sample", "chnsenticorp"])
def test_in_context_engines_give_the_same_predictions(make_session, tmp_path, task_name):
    """stmbench's engine scores the very requests lm-eval builds (prompt and seeded few-shot examples):
    the same log-likelihoods and predictions as ``lm_eval.simple_evaluate``, zero- and 3-shot;
    ``sample`` has one-token answers (one pass per example), ``chnsenticorp`` two-token answers."""
    from stmbench_plugins.strategies.in_context import lm_eval_predict, stmbench_predict
    from tests.fixtures import write_task
    from tests.test_study import _trained_generative

    session = make_session(data_dir=tmp_path)
    if task_name != "sample":
        write_task(session.get("task", task_name), tmp_path)
    spec, task, model, tok = _trained_generative(session, task_name, steps=20)
    data = session.task_data(task, task.eval_split).dataset
    train = session.task_data(task, "train").dataset
    for shots in (0, 3):
        kwargs = dict(task=task, prompt="concise", shots=shots, seed=5, eval_data=data, train_data=train,
                      batch_size=16, work_dir=tmp_path / "lm")
        ours, theirs = stmbench_predict(model, tok, **kwargs), lm_eval_predict(model, tok, **kwargs)
        assert ours["scoring"] == ("first_token" if task_name == "sample" else "shared_context")
        assert ours["predicted"] == theirs["predicted"]
        margins = {round(row[1] - row[0], 4) for row in ours["logliks"]}
        assert len(margins) > 10  # the scores depend on each example's context: the check has teeth
        for a, b in zip(ours["logliks"], theirs["logliks"]):
            assert a == pytest.approx(b, abs=1e-4)
        assert 0 < ours["padding"]["efficiency"] <= 1


@pytest.mark.parametrize("head", ["causal_lm", "sequence_classification", "base"])
def test_consecutive_loads_read_the_weights_twice_and_load_the_same_model(session, head):
    """The second load of a backbone takes its weights from memory: the very tensors a load from disk
    gives (a fresh head drawn from the same seed included), and training one model leaves the next
    load untouched."""
    import torch
    import transformers

    import stmbench_plugins.backbones.hf as hf

    task = session.get("task", "sample")
    backbone = session.catalogue.backbone_for("tiny-llama")
    hf.WEIGHTS.key = hf.WEIGHTS.tensors = None
    reads = hf.WEIGHTS.reads

    def load():
        transformers.set_seed(7)
        return backbone.load("tiny-llama", head=head, task=task, context=session.context, load_kwargs={})[0]

    first = load()
    assert hf.WEIGHTS.reads == reads + 1 and hf.WEIGHTS.tensors is None  # one run: nothing kept
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)  # what training in place would do
    load()  # a grid's second run: read again, and kept from now on
    assert hf.WEIGHTS.reads == reads + 2 and hf.WEIGHTS.tensors is not None
    with torch.no_grad():
        for p in load().parameters():
            p.add_(1.0)
    second = load()
    assert hf.WEIGHTS.reads == reads + 2  # no file read for the third and fourth runs
    hf.WEIGHTS.key = hf.WEIGHTS.tensors = None
    original = hf._from_memo
    try:
        hf._from_memo = lambda *a, **k: None  # the plain from_pretrained(path) load
        disk = load()
    finally:
        hf._from_memo = original
    assert type(second) is type(disk)
    a, b = second.state_dict(), disk.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert second.config.to_dict() == disk.config.to_dict()


def test_the_weights_memo_can_be_turned_off(session, monkeypatch):
    import stmbench_plugins.backbones.hf as hf

    monkeypatch.setenv("STMBENCH_WEIGHTS_MEMO_MB", "0")
    folder = str(session.catalogue.backbone_for("tiny-llama").checkpoint(session.get("task", "sample"), session.context))
    assert hf.WEIGHTS.get(folder) is None
    monkeypatch.setenv("STMBENCH_WEIGHTS_MEMO_MB", "4096")
    hf.WEIGHTS.key = hf.WEIGHTS.tensors = None
    assert hf.WEIGHTS.get(folder) is None  # a first load: from_pretrained maps the files itself
    assert hf.WEIGHTS.get(folder)  # a second: read, and kept
    hf.WEIGHTS.key = hf.WEIGHTS.tensors = None



@pytest.mark.parametrize("labels", [[i % 3 for i in range(600)], [0] * 599 + [1]])  # stratifiable or not
def test_fast_splits_draw_the_rows_datasets_draws(labels):
    """subsample_indices and the dev holdout use datasets' own stratified sampler on a label list
    instead of Dataset.train_test_split (which converts the column row by row): the same rows."""
    import datasets

    from stmbench.run.splits import seeded_permutation, stratified_split, subsample_indices

    data = datasets.Dataset.from_dict({"label": labels}).cast_column(
        "label", datasets.ClassLabel(num_classes=max(labels) + 1))
    indexed = data.add_column("i", list(range(len(data))))
    for size, seed in ((50, 1), (299, 7)):
        try:
            expected = sorted(indexed.train_test_split(train_size=size, stratify_by_column="label", seed=seed)["train"]["i"])
        except ValueError:
            expected = sorted(indexed.shuffle(seed=seed).select(range(size))["i"])
        assert subsample_indices(data, size, seed, "t") == expected
    n_test = 60  # a 0.1 holdout of 600
    try:
        parts = indexed.train_test_split(test_size=0.1, stratify_by_column="label", seed=0)
        assert sorted(stratified_split(labels, n_train=540, n_test=n_test, seed=0)[1]) == sorted(parts["test"]["i"])
    except ValueError:
        parts = indexed.train_test_split(test_size=0.1, seed=0)
        assert seeded_permutation(600, 0)[:n_test] == list(parts["test"]["i"])
