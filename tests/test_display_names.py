"""Names people read (issue 27): a backbone by its display name on the leaderboard, in figure names,
findings and CLI lines, its full name kept in each result."""

from __future__ import annotations

import json

from stmbench.report.board import aggregate
from stmbench.report.findings import analyse
from stmbench.store.results import ResultStore
from tests.test_leaderboard import add, pattern


def test_each_backbone_plugin_names_what_it_serves(session, tmp_path):
    gguf = session.catalogue.backbone_for("/models/x/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert gguf.display_name("/models/x/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.display_name("org/repo::model.Q8_0.gguf") == "model.Q8_0.gguf"
    folder = tmp_path / "checkpoints" / "my-model"
    folder.mkdir(parents=True)
    assert session.backbone_display(str(folder)) == "my-model"
    assert session.backbone_display(str(folder) + "/") == "my-model"
    assert session.backbone_display("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a hub id as given
    assert session.backbone_display("tiny-llama") == "tiny-llama"
    session.settings.backbone_names["Qwen/Qwen2.5-0.5B"] = "qwen-0.5b"
    assert session.backbone_display("Qwen/Qwen2.5-0.5B") == "qwen-0.5b"


def test_the_board_and_findings_show_display_names_and_never_merge_two_models(tmp_path):
    store = ResultStore(tmp_path / "results")
    backbones = {"/data/a/model.gguf": "model.gguf", "/data/b/model.gguf": "model.gguf",
                 "/data/c/SmolLM2.gguf": "SmolLM2.gguf"}
    for i, (path, shown) in enumerate(backbones.items()):
        for task in ("t1", "t2", "t3"):
            add(store, run_id=f"{i}{task}", correct=pattern(60 + 10 * i), backbone=path, task=task,
                labels={"backbone": shown, "strategy": "generative", "adapter": "lora"})
    board = aggregate(store.load_all(), store)
    rows = sorted(row.key["backbone"] for row in board.rows)
    # the two files named model.gguf are two models: each keeps its full name and its own row
    assert rows == ["/data/a/model.gguf", "/data/b/model.gguf", "SmolLM2.gguf"]
    findings = analyse(store.load_all())
    names = {(c.a, c.b) for c in findings.comparisons if c.axis == "backbone"}
    assert ("SmolLM2.gguf", "/data/b/model.gguf") in names and all(c.cells == 3 for c in findings.comparisons)
    # asked for by either name
    assert analyse(store.load_all(), backbones=["/data/c/SmolLM2.gguf"]).curves == \
        analyse(store.load_all(), backbones=["SmolLM2.gguf"]).curves


def test_backbone_name_flag_shows_on_the_board_lines_and_figures_and_the_result_keeps_the_path(cli, tmp_path, session):
    from stmbench.tasks.task import Task  # noqa: F401 - the tiny checkpoint of the sample task

    tiny = session.catalogue.backbone_for("tiny-llama")
    folder = str(tiny.checkpoint(session.get("task", "sample"), session.context))
    results, board = tmp_path / "results", tmp_path / "leaderboard"
    code, out, err = cli("run", "--backbones", folder, "--backbone-name", "my-tiny", "--strategies", "discriminative",
                         "--adapters", "lora", "--train-sizes", "64", "--num-train-epochs", "1", "--limit", "40",
                         "--results-dir", str(results), "--leaderboard-dir", str(board))
    assert code == 0, err
    assert "started my-tiny / sample / discriminative" in out and folder not in out
    [result] = [json.loads(p.read_text()) for p in results.glob("*[0-9a-f].json")]
    assert result["spec"]["backbone"] == folder and result["labels"]["backbone"] == "my-tiny"
    markdown = (board / "README.md").read_text(encoding="utf-8")
    assert "my-tiny" in markdown and folder not in markdown
    code, out, err = cli("run", "--backbones", f"{folder},tiny-llama", "--backbone-name", "x")
    assert code == 2 and "with 2 --backbones, write BACKBONE=NAME" in err
