"""Chain-of-thought rationales from teachers: planning (rejected without a source, a teacher is part of
the id of cot runs only), rationale sets (cached, shared, resumable, checked and filtered), the
``folder`` teacher, the ``rationales`` command and the pre-flight checks of the ``openai`` teacher.

The teachers here are the fake plugin's (a template per row) and the built-in ``hf`` teacher on the
tiny random model; the real-model tier (``tests/test_real_teachers.py``) runs SmolLM2 as an ``hf``
teacher and the ``openai`` teacher against a real ``transformers serve``.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from tests.fixtures import write_task
from stmbench.common.errors import StmbenchError
from stmbench.plan.checks import preflight
from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.run.rationales import RationaleSet, select
from stmbench.spec.grid_spec import GridSpec

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fake():
    sys.path.insert(0, str(TESTS / "plugins"))
    try:
        import fake_plugin
    finally:
        sys.path.pop(0)
    fake_plugin.EVENTS.clear()
    return fake_plugin


class FakeTeacherOnly:
    """The fake plugin's teacher without its other hooks (its ``generate_rationales`` would be a source)."""

    def __init__(self, fake):
        self.register_teachers = fake.register_teachers


@pytest.fixture
def lcqmc(make_session, fake, tmp_path):
    """A session with LCQMC-shaped files (no rationale column), the fake teacher and its own cache."""
    session = make_session(FakeTeacherOnly(fake), data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    write_task(session.get("task", "lcqmc"), tmp_path / "data")
    return session


def generated(fake) -> int:
    return sum(1 for kind, *_ in fake.EVENTS if kind == "generate")


def cot_grid(small_training, **changes):
    values = dict(tasks="lcqmc", strategies="cot,generative", adapters="full", train_sizes=[20],
                  training={**small_training, "max_steps": 1}, strategy_options={"cot": {"max_new_tokens": 8}})
    values.update(changes)
    return GridSpec(**values)


def test_cot_without_a_rationale_source_is_rejected_up_front_and_a_teacher_plans_it(lcqmc, small_training):
    plain = plan_grid(cot_grid(small_training), lcqmc)
    assert [s.strategy for s in plain.runs] == ["generative"]
    [(spec, reason)] = plain.rejected
    assert spec.strategy == "cot" and "task 'lcqmc' has no source of them" in reason
    assert "--teacher" in reason and "--rationales DIR" in reason
    taught = plan_grid(cot_grid(small_training, teacher="fake_teacher[verdict=right,chunk=2]"), lcqmc)
    assert not taught.rejected
    cot = next(s for s in taught.runs if s.strategy == "cot")
    generative = next(s for s in taught.runs if s.strategy == "generative")
    assert generative.run_id == plain.runs[0].run_id and generative.teacher is None  # others keep their ids
    assert cot.teacher == "fake_teacher" and cot.teacher_options == {"verdict": "right", "keep": "consistent"}
    assert cot.teacher_runtime == {"chunk": 2, "fail_after": -1}
    # runtime options change no id; what is written, or what trains, does
    again = plan_grid(cot_grid(small_training, teacher="fake_teacher[chunk=7]"), lcqmc).runs
    assert next(s for s in again if s.strategy == "cot").run_id == cot.run_id
    for other in ("fake_teacher[verdict=wrong]", "fake_teacher[keep=all]", "hf[model=tiny-llama]"):
        spec = next(s for s in plan_grid(cot_grid(small_training, teacher=other), lcqmc).runs if s.strategy == "cot")
        assert spec.run_id != cot.run_id, other
    with pytest.raises(StmbenchError, match="unknown teacher 'nope'"):
        plan_grid(cot_grid(small_training, teacher="nope"), lcqmc)
    with pytest.raises(StmbenchError, match="unknown option"):
        plan_grid(cot_grid(small_training, teacher="fake_teacher[colour=red]"), lcqmc)


def test_a_rationale_set_is_generated_once_shared_by_runs_and_checked(lcqmc, fake, small_training):
    grid = cot_grid(small_training, strategies="cot", teacher="fake_teacher[verdict=mixed,keep=all]", seeds=[1, 2])
    runs = plan_grid(grid, lcqmc).runs
    first, _ = run_spec(runs[0], lcqmc)
    assert first["status"] == "ok", first.get("traceback")
    record = first["data"]["rationales"]
    assert record["teacher"] == "fake_teacher" and record["rows"] == 20 and record["kept"] == 20
    assert record["counts"] == {"consistent": 4, "contradicting": 4, "no_answer": 4, "empty": 4, "too_long": 4}
    assert first["labels"]["teacher"] == "fake_teacher keep=all"
    assert first["spec"]["teacher"] == "fake_teacher"
    assert generated(fake) == 20
    # another seed draws other rows: only the rows the set lacks are generated, into the same file
    second, _ = run_spec(runs[1], lcqmc)
    assert second["status"] == "ok" and second["data"]["rationales"]["set"] == record["set"]
    files = list((lcqmc.settings.cache_dir / "rationales" / "lcqmc").glob("*.jsonl"))
    assert len(files) == 1
    written = len(files[0].read_text(encoding="utf-8").splitlines()) - 1
    assert generated(fake) == written < 40  # rows the two subsamples share were not generated twice
    # the same run again (a second grid): nothing generated
    before = generated(fake)
    third, _ = run_spec(runs[0], lcqmc)
    assert generated(fake) == before and third["data"]["rationales"]["sha256"] == record["sha256"]


def test_keep_consistent_trains_only_on_consistent_rationales_and_says_when_none_is(lcqmc, fake, small_training):
    [spec] = plan_grid(cot_grid(small_training, strategies="cot", teacher="fake_teacher[verdict=mixed]"), lcqmc).runs
    result, _ = run_spec(spec, lcqmc)
    assert result["status"] == "ok", result.get("traceback")
    assert result["data"]["rationales"]["kept"] == 4 and result["counts"]["train_examples"] == 4
    assert result["data"]["rationales"]["keep"] == "consistent"
    [wrong] = plan_grid(cot_grid(small_training, strategies="cot", teacher="fake_teacher[verdict=wrong]"), lcqmc).runs
    result, _ = run_spec(wrong, lcqmc)
    assert result["status"] == "failed"
    assert "none of the 20 rationales is consistent" in result["error"] and "contradicting 20" in result["error"]
    assert "keep=all" in result["error"]


def test_the_cot_target_is_the_reasoning_then_the_gold_answer(lcqmc, fake):
    task = lcqmc.get("task", "lcqmc")
    data = lcqmc.task_data(task, "train")
    chosen = select(lcqmc, task, data, "train", [0, 1, 2], teacher="fake_teacher", options={"verdict": "right"})
    rows = data.dataset.select([0, 1, 2]).to_list()
    assert chosen.texts == [f"{r['text_a']}: a reason" for r in rows]  # the teacher's answer is cut off
    assert chosen.record["counts"]["consistent"] == 3


def test_a_rationale_ends_at_its_first_answer_and_is_classified(lcqmc):
    from stmbench.core.teacher import TeacherAnswer, classify, end_at_answer

    task = lcqmc.get("task", "lcqmc")  # 0: 否, 1: 是; the answer marker is 答案：
    rambling = end_at_answer(TeacherAnswer("问的对象不同。答案： 否\n\n问题：还有吗？答案：是", truncated=True), task)
    assert rambling == TeacherAnswer("问的对象不同。答案： 否", truncated=False)
    cases = {("问的是同一件事。答案：是", False): "consistent", ("对象不同。答案：否", False): "contradicting",
             ("没有答案", False): "no_answer", ("  答案：是", False): "empty", ("说到一半", True): "too_long",
             ("想了想。答案：也许", False): "no_answer"}
    for (text, truncated), status in cases.items():
        assert classify(end_at_answer(TeacherAnswer(text, truncated), task), 1, task) == status, text


def test_a_stopped_generation_resumes_after_the_last_chunk_written(lcqmc, fake, small_training):
    [spec] = plan_grid(cot_grid(small_training, strategies="cot",
                                teacher="fake_teacher[chunk=8,fail_after=2]"), lcqmc).runs
    result, _ = run_spec(spec, lcqmc)
    assert result["status"] == "failed" and "the fake teacher was stopped" in result["error"]
    [path] = (lcqmc.settings.cache_dir / "rationales" / "lcqmc").glob("*.jsonl")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1 + 16  # the header and two chunks
    with open(path, "a", encoding="utf-8") as fh:  # a write cut off mid-line
        fh.write('{"row": 3, "text": "cut')
    fake.EVENTS.clear()
    [resumed] = plan_grid(cot_grid(small_training, strategies="cot", teacher="fake_teacher[chunk=8]"), lcqmc).runs
    assert resumed.run_id == spec.run_id
    result, _ = run_spec(resumed, lcqmc)
    assert result["status"] == "ok", result.get("traceback")
    assert generated(fake) == 4  # the 4 rows not written yet
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 20 and all(json.loads(line) for line in lines)


def test_a_set_is_keyed_by_data_teacher_settings_and_prompt(lcqmc, fake):
    task = lcqmc.get("task", "lcqmc")
    data = lcqmc.task_data(task, "train")
    base = RationaleSet.of(lcqmc, task, data, "train", "fake_teacher", {"verdict": "right"})
    same = [RationaleSet.of(lcqmc, task, data, "train", "fake_teacher", {"verdict": "right", "keep": "all", "chunk": 3})]
    other = [RationaleSet.of(lcqmc, task, data, "train", "fake_teacher", {"verdict": "wrong"}),
             RationaleSet.of(lcqmc, task, data, "validation", "fake_teacher", {"verdict": "right"}),
             RationaleSet.of(lcqmc, task, lcqmc.task_data(task, "test"), "train", "fake_teacher", {"verdict": "right"})]
    task.teacher = {**(task.teacher or {}), "prompt": "{text_a} {text_b}: {word}?"}
    other.append(RationaleSet.of(lcqmc, task, data, "train", "fake_teacher", {"verdict": "right"}))
    assert all(s.key == base.key for s in same)
    assert len({base.key, *(s.key for s in other)}) == 1 + len(other)


def test_the_hf_teacher_generates_with_a_tiny_model_and_a_cot_run_records_it(make_session, tmp_path, small_training):
    session = make_session(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    write_task(session.get("task", "lcqmc"), tmp_path / "data")
    grid = cot_grid(small_training, strategies="cot", train_sizes=[8],
                    teacher="hf[model=tiny-llama,max_new_tokens=6,chunk=3,keep=all]")
    [spec] = plan_grid(grid, session).runs
    assert any(line == "teacher hf[tiny-llama] is ready" for line in preflight([spec], session))
    result, _ = run_spec(spec, session)
    assert result["status"] == "ok", result.get("traceback")
    record = result["data"]["rationales"]
    assert record["rows"] == record["kept"] == 8 and sum(record["counts"].values()) == 8
    assert result["spec"]["teacher_options"]["model"] == "tiny-llama"
    [path] = (tmp_path / "cache" / "rationales" / "lcqmc").glob("*.jsonl")
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    assert len(entries) == 8 and all(isinstance(e["text"], str) for e in entries)
    assert all(e["truncated"] == (e["status"] == "too_long") for e in entries if e["status"] != "empty")


def test_rationales_cli_generates_shows_and_exports_a_folder_the_folder_teacher_reads(cli, lcqmc, fake, tmp_path,
                                                                                      small_training):
    common = ["--plugin", str(TESTS / "plugins" / "fake_plugin.py"), "--data-dir", str(tmp_path / "data"),
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    code, out, err = cli("rationales", "generate", *common, "--tasks", "lcqmc", "--teacher",
                         "fake_teacher[verdict=mixed]", "--limit", "10")
    assert code == 0, err
    assert "lcqmc/train: 10 rows from fake_teacher (10 generated now): consistent 2, contradicting 2, " \
           "no_answer 2, empty 2, too_long 2" in out
    assert out.count("  [") == 3 and "[consistent] row 0:" in out
    code, out, err = cli("rationales", "generate", *common, "--tasks", "lcqmc", "--teacher",
                         "fake_teacher[verdict=mixed]", "--limit", "12")
    assert code == 0 and "(2 generated now)" in out
    code, out, err = cli("rationales", "show", *common, "--tasks", "lcqmc", "-n", "1")
    assert code == 0 and "12 rows: consistent" in out and out.count("  [") == 1
    code, out, err = cli("rationales", "export", *common, "--tasks", "lcqmc", "--out", str(tmp_path / "given"))
    assert code == 0, err
    exported = (tmp_path / "given" / "lcqmc" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(exported) == 12 and {"text_a", "text_b", "label", "rationale", "status"} <= set(json.loads(exported[0]))
    # the folder teacher reads it back: a row the folder lacks counts as empty
    task = lcqmc.get("task", "lcqmc")
    data = lcqmc.task_data(task, "train")
    chosen = select(lcqmc, task, data, "train", list(range(14)), teacher="folder",
                    options={"path": str(tmp_path / "given"), "keep": "all"})
    assert chosen.record["counts"] == {"consistent": 3, "contradicting": 3, "no_answer": 2, "empty": 4, "too_long": 2}
    grid = cot_grid(small_training, strategies="cot", rationales=str(tmp_path / "given"))
    [spec] = plan_grid(grid, lcqmc).runs
    assert spec.teacher == "folder" and spec.teacher_options["path"] == str(tmp_path / "given")


def test_the_folder_teacher_treats_its_files_as_hostile(lcqmc, tmp_path):
    task = lcqmc.get("task", "lcqmc")
    data = lcqmc.task_data(task, "train")
    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps({"text_a": "a", "text_b": "b", "rationale": "secret"}) + "\n", encoding="utf-8")
    given = tmp_path / "given"
    (given / "lcqmc").mkdir(parents=True)
    (given / "lcqmc" / "train.jsonl").symlink_to(outside)
    with pytest.raises(StmbenchError, match="leads out of the folder"):
        select(lcqmc, task, data, "train", [0], teacher="folder", options={"path": str(given)})
    (given / "lcqmc" / "train.jsonl").unlink()
    (given / "lcqmc").rmdir()
    (given / "lcqmc").symlink_to(tmp_path)  # the task's folder itself leads out
    (tmp_path / "train.jsonl").write_text(outside.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(StmbenchError, match="leads out of the folder"):
        select(lcqmc, task, data, "train", [0], teacher="folder", options={"path": str(given)})
    (given / "lcqmc").unlink()
    (given / "lcqmc").mkdir()
    (given / "lcqmc" / "train.jsonl").write_text('{"text_a": "x", "text_b": "y", "rationale": "r"}\n{not json\n',
                                                 encoding="utf-8")
    with pytest.raises(StmbenchError, match=r"train.jsonl, line 2: not JSON"):
        select(lcqmc, task, data, "train", [0], teacher="folder", options={"path": str(given)})
    (given / "lcqmc" / "train.jsonl").write_text('{"text_a": "x", "rationale": 7}\n', encoding="utf-8")
    with pytest.raises(StmbenchError, match=r"line 1: needs text_a, text_b and rationale as text"):
        select(lcqmc, task, data, "train", [0], teacher="folder", options={"path": str(given)})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_teacher_problems_are_one_line_before_training(lcqmc, small_training, monkeypatch):
    monkeypatch.delenv("STMBENCH_TEST_KEY", raising=False)
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/v1"
    for entry, expected in ((f"openai[model=m,base_url={url},api_key_env=STMBENCH_TEST_KEY]",
                             "the environment variable STMBENCH_TEST_KEY (api_key_env) is not set"),
                            (f"openai[model=m,base_url={url},api_key_env=]", f"cannot reach {url}")):
        runs = plan_grid(cot_grid(small_training, strategies="cot", teacher=entry), lcqmc).runs
        with pytest.raises(StmbenchError) as caught:
            preflight(runs, lcqmc)
        assert expected in str(caught.value) and len(str(caught.value).splitlines()) == 1
    monkeypatch.setitem(sys.modules, "openai", None)  # not installed: how to install it, in one line
    runs = plan_grid(cot_grid(small_training, strategies="cot", teacher=f"openai[model=m,base_url={url}]"), lcqmc).runs
    with pytest.raises(StmbenchError, match=r'pip install "stmbench\[openai\]"'):
        preflight(runs, lcqmc)
    monkeypatch.delitem(sys.modules, "openai")
    monkeypatch.setenv("STMBENCH_TEST_KEY", "sk-secret-value")
    [spec] = plan_grid(cot_grid(small_training, strategies="cot",
                                teacher=f"openai[model=m,base_url={url},api_key_env=STMBENCH_TEST_KEY]"), lcqmc).runs
    assert "sk-secret-value" not in json.dumps(spec.to_dict())  # the key's variable is named, never its value
    assert spec.teacher_runtime["api_key_env"] == "STMBENCH_TEST_KEY"


def test_the_leaderboard_names_the_teacher_of_cot_rows(cli, tmp_path):
    data = tmp_path / "data"
    from stmbench.core.session import Session, Settings

    write_task(Session(Settings()).get("task", "lcqmc"), data)
    code, out, err = cli("run", "--plugin", str(TESTS / "plugins" / "fake_plugin.py"), "--data-dir", str(data),
                         "--tasks", "lcqmc", "--strategies", "cot,generative", "--adapters", "full",
                         "--train-sizes", "20", "--max-steps", "1", "--max-seq-length", "96",
                         "--strategy-option", "cot.max_new_tokens=8", "--teacher", "fake_teacher[verdict=right]",
                         "--results-dir", str(tmp_path / "results"))
    assert code == 0, err
    markdown = (tmp_path / "leaderboard" / "README.md").read_text(encoding="utf-8")
    cot_rows = [line for line in markdown.splitlines() if "cot" in line and line.startswith("| tiny-llama")]
    assert cot_rows and all("\u2190 fake\\_teacher" in line or "\u2190 fake_teacher" in line for line in cot_rows)
    generative = [line for line in markdown.splitlines() if "| generative" in line and line.startswith("| tiny-llama")]
    assert generative and not any("\u2190" in line for line in generative)
    assert "fake_teacher" in (tmp_path / "leaderboard" / "index.html").read_text(encoding="utf-8")
