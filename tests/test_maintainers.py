"""A maintainer's leaderboard from many contributors' results folders, ``stmbench results``, and the
published reference rows of a task."""

from __future__ import annotations

import json
import os

import pytest

from stmbench.report import leaderboard
from stmbench.common.errors import StmbenchError
from stmbench.report.evidence import ResultSet
from stmbench.store.results import ResultStore, expand_dirs
from tests.test_leaderboard import IDS, add, pattern


def data(fingerprint: str) -> dict:
    return {"eval": {"fingerprint": fingerprint, "source": "x", "rows": 100, "split": "test"},
            "train": {"fingerprint": "tr", "source": "x", "rows": 1000},
            "prompt": {"name": "concise", "sha256": "p"}, "labels": ["0:no", "1:yes"]}


def contributor(folder, fingerprint: str, seeds, n_correct: int, prefix: str = "", **kw) -> None:
    store = ResultStore(folder)
    for seed in seeds:
        r = add(store, run_id=f"{prefix}{fingerprint}{seed}", correct=pattern(n_correct + seed), seed=seed, **kw)
        store.write({**r, "data": data(fingerprint)})


def test_two_folders_one_leaderboard_other_data_never_pooled(tmp_path):
    contributor(tmp_path / "alice", "same", [1, 2], 80)
    contributor(tmp_path / "bob", "same", [3], 80)  # the same data: pooled into alice's row
    contributor(tmp_path / "bob", "diff", [4], 60)  # other eval data, same cell: a row of its own, flagged
    contributor(tmp_path / "bob", "same", [1, 2], 80, prefix="d", strategy="discriminative")
    board, _ = leaderboard.generate([tmp_path / "alice", tmp_path / "b*"], tmp_path / "lb")
    rows = {(r.key["strategy"], r.provenance): r for r in board.rows}
    assert len(rows) == 3
    pooled = next(r for (s, p), r in rows.items() if s == "generative" and r.cells["t1"].n == 3)
    other = next(r for (s, p), r in rows.items() if s == "generative" and r.cells["t1"].n == 1)
    assert pooled.cells["t1"].flag_text() == other.cells["t1"].flag_text() == "⚠ other data"
    assert pooled.config != other.config and "data" in other.config
    assert not any(c.flags for r in board.rows if r.key["strategy"] == "discriminative" for c in r.cells.values())
    text = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert "other data: the results of this cell came from different data" in text
    copied = sorted(p.name for p in (tmp_path / "lb" / "results").glob("*.json"))
    assert f"{IDS['diff4']}.json" in copied and f"{IDS['same3']}.predictions.json" in copied  # from both folders
    sources = json.loads((tmp_path / "lb" / ".stmbench-source.json").read_text(encoding="utf-8"))
    assert sources["results_dirs"] == ["../alice", "../bob"]
    assert sorted(sources["files"]) == sorted(p.relative_to(tmp_path / "lb").as_posix()
                                              for p in (tmp_path / "lb").rglob("*") if p.is_file()
                                              and p.name != ".stmbench-source.json")
    with pytest.raises(StmbenchError, match="built from .*alice, .*bob, not"):
        leaderboard.generate([tmp_path / "alice"], tmp_path / "lb")  # another source needs --force


def test_a_run_stored_twice_is_one_run_or_a_reported_conflict(tmp_path):
    contributor(tmp_path / "a", "same", [1], 80)
    contributor(tmp_path / "b", "same", [1], 80)  # byte-identical contents: one run
    same1 = IDS["same1"]
    assert [r.run_id for r in ResultSet([tmp_path / "a", tmp_path / "b"]).load_all()] == [same1]
    contributor(tmp_path / "c", "same", [1], 70)  # same id, other numbers
    merged = ResultSet(expand_dirs([tmp_path / "a", tmp_path / "c"]))
    assert merged.conflicts == [(same1, tmp_path / "a" / f"{same1}.json", tmp_path / "c" / f"{same1}.json")]
    assert merged.load_all()[0].accuracy == pytest.approx(0.81)  # the first folder given wins
    board, _ = leaderboard.generate([tmp_path / "a", tmp_path / "c"], tmp_path / "lb")
    text = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert "## Conflicting results" in text and str(tmp_path / "c" / f"{same1}.json") in text
    with pytest.raises(StmbenchError, match="no results folder matches"):
        expand_dirs([str(tmp_path / "nothing-*")])


