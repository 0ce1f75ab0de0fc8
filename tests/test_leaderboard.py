"""The leaderboard: aggregation, significance marks, figures, determinism, escaping, and the page
driven in headless Chromium (Debian's ``chromium``, which ``.ci/run`` installs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from stmbench.report import leaderboard
from stmbench.store.results import ResultStore
from stmbench.report.significance import compare, mcnemar_exact
from tests.conftest import REPO

GOLD = [i % 2 for i in range(100)]


def predictions(correct: list[bool]) -> list[int]:
    return [g if ok else 1 - g for g, ok in zip(GOLD, correct)]


#: the aliases tests give their fake runs -> the run ids they get (the hash of their spec, as stored results must have)
IDS: dict[str, str] = {}


def macro_f1(gold: list[int], predicted: list[int]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, predicted, labels=[0, 1], average="macro", zero_division=0))


def add(store: ResultStore, *, run_id: str, correct: list[bool], backbone="bb", strategy="generative", adapter="lora",
        task="t1", seed=1, train_size="full", train_examples=1000, eval_split="test", synthetic=False,
        finished="2026-01-02T03:04:05+00:00", f1=None, labels=None, data=None, extra=None):
    """Store a fake run whose numbers agree with its predictions; ``run_id`` is an alias (see :data:`IDS`):
    the stored id is the hash of the spec, as ``stmbench`` checks."""
    from stmbench.spec.run import RunSpec

    acc = sum(correct) / len(correct)
    spec = {"backbone": backbone, "task": task, "strategy": strategy, "adapter": adapter, "prompt": "concise",
            "train_size": train_size, "seed": seed, "shots": None, "training": {"learning_rate": 1e-4},
            "adapter_options": {}, "strategy_options": {}, "skip_bad_rows": False, **(extra or {})}
    real = RunSpec.from_dict(spec).run_id
    IDS[run_id] = real
    result = {
        "run_id": real, "status": "ok", "finished_at": finished, "spec": spec,
        "metrics": {"accuracy": acc, "macro_f1": macro_f1(GOLD, predictions(correct)) if f1 is None else f1},
        "task_info": {"synthetic": synthetic, "eval_split": eval_split},
        "counts": {"train_examples": train_examples}, "parameters": {"trainable": 10, "total": 1000},
        "times": {"train_seconds": 2.0, "tokens_per_second": 500.0}, "peak_memory_mb": 100.0,
        "device": {"type": "cpu", "name": "x86_64", "cpus": 2}, "versions": {"stmbench": "0.1.0"},
    }
    if labels:
        result["labels"] = labels
    if data:
        result["data"] = data
    store.write(result, {"run_id": real, "gold": GOLD, "predicted": predictions(correct)})
    return result


def pattern(n_correct: int, offset: int = 0) -> list[bool]:
    return [((i + offset) % 100) < n_correct for i in range(100)]


@pytest.fixture
def board_dir(tmp_path):
    """Three rows on two tasks, two seeds: A best, B close to A (tied), C far behind."""
    store = ResultStore(tmp_path / "results")
    for seed in (1, 2):
        add(store, run_id=f"a{seed}", correct=pattern(90), strategy="generative", seed=seed)
        add(store, run_id=f"b{seed}", correct=pattern(88), strategy="discriminative", seed=seed)
        add(store, run_id=f"c{seed}", correct=pattern(60 + seed), strategy="cot", seed=seed)
        add(store, run_id=f"d{seed}", correct=pattern(70), strategy="generative", task="t2", eval_split="validation",
            seed=seed)
        add(store, run_id=f"e{seed}", correct=pattern(80), strategy="cot", task="t2", eval_split="validation", seed=seed)
    return tmp_path


def test_mcnemar_exact_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar_exact(3, 5) == pytest.approx(0.7265625)


def test_compare_pairs_examples_per_common_seed():
    a = {1: (GOLD, predictions(pattern(90))), 2: (GOLD, predictions(pattern(90)))}
    b = {2: (GOLD, predictions(pattern(80))), 3: (GOLD, predictions(pattern(50)))}
    result = compare(a, b)
    assert (result.seeds, result.pairs, result.only_a, result.only_b) == (1, 100, 10, 0)
    assert compare(a, {5: (GOLD, GOLD)}) is None
    assert compare(a, {1: (GOLD[::-1], GOLD)}) is None  # other examples: not paired


def test_rows_cells_average_and_marks(board_dir):
    store = ResultStore(board_dir / "results")
    board = leaderboard.build(store.load_all(), store)
    assert board.tasks == ["t1", "t2"]
    rows = {r.key["strategy"]: r for r in board.rows}
    assert rows["generative"].cells["t1"].text() == "90.0 ± 0.0 (2)"
    assert rows["cot"].cells["t1"].text() == "61.5 ± 0.7 (2)"
    assert rows["generative"].average(board.tasks) == pytest.approx((0.9 + 0.7) / 2)
    assert rows["discriminative"].average(board.tasks) is None  # no t2: no average
    assert rows["generative"].cells["t1"].mark == "best"
    assert rows["discriminative"].cells["t1"].mark == "tied"  # 88 vs 90: 4 vs 0 discordant over 2 seeds
    assert rows["discriminative"].cells["t1"].p_value == pytest.approx(mcnemar_exact(4, 0))
    assert rows["cot"].cells["t1"].mark == ""  # far behind
    assert rows["cot"].cells["t2"].mark == "best" and rows["generative"].cells["t2"].mark == ""
    assert board.meta["dev_tasks"] == ["t2"]


def test_markdown_has_marks_dev_note_costs_links_and_metric_on_demand(board_dir):
    board, paths = leaderboard.generate(board_dir / "results", board_dir / "lb")
    text = (board_dir / "lb" / "README.md").read_text(encoding="utf-8")
    assert "| t1 " in text and "t2 †" in text and "evaluated on the dev split" in text
    assert "**90.0 ± 0.0 (2)**" in text and "88.0 ± 0.0 (2) ≈" in text
    assert "10 (1.00%)" in text and "2.0 s" in text and "500" in text and "100 MiB" in text
    a1 = IDS["a1"]
    assert f"(results/{a1}.json)" in text
    assert (board_dir / "lb" / "results" / f"{a1}.json").exists()
    assert (board_dir / "lb" / "results" / f"{a1}.predictions.json").exists()
    f1 = leaderboard.render_markdown(board, "macro_f1")
    assert f"{100 * macro_f1(GOLD, predictions(pattern(90))):.1f} ± 0.0 (2)" in f1 and "macro-F1 in %" in f1


def test_output_is_byte_identical_and_regenerates_from_its_own_copy(board_dir):
    leaderboard.generate(board_dir / "results", board_dir / "one")
    leaderboard.generate(board_dir / "results", board_dir / "two")
    leaderboard.generate(board_dir / "one" / "results", board_dir / "one")  # from the copy, in place
    names = sorted(p.name for p in (board_dir / "one").iterdir() if p.is_file())
    assert names == sorted(p.name for p in (board_dir / "two").iterdir() if p.is_file())
    for name in names:
        assert (board_dir / "one" / name).read_bytes() == (board_dir / "two" / name).read_bytes(), name
    assert "2026-01-02T03:04:05+00:00" in (board_dir / "one" / "README.md").read_text(encoding="utf-8")


def test_train_size_curve_and_strategy_bars(tmp_path):
    store = ResultStore(tmp_path / "results")
    for size, n_ok, n_ok2 in ((100, 60, 55), (1000, 75, 70), ("full", 90, 80)):
        examples = 5000 if size == "full" else size
        add(store, run_id=f"g{size}", correct=pattern(n_ok), strategy="generative", train_size=size,
            train_examples=examples)
        add(store, run_id=f"d{size}", correct=pattern(n_ok2), strategy="discriminative", train_size=size,
            train_examples=examples)
    board, _ = leaderboard.generate(tmp_path / "results", tmp_path / "lb")
    assert sorted(board.figures) == ["findings-effects.svg", "findings-train-size.svg", "strategies-t1-bb.svg",
                                     "train-size-t1-bb.svg"]
    svg = (tmp_path / "lb" / "train-size-t1-bb.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "generative" in svg and "discriminative" in svg
    text = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert "![train-size-t1-bb](train-size-t1-bb.svg)" in text
    html = (tmp_path / "lb" / "index.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 4 and "http" not in html.replace("http://www.w3.org", "")  # nothing fetched


XSS = "<script>window.__xss=1</script>"
QUOTE = "\"><img src=x onerror=\"window.__xss=2\">'"


def test_strings_from_results_are_escaped(tmp_path):
    store = ResultStore(tmp_path / "results")
    add(store, run_id="x1", correct=pattern(70), backbone=XSS, strategy=QUOTE, task="t<i>1</i>",
        labels={"strategy": QUOTE, "adapter": "a'b\"c"})
    leaderboard.generate(tmp_path / "results", tmp_path / "lb")
    html = (tmp_path / "lb" / "index.html").read_text(encoding="utf-8")
    assert XSS not in html and "<img src=x" not in html and "<i>1</i>" not in html
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html


# --- the page in a real browser -------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    path = _chromium()
    if path is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("dialog", lambda d: (page.errors.append("dialog: " + d.message), d.dismiss()))
        yield page
        browser.close()


def visible_rows(page) -> list[list[str]]:
    return [row.inner_text().split("\t") for row in page.locator("#board tbody tr:not([hidden])").all()]


@pytest.mark.browser
def test_page_sorts_filters_and_toggles_in_chromium(board_dir, page):
    leaderboard.generate(board_dir / "results", board_dir / "lb")
    page.goto((board_dir / "lb" / "index.html").as_uri())
    assert page.locator("#count").inner_text() == "3 of 3 rows"
    page.click("th:text-is('t1')")  # metric columns sort descending first
    assert [r[2] for r in visible_rows(page)] == ["generative", "discriminative", "cot"]
    page.click("th:text-is('t1')")
    assert [r[2] for r in visible_rows(page)] == ["cot", "discriminative", "generative"]
    assert page.locator("th:text-is('t1')").get_attribute("aria-sort") == "ascending"
    page.click("th:text-is('strategy')")  # text columns sort ascending first
    assert [r[2] for r in visible_rows(page)] == ["cot", "discriminative", "generative"]
    page.select_option("#filter-strategy", "cot")
    rows = visible_rows(page)
    assert len(rows) == 1 and rows[0][2] == "cot" and page.locator("#count").inner_text() == "1 of 3 rows"
    page.select_option("#filter-strategy", "")
    page.select_option("#filter-task", "t2")  # rows without t2 go, other task columns hide
    assert sorted(r[2] for r in visible_rows(page)) == ["cot", "generative"]
    assert page.locator("th:text-is('t1')").is_hidden() and page.locator("th:text-is('t2 †')").is_visible()
    cell = page.locator("#board tbody tr:not([hidden]) td.metric.best").first
    assert cell.inner_text() == "80.0 ± 0.0 (2)"
    page.select_option("#metric", "f1")
    assert cell.inner_text() == f"{100 * macro_f1(GOLD, predictions(pattern(80))):.1f} ± 0.0 (2)"
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: the table scrolls, the page does not
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    assert page.errors == []


@pytest.mark.browser
def test_nothing_from_results_executes_in_chromium(tmp_path, page):
    store = ResultStore(tmp_path / "results")
    add(store, run_id="x1", correct=pattern(70), backbone=XSS, strategy=QUOTE, labels={"strategy": QUOTE})
    add(store, run_id="x2", correct=pattern(60), backbone=XSS, strategy="plain", train_size=10, train_examples=10)
    add(store, run_id="x3", correct=pattern(65), backbone=XSS, strategy=QUOTE, labels={"strategy": QUOTE},
        train_size=10, train_examples=10)
    leaderboard.generate(tmp_path / "results", tmp_path / "lb")
    page.goto((tmp_path / "lb" / "index.html").as_uri())
    page.select_option("#filter-strategy", QUOTE)
    page.click("th:text-is('backbone')")
    assert page.evaluate("window.__xss") is None
    assert page.locator("img").count() == 0  # the injected <img> never became an element
    assert XSS in page.locator("#board tbody tr:not([hidden])").first.inner_text()
    assert page.locator("#count").inner_text() == "2 of 3 rows"
    assert page.errors == []


def test_committed_leaderboard_regenerates_byte_identically(tmp_path):
    committed = REPO / "leaderboard"
    if not (committed / "results").is_dir():
        pytest.fail("leaderboard/results/ is missing: the committed leaderboard cannot be verified")
    leaderboard.generate(committed / "results", tmp_path)
    for path in committed.iterdir():
        if path.is_file() and path.name != leaderboard.SOURCE_FILE:  # that names the folder it was built from
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    results = [json.loads(p.read_text(encoding="utf-8")) for p in (committed / "results").glob("*[0-9a-f].json")]
    assert len(results) == 8 and all(r["task_info"]["synthetic"] for r in results)
    assert os.path.exists(committed / "index.html")
