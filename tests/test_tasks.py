"""The task catalogue: YAML validity, loading each original format, bad rows, cache, lm-eval export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from stmbench.common.errors import DataError, StmbenchError
from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.spec.grid_spec import GridSpec
from tests.conftest import REPO
from tests.fixtures import FIXTURE_SIZES, corrupt_line, file_for, write_task

BUILTIN = ["afqmc", "bq", "chnsenticorp", "cmnli", "iflytek", "lcqmc", "msra-ner", "ocnli", "pawsx-zh", "sample",
           "sample-long", "sample-ner", "tnews"]
GENERATED = ("sample", "sample-long", "sample-ner")
LOCAL = [t for t in BUILTIN if t not in (*GENERATED, "msra-ner")]  # token tasks: tests/test_tokens.py


def test_catalogue_has_every_builtin_task(session):
    assert session.catalogue.names("task") == BUILTIN


@pytest.mark.parametrize("name", [t for t in BUILTIN if not t.endswith("-ner")])
def test_task_yaml_is_complete(session, name):
    task = session.get("task", name)
    assert {"concise", "complex"} <= set(task.prompts)
    assert task.metrics == ["accuracy", "macro_f1"]
    assert task.description and (task.synthetic or task.citation)
    words = task.label_words
    if len(words) <= 15:  # distinct first tokens where possible (char-level first tokens)
        assert len({w[0] for w in words}) == len(words), words
    if name not in GENERATED:
        assert task.hub and task.hub["path"] and task.local and task.local["files"]
    if task.eval_split != "test":
        assert "dev" in task.eval_note
    example = {"text_a": "甲", "text_b": "乙"}
    rendered = task.render("complex", example)
    assert "甲" in rendered and (("乙" in rendered) == task.is_pair)
    assert rendered.endswith(task.answer_marker)


@pytest.mark.parametrize("name", ["sample-ner", "msra-ner"])
def test_token_task_yaml_is_complete(session, name):
    task = session.get("task", name)
    assert task.is_tokens and task.metrics == ["entity_f1"] and not task.prompts
    assert task.description and (task.synthetic or task.citation)
    assert [lab.value for lab in task.labels][0] == "O" and all(
        lab.value[:2] in ("B-", "I-") for lab in task.labels[1:])
    assert task.generator if task.synthetic else task.local["format"] == "conll"


@pytest.mark.parametrize("name", LOCAL)
def test_loads_the_original_format_from_data_dir(session, tmp_path, name):
    task = session.get("task", name)
    write_task(task, tmp_path)
    for split, n in FIXTURE_SIZES.items():
        data = task.load(split, data_dir=tmp_path)
        assert len(data.dataset) == n
        assert data.dataset.column_names[:3] == ["text_a", "text_b", "label"]
        assert set(data.dataset["label"]) <= set(range(len(task.labels)))
        assert all(data.dataset["text_a"]) and (all(data.dataset["text_b"]) or not task.is_pair)
        assert data.source.endswith(file_for(task, split)) and data.report["bad_rows"] == 0


BAD_ROWS = {
    "label": "label '7' is not one of the task's labels (0, 1)",
    "missing": "",  # per format below
    "empty": "empty text in field",
    "columns": "",
    "bad_utf8": "bytes that are not UTF-8",
}


@pytest.mark.parametrize("name", ["lcqmc", "afqmc", "chnsenticorp"])
@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_rows_name_the_file_and_line(session, tmp_path, name, kind):
    task = session.get("task", name)
    folder = write_task(task, tmp_path)
    path = folder / file_for(task, "train")
    corrupt_line(path, 7, kind, task)
    with pytest.raises(DataError) as err:
        task.load("train", data_dir=tmp_path)
    assert err.value.path == str(path) and err.value.line == 7
    assert str(err.value).startswith(f"{path}:7: ")
    expected = {
        ("missing", "jsonl"): "missing field 'sentence1'", ("missing", "tsv"): "tab-separated columns",
        ("columns", "jsonl"): "not valid JSON", ("columns", "tsv"): "tab-separated columns",
    }.get((kind, task.local["format"]), BAD_ROWS[kind])
    assert expected in str(err.value)
    data = task.load("train", data_dir=tmp_path, skip_bad_rows=True)
    assert data.report["bad_rows"] == 1 and len(data.dataset) == FIXTURE_SIZES["train"] - 1


def test_bad_label_error_through_the_cli(cli, tmp_path):
    from stmbench.core.session import Session, Settings

    task = Session(Settings(progress=False)).get("task", "lcqmc")
    path = write_task(task, tmp_path / "data") / "train.txt"
    corrupt_line(path, 7, "label", task)
    code, _, err = cli("run", "--tasks", "lcqmc", "--data-dir", str(tmp_path / "data"), "--adapters", "full",
                       "--strategies", "discriminative", "--max-steps", "1", "--results-dir", str(tmp_path / "r"),
                       "--no-leaderboard")
    # checked before anything trains: one error naming the file and line, nothing stored
    assert code == 2 and "Traceback" not in err
    assert f"{path}:7: label '7' is not one of the task's labels (0, 1)" in err
    assert not (tmp_path / "r").exists()
    code, _, _ = cli("run", "--tasks", "lcqmc", "--data-dir", str(tmp_path / "data"), "--adapters", "full",
                     "--strategies", "discriminative", "--max-steps", "1", "--skip-bad-rows",
                     "--results-dir", str(tmp_path / "r2"), "--no-leaderboard")
    result = json.loads(next((tmp_path / "r2").glob("*[0-9a-f].json")).read_text(encoding="utf-8"))
    assert code == 0 and result["counts"]["train_bad_rows"] == 1


def test_ignored_labels_are_dropped_and_counted(session, tmp_path):
    task = session.get("task", "ocnli")
    folder = write_task(task, tmp_path)
    path = folder / "dev.json"
    lines = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    row["label"] = "-"
    lines[0] = json.dumps(row, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = task.load("validation", data_dir=tmp_path)
    assert data.report["ignored"] == 1 and len(data.dataset) == FIXTURE_SIZES["validation"] - 1


def test_duplicates_and_overlap_are_counted_not_dropped(make_session, tmp_path):
    session = make_session(data_dir=tmp_path)
    task = session.get("task", "lcqmc")
    folder = write_task(task, tmp_path)
    train = (folder / "train.txt").read_text(encoding="utf-8").splitlines()
    test = (folder / "test.txt").read_text(encoding="utf-8").splitlines()
    a, b, label = test[0].split("\t")
    train += [train[0], f"{b}\t{a}\t{label}"]  # one duplicate, one test pair (reversed) in train
    (folder / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    [spec] = plan_grid(GridSpec(tasks="lcqmc", strategies="discriminative", adapters="full",
                                training={"max_steps": 1}), session).runs
    result, _ = run_spec(spec, session)
    assert result["status"] == "ok", result.get("error")
    assert result["counts"]["train_duplicates"] == 1
    assert result["counts"]["train_eval_overlap"] == 1
    assert result["counts"]["train_examples"] == FIXTURE_SIZES["train"] + 2


def test_tokenized_features_are_cached_across_runs_and_sessions(make_session, tmp_path, small_training):
    cache = tmp_path / "cache"
    session = make_session(cache_dir=cache)
    grid = GridSpec(strategies="generative", adapters="full,lora", train_sizes=[64], training=small_training)
    runs = plan_grid(grid, session).runs
    first, second = (run_spec(s, session)[0] for s in runs)
    assert first["cache"]["features"] == "miss" and second["cache"]["features"] == "hit"
    fresh = make_session(cache_dir=cache)  # a new process would find the arrow file on disk
    again = run_spec(plan_grid(grid.with_overrides(seeds=[5]), fresh).runs[0], fresh)[0]
    assert again["cache"]["features"] == "hit"
    other_prompt = run_spec(plan_grid(grid.with_overrides(prompts=["complex"]), fresh).runs[0], fresh)[0]
    assert other_prompt["cache"]["features"] == "miss"


def test_hub_offline_fails_fast_naming_the_hub_id_and_data_dir(session):
    task = session.get("task", "lcqmc")
    start = time.perf_counter()
    with pytest.raises(StmbenchError) as err:
        task.load("train")
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "C-MTEB/LCQMC" in msg and "--data-dir" in msg and "offline" in msg


def test_hub_loading_code_path_on_a_local_copy(tmp_path, make_session):
    """The hub path (datasets.load_dataset + ClassLabel names) exercised on a local parquet copy."""
    import datasets

    folder = tmp_path / "hubcopy"
    folder.mkdir()
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["100", "101", "102", "103", "104", "106", "107",
                                                                      "108", "109", "110", "112", "113", "114", "115",
                                                                      "116"]),
                                  "idx": datasets.Value("int32")})
    for split, n in (("train", 30), ("validation", 15), ("test", 15)):
        ds = datasets.Dataset.from_dict({"sentence": [f"新闻标题{i}号" for i in range(n)],
                                         "label": [i % 15 for i in range(n)], "idx": list(range(n))}, features=features)
        ds.to_parquet(str(folder / f"{split}.parquet"))
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    config = (REPO / "tasks" / "tnews.yaml").read_text(encoding="utf-8")
    config = config.replace("name: tnews\n", "name: tnews_copy\n", 1).replace("path: clue/clue", f"path: {folder}")
    config = config.replace("  name: tnews\n", "")
    (task_dir / "tnews_copy.yaml").write_text(config, encoding="utf-8")
    session = make_session(task_dirs=[task_dir])
    data = session.get("task", "tnews_copy").load("validation")
    assert len(data.dataset) == 15 and data.dataset["label"][:3] == [0, 1, 2]
    assert data.source.startswith(f"hub {folder}")


def test_task_dir_adds_a_task_and_bad_yaml_names_the_file(tmp_path, make_session, cli):
    task_dir = tmp_path / "mytasks"
    task_dir.mkdir()
    text = (REPO / "tasks" / "sample.yaml").read_text(encoding="utf-8").replace("name: sample", "name: my_sample")
    (task_dir / "my_sample.yaml").write_text(text, encoding="utf-8")
    session = make_session(task_dirs=[task_dir])
    assert "my_sample" in session.catalogue.names("task")
    (task_dir / "broken.yaml").write_text("name: broken\nlabels: [{value: 0, word: a}]\nprompts: {p: '{text_a}'}\n"
                                          "generator: {function: x:y}\n", encoding="utf-8")
    code, _, err = cli("tasks", "--task-dir", str(task_dir))
    assert code == 2 and "broken.yaml" in err and "at least two labels" in err


def test_tasks_command_lists_sizes_where_data_is_at_hand(cli, tmp_path, session):
    write_task(session.get("task", "lcqmc"), tmp_path)
    code, out, _ = cli("tasks", "--json", "--data-dir", str(tmp_path))
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and sorted(rows) == BUILTIN
    assert rows["sample"]["sizes"] == {"train": 6000, "validation": 300, "test": 300} and rows["sample"]["synthetic"]
    assert rows["lcqmc"]["sizes"] == FIXTURE_SIZES
    assert rows["bq"]["sizes"] == {}  # no files, no network: not at hand
    assert rows["tnews"]["eval_split"] == "validation" and len(rows["tnews"]["labels"]) == 15
    assert rows["sample-ner"]["sizes"] == {"train": 1500, "validation": 200, "test": 300}
    assert rows["sample-ner"]["kind"] == "tokens" and rows["msra-ner"]["sizes"] == {}
    code, out, _ = cli("tasks")
    assert "sample (synthetic)" in out and "evaluated on the dev" in out


def test_export_runs_under_lm_eval_cli(cli, tmp_path, session):
    data = tmp_path / "data"
    write_task(session.get("task", "lcqmc"), data)
    out_dir = tmp_path / "lm_eval_tasks"
    code, out, err = cli("export-lm-eval", "--tasks", "lcqmc", "--out", str(out_dir), "--data-dir", str(data))
    assert code == 0, err
    task = session.get("task", "lcqmc")
    from stmbench.core.session import Session

    local = Session(session.settings.__class__(**{**session.settings.__dict__, "data_dir": data}))
    model_dir = local.catalogue.backbone_for("tiny-llama").checkpoint(task, local.context)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir}",
                           "--include_path", str(out_dir), "--tasks", "stmbench_lcqmc", "--device", "cpu",
                           "--batch_size", "8"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stmbench_lcqmc" in proc.stdout and "acc" in proc.stdout


def test_sample_long_is_synthetic_balanced_long_and_disjoint(session):
    task = session.get("task", "sample-long")
    assert task.synthetic and "SYNTHETIC" in task.description
    splits = {s: session.task_data(task, s).dataset for s in ("train", "validation", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 600, "validation": 100, "test": 200}
    texts = {s: set(d["text_a"]) for s, d in splits.items()}
    assert not (texts["train"] & texts["test"]) and not (texts["validation"] & texts["test"])
    test = splits["test"]
    assert sum(1 for v in test["label"] if v == 1) == 100  # balanced
    lengths = sorted(len(t) for t in test["text_a"])
    assert lengths[0] >= 100 and lengths[-1] >= 1000  # long inputs: hundreds to over a thousand characters
