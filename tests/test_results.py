"""The results store: atomic writes, skip / rerun, failed runs recorded and retried."""

from __future__ import annotations

import json
import os
import re

import pytest

from stmbench.store.result import SCHEMA_VERSION, ResultSchemaError, RunResult
from stmbench.store.results import ResultStore
from stmbench.common.files import atomic_write_text


IDS: dict[str, str] = {}  #: alias -> the run id of its spec


def result(alias: str, status: str = "ok", acc: float = 0.5) -> dict:
    """A stored result named ``alias`` in the test; its run id is the hash of its spec, as it must be."""
    from stmbench.spec.run import RunSpec

    spec = {"backbone": "b", "task": "t", "strategy": "s", "adapter": "a", "prompt": None, "train_size": "full",
            "seed": 1, "strategy_options": {"alias": alias}}
    IDS[alias] = RunSpec.from_dict(spec).run_id
    return {"run_id": IDS[alias], "status": status, "spec": spec, "metrics": {"accuracy": acc}}


def test_write_and_read_back(tmp_path):
    store = ResultStore(tmp_path)
    abc = result("abc")["run_id"]
    path = store.write(result("abc"), {"run_id": abc, "gold": [1, 0], "predicted": [1, 1]})
    assert path == tmp_path / f"{abc}.json"
    assert store.get(abc)["metrics"]["accuracy"] == 0.5
    assert store.predictions(abc)["predicted"] == [1, 1]
    assert [r["run_id"] for r in store.load_all()] == [abc]  # predictions files are not results
    assert store.is_done(abc)


def test_failed_runs_are_not_done(tmp_path):
    store = ResultStore(tmp_path)
    store.write(result("f", status="failed"))
    assert store.get(IDS["f"])["status"] == "failed"
    assert not store.is_done(IDS["f"]) and not store.is_done("0" * 16)


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
    assert [r["run_id"] for r in store.load_all()] == [IDS["good"]]
    assert "bad.json" in caplog.text and "not valid JSON" in caplog.text
    assert [v.path for v in store.refused] == [str(tmp_path / "bad.json")]


def test_frame_flattens_results(tmp_path):
    store = ResultStore(tmp_path)
    store.write(result("a", acc=0.25))
    store.write(result("b", acc=0.75))
    frame = store.frame().sort_values("metrics.accuracy")
    assert list(frame["metrics.accuracy"]) == [0.25, 0.75]
    assert list(frame["spec.backbone"]) == ["b", "b"]


def test_results_are_json_with_sorted_keys(tmp_path):
    store = ResultStore(tmp_path)
    store.write({**result("x"), "times": {"b": 1}, "counts": {"a": 2}})
    text = (tmp_path / f"{IDS['x']}.json").read_text(encoding="utf-8")
    assert json.loads(text)["counts"]["a"] == 2 and text.index('"counts"') < text.index('"times"')


def test_a_result_is_typed_versioned_and_reads_as_its_json(tmp_path):
    store = ResultStore(tmp_path)
    store.write(RunResult(**result("typed")))
    stored = json.loads((tmp_path / f"{IDS['typed']}.json").read_text(encoding="utf-8"))
    assert stored["schema_version"] == SCHEMA_VERSION == 4
    assert "error" not in stored and "training" not in stored  # None fields are left out
    back = store.get(IDS["typed"])
    assert isinstance(back, RunResult) and back.ok and back.accuracy == 0.5 and back.flags == []
    assert back["metrics"] == {"accuracy": 0.5} and back.get("error") is None and "error" not in back
    assert dict(back) == stored


def test_an_unnumbered_result_is_schema_1_and_read_whole(tmp_path):
    old = {**result("old"), "times": {"train_seconds": 3.0}, "health": {"flags": ["degenerate"]}}
    (tmp_path / f"{IDS['old']}.json").write_text(json.dumps(old), encoding="utf-8")  # as written before versions
    back = ResultStore(tmp_path).get(IDS["old"])
    assert back.schema_version == SCHEMA_VERSION and back.times == {"train_seconds": 3.0}
    assert back.flags == ["degenerate"]


@pytest.mark.parametrize("change,message", [
    ({"schema_version": 5}, "written with result schema 5 by a newer stmbench; this stmbench .* reads schemas up "
                            "to 4: upgrade stmbench"),
    ({"schema_version": "2"}, "schema_version '2' is not a version number"),
    ({"new_field": 1}, "fields that result schema 1 does not have: new_field"),
    ({"status": "weird"}, "status 'weird'"),
])
def test_a_result_this_version_cannot_read_is_refused_by_name_not_half_read(tmp_path, change, message, cli):
    (tmp_path / "r").mkdir()
    bad = result("bad")["run_id"]
    (tmp_path / "r" / f"{bad}.json").write_text(json.dumps({**result("bad"), **change}), encoding="utf-8")
    store = ResultStore(tmp_path / "r")
    assert store.load_all() == []
    assert len(store.refused) == 1 and re.search(message, store.refused[0].reason), store.refused[0].reason
    if change.get("schema_version") == 5:  # the run's own store: a newer schema is an error, never overwritten
        with pytest.raises(ResultSchemaError, match=message):
            store.get(bad)
    code, _, err = cli("leaderboard", "--results-dir", str(tmp_path / "r"), "--out", str(tmp_path / "lb"))
    assert code == 2 and f"{bad}.json" in err and "Traceback" not in err
    assert not (tmp_path / "lb" / "README.md").exists()
