"""Prediction batches by a token budget, and each run's own peak memory (stmbench.core.memory)."""

from __future__ import annotations

import random

import pytest

from stmbench.plan.grid import plan_grid
from stmbench.core.memory import MEMORY_ENV, TokenBudget, bytes_per_token, plan_budget
from stmbench.run.pipeline import run_spec
from stmbench.spec.grid_spec import GridSpec
from stmbench.spec.training import TrainingSettings
from stmbench.core.types import Prediction
from stmbench_plugins.strategies.in_context import InContextStrategy


def test_batches_keep_to_the_token_budget_and_the_row_cap():
    rng = random.Random(0)
    lengths = [rng.randint(1, 3000) for _ in range(300)] + [rng.randint(1, 100) for _ in range(200)]
    budget = TokenBudget(tokens=8192, max_batch=64, source="test")
    batches = list(budget.batches(lengths))
    assert sorted(i for b in batches for i in b) == list(range(500))  # every row once
    flat = [i for b in batches for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        padded = max(lengths[i] for i in batch)
        assert len(batch) <= 64
        assert len(batch) == 1 or len(batch) * padded <= 8192
    assert max(len(b) for b in batches) == 64  # short rows fill up to the row cap
    assert len(batches[0]) == 2  # 2 x ~3,000 tokens
    # a row longer than the budget still gets a batch of its own
    assert list(TokenBudget(tokens=10, max_batch=8, source="test").batches([50, 3])) == [[0], [1]]


def test_attention_share_shrinks_long_batches_more():
    plain = TokenBudget(tokens=100_000, max_batch=1000, source="test")
    quadratic = TokenBudget(tokens=100_000, max_batch=1000, source="test", attention_share=0.001)
    assert plain.rows_for(100) == 1000 and plain.rows_for(2000) == 50
    assert quadratic.rows_for(100) == 909  # 100 x (1 + 0.1)
    assert quadratic.rows_for(2000) == 16  # 2000 x (1 + 2)


def test_budget_comes_from_free_memory_and_the_model_sizes(session, monkeypatch):
    from stmbench.core.types import HEAD_CAUSAL_LM

    model, _ = session.catalogue.backbone_for("tiny-llama").load(
        "tiny-llama", head=HEAD_CAUSAL_LM, task=session.get("task", "sample"), context=session.context, load_kwargs={})
    monkeypatch.setenv(MEMORY_ENV, "1000")
    light = plan_budget(model, device="cpu", max_batch=64)
    full = plan_budget(model, device="cpu", max_batch=64, full_logits=True)
    per_token, attention = bytes_per_token(model.config, 4, full_logits=False)
    assert light.source.startswith(MEMORY_ENV) and light.memory_mb == 1000
    assert light.bytes_per_token == per_token and light.memory_tokens == int(500 * 2**20 // per_token)
    assert light.tokens == light.memory_tokens  # the ramp then keeps batches within it
    assert full.bytes_per_token == per_token + model.config.vocab_size * 12
    assert full.memory_tokens < light.memory_tokens
    monkeypatch.setenv(MEMORY_ENV, "4000")
    assert plan_budget(model, device="cpu", max_batch=64).memory_tokens == pytest.approx(4 * light.memory_tokens,
                                                                                        rel=1e-3)
    # --eval-batch-tokens wins over the memory
    fixed = plan_budget(model, device="cpu", max_batch=64, tokens=5000)
    assert fixed.tokens == 5000 and fixed.source == "eval_batch_tokens" and fixed.attention_share == 0
    monkeypatch.delenv(MEMORY_ENV)
    assert plan_budget(model, device="cpu", max_batch=64).source.startswith("free RAM")


def _plateau_model(hidden_size=4096, intermediate_size=16384, num_attention_heads=1):
    """By default wide and single-headed: attention's share of a token's cost is negligible, so a
    batch of 64-token rows holds about as many tokens as the budget says."""
    from transformers import PretrainedConfig
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = PretrainedConfig(vocab_size=100, hidden_size=hidden_size,
                                           intermediate_size=intermediate_size,
                                           num_attention_heads=num_attention_heads)
            self.weight = torch.nn.Parameter(torch.zeros(1))

    return Model()


def _predict_with(budget, lengths, knee, seconds_at_knee=0.004):
    """Batches from ``budget``, each taking as long as a device that is full from ``knee`` padded
    tokens on would take: the same time for any batch up to ``knee``, longer in proportion past it."""
    import time

    sizes = []
    for batch in budget.batches(lengths):
        padded = len(batch) * lengths[batch[0]]
        sizes.append(padded)
        time.sleep(seconds_at_knee * max(padded, knee) / knee)
    return sizes


def test_prediction_batches_stop_growing_where_the_throughput_does(tmp_path, monkeypatch):
    """Batches ramp up from 512 tokens while they get faster per token and stay at the last size
    that did; the size found is recorded and kept per machine, so the next budget (in this process
    or a later one) starts there."""
    import stmbench.core.memory as memory

    monkeypatch.setattr(memory, "_THROUGHPUT", {})
    monkeypatch.setenv(MEMORY_ENV, "100000")
    lengths = [64] * 2000
    budget = plan_budget(_plateau_model(), device="cpu", max_batch=10**6, cache_dir=tmp_path)
    assert budget.ramp and budget.throughput_tokens is None and budget.tokens > 65536
    sizes = _predict_with(budget, lengths, knee=2048)
    rows = [s // 64 for s in sizes]
    assert rows[:4] == [8, 16, 32, 64]  # batches of 512, 1024, 2048, 4096 tokens: 4096 was no faster per token
    assert set(rows[4:-1]) == {32} and sum(sizes) == 64 * 2000
    assert budget.record()["throughput_tokens"] == 2048 and "stopped growing" in budget.record()["source"]
    assert (tmp_path / memory.THROUGHPUT_FILE).is_file()
    monkeypatch.setattr(memory, "_THROUGHPUT", {})  # a new process on the same machine
    again = plan_budget(_plateau_model(), device="cpu", max_batch=10**6, cache_dir=tmp_path)
    assert again.throughput_tokens == 2048 and set(_predict_with(again, lengths, knee=2048)[:-1]) == {32 * 64}
    # a device that keeps getting faster: the batches grow to what the memory (or the rows) allow
    monkeypatch.setattr(memory, "_THROUGHPUT", {})
    roomy = plan_budget(_plateau_model(), device="cpu", max_batch=10**6)
    sizes = _predict_with(roomy, [64] * 4000, knee=10**6, seconds_at_knee=0.05)
    assert [s // 64 for s in sizes[:5]] == [8, 16, 32, 64, 128] and "throughput_tokens" not in roomy.record()
    # a fixed --eval-batch-tokens budget never ramps; a hostile cache file is ignored, not trusted
    assert not plan_budget(_plateau_model(), device="cpu", max_batch=64, tokens=600).ramp
    (tmp_path / memory.THROUGHPUT_FILE).write_text('{"x": "rm -rf /", "y": [1], "z": -5}', encoding="utf-8")
    assert memory.machine_measures(tmp_path, memory.THROUGHPUT_FILE) == {}


def test_eval_batch_tokens_is_a_setting_that_names_runs_only_when_set():
    assert "eval_batch_tokens" not in TrainingSettings().identity()
    assert TrainingSettings(eval_batch_tokens=4096).identity()["eval_batch_tokens"] == 4096
    with pytest.raises(Exception, match="eval_batch_tokens"):
        TrainingSettings(eval_batch_tokens=-1)


@pytest.mark.parametrize("engine", ["stmbench", "lm_eval"])
def test_prediction_batches_follow_the_budget_and_the_result_records_it(session, engine, monkeypatch):
    """With ``--eval-batch-tokens 600`` every forward pass of in_context (both engines: stmbench's
    scorer and lm-eval's HFLM) holds at most 600 padded tokens, the predictions equal those of one
    row per batch, and the result records the budget."""
    import torch

    shapes: list[tuple[int, int]] = []
    real_forward = torch.nn.Module.__call__

    def watch(module, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if type(module).__name__.endswith("ForCausalLM") and isinstance(ids, torch.Tensor):
            shapes.append(tuple(ids.shape))
        return real_forward(module, *args, **kwargs)

    def run(tokens, batch):
        shapes.clear()
        plan = plan_grid(GridSpec(strategies=f"in_context[engine={engine}]", limit=60,
                                  training={"eval_batch_tokens": tokens, "per_device_eval_batch_size": batch}),
                         session)
        monkeypatch.setattr(torch.nn.Module, "__call__", watch)
        try:
            [(result, predictions)] = [run_spec(s, session) for s in plan.runs]
        finally:
            monkeypatch.setattr(torch.nn.Module, "__call__", real_forward)
        assert result["status"] == "ok", result.get("traceback")
        return result, predictions["predicted"], list(shapes)

    result, predicted, shapes_seen = run(600, 64)
    assert shapes_seen and all(rows == 1 or rows * width <= 600 for rows, width in shapes_seen)
    assert max(rows for rows, _ in shapes_seen) > 1  # it did batch
    assert result["memory"]["eval_batching"] == {"tokens": 600, "max_batch": 64, "source": "eval_batch_tokens",
                                                  "attention_share": 0.0}
    _, one_by_one, singles = run(0, 1)
    assert all(rows == 1 for rows, _ in singles)
    assert predicted == one_by_one


class HungryStrategy(InContextStrategy):
    """in_context that first holds 600 MB for a moment (a hungry run)."""

    name = "test_hungry"

    def predict(self, model, **kwargs) -> Prediction:
        import numpy as np

        block = np.ones(600 * 2**20, dtype=np.uint8)  # touched: resident
        assert block.sum() > 0
        del block
        return super().predict(model, **kwargs)


def test_each_run_reports_its_own_peak_memory(make_session):
    """A light run after a hungry one in the same process reports its own peak, not the process's."""
    import types

    from stmbench import hookimpl

    plugin = types.SimpleNamespace(register_strategies=hookimpl(lambda register: register(HungryStrategy())))
    session = make_session(plugin)
    results = {}
    for strategy in ("test_hungry", "in_context"):
        [spec] = plan_grid(GridSpec(strategies=strategy, limit=20), session).runs
        result, _ = run_spec(spec, session)
        assert result["status"] == "ok", result.get("traceback")
        results[strategy] = result
    hungry, light = results["test_hungry"], results["in_context"]
    assert "reset at the run's start" in light["memory"]["peak_method"]
    assert hungry["peak_memory_mb"] > 600
    assert light["peak_memory_mb"] < hungry["peak_memory_mb"] - 400


def test_peak_memory_falls_back_to_sampling_where_proc_cannot_be_reset(monkeypatch):
    import builtins
    import time

    import numpy as np
    import psutil

    from stmbench.core.memory import PeakMemory

    real_open = builtins.open

    def no_clear_refs(path, *args, **kwargs):
        if str(path) == "/proc/self/clear_refs":
            raise PermissionError("not allowed here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_clear_refs)
    before = psutil.Process().memory_info().rss / 2**20
    peak = PeakMemory("cpu").start()
    block = np.ones(300 * 2**20, dtype=np.uint8)
    time.sleep(0.3)  # the sampler reads every 50 ms
    assert block.sum() > 0
    del block
    measured = peak.stop()
    assert peak.method == "resident memory sampled every 50 ms"
    assert measured >= before + 250


def test_the_matmul_peak_is_measured_once_per_machine(tmp_path, monkeypatch):
    """MFU's peak: measured in the first process, read from the cache folder by the next ones."""
    import stmbench.core.modeling as modeling

    monkeypatch.setattr(modeling, "_PEAKS", {})
    monkeypatch.setattr(modeling, "_measured_matmul_peak", lambda device, dtype: 1.5e11)
    flops, source = modeling.peak_flops("cpu", "float32", tmp_path)
    assert flops == 1.5e11 and "cached" not in source and (tmp_path / modeling.PEAKS_FILE).is_file()

    def no_second_measurement(device, dtype):
        raise AssertionError("measured again")

    monkeypatch.setattr(modeling, "_PEAKS", {})  # a new process
    monkeypatch.setattr(modeling, "_measured_matmul_peak", no_second_measurement)
    flops, source = modeling.peak_flops("cpu", "float32", tmp_path)
    assert flops == 1.5e11 and source.endswith("(once on this machine, cached)")


def test_rows_longer_than_the_first_batches_do_not_end_the_ramp_early(monkeypatch):
    """Rows of 2,000 tokens fill a 512- and a 1,024-token batch alike (one row each): those batches
    say nothing about throughput, so the ramp grows on until batches do grow, then judges them."""
    import stmbench.core.memory as memory

    monkeypatch.setattr(memory, "_THROUGHPUT", {})
    monkeypatch.setenv(MEMORY_ENV, "100000")
    budget = plan_budget(_plateau_model(), device="cpu", max_batch=10**6)
    rows = [s // 2000 for s in _predict_with(budget, [2000] * 200, knee=8000)]
    assert rows[:3] == [1, 1, 1]  # 512, 1024 and 2048 tokens: one row each, not judged
    assert max(rows) >= 3  # it went on to batches of several rows


def test_a_plateau_found_on_long_rows_caps_the_short_rows_after_them_by_tokens(monkeypatch):
    """Rows go longest first.  Where attention makes a long row cost many times its length in
    memory, the plateau found on the long rows still counts padded tokens, so the short rows after
    them get batches of about as many tokens (not as many memory-cost units, which made batches of
    short reviews 16 times larger than the throughput asked for)."""
    import stmbench.core.memory as memory

    monkeypatch.setattr(memory, "_THROUGHPUT", {})
    monkeypatch.setenv(MEMORY_ENV, "100000")
    # narrow and many-headed: attention dominates a long row's memory
    budget = plan_budget(_plateau_model(hidden_size=256, intermediate_size=1024, num_attention_heads=16),
                         device="cpu", max_batch=10**6)
    assert budget.attention_share * 2000 > 5  # a 2,000-token row costs over 6 times its length
    sizes = _predict_with(budget, [2000] * 40 + [100] * 2000, knee=4000)  # full from 4,000 padded tokens on
    done = [sum(sizes[:i]) for i in range(len(sizes))]
    short = [s for s, before in zip(sizes, done) if before >= 40 * 2000]  # the batches of 100-token rows
    plateau = budget.record()["throughput_tokens"]
    assert plateau <= 8192
    assert max(short) <= plateau and max(short) >= plateau - 100