def test_results_command_lists_filters_shows_and_exports(tmp_path, cli):
    from stmbench.spec.run import RunSpec

    store = ResultStore(tmp_path / "r")
    ok1 = add(store, run_id="ok1", correct=pattern(80), strategy="generative")["run_id"]
    ok2 = add(store, run_id="ok2", correct=pattern(70), strategy="cot", task="t2")["run_id"]
    spec = {"backbone": "bb", "task": "t1", "strategy": "cot", "adapter": "lora", "prompt": None,
            "train_size": "full", "seed": 1}
    bad1 = RunSpec.from_dict(spec).run_id
    store.write({"run_id": bad1, "status": "failed", "error": "CUDA out of memory\nmore", "traceback": "Trace",
                 "spec": spec})
    code, out, _ = cli("results", "--results-dir", str(tmp_path / "r"))
    assert code == 0 and ok1 in out and bad1 in out and "3 of 3 run(s)" in out and "accuracy 80.0" in out
    code, out, _ = cli("results", "--results-dir", str(tmp_path / "r"), "--failed")
    assert code == 0 and "CUDA out of memory" in out and ok1 not in out and "more" not in out
    code, out, _ = cli("results", "--results-dir", str(tmp_path / "r"), "--strategy", "cot", "--status", "ok")
    assert ok2 in out and ok1 not in out and bad1 not in out
    common = os.path.commonprefix([ok1, ok2, bad1])
    code, out, _ = cli("results", "show", common, "--results-dir", str(tmp_path / "r"))
    assert code == 2  # more than one run starts with it
    code, out, _ = cli("results", "show", bad1[:8], "--results-dir", str(tmp_path / "r"))
    assert code == 0 and json.loads(out[: out.index("\nfile: ")])["error"].startswith("CUDA") and out.endswith("Trace\n")
    for fmt in ("csv", "json", "parquet"):
        target = tmp_path / f"export.{fmt}"
        code, _, err = cli("results", "--results-dir", str(tmp_path / "r"), "--task", "t1", "--format", fmt,
                           "--out", str(target))
        assert code == 0 and "2 run(s)" in err
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "export.parquet")
    assert sorted(frame["run_id"]) == sorted([bad1, ok1]) and "metrics.accuracy" in frame.columns
    assert sorted(pd.read_csv(tmp_path / "export.csv", dtype={"run_id": str})["run_id"]) == sorted([bad1, ok1])
    assert sorted(r["run_id"] for r in json.loads((tmp_path / "export.json").read_text(encoding="utf-8"))) == \
        sorted([bad1, ok1])


def test_reference_rows_are_shown_apart_and_never_marked(tmp_path, session):
    from stmbench.tasks.task import Task

    store = ResultStore(tmp_path / "r")
    add(store, run_id="m1", correct=pattern(80), task="lcqmc")
    refs = leaderboard.task_references(session)
    assert [r["model"] for r in refs["lcqmc"]] == ["BERT", "ERNIE", "RoBERTa-wwm-large-ext"]
    assert [r["value"] for r in refs["bq"]] == [84.8, 85.8]
    board, _ = leaderboard.generate(tmp_path / "r", tmp_path / "lb", references=refs)
    assert list(board.references) == ["lcqmc"]  # only the tasks on the board
    assert [r.key["backbone"] for r in board.rows] == ["bb"] and board.rows[0].cells["lcqmc"].mark == "best"
    text = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Reference results (published, not measured here)"):]
    assert "| lcqmc  | ERNIE" in section and "87.2" in section and "github.com/ymcui/Chinese-BERT-wwm" in section
    page = (tmp_path / "lb" / "index.html").read_text(encoding="utf-8")
    assert 'id="reference-table"' in page and "RoBERTa-wwm-large-ext" in page
    with pytest.raises(StmbenchError, match="value must be a percentage"):
        Task({"name": "x", "generator": {"function": "m:f"}, "prompts": {"p": "{text_a}{text_b}"},
              "labels": [{"value": 0, "word": "a"}, {"value": 1, "word": "b"}],
              "references": [{"model": "m", "value": 0.9 * 1000, "citation": "c"}]})
