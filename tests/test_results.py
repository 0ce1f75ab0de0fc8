"""The results store: atomic writes, skip / rerun, failed runs recorded and retried."""

from __future__ import annotations

import json
import os

import pytest

from stmbench.results import ResultStore, atomic_write_text


def result(run_id: str, status: str = "ok", acc: float = 0.5) -> dict:
    return {"run_id": run_id, "status": status, "spec": {"backbone": "b", "task": "t", "strategy": "s",
            "adapter": "a", "prompt": None, "train_size": "full", "seed": 1}, "metrics": {"accuracy": acc}}


def test_write_and_read_back(tmp_path):
    store = ResultStore(tmp_path)
    path = store.write(result("abc"), {"run_id": "abc", "gold": [1, 0], "predicted": [1, 1]})
    assert path == tmp_path / "abc.json"
    assert store.get("abc")["metrics"]["accuracy"] == 0.5
    assert store.predictions("abc")["predicted"] == [1, 1]
    assert [r["run_id"] for r in store.load_all()] == ["abc"]  # predictions files are not results
    assert store.is_done("abc")


def test_failed_runs_are_not_done(tmp_path):
    store = ResultStore(tmp_path)
    store.write(result("f", status="failed"))
    assert store.get("f")["status"] == "failed"
    assert not store.is_done("f") and not store.is_done("missing")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary file left


def test_unreadable_results_are_skipped_with_a_warning(tmp_path, caplog):
    store = ResultStore(tmp_path)
    store.write(result("good"))
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert [r["run_id"] for r in store.load_all()] == ["good"]
    assert "ignoring unreadable result" in caplog.text


def test_frame_flattens_results(tmp_path):
    store = ResultStore(tmp_path)
    store.write(result("a", acc=0.25))
    store.write(result("b", acc=0.75))
    frame = store.frame()
    assert list(frame["metrics.accuracy"]) == [0.25, 0.75]
    assert list(frame["spec.backbone"]) == ["b", "b"]


def test_results_are_json_with_sorted_keys(tmp_path):
    store = ResultStore(tmp_path)
    store.write({"run_id": "x", "status": "ok", "spec": {}, "b": 1, "a": 2})
    text = (tmp_path / "x.json").read_text(encoding="utf-8")
    assert json.loads(text)["a"] == 2 and text.index('"a"') < text.index('"b"')
