"""Hostile input, tried as an attacker would: results, predictions, task and grid files mutated from
genuine ones (the committed leaderboard's results of the embedded default), each case asserting the
safe outcome (nothing read out, run, destroyed, forged, hung or lost), never a message's wording."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from stmbench.report import leaderboard
from stmbench.common.errors import StmbenchError
from stmbench.report.evidence import ResultSet
from stmbench.spec.run import RunSpec
from tests.conftest import REPO

GENUINE = REPO / "leaderboard" / "results"
SECRET = "TOP-SECRET-4f1c"


@contextmanager
def deadline(seconds: int = 20):
    """Fail instead of hanging (a FIFO read blocks forever)."""
    def boom(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def genuine(tmp_path: Path) -> Path:
    """A copy of the genuine results (the committed ones, or this machine's after the README's run)."""
    folder = tmp_path / "genuine"
    shutil.copytree(GENUINE, folder)
    return folder


def genuine_ids() -> list[str]:
    return sorted(p.name[:-5] for p in GENUINE.glob("*[0-9a-f].json"))


def load(run_id: str) -> tuple[dict, dict]:
    return (json.loads((GENUINE / f"{run_id}.json").read_text(encoding="utf-8")),
            json.loads((GENUINE / f"{run_id}.predictions.json").read_text(encoding="utf-8")))


def forged(new_seed: int = 7, **changes) -> tuple[dict, dict]:
    """A result of a genuine run moved to another seed: a new, self-consistent identity."""
    result, preds = load(genuine_ids()[0])
    result = copy.deepcopy(result)
    result["spec"]["seed"] = result["seed"] = new_seed
    result["run_id"] = preds["run_id"] = RunSpec.from_dict(result["spec"]).run_id
    for key, value in changes.items():
        target = result
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return result, preds


def put(folder: Path, result: dict | str | bytes, preds: dict | None = None, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"{result['run_id']}.json"
    path = folder / name
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        path.write_text(result if isinstance(result, str) else json.dumps(result), encoding="utf-8")
    if preds is not None:
        (folder / name.replace(".json", ".predictions.json")).write_text(json.dumps(preds), encoding="utf-8")
    return path


def build(tmp_path: Path, *folders: Path, **kw):
    out = tmp_path / "board"
    board, _ = leaderboard.generate([*folders], out, **kw)
    return board, out


def refused_names(board) -> set[str]:
    return {os.path.basename(path) for path, _ in board.meta.get("refused", [])}


def published(out: Path) -> set[str]:
    return {p.name for p in (out / "results").iterdir()}


def assert_only_genuine(out: Path, extra: set[str] = frozenset()) -> None:
    allowed = {f"{i}.json" for i in genuine_ids()} | {f"{i}.predictions.json" for i in genuine_ids()} | set(extra)
    assert published(out) <= allowed, published(out) - allowed
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path


# --- reading files out -------------------------------------------------------------------------

def test_a_run_id_that_walks_out_of_its_folder_is_refused_and_nothing_is_copied(tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "creds.json").write_text(json.dumps({"key": SECRET}), encoding="utf-8")
    result, preds = forged()
    result["run_id"] = "../../private/creds"
    put(tmp_path / "hostile", result, name="creds.json")
    board, out = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert "creds.json" in refused_names(board)
    assert_only_genuine(out)


def test_a_predictions_file_that_is_a_symlink_is_not_followed(tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET, encoding="utf-8")
    folder = genuine(tmp_path)
    victim = genuine_ids()[0]
    (folder / f"{victim}.predictions.json").unlink()
    (folder / f"{victim}.predictions.json").symlink_to(tmp_path / "secret.txt")
    board, out = build(tmp_path, folder)
    assert f"{victim}.json" in refused_names(board)
    assert victim not in {r.run_id for row in board.rows for r in row.results}
    assert_only_genuine(out)


def test_a_result_file_that_is_a_symlink_out_is_not_followed(tmp_path):
    result, preds = forged()
    (tmp_path / "elsewhere").mkdir()
    put(tmp_path / "elsewhere", result, preds)
    (tmp_path / "hostile").mkdir()
    (tmp_path / "hostile" / f"{result['run_id']}.json").symlink_to(tmp_path / "elsewhere" / f"{result['run_id']}.json")
    board, out = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert f"{result['run_id']}.json" in refused_names(board)
    assert_only_genuine(out)


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "sub/../../x.tsv"])
def test_a_task_file_naming_data_outside_its_folder_is_refused_before_reading(tmp_path, name):
    from stmbench.tasks.task import Task

    config = yaml_task(local={"format": "tsv", "files": {"test": name}, "fields": {"text_a": 0, "text_b": 1, "label": 2}})
    with pytest.raises(StmbenchError) as err:
        Task(config).load("test", data_dir=tmp_path)
    assert SECRET not in str(err.value)


def test_a_data_file_that_is_a_symlink_out_of_the_data_folder_is_refused_and_not_printed(tmp_path):
    from stmbench.tasks.task import Task

    (tmp_path / "secret.tsv").write_text(f"{SECRET}\n", encoding="utf-8")
    (tmp_path / "data" / "evil").mkdir(parents=True)
    (tmp_path / "data" / "evil" / "test.tsv").symlink_to(tmp_path / "secret.tsv")
    config = yaml_task(name="evil", local={"format": "tsv", "files": {"test": "test.tsv"},
                                           "fields": {"text_a": 0, "text_b": 1, "label": 2}})
    with pytest.raises(StmbenchError) as err:
        Task(config).load("test", data_dir=tmp_path / "data")
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("name", ["../up", "a/b", "/abs", ".hidden", ""])
def test_a_task_name_that_is_not_a_plain_folder_name_is_refused(name):
    from stmbench.tasks.task import Task

    with pytest.raises(StmbenchError):
        Task(yaml_task(name=name))


def yaml_task(name: str = "hostile", **source) -> dict:
    config = {"name": name, "labels": [{"value": "0", "word": "否"}, {"value": "1", "word": "是"}],
              "prompts": {"concise": "{text_a} {text_b}"}}
    config.update(source or {"generator": {"name": "sample", "train": 20, "validation": 10, "test": 10}})
    return config


def test_a_task_file_that_is_a_symlink_out_of_its_task_folder_is_refused(tmp_path):
    from stmbench.tasks.task import load_task_dir

    (tmp_path / "outside.yaml").write_text("name: outside\n", encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(StmbenchError):
        load_task_dir(tmp_path / "tasks")


# --- running code, destroying files ----------------------------------------------------------------

def test_a_task_generator_naming_arbitrary_code_is_never_called(tmp_path, session):
    from stmbench.tasks.task import Task

    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    task = Task(yaml_task(generator={"function": "logging:basicConfig", "filename": str(victim), "filemode": "w",
                                     "force": True}))
    with pytest.raises(StmbenchError):
        task.load("test", generators=[e.obj for e in session.catalogue.entries["generator"].values()])
    assert victim.read_text(encoding="utf-8") == "precious"


def test_a_generator_option_that_would_exhaust_memory_is_refused(session):
    from stmbench.tasks.task import Task

    task = Task(yaml_task(generator={"name": "sample", "train": 10 ** 12}))
    with pytest.raises(StmbenchError):
        session.task_data(task, "train")


def test_out_on_a_foreign_folder_is_refused_without_force_and_nothing_is_touched(tmp_path, cli):
    user = tmp_path / "mine"
    user.mkdir()
    files = {"README.md": "my readme", "index.html": "<p>mine</p>", "notes.txt": "keep me"}
    for name, text in files.items():
        (user / name).write_text(text, encoding="utf-8")
    code, _, err = cli("leaderboard", "--results-dir", str(genuine(tmp_path)), "--out", str(user))
    assert code == 2 and "Traceback" not in err
    assert {p.name: p.read_text(encoding="utf-8") for p in user.iterdir()} == files
    code, _, err = cli("leaderboard", "--results-dir", str(tmp_path / "genuine"), "--out", str(user), "--force")
    assert code == 2  # even --force never replaces a file stmbench did not write
    assert {p.name: p.read_text(encoding="utf-8") for p in user.iterdir() if p.is_file()} == files


def test_force_on_a_foreign_folder_keeps_every_file_of_the_user(tmp_path, cli):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me", encoding="utf-8")
    assert cli("leaderboard", "--results-dir", str(genuine(tmp_path)), "--out", str(user), "--force")[0] == 0
    assert (user / "notes.txt").read_text(encoding="utf-8") == "keep me" and (user / "README.md").is_file()
    (user / "later.txt").write_text("mine too", encoding="utf-8")
    assert cli("leaderboard", "--results-dir", str(tmp_path / "genuine"), "--out", str(user))[0] == 0
    assert (user / "later.txt").read_text(encoding="utf-8") == "mine too"  # a rebuild removes only its own files


def test_out_as_the_parent_of_the_input_folder_never_writes_or_deletes_inputs(tmp_path):
    folder = genuine(tmp_path)
    (folder / "notes.json").write_text("{}", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    leaderboard.generate(folder, tmp_path, force=True)  # --out is the folder that holds the input
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(StmbenchError):
        leaderboard.generate([folder, tmp_path / "genuine"], folder / "inside")  # inside an input
    parent = tmp_path / "p"
    shutil.copytree(folder, parent / "results")
    with pytest.raises(StmbenchError):  # its results/ would be written while it is one input among others
        leaderboard.generate([folder, parent / "results"], parent, force=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert {p.name: p.read_bytes() for p in (parent / "results").iterdir()} == before


# --- forged numbers ------------------------------------------------------------------------------

CHANGES = [
    {"metrics.accuracy": 0.99}, {"metrics.accuracy": True}, {"metrics.accuracy": -5},
    {"metrics.macro_f1": 1e308}, {"metrics.accuracy": "0.99"}, {"metrics.accuracy": 1.5},
    {"counts.train_examples": -1}, {"parameters.trainable": "many"}, {"seed": 3},
    {"spec.seed": "abc"}, {"spec": {}}, {"status": "ok!"}, {"peak_memory_mb": -1.0},
    {"health.flags": "degenerate"}, {"times.train_seconds": -3},
]


@pytest.mark.parametrize("change", CHANGES, ids=[f"{k}={v!r}" for c in CHANGES for k, v in c.items()])
def test_a_result_with_a_forged_or_ill_typed_field_is_refused_and_the_build_goes_on(tmp_path, change):
    result, preds = forged(**change)
    if "spec.seed" in change or "spec" in change:  # keep its file name, as a forger would
        result["run_id"] = preds["run_id"] = forged()[0]["run_id"]
    put(tmp_path / "hostile", result, preds)
    board, out = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert refused_names(board) == {f"{result['run_id']}.json"}
    assert len([r for row in board.rows for r in row.results]) == len(genuine_ids())
    assert_only_genuine(out)
    best = max(board.rows, key=lambda r: r.cells["sample"].mean())
    genuine_best = max(load(run_id)[0]["metrics"]["accuracy"] for run_id in genuine_ids())
    assert best.cells["sample"].mark == "best" and best.cells["sample"].mean() == genuine_best


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_that_are_not_finite_are_refused(tmp_path, value):
    import re

    result, preds = forged()
    raw = re.sub(r'"accuracy": [0-9.e-]+', f'"accuracy": {value}', json.dumps(result), count=1)
    put(tmp_path / "hostile", raw, preds, name=f"{result['run_id']}.json")
    board, out = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert refused_names(board) == {f"{result['run_id']}.json"}
    assert_only_genuine(out)


def test_a_file_named_for_one_run_holding_another_is_refused_and_the_genuine_result_stays(tmp_path):
    victim = genuine_ids()[0]
    result, preds = load(victim)
    fake = copy.deepcopy(result)
    fake["metrics"]["accuracy"] = 0.99
    put(tmp_path / "hostile", fake, preds, name="0000000000000000.json")
    board, _ = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert "0000000000000000.json" in refused_names(board)
    shown = {r.run_id: r for row in board.rows for r in row.results}
    assert shown[victim].accuracy == result["metrics"]["accuracy"]


def test_a_made_up_id_cannot_add_a_seed_to_someone_elses_cell(tmp_path):
    result, preds = forged()
    result["run_id"] = preds["run_id"] = "0123456789abcdef"
    put(tmp_path / "hostile", result, preds)
    board, _ = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert "0123456789abcdef.json" in refused_names(board)
    assert all(cell.n == 1 for row in board.rows for cell in row.cells.values())


def test_a_forged_accuracy_is_refused_naming_both_numbers(tmp_path, cli):
    result, preds = forged(**{"metrics.accuracy": 0.99})
    put(tmp_path / "hostile", result, preds)
    code, out, _ = cli("results", "verify", str(genuine(tmp_path)), str(tmp_path / "hostile"))
    line = next(x for x in out.splitlines() if result["run_id"] in x)
    true_accuracy = load(genuine_ids()[0])[0]["metrics"]["accuracy"]  # the predictions are that run's
    assert code == 1 and line.startswith("refused") and "99.0" in line and f"{100 * true_accuracy:.1f}" in line
    assert out.count("verified ") == len(genuine_ids())


def test_gold_labels_that_differ_from_the_maintainers_data_are_refused(tmp_path, cli):
    result, preds = forged()
    preds["gold"] = [1 - g for g in preds["gold"]]
    preds["predicted"] = [1 - p for p in preds["predicted"]]  # accuracy stays: only the data check finds it
    put(tmp_path / "hostile", result, preds)
    code, out, _ = cli("results", "verify", str(tmp_path / "hostile"))
    assert code == 1 and out.startswith("refused")
    board, _ = build(tmp_path, tmp_path / "hostile")  # without the data at hand: accepted on its own evidence
    assert not refused_names(board)


@pytest.mark.parametrize("preds", [7, {"gold": [0, 1], "predicted": [0]}, {"gold": "01", "predicted": "01"},
                                   {"gold": [0.5], "predicted": [1]}, "other-run"])
def test_predictions_that_are_not_predictions_of_this_run_are_refused(tmp_path, preds):
    result, genuine_preds = forged()
    if preds == "other-run":
        preds = {**genuine_preds, "run_id": genuine_ids()[1]}
    elif isinstance(preds, dict):
        preds = {**preds, "run_id": result["run_id"]}
    put(tmp_path / "hostile", result, preds)
    board, _ = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert refused_names(board) == {f"{result['run_id']}.json"}


def test_a_predictions_file_that_is_a_folder_leaves_a_complete_board(tmp_path):
    result, _ = forged()
    put(tmp_path / "hostile", result)
    (tmp_path / "hostile" / f"{result['run_id']}.predictions.json").mkdir()
    board, out = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert refused_names(board) == {f"{result['run_id']}.json"}
    assert (out / "README.md").is_file() and (out / "index.html").is_file()


def test_different_predictions_for_the_same_result_are_a_conflict(tmp_path):
    first = genuine(tmp_path)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    victim = genuine_ids()[0]
    preds = json.loads((second / f"{victim}.predictions.json").read_text(encoding="utf-8"))
    first_pair = (preds["gold"][0], preds["predicted"][0])
    wrong = next(i for i, (g, p) in enumerate(zip(preds["gold"], preds["predicted"])) if g != p and (g, p) != first_pair)
    for key in ("gold", "predicted"):  # two examples swap places: every metric stays, the evidence differs
        preds[key][0], preds[key][wrong] = preds[key][wrong], preds[key][0]
    (second / f"{victim}.predictions.json").write_text(json.dumps(preds), encoding="utf-8")
    merged = ResultSet([first, second])
    assert [c[0] for c in merged.conflicts] == [victim]


def test_a_result_without_predictions_is_unverified_and_never_marked_unless_trusted(tmp_path):
    result, _ = forged(**{"metrics.accuracy": 0.95, "metrics.macro_f1": 0.95, "spec.train_size": 999})
    result["run_id"] = RunSpec.from_dict(result["spec"]).run_id
    put(tmp_path / "hostile", result)
    folder = genuine(tmp_path)
    board, _ = build(tmp_path, folder, tmp_path / "hostile")
    row = next(r for r in board.rows if r.key["train_size"] == "999")
    assert row.cells["sample"].mark == "" and "unverified" in row.cells["sample"].flag_text()
    assert any(r.cells["sample"].mark == "best" for r in board.rows if r is not row)
    board, _ = build(tmp_path, folder, tmp_path / "hostile", trust_unverified=True)
    assert next(r for r in board.rows if r.key["train_size"] == "999").cells["sample"].mark == "best"


# --- injection into markdown, HTML and terminals -------------------------------------------------

INJECTIONS = ['<img src=x onerror=alert(1)>', 'x | 99.9 |\n| evil | 100.0 |', '\x1b[31mred\x1b[0m\x07',
              '[click](javascript:alert(1))', '\u202eevil\u202c', '**bold** `code`', '$\\frac{1}{$', '$x^$']


@pytest.mark.parametrize("name", INJECTIONS, ids=["html", "table-row", "escape-codes", "js-link", "bidi", "emphasis",
                                                   "mathtext-frac", "mathtext-sup"])
def test_names_from_a_result_reach_markdown_html_and_the_terminal_escaped(tmp_path, name, cli):
    result, preds = forged(**{"spec.backbone": name, "labels.strategy": name})
    result["run_id"] = preds["run_id"] = RunSpec.from_dict(result["spec"]).run_id
    put(tmp_path / "hostile", result, preds)
    board, out = build(tmp_path, tmp_path / "hostile")
    assert not refused_names(board)
    readme, page = (out / "README.md").read_text(encoding="utf-8"), (out / "index.html").read_text(encoding="utf-8")
    for text in (readme, page):
        assert "<img" not in text and "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        assert 'href="javascript:' not in text
    assert "[click](javascript:" not in readme  # a live markdown link (on the page it is plain, escaped text)
    assert "\n| evil | 100.0" not in readme and "**bold**" not in readme and "`code`" not in readme
    code, listed, _ = cli("results", "--results-dir", str(tmp_path / "hostile"))
    assert code == 0 and "\x1b" not in listed and "\u202e" not in listed and "\x07" not in listed
    code, shown, _ = cli("results", "show", result["run_id"][:8], "--results-dir", str(tmp_path / "hostile"))
    assert code == 0 and "\x1b" not in shown and "\u202e" not in shown


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<b>x</b>", "http://x\" onmouseover=\"a", "ftp://x"])
def test_a_reference_url_that_is_not_http_is_refused(url):
    from stmbench.tasks.task import Task

    with pytest.raises(StmbenchError):
        Task(yaml_task(references=[{"model": "m", "value": 80, "citation": "c", "url": url}]) | {
            "generator": {"name": "sample"}})


# --- denial of service and loss --------------------------------------------------------------------

def test_a_fifo_named_like_a_result_never_hangs_the_build(tmp_path, cli):
    folder = genuine(tmp_path)
    os.mkfifo(folder / "0000000000000001.json")
    victim = genuine_ids()[1]
    (folder / f"{victim}.predictions.json").unlink()
    os.mkfifo(folder / f"{victim}.predictions.json")
    with deadline():
        board, _ = build(tmp_path, folder)
        code, out, _ = cli("results", "--results-dir", str(folder))
        verify, _, _ = cli("results", "verify", str(folder))
    assert refused_names(board) == {"0000000000000001.json", f"{victim}.json"} and code == 0 and verify == 1


def test_a_fifo_as_task_data_never_hangs(tmp_path):
    from stmbench.tasks.task import Task

    (tmp_path / "data" / "fifo").mkdir(parents=True)
    os.mkfifo(tmp_path / "data" / "fifo" / "test.tsv")
    config = yaml_task(name="fifo", local={"format": "tsv", "files": {"test": "test.tsv"},
                                           "fields": {"text_a": 0, "text_b": 1, "label": 2}})
    with deadline(), pytest.raises(StmbenchError):
        Task(config).load("test", data_dir=tmp_path / "data")


@pytest.mark.parametrize("kind", ["deep", "huge", "not-utf8"])
def test_oversized_deep_or_undecodable_results_are_refused(tmp_path, kind):
    result, preds = forged()
    if kind == "deep":
        raw = json.dumps(result)[:-1] + ', "deep": ' + "[" * 10_000 + "]" * 10_000 + "}"
    elif kind == "huge":
        raw = json.dumps({**result, "traceback": "x" * (5 * 1024 * 1024)})
    else:
        raw = json.dumps(result).encode("utf-8").replace(b'"sample"', b'"\xff\xfe"', 1)
    put(tmp_path / "hostile", raw if isinstance(raw, bytes) else raw, preds, name=f"{result['run_id']}.json")
    with deadline():
        board, _ = build(tmp_path, genuine(tmp_path), tmp_path / "hostile")
    assert refused_names(board) == {f"{result['run_id']}.json"}


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_bomb_in_a_task_file_is_refused_at_once(tmp_path):
    from stmbench.tasks.task import load_task_file

    (tmp_path / "bomb.yaml").write_text(BOMB + "name: bomb\n", encoding="utf-8")
    with deadline(10), pytest.raises(StmbenchError):
        load_task_file(tmp_path / "bomb.yaml")


def test_a_yaml_bomb_or_deep_nesting_in_a_grid_file_is_refused_at_once(tmp_path):
    from stmbench.spec.grid_spec import GridSpec

    (tmp_path / "bomb.yaml").write_text(BOMB, encoding="utf-8")
    (tmp_path / "deep.yaml").write_text("seeds: " + "[" * 5000 + "1" + "]" * 5000 + "\n", encoding="utf-8")
    for name in ("bomb.yaml", "deep.yaml"):
        with deadline(10), pytest.raises(StmbenchError):
            GridSpec.from_yaml(tmp_path / name)


@pytest.mark.parametrize("template", ["{text_a:>2000000000}{text_b}", "{text_a:{text_b}}", "{text_a.__class__}{text_b}",
                                      "{text_a[0]}{text_b}", "{text_a!r:>999999}{text_b}"])
def test_prompt_format_specs_that_could_exhaust_memory_or_reach_attributes_are_refused(template):
    from stmbench.tasks.task import Task

    with pytest.raises(StmbenchError):
        Task(yaml_task() | {"prompts": {"concise": template}})


def test_a_grid_over_the_cap_is_refused_up_front_with_its_count(cli, tmp_path):
    seeds = ",".join(str(i) for i in range(1000))
    with deadline(30):
        code, out, err = cli("run", "--dry-run", "--seeds", seeds, "--train-sizes", ",".join(map(str, range(1, 1001))),
                             "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "4,000,000" in err and "would run" not in out  # 1000 seeds x 1000 sizes x 2 x 2


def test_two_builders_on_one_out_leave_one_complete_board(tmp_path):
    folder = genuine(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for run_id in genuine_ids()[:2]:
        for suffix in (".json", ".predictions.json"):
            shutil.copy(folder / f"{run_id}{suffix}", other / f"{run_id}{suffix}")
    out = tmp_path / "board"
    errors = []

    def builder(source):
        try:
            for _ in range(3):
                leaderboard.generate(source, out, force=True)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=builder, args=(f,)) for f in (folder, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    readme = (out / "README.md").read_text(encoding="utf-8")
    linked = {part.split(")")[0] for part in readme.split("](results/")[1:]}
    assert linked and all((out / "results" / name).is_file() for name in linked)
    record = json.loads((out / ".stmbench-source.json").read_text(encoding="utf-8"))
    assert sorted(record["files"]) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                                             if p.is_file() and p.name != ".stmbench-source.json")


def test_a_full_disk_after_a_run_stores_it_as_failed_and_stops_in_one_line(tmp_path, cli, monkeypatch):
    import errno

    from stmbench.store import results as results_module

    real = results_module.atomic_write_text
    calls = {"n": 0}

    def full(path, text):
        if path.name.endswith(".json") and not path.name.endswith(".predictions.json") and calls["n"] == 0:
            calls["n"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, text)

    monkeypatch.setattr(results_module, "atomic_write_text", full)
    code, out, err = cli("run", "--strategies", "in_context", "--limit", "20", "--results-dir", str(tmp_path / "r"),
                         "--no-leaderboard")
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("stmbench: error:")]
    assert len(lines) == 1 and os.strerror(errno.ENOSPC) in lines[0]
    assert not list((tmp_path / "r").glob("*.predictions.json"))  # no orphan
    [stored] = [json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "r").glob("*[0-9a-f].json")]
    assert stored["status"] == "failed" and os.strerror(errno.ENOSPC) in stored["error"]
    assert not list((tmp_path / "r").glob(".*.tmp")) and not list((tmp_path / "r").glob("*.claim"))


# --- checked even when nothing is left to run, and against the data ------------------------------

def test_an_impossible_device_is_refused_even_when_every_run_is_stored(tmp_path, cli):
    results = tmp_path / "r"
    shutil.copytree(GENUINE, results)
    code, out, _ = cli("run", "--results-dir", str(results), "--dry-run", "--no-leaderboard")
    assert code == 0 and "0 to do" in out  # the embedded default's runs are all stored
    code, out, err = cli("run", "--results-dir", str(results), "--device", "cuda:7", "--no-leaderboard")
    assert code == 2 and "cuda" in err.lower() and "Traceback" not in err


def test_more_shots_than_training_examples_fail_before_any_model_loads(tmp_path, make_session):
    from stmbench.spec.grid_spec import GridSpec
    from stmbench.run.study import run_study
    from stmbench.tasks.task import Task

    task = Task(yaml_task(name="tiny_pairs", generator={"name": "sample", "train": 6, "validation": 4, "test": 4}))
    session = make_session(types_plugin(task))
    grid = GridSpec(tasks=["tiny_pairs"], strategies=["in_context"], adapters=["none"], shots=[8])
    with pytest.raises(StmbenchError, match="8"):
        run_study(grid, session)
    assert not session.settings.results_dir.exists() or not list(session.settings.results_dir.glob("*.json"))


def types_plugin(task):
    import types

    from stmbench import hookimpl

    module = types.ModuleType("hostile_tasks")

    @hookimpl
    def register_tasks(register):
        register(task)

    module.register_tasks = register_tasks
    return module


def test_the_example_hostile_folder_is_refused_file_by_file_and_nothing_leaks(tmp_path, cli):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hostile_folder", REPO / "examples" / "hostile_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(GENUINE, tmp_path / "eve")
    with deadline():
        board, out = build(tmp_path, genuine(tmp_path), tmp_path / "eve")
        code, listed, _ = cli("results", "verify", str(tmp_path / "genuine"), str(tmp_path / "eve"))
    assert len(refused_names(board)) == 10 and code == 1
    assert sum(line.startswith("refused") for line in listed.splitlines()) == 10
    assert_only_genuine(out, extra={n for n in published(out) if n.startswith(tuple(
        r.run_id for row in board.rows for r in row.results))})
    assert "TOP-SECRET" not in "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def test_a_metric_that_cannot_read_the_evidence_costs_its_column_never_the_board(tmp_path, caplog):
    """A third-party metric that raises: a result claiming a value of it is refused (its number cannot
    be re-derived); on results that never stored it, the board drops its column with a warning."""
    from stmbench import Metric
    from stmbench.core.catalogue import default_metrics

    class Fragile(Metric):
        name = "fragile"

        def compute(self, gold, predicted, *, labels):
            raise ValueError("cannot read these labels")

    result, preds = forged(1)
    result["metrics"]["fragile"] = 0.5
    put(tmp_path / "hostile", result, preds)
    metrics = [*default_metrics(), Fragile()]
    board, _ = build(tmp_path, genuine(tmp_path), tmp_path / "hostile", metrics=metrics)
    assert refused_names(board) == {f"{result['run_id']}.json"}
    [reason] = [why for path, why in board.meta["refused"]]
    assert reason.startswith("metrics.fragile cannot be recomputed from its predictions (ValueError")
    assert [m.name for m in board.metrics] == ["macro_f1"]  # no fragile column, the rest stands
    assert sum(len(row.cells) for row in board.rows) == len(genuine_ids())
    assert any("metric fragile could not be computed" in r.getMessage() for r in caplog.records)
