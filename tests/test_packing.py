"""Padding-free packing (``--packing``, issue 26): a batch's sequences concatenated into one row with
position ids and per-sequence attention train to the padded run's losses, for every training strategy
that packs, and runs that cannot pack fail with the reason."""

from __future__ import annotations

import pytest

from stmbench.run.study import run_study
from stmbench.run.training import PackingCollator, sequence_ends
from stmbench.spec.grid_spec import GridSpec


def _run(session, strategy, packing, adapter="full", **options):
    # LoRA without dropout: dropout's random masks fall on other positions in a packed row (the same
    # in distribution, not equal), so only a run without them can be compared step for step
    grid = GridSpec(strategies=[strategy], adapters=[adapter], train_sizes=[96], seeds=[3],
                    strategy_options={strategy: options} if options else {},
                    adapter_options={"lora": {"lora_dropout": 0.0}} if adapter == "lora" else {},
                    training={"learning_rate": 3e-3, "num_train_epochs": 1, "max_seq_length": 96,
                              "logging_steps": 1, "packing": packing, "per_device_train_batch_size": 16})
    [result] = run_study(grid, session).results
    assert result["status"] == "ok", result.get("error")
    return result


@pytest.mark.parametrize("strategy, adapter, options", [
    ("generative", "full", {}),
    ("discriminative", "full", {}),
    ("discriminative", "lora", {}),
    ("label_supervised", "full", {}),
    ("label_supervised", "lora", {"pooling": "mean", "unmask": True}),
])
def test_packed_training_has_the_padded_runs_losses(session, strategy, adapter, options):
    padded = _run(session, strategy, False, adapter, **options)
    packed = _run(session, strategy, True, adapter, **options)
    assert packed["run_id"] != padded["run_id"]
    curve_a, curve_b = padded["training"]["loss_curve"], packed["training"]["loss_curve"]
    assert [s for s, _ in curve_a] == [s for s, _ in curve_b] and len(curve_a) >= 6
    for (_, a), (_, b) in zip(curve_a, curve_b):
        assert b == pytest.approx(a, rel=2e-4, abs=2e-5)
    # no padding was processed when packed; the padded batches had some
    assert packed["padding"]["train"]["efficiency"] == 1.0
    assert padded["padding"]["train"]["efficiency"] < 1.0
    assert packed["padding"]["train"]["real_tokens"] == padded["padding"]["train"]["real_tokens"]


def test_a_bug_in_packing_would_show_in_the_losses(session, monkeypatch):
    """The comparison above can fail: with attention leaking across the packed sequences (masks that
    ignore the position ids, as an attention path without packed-sequence support would), the
    losses differ."""
    import transformers.masking_utils as masking

    padded = _run(session, "label_supervised", False)
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    leaked = _run(session, "label_supervised", True)
    differs = [abs(a - b) for (_, a), (_, b) in zip(padded["training"]["loss_curve"], leaked["training"]["loss_curve"])]
    assert max(differs) > 1e-3


def test_sequence_ends_of_a_packed_row():
    import torch

    batch = PackingCollator()([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8, 9], "labels": 0},
                               {"input_ids": [4], "labels": 1}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 4]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0]]
    assert batch["labels"].tolist() == [1, 0, 1] and "attention_mask" not in batch
    assert sequence_ends(batch["position_ids"]).tolist() == [2, 4, 5]
    tokens = PackingCollator()([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}])
    assert tokens["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert torch.equal(tokens["position_ids"], torch.tensor([[0, 1, 2, 0, 1]]))


def test_a_run_that_cannot_pack_fails_with_the_reason_and_the_grid_goes_on(session):
    grid = GridSpec(backbones=["tiny-bert", "tiny-llama"], strategies=["discriminative"], adapters=["full"],
                    train_sizes=[32], seeds=[1], training={"num_train_epochs": 1, "packing": True})
    results = {r["spec"]["backbone"]: r for r in run_study(grid, session).results}
    assert results["tiny-bert"]["status"] == "failed"
    assert "--packing: an encoder reads a padded sentence pair" in results["tiny-bert"]["error"]
    assert results["tiny-llama"]["status"] == "ok"
