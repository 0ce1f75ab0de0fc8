"""Findings on synthetic result sets built here (offline, no model): paired effects, their wording,
the statistics against scipy called directly, the Dodge estimator, determinism."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from stmbench.report.findings import analyse
from stmbench.report.significance import expected_max, holm, stratified_bootstrap, wilcoxon_p
from stmbench.store.result import RunResult


def run(task: str, seed: int, score: float, *, strategy: str = "generative", adapter: str = "lora",
        prompt: str = "concise", size: str | int = "full", options: dict | None = None, sweep: dict | None = None,
        **extra) -> RunResult:
    training = {"learning_rate": 1e-4, **(sweep or {})}
    spec = {"backbone": "m", "task": task, "strategy": strategy, "adapter": adapter, "prompt": prompt,
            "train_size": size, "seed": seed, "shots": None, "training": training, "adapter_options": {},
            "strategy_options": options or {}, "skip_bad_rows": False, "limit": None, "sweep": sorted(sweep or {})}
    from stmbench.spec.run import RunSpec

    rid = RunSpec.from_dict(spec).run_id  # the hash of the spec, as a stored result's id must be
    return RunResult(run_id=rid, status="ok", spec=spec, labels={"strategy": strategy, "adapter": adapter},
                     seed=seed, metrics={"accuracy": score / 100}, task_info={"primary_metric": "accuracy"}, **extra)


def planted(effect: float, cells: int = 12, seeds: int = 3, noise: float = 1.0, seed: int = 0) -> list[RunResult]:
    """``cells`` cells (4 tasks x prompts x sizes) x ``seeds``: generative = discriminative + effect."""
    rng = random.Random(seed)
    out = []
    combos = [(t, p, s) for t in ("t1", "t2", "t3", "t4") for p in ("concise", "complex") for s in (500, "full")]
    for task, prompt, size in combos[:cells]:
        base = rng.uniform(60, 80)
        for s in range(1, seeds + 1):
            out.append(run(task, s, base + rng.gauss(0, noise), strategy="discriminative", prompt=prompt, size=size))
            out.append(run(task, s, base + effect + rng.gauss(0, noise), strategy="generative", prompt=prompt, size=size))
    return out


def strategy_finding(results, **kw):
    return next(c for c in analyse(results, **kw).comparisons if c.axis == "strategy")


def test_a_planted_effect_is_found_with_the_right_sign():
    c = strategy_finding(planted(5.0, cells=8), only=("strategy", "generative", "discriminative"))
    assert (c.a, c.b, c.cells, c.pairs, c.unpaired) == ("generative", "discriminative", 8, 24, 0)
    assert 3.5 < c.mean < 6.5 and c.ci[0] > 0 and c.ci[1] > c.ci[0]
    assert c.wins == 8 and c.losses == 0 and c.p_improvement > 0.8
    assert c.verdict == "better" and "generative is better" in c.sentence()
    flipped = strategy_finding(planted(5.0, cells=8), only=("strategy", "discriminative", "generative"))
    assert flipped.mean == pytest.approx(-c.mean) and flipped.ci[1] < 0 and flipped.verdict == "worse"


def test_twelve_cells_three_seeds():
    c = strategy_finding(planted(5.0, cells=12))
    assert c.cells == 12 and c.pairs == 36 and c.a == "generative" and c.ci[0] > 0 and c.verdict == "better"


def test_no_effect_is_not_called_better():
    results = []
    for cell, offset in enumerate([1.5, -1.5, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 1.0, -1.0, 2.5, -2.5]):
        for seed in (1, 2, 3):
            base = 60 + cell + seed
            results += [run(f"t{cell % 4}", seed, base, strategy="discriminative", prompt=f"p{cell}"),
                        run(f"t{cell % 4}", seed, base + offset, strategy="generative", prompt=f"p{cell}")]
    c = strategy_finding(results)
    assert c.cells == 12 and c.mean == pytest.approx(0.0, abs=1e-9)
    assert c.ci[0] < 0 < c.ci[1]
    assert c.verdict != "better" and c.verdict != "worse"


def test_equal_scores_are_practically_equivalent():
    rng = random.Random(1)
    results = []
    for cell in range(20):
        base = rng.uniform(60, 80)
        results += [run(f"t{cell}", 1, base, strategy="discriminative"),
                    run(f"t{cell}", 1, base + rng.uniform(-0.2, 0.2), strategy="generative")]
    c = strategy_finding(results)
    assert c.bayes and c.bayes["equivalent"] > 0.95
    assert c.verdict == "practically equivalent" and "practically equivalent" in c.sentence()


def test_cells_with_a_missing_partner_are_left_out_and_counted():
    results = planted(5.0, cells=8)
    # one cell loses its generative runs, another its discriminative runs for seed 2 only
    results = [r for r in results if not (r.spec.task == "t1" and r.spec.prompt == "concise"
                                          and r.spec.train_size == 500 and r.spec.strategy == "generative")]
    results = [r for r in results if not (r.spec.task == "t2" and r.spec.prompt == "concise"
                                          and r.spec.train_size == 500 and r.seed == 2
                                          and r.spec.strategy == "discriminative")]
    c = strategy_finding(results)
    assert c.cells == 7 and c.unpaired == 1 and c.pairs == 7 * 3 - 1


def test_partial_failed_and_diverged_runs_never_enter():
    results = planted(5.0, cells=4)
    extra = [run("t1", 9, 0.0, strategy="generative", partial={"limit": 10, "of": 100}),
             run("t1", 9, 100.0, strategy="discriminative", health={"flags": ["diverged"]}),
             RunResult(run_id="f", status="failed", spec=results[0].spec, error="boom")]
    f = analyse(results + extra)
    assert f.excluded == {"failed": 1, "partial": 1, "diverged": 1}
    assert strategy_finding(results + extra).pairs == strategy_finding(results).pairs


def test_option_axes_are_compared_within_their_strategy():
    results = []
    for t in range(6):
        for seed in (1, 2):
            results.append(run(f"t{t}", seed, 70 + t, strategy="label_supervised", options={"unmask": False}))
            results.append(run(f"t{t}", seed, 73 + t, strategy="label_supervised", options={"unmask": True}))
    [c] = [c for c in analyse(results).comparisons if c.axis == "label_supervised.unmask"]
    assert (c.a, c.b, c.cells) == ("true", "false", 6) and c.mean == pytest.approx(3.0)


def test_the_same_input_gives_byte_identical_output():
    results = planted(2.0, cells=10)
    one = json.dumps(analyse(results).to_dict(), sort_keys=True)
    two = json.dumps(analyse(list(reversed(results))).to_dict(), sort_keys=True)
    assert one == two


def test_dodge_expected_max_by_hand_and_at_k_1():
    values = [70.0, 60.0, 80.0]
    # sorted 60, 70, 80; k = 2: 60 (1/9) + 70 (4/9 - 1/9) + 80 (1 - 4/9)
    assert expected_max(values, 2) == pytest.approx(60 / 9 + 70 * 3 / 9 + 80 * 5 / 9)
    assert expected_max(values, 1) == pytest.approx(sum(values) / 3)
    assert expected_max(values, 50) == pytest.approx(80, abs=1e-6)


def test_budget_curves_from_swept_cells():
    results = []
    for t in ("t1", "t2"):
        for i, lr in enumerate([1e-5, 3e-5, 1e-4, 3e-4, 1e-3]):
            results.append(run(t, 1, 60 + 3 * i, sweep={"learning_rate": lr}))
            results.append(run(t, 1, 70 - i, strategy="discriminative", sweep={"learning_rate": lr}))
    budgets = analyse(results).budgets
    assert budgets["generative"]["cells"] == 2 and len(budgets["generative"]["expected_max"]) == 5
    assert budgets["generative"]["expected_max"][0] == pytest.approx(66.0)  # the mean of 60..72
    # the winner changes with the budget: discriminative on one trial, generative on five
    assert budgets["discriminative"]["expected_max"][0] == pytest.approx(68.0)
    assert budgets["discriminative"]["expected_max"][0] > budgets["generative"]["expected_max"][0]
    assert budgets["generative"]["expected_max"][-1] > budgets["discriminative"]["expected_max"][-1]


def test_wilcoxon_and_bootstrap_match_scipy_on_the_same_vector():
    from scipy.stats import bootstrap, wilcoxon

    diffs = [1.2, 0.4, -0.3, 2.2, 1.9, 0.8, 1.1, -0.5, 0.9, 1.6]
    assert wilcoxon_p(diffs) == pytest.approx(wilcoxon(diffs).pvalue)
    ours = stratified_bootstrap([[[d] for d in diffs]], resamples=999, seed=7)
    theirs = bootstrap((np.array(diffs),), np.mean, n_resamples=999, method="percentile",
                       random_state=np.random.default_rng(7)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high))


def test_holm():
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])


def test_train_size_curves_and_who_stays_ahead():
    results = []
    for t in ("t1", "t2"):
        for seed in (1, 2):
            for size, gen, dis in ((100, 50, 55), (1000, 70, 65), ("full", 80, 75)):
                results += [run(t, seed, gen + seed, size=size), run(t, seed, dis + seed, strategy="discriminative", size=size)]
    f = analyse(results)
    points = f.curves["generative + lora"]
    assert [p.size for p in points] == ["100", "1000", "full"] and points[1].mean == pytest.approx(71.5)
    assert points[1].band[0] <= 71.5 <= points[1].band[1]
    assert {"a": "generative + lora", "b": "discriminative + lora", "from_size": "1000",
            "sizes": ["100", "1000", "full"]} in f.ahead


def test_stmbench_findings_asks_one_question_in_each_format(tmp_path, cli):
    from stmbench.store.results import ResultStore

    store = ResultStore(tmp_path / "r")
    for r in planted(5.0, cells=8):
        store.write(r)
    args = ["findings", "--results-dir", str(tmp_path / "r"), "--compare", "strategy=generative,discriminative"]
    code, out, _ = cli(*args)  # no predictions were stored: nothing is verified, nothing is compared
    assert code == 0 and "too few paired cells" in out
    args.append("--trust-unverified")
    code, out, _ = cli(*args)
    assert code == 0 and out.startswith("# Findings")
    assert "strategy generative vs discriminative: generative is better: +" in out and "over 8 cells" in out
    code, out, _ = cli(*args, "--format", "json")
    [c] = json.loads(out)["comparisons"]
    assert code == 0 and (c["a"], c["b"], c["verdict"], c["cells"]) == ("generative", "discriminative", "better", 8)
    code, out, _ = cli(*args, "--format", "csv")
    header, row = out.strip().splitlines()
    assert header.startswith("axis,a,b,verdict,cells") and row.startswith("strategy,generative,discriminative,better,8")
    code, out, _ = cli(*args[:3], "--trust-unverified", "--task", "t1", "--format", "json")
    assert json.loads(out)["comparisons"][0]["cells"] == 4  # t1 only: 2 prompts x 2 sizes
    code, _, err = cli(*args[:3], "--compare", "strategy")
    assert code == 2 and "AXIS=A,B" in err


def test_the_leaderboard_opens_with_the_findings(tmp_path):
    from stmbench.report import leaderboard
    from stmbench.store.results import ResultStore

    store = ResultStore(tmp_path / "r")
    for r in planted(5.0, cells=8):
        store.write(r)
    leaderboard.generate(tmp_path / "r", tmp_path / "lb", trust_unverified=True)  # results without predictions
    text = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert "unverified: 48 result(s) came without predictions" in text
    assert text.index("## Findings") < text.index("## Results") < text.index("| backbone")
    assert "- strategy generative vs discriminative: generative is better" in text
    assert "![findings-effects](findings-effects.svg)" in text and "![findings-train-size](findings-train-size.svg)" in text
    svg = (tmp_path / "lb" / "findings-effects.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "generative vs discriminative" in svg
    page = (tmp_path / "lb" / "index.html").read_text(encoding="utf-8")
    assert page.index('id="findings"') < page.index('id="board"') and "generative is better" in page
    first = {p.name: p.read_bytes() for p in (tmp_path / "lb").glob("*.*")}
    leaderboard.generate(tmp_path / "r", tmp_path / "lb", trust_unverified=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "lb").glob("*.*")} == first
