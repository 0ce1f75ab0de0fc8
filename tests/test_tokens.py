"""Tasks with a tag per token (NER): CoNLL files, sub-token alignment, seqeval's entity F1, the
label_supervised token head with and without the causal mask, and tiny-bert's token classifier."""

from __future__ import annotations

import json

import pytest

from stmbench.common.errors import DataError, StmbenchError
from stmbench.run.scoring import score
from stmbench.plan.grid import plan_grid
from stmbench.store.results import ResultStore
from stmbench.spec.grid_spec import GridSpec
from stmbench.report.refresh import refresh_leaderboard
from stmbench.run.study import run_study
from stmbench.tasks.task import Task

TAGS = [{"value": v} for v in ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")]


def conll_task(tmp_path, train: str, test: str) -> Task:
    folder = tmp_path / "data" / "toy-ner"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text(train, encoding="utf-8")
    (folder / "test.txt").write_text(test, encoding="utf-8")
    return Task({"name": "toy-ner", "kind": "tokens", "labels": TAGS, "metrics": ["entity_f1"],
                 "local": {"format": "conll", "files": {"train": "train.txt", "test": "test.txt"}}})


def test_conll_files_are_read_and_bad_lines_named(tmp_path):
    task = conll_task(tmp_path, "-DOCSTART- O\n\n张 B-PER\n三 I-PER\n在 O\n京 B-LOC\n\n李 B-PER\n四 I-PER\n",
                      "王 B-PER\n去 O\n\n北 B-LOC\n京\n很 O\n\n上 B-XYZ\n")
    train = task.load("train", data_dir=tmp_path / "data").dataset
    assert train["tokens"] == [["张", "三", "在", "京"], ["李", "四"]] and train["tags"] == [[1, 2, 0, 3], [1, 2]]
    with pytest.raises(DataError, match=r"test.txt:5: expected a token and its tag, found '京'"):
        task.load("test", data_dir=tmp_path / "data")
    loaded = task.load("test", data_dir=tmp_path / "data", skip_bad_rows=True)
    assert loaded.dataset["tokens"] == [["王", "去"]] and loaded.report["bad_rows"] == 2  # the unknown tag too
    assert not task.prompts and task.primary_metric == "entity_f1" and not task.is_pair


def test_entity_scores_are_seqevals(session):
    task = Task({"name": "t", "kind": "tokens", "labels": TAGS, "generator": {"function": "m:f"}})
    gold = [[1, 2, 0, 3], [3, 4, 0]]
    predicted = [[1, 2, 0, 0], [3, 0, 0]]  # one person right, one place missed, one place cut short
    measures = session.metrics_for(task)
    assert [m.name for m in measures] == ["entity_f1", "entity_precision", "entity_recall", "token_accuracy"]
    metrics = score(task, gold, predicted, measures)
    assert metrics["entity_precision"] == pytest.approx(1 / 2) and metrics["entity_recall"] == pytest.approx(1 / 3)
    assert metrics["entity_f1"] == pytest.approx(0.4) and metrics["token_accuracy"] == pytest.approx(5 / 7)
    with pytest.raises(StmbenchError, match="example 1: 2 predicted tags for 3 tokens"):
        score(task, gold, [[1, 2, 0, 3], [3, 0]], measures)


def test_labels_sit_at_the_first_subtoken_of_each_word(session):
    from stmbench_plugins.strategies._tokens import token_features

    task = session.get("task", "sample-ner")
    _, tok = session.catalogue.backbone_for("tiny-bert").load("tiny-bert", head="token_classification", task=task,
                                                              context=session.context, load_kwargs={})
    out = token_features(tok, [["张伟", "在", "北京"]], [[1, 0, 3]], max_len=32)
    assert out["labels"][0] == [-100, 1, -100, 0, 3, -100, -100]  # [CLS] 张 伟 在 北 京 [SEP]


def test_token_tasks_reject_strategies_that_cannot_tag(session):
    plan = plan_grid(GridSpec(tasks=["sample-ner"], strategies=["generative", "cot", "in_context", "label_supervised"],
                              adapters=["full"]), session)
    assert [r.strategy for r in plan.runs] == ["label_supervised"] and plan.runs[0].prompt is None
    reasons = {spec.strategy: why for spec, why in plan.rejected}
    assert set(reasons) == {"generative", "cot", "in_context"}
    assert reasons["cot"] == ("strategy 'cot' does not do tokens tasks ('sample-ner'); it serves pair, nli, single")


@pytest.mark.slow
def test_ner_grid_entity_f1_on_the_leaderboard_and_unmasking_changes_predictions(session):
    grid = GridSpec(backbones=["tiny-llama", "tiny-bert"], tasks=["sample-ner"],
                    strategies=["label_supervised", "label_supervised[unmask=true]", "discriminative"],
                    adapters=["full"], train_sizes=[300], training={"num_train_epochs": 2})
    report = run_study(grid, session)
    assert report.ok == 5 and report.failed == 0  # tiny-bert has no causal mask to remove: rejected
    refresh_leaderboard(session)  # what ``stmbench run`` does after the study
    store = ResultStore(session.settings.results_dir)
    results = {(r.spec.backbone, r.labels["strategy"]): r for r in store.load_all()}
    for r in results.values():
        assert r.primary_metric == "entity_f1" and 0 <= r.score <= 1 and "token_accuracy" in r.metrics
        assert r.counts["train_examples"] == 300 and r.data["eval"]["rows"] == 300
    masked = store.predictions(results[("tiny-llama", "label_supervised")].run_id)["predicted"]
    unmasked = store.predictions(results[("tiny-llama", "label_supervised[unmask=true]")].run_id)["predicted"]
    assert len(masked) == len(unmasked) == 300 and masked != unmasked
    assert all(len(p) == len(g) for p, g in zip(masked, store.predictions(results[("tiny-llama", "label_supervised")].run_id)["gold"]))
    text = (session.settings.leaderboard_dir / "README.md").read_text(encoding="utf-8")
    assert "sample-ner (entity F1) (synthetic)" in text and "entity F1 is seqeval's entity-level" in text
    row = next(line for line in text.splitlines() if "tiny-bert" in line and "discriminative" in line)
    assert f"{100 * results[('tiny-bert', 'discriminative')].score:.1f}" in row
    assert json.loads(store.path(results[("tiny-bert", "discriminative")].run_id).read_text())["spec"]["prompt"] is None
